"""The pytest plugin in a user's project: async tests that use its fixtures run under anyio with
no configuration, and nothing changes where anyio (or another plugin) already runs them.

Each test runs pytest in a subprocess on a small project in a temporary directory (no conftest
or configuration of ours), with this interpreter's plumio.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TESTS = """
import pytest
from corelib import Process, Wait


class Waits(Process):
    def run(self):
        return Wait(None, self.done)

    def done(self, value):
        return value


async def test_direct(runner):
    assert runner.submit(Waits).pid


@pytest.fixture
async def submitted(runner):
    return runner.submit(Waits)


async def test_through_a_fixture(submitted):
    assert submitted.pid


@pytest.mark.usefixtures("communicator")
async def test_usefixtures():
    pass


@pytest.mark.anyio
async def test_marked(controller):
    pass


def test_sync(memory_broker):
    assert memory_broker.codec is not None
"""


def _pytest(project: Path, *args: str) -> dict[str, str]:
    """Run pytest in ``project``; return each test id's outcome (``PASSED``, ``FAILED``...)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert f"rootdir: {project}" in done.stdout, done.stdout
    outcomes = {
        test_id: outcome
        for outcome, test_id in re.findall(
            r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) test_example\.py::(\S+)",
            done.stdout,
            flags=re.MULTILINE,
        )
    }
    assert outcomes, done.stdout + done.stderr
    return outcomes


def _project(tmp_path: Path, tests: str, **files: str) -> Path:
    (tmp_path / "test_example.py").write_text(textwrap.dedent(tests))
    for name, text in files.items():
        (tmp_path / name.replace("__", ".")).write_text(textwrap.dedent(text))
    return tmp_path


def test_async_tests_using_the_fixtures_run_on_every_backend(tmp_path: Path) -> None:
    others = """

        async def test_no_fixture_of_ours():
            pass


        @pytest.mark.trio
        async def test_claimed_by_another_plugin(runner):
            pass
    """
    outcomes = _pytest(_project(tmp_path, TESTS + textwrap.dedent(others)))
    assert outcomes.pop("test_sync") == "PASSED"
    # Other coroutine tests are left alone (here nobody runs them: no plugin handles async
    # tests that anyio was not asked to run).
    assert outcomes.pop("test_no_fixture_of_ours") != "PASSED"
    assert outcomes.pop("test_claimed_by_another_plugin") != "PASSED"
    assert outcomes == {
        f"{name}[{backend}]": "PASSED"
        for name in ("test_direct", "test_through_a_fixture", "test_usefixtures", "test_marked")
        for backend in ("asyncio", "trio")
    }


def test_an_anyio_backend_override_applies(tmp_path: Path) -> None:
    tests = TESTS + textwrap.dedent("""
        @pytest.fixture(params=["trio"])
        def anyio_backend(request):
            return request.param
    """)
    outcomes = _pytest(_project(tmp_path, tests), "-k", "direct or marked or sync")
    assert outcomes == {
        "test_direct[trio]": "PASSED",
        "test_marked[trio]": "PASSED",
        "test_sync": "PASSED",
    }


def test_nothing_changes_in_anyio_auto_mode(tmp_path: Path) -> None:
    ini = """
        [pytest]
        anyio_mode = auto
    """
    outcomes = _pytest(_project(tmp_path, TESTS, pytest__ini=ini), "-m", "not anyio")
    # In auto mode anyio runs every coroutine test, and the plugin marks none: only the
    # explicitly marked test is deselected.
    assert outcomes == {
        f"{name}[{backend}]": "PASSED"
        for name in ("test_direct", "test_through_a_fixture", "test_usefixtures")
        for backend in ("asyncio", "trio")
    } | {"test_sync": "PASSED"}
