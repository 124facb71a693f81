"""``python -m appd``: the same as the ``appd`` command."""

from appd.cli import main

raise SystemExit(main())
