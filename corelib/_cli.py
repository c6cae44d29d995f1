"""The ``plumio`` command line: ``plumio simulate [options]`` (see :mod:`corelib._simulate`)."""

from __future__ import annotations

import json
import sys

from ._simulate import SimulationConfig, simulate

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
        return simulate_main(rest)
    sys.stderr.write(f"plumio: unknown command {command!r}\n{_USAGE}")
    return 2


def simulate_main(argv: list[str] | None = None) -> int:
    """``plumio simulate [options]``; returns the exit status (1 if a task was lost)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="plumio simulate",
        description="Simulate WorkChains with children on local workers under control storms.",
    )
    default = SimulationConfig()
    parser.add_argument("--workchains", type=int, default=default.workchains)
    parser.add_argument("--workers", type=int, default=default.workers)
    parser.add_argument("--backend", choices=["asyncio", "trio", "mixed"], default=default.backend)
    parser.add_argument("--rounds", type=int, default=default.rounds)
    parser.add_argument("--seed", type=int, default=default.seed)
    parser.add_argument(
        "--duration",
        type=float,
        default=default.duration,
        help="the most seconds to run before killing what is left",
    )
    parser.add_argument("--storm-threads", type=int, default=default.storm_threads)
    parser.add_argument("--kill-fraction", type=float, default=default.kill_fraction)
    parser.add_argument("--json", metavar="PATH", help="also write the summary as JSON here")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    config = SimulationConfig(
        workchains=args.workchains,
        workers=args.workers,
        backend=args.backend,
        rounds=args.rounds,
        seed=args.seed,
        duration=args.duration,
        storm_threads=args.storm_threads,
        kill_fraction=args.kill_fraction,
    )
    result = simulate(config, progress=None if args.quiet else sys.stderr)
    print(result.table())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result.to_dict(), fh, indent=2)
    return 0 if result.tasks_lost == 0 else 1
