"""The ``plumio`` command line: ``plumio simulate [options]`` (see :mod:`corelib._simulate`)."""

from __future__ import annotations

import sys

__all__ = ["main"]

_USAGE = """usage: plumio <command> [options]

commands:
  simulate   run WorkChains with children on local workers under control storms
             (plumio simulate --help for its options)
"""


def main(argv: list[str] | None = None) -> int:
    """Run a ``plumio`` command; returns the exit status."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(_USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "simulate":
        from ._simulate import main as simulate_main

        return simulate_main(rest)
    sys.stderr.write(f"plumio: unknown command {command!r}\n{_USAGE}")
    return 2
