"""The session-end thread check in ``tests/conftest.py``: a leaked thread fails the run, and the
run still exits.

Each test runs a small pytest session in a subprocess, in a directory holding a copy of the real
``tests/conftest.py`` (as its root conftest) and one test file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parent / "conftest.py"
#: the subprocess must end well within this, or the check failed to let it exit
RUN_TIMEOUT = 60.0

LEAKS_A_THREAD = """
import threading

never = threading.Event()


def test_leaks_a_blocked_thread():
    threading.Thread(target=never.wait, name="leaky-waiter").start()
"""

A_THREAD_THAT_ENDS = """
import threading

release = threading.Event()


def test_leaves_a_thread_that_is_ending():
    threading.Thread(target=release.wait, name="finishing-waiter").start()
    release.set()  # it may still be running when the session ends: the join lets it finish
"""

LEAKS_A_THREAD_AND_FAILS = (
    LEAKS_A_THREAD
    + """

def test_fails():
    assert False, "a plain failure"
"""
)


def _run_session(tmp_path: Path, test_code: str, *args: str) -> tuple[int, str, float]:
    """Run pytest on one test file beside a copy of the real conftest: (status, output, seconds)."""
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_session.py").write_text(test_code)
    env = {**os.environ, "PLUMIO_THREAD_JOIN_SECONDS": "0.5"}
    start = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args, str(tmp_path)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the pytest session did not exit within {RUN_TIMEOUT}s: {exc.output!r}")
    return done.returncode, done.stdout + done.stderr, time.monotonic() - start


@pytest.mark.slow
def test_a_leaked_thread_fails_the_run_names_it_and_the_run_exits(tmp_path: Path) -> None:
    status, output, seconds = _run_session(tmp_path, LEAKS_A_THREAD)
    assert status == pytest.ExitCode.TESTS_FAILED, output
    assert "1 passed" in output
    assert "threads left running" in output
    assert "still running after the session" in output
    assert "thread 'leaky-waiter'" in output
    assert "in wait" in output  # where it is blocked: threading.Event.wait
    assert seconds < RUN_TIMEOUT


@pytest.mark.slow
def test_the_report_reaches_stderr_without_the_terminal_reporter(tmp_path: Path) -> None:
    status, output, _ = _run_session(tmp_path, LEAKS_A_THREAD, "-p", "no:terminal")
    assert status == pytest.ExitCode.TESTS_FAILED, output
    assert "thread 'leaky-waiter'" in output


@pytest.mark.slow
def test_a_failing_run_that_leaks_keeps_its_status(tmp_path: Path) -> None:
    status, output, _ = _run_session(tmp_path, LEAKS_A_THREAD_AND_FAILS)
    assert status == pytest.ExitCode.TESTS_FAILED, output
    assert "1 failed, 1 passed" in output
    assert "thread 'leaky-waiter'" in output


@pytest.mark.slow
def test_a_thread_that_is_ending_is_joined_not_reported(tmp_path: Path) -> None:
    status, output, _ = _run_session(tmp_path, A_THREAD_THAT_ENDS)
    assert status == pytest.ExitCode.OK, output
    assert "1 passed" in output
    assert "threads left running" not in output
