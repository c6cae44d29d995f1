"""``python3 -m corelib``: the ``plumio`` command line (same usage, commands and exit statuses)."""

from __future__ import annotations

import sys

from .cluster._cli import main

if __name__ == "__main__":
    sys.exit(main())
