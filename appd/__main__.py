"""``python -m appd``: the same as the ``appd`` command."""

from appd.cli.commands import main

raise SystemExit(main())
