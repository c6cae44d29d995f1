"""``python -m corelib [simulate ...]``: the ``plumio`` command line (default: simulate)."""

from __future__ import annotations

import sys

from ._cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or (args[0].startswith("-") and args[0] not in ("-h", "--help")):
        args = ["simulate", *args]
    sys.exit(main(args))
