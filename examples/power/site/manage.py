#!/usr/bin/env python
"""The example site's command line: ``python manage.py appd run``, ``runserver``, ..."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "powersite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
