"""Shared test configuration.

Every async test runs on asyncio (debug mode) and on trio.

No test may leave a thread behind that keeps pytest from exiting. At the end of the session,
every live non-daemon thread other than the main one gets a bounded join (threads that are just
finishing end there); any thread still running then fails the run: the summary names each one
and shows where it is blocked, and the process exits with the run's status at once instead of
waiting forever for those threads in the interpreter's shutdown. ``$PLUMIO_THREAD_JOIN_SECONDS``
sets the join's budget (default 5 s, in all).
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback

import pytest


def _join_budget() -> float:
    text = os.environ.get("PLUMIO_THREAD_JOIN_SECONDS", "5")
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise ValueError(f"PLUMIO_THREAD_JOIN_SECONDS must be seconds >= 0, not {text!r}")
    return seconds


#: how long, in all, the session end waits for non-daemon threads that are still finishing
THREAD_JOIN_SECONDS = _join_budget()
#: innermost frames shown for each lingering thread
STACK_FRAMES = 12

_lingering_key = pytest.StashKey[list[str]]()
_status_key = pytest.StashKey[int]()
_reported_key = pytest.StashKey[bool]()


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {"debug": True}), id="asyncio"),
        pytest.param(("trio", {}), id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, object]]:
    return request.param  # type: ignore[no-any-return]


def _lingering_threads(budget: float) -> list[threading.Thread]:
    """Non-daemon threads other than the main one still alive after joins of ``budget`` s in all."""
    deadline = time.monotonic() + budget
    main = threading.main_thread()
    for thread in threading.enumerate():
        if thread is not main and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    return [
        thread
        for thread in threading.enumerate()
        if thread is not main and not thread.daemon and thread.is_alive()
    ]


def _describe(threads: list[threading.Thread]) -> list[str]:
    """One block of lines per thread: its name and ident, then where it is blocked."""
    frames = sys._current_frames()
    lines: list[str] = []
    for thread in threads:
        lines.append(f"thread {thread.name!r} (ident {thread.ident}) is still running, at:")
        frame = frames.get(thread.ident) if thread.ident is not None else None
        if frame is None:
            lines.append("    (no frame: it is starting or ending)")
            continue
        for entry in traceback.format_stack(frame, limit=STACK_FRAMES):
            lines.extend("    " + line for line in entry.rstrip("\n").split("\n"))
    return lines


def pytest_sessionfinish(session: pytest.Session, exitstatus: int | pytest.ExitCode) -> None:
    threads = _lingering_threads(THREAD_JOIN_SECONDS)
    if not threads:
        return
    names = ", ".join(repr(thread.name) for thread in threads)
    session.config.stash[_lingering_key] = [
        f"{len(threads)} non-daemon thread(s) still running after the session and a "
        f"{THREAD_JOIN_SECONDS:g}s join, so the run fails: {names}",
        *_describe(threads),
        "the process exits with os._exit after the reports: those threads would keep it alive",
    ]
    if exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    session.config.stash[_status_key] = int(session.exitstatus)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = terminalreporter.config.stash.get(_lingering_key, None)
    if not lines:
        return
    terminalreporter.write_sep("!", "threads left running", red=True)
    for line in lines:
        terminalreporter.write_line(line)
    terminalreporter.config.stash[_reported_key] = True


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """After every report is written: leave at once if threads would block the exit."""
    lines = config.stash.get(_lingering_key, None)
    if not lines:
        return
    if not config.stash.get(_reported_key, False):  # no terminal summary (e.g. -p no:terminal)
        print("\n".join(lines), file=sys.__stderr__)
    status = config.stash.get(_status_key, int(pytest.ExitCode.TESTS_FAILED))
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        if stream is not None:
            stream.flush()
    os._exit(status)
