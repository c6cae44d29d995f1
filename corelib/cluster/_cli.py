"""The ``plumio`` command line: ``plumio simulate [options]`` (see
:mod:`corelib.cluster._simulate`).

``python3 -m corelib`` runs the same command line (:mod:`corelib.__main__`): same usage, same
subcommands, same exit statuses. Every option is checked before anything runs; a bad value is a
one-line error naming the option and the value, with exit status 2 (argparse's usage error).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Sequence

import attrs

from ._simulate import SimulationConfig, simulate

__all__ = ["main", "simulate_main"]

#: the option ``--a-b`` sets the field ``a_b``
_CONFIG_FIELDS = tuple(field.name for field in attrs.fields(SimulationConfig))

_SIMULATE_HELP = "run WorkChains with children on local workers under control storms"

_DESCRIPTION = f"""\
plumio: controllable workflow processes on anyio (asyncio and trio), with an in-process broker.
`python3 -m corelib` is the same command line as `plumio`.

commands:
  simulate  {_SIMULATE_HELP}"""

_EPILOG = """\
example:
  plumio simulate --workchains 200 --workers 2 --json summary.json

`plumio <command> --help` lists a command's options."""

_SIMULATE_DESCRIPTION = """\
Launch WorkChains, each with a local and a remote child per round, on local worker threads over
the in-memory broker, while controller threads send random status/pause/play/kill RPCs to live
processes. Shows progress on stderr, then prints a summary: processes per second, control RPC
latency, final states, and `tasks lost`, which must be 0."""

_SIMULATE_EPILOG = """\
example:
  plumio simulate --workchains 200 --workers 2 --backend trio --seed 7 --json summary.json

exit status: 0 when no task was lost, 1 when one was (or the JSON file could not be written
after the run), 2 for a bad option (nothing has run then)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run a ``plumio`` command (``argv`` defaults to ``sys.argv[1:]``); returns the exit status.

    Without a command it prints the help and returns 2; usage errors return 2 and ``--help``
    and ``--version`` return 0, as argparse would exit with.
    """
    parser = _parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    misplaced = _misplaced_option(argv)
    if misplaced is not None:
        return _usage_error(parser, misplaced)
    try:
        args, extra = parser.parse_known_args(argv)
    except SystemExit as exc:
        return _status(exc)
    if extra:  # reported by the command's parser, with its usage
        command: argparse.ArgumentParser = getattr(args, "parser", parser)
        return _usage_error(command, f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help(sys.stdout)
        return 2
    run: Callable[[argparse.ArgumentParser, argparse.Namespace], int] = args.run
    return run(args.parser, args)


def simulate_main(argv: Sequence[str] | None = None) -> int:
    """``plumio simulate [options]`` (``argv`` without the command); returns the exit status.

    1 if a task was lost; usage errors return 2 before anything runs, as :func:`main` does.
    """
    return main(["simulate", *(sys.argv[1:] if argv is None else argv)])


def _version() -> str:
    """The installed plumio's version, or ``"unknown"`` when its metadata is not installed."""
    try:
        return importlib.metadata.version("plumio")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plumio",  # also under `python3 -m corelib`: the same help either way
        usage="%(prog)s [-h] [--version] <command> [options]",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"plumio {_version()}")
    # The commands are listed in the description: argparse's own listing adds a stray line.
    commands = parser.add_subparsers(
        dest="command", metavar="<command>", prog="plumio", help=argparse.SUPPRESS
    )
    sim = commands.add_parser(
        "simulate",
        description=_SIMULATE_DESCRIPTION,
        epilog=_SIMULATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_simulate_options(sim)
    sim.set_defaults(run=_run_simulate, parser=sim)
    return parser


def _add_simulate_options(parser: argparse.ArgumentParser) -> None:
    """The ``simulate`` options; each ``dest`` is the :class:`SimulationConfig` field it sets."""
    default = SimulationConfig()
    add = parser.add_argument
    add(
        "--workchains",
        type=_integer(1),
        default=default.workchains,
        metavar="N",
        help="how many WorkChains to launch (default: %(default)s)",
    )
    add(
        "--workers",
        type=_integer(1),
        default=default.workers,
        metavar="N",
        help="how many worker threads (default: %(default)s)",
    )
    add(
        "--backend",
        choices=["asyncio", "trio", "mixed"],
        default=default.backend,
        help="the workers' event loops; mixed alternates asyncio and trio (default: %(default)s)",
    )
    add(
        "--rounds",
        type=_integer(1),
        default=default.rounds,
        metavar="N",
        help="rounds per WorkChain, each one local and one remote child (default: %(default)s)",
    )
    add(
        "--seed",
        type=_integer(None),
        default=default.seed,
        metavar="N",
        help="seeds every random choice; thread interleaving still varies (default: %(default)s)",
    )
    add(
        "--duration",
        type=_duration,
        default=default.duration,
        metavar="SECONDS",
        help="the most seconds to run; what is left then is killed (default: %(default)s)",
    )
    add(
        "--storm-threads",
        type=_integer(0),
        default=default.storm_threads,
        metavar="N",
        help="controller threads sending random control RPCs, 0 for none (default: %(default)s)",
    )
    add(
        "--kill-fraction",
        type=_fraction,
        default=default.kill_fraction,
        metavar="F",
        help="the share of control RPCs that are kills, from 0 to 1 (default: %(default)s)",
    )
    add(
        "--watchdog",
        type=_watchdog,
        default=default.watchdog,
        metavar="SECONDS",
        help="after this many seconds without progress, report what is stuck on stderr; "
        "0 turns it off (default: %(default)s)",
    )
    add(
        "--json",
        type=_json_path,
        metavar="PATH",
        help="also write the summary as JSON to PATH, replacing it; PATH is checked before the "
        "run and written only after it (default: no JSON file)",
    )
    add(
        "--quiet",
        action="store_true",
        help="show no progress on stderr; the watchdog still reports (default: show it)",
    )
    add(
        "--log-failures",
        action="store_true",
        help="log each excepted process with its traceback on stderr (default: the summary "
        "counts them by exception type, with one example each)",
    )


def _run_simulate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        config = SimulationConfig(
            workchains=args.workchains,
            workers=args.workers,
            backend=args.backend,
            rounds=args.rounds,
            seed=args.seed,
            duration=args.duration,
            storm_threads=args.storm_threads,
            kill_fraction=args.kill_fraction,
            watchdog=args.watchdog,
        )
    except ValueError as exc:
        return _usage_error(parser, _config_error(exc))
    # The storm's kills make some WorkChains except (a killed child fails its parent): the
    # summary reports them by type; their tracebacks only on request.
    process_log = logging.getLogger("corelib.process")
    level = process_log.level
    if not args.log_failures:
        process_log.setLevel(logging.ERROR)
    try:
        result = simulate(config, progress=None if args.quiet else sys.stderr)
    finally:
        process_log.setLevel(level)
    print(result.table())
    if args.json is not None:
        try:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump(result.to_dict(), fh, indent=2)
        except OSError as exc:
            sys.stderr.write(f"{parser.prog}: error: cannot write --json {args.json!r}: {exc}\n")
            return 1
    return 0 if result.tasks_lost == 0 else 1


# -- checks of single option values (argparse ``type=``): a message naming the bad value ------


def _integer(minimum: int | None) -> Callable[[str], int]:
    """An ``int`` option's parser, ``>= minimum`` unless that is ``None``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or (minimum is not None and value < minimum):
            bound = "" if minimum is None else f" >= {minimum}"
            raise argparse.ArgumentTypeError(f"must be an integer{bound}, got {text!r}")
        return value

    return parse


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _duration(text: str) -> float:
    value = _float(text)
    if value is None or not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text!r}")
    return value


def _watchdog(text: str) -> float:
    value = _float(text)
    if value is None or not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, got {text!r}")
    return value


def _fraction(text: str) -> float:
    value = _float(text)
    if value is None or not 0.0 <= value <= 1.0:  # also false for nan
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, got {text!r}")
    return value


def _json_path(text: str) -> str:
    """A path the summary can be written to; nothing is created or truncated yet."""
    if not text:
        raise argparse.ArgumentTypeError("must be a file path, got ''")
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a directory, not a file")
    parent = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(parent):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: no directory {parent!r}")
    if os.path.exists(text):
        if not os.access(text, os.W_OK):
            raise argparse.ArgumentTypeError(f"cannot write {text!r}: permission denied")
    elif not os.access(parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(
            f"cannot write {text!r}: directory {parent!r} is not writable"
        )
    return text


# -- helpers ------------------------------------------------------------------------------------


def _config_error(exc: ValueError) -> str:
    """``SimulationConfig``'s complaint on one line, naming the option when it names a field."""
    message = " ".join(str(exc).split())
    for name in _CONFIG_FIELDS:
        if re.search(rf"\b{name}\b", message):
            return f"argument --{name.replace('_', '-')}: {message}"
    return message


def _misplaced_option(argv: Sequence[str]) -> str | None:
    """The error for a command's option given before the command (``plumio --workers 3``)."""
    name = argv[0].split("=", 1)[0] if argv else ""
    if not name.startswith("--") or any(top.startswith(name) for top in ("--help", "--version")):
        return None  # argparse's own checks say the rest
    return f"unrecognized option {name!r} before the command (plumio simulate {name} ...)"


def _usage_error(parser: argparse.ArgumentParser, message: str) -> int:
    """What ``parser.error`` prints, as a return value instead of ``SystemExit``."""
    parser.print_usage(sys.stderr)
    sys.stderr.write(f"{parser.prog}: error: {message}\n")
    return 2


def _status(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 1
