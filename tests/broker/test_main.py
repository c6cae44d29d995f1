"""``python3 -m broker``: the demo, and its ``--help`` that does not run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import broker.__main__ as demo

ROOT = Path(__file__).resolve().parents[2]


def _no_demo() -> None:
    pytest.fail("the demo ran")


def test_help_prints_usage_and_does_not_run_the_demo(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo, "_demo", _no_demo)
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--help"])
    assert exit_info.value.code == 0
    out, err = capsys.readouterr()
    assert out.startswith("usage: python3 -m broker [-h]\n")
    assert "cross-thread demo" in out
    assert err == ""


@pytest.mark.parametrize("argv", [["--fast"], ["now"]])
def test_an_unknown_argument_is_an_error_with_status_2(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo, "_demo", _no_demo)
    with pytest.raises(SystemExit) as exit_info:
        demo.main(argv)
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "usage: python3 -m broker [-h]",
        f"python3 -m broker: error: unrecognized arguments: {argv[0]}",
    ]


def test_no_argument_runs_the_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[bool] = []
    monkeypatch.setattr(demo, "_demo", lambda: ran.append(True))
    demo.main([])
    assert ran == [True]


def test_python_m_broker_help_exits_0_at_once() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "broker", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("usage: python3 -m broker [-h]")
    assert "plumio broker demo" not in done.stdout  # the demo's first line


def test_python_m_broker_runs_the_demo() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "broker"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("plumio broker demo")
    assert "done in" in done.stdout
