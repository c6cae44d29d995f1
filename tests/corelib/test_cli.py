"""The ``plumio`` command line: option checks, help, version, and ``python3 -m corelib``."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest

import corelib.cluster._cli
from corelib.cluster._cli import main, simulate_main
from corelib.cluster._simulate import SimulationConfig, simulate

ROOT = Path(__file__).resolve().parents[2]

#: (option, bad value): every one is refused before anything runs
INVALID = [
    ("--workchains", "0"),
    ("--workchains", "-1"),
    ("--workchains", "1.5"),
    ("--workchains", "many"),
    ("--workers", "0"),
    ("--workers", "-3"),
    ("--workers", ""),
    ("--rounds", "0"),
    ("--rounds", "-2"),
    ("--storm-threads", "-1"),
    ("--storm-threads", "two"),
    ("--seed", "1.5"),
    ("--seed", "x"),
    ("--duration", "0"),
    ("--duration", "-1"),
    ("--duration", "nan"),
    ("--duration", "inf"),
    ("--duration", "soon"),
    ("--kill-fraction", "-0.5"),
    ("--kill-fraction", "2"),
    ("--kill-fraction", "1.0001"),
    ("--kill-fraction", "nan"),
    ("--kill-fraction", "inf"),
    ("--kill-fraction", "-inf"),
    ("--kill-fraction", "half"),
    ("--watchdog", "-1"),
    ("--watchdog", "nan"),
    ("--watchdog", "inf"),
    ("--watchdog", "never"),
    ("--backend", "curio"),
]


class _NoRun:
    """Stands in for ``simulate``: a check that failed to stop the run fails the test."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        pytest.fail("simulate() was called although an option is invalid")


@pytest.fixture
def no_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corelib.cluster._cli, "simulate", _NoRun())


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """argparse wraps help at $COLUMNS: one line per option, the same in every process."""
    monkeypatch.setenv("COLUMNS", "200")


def _error_line(err: str, prog: str = "plumio simulate") -> str:
    """The one error line after the usage; it must be the last and the only one."""
    lines = err.rstrip("\n").splitlines()
    errors = [line for line in lines if ": error: " in line]
    assert errors == [lines[-1]], err
    assert lines[0].startswith(f"usage: {prog}")
    return lines[-1]


@pytest.mark.usefixtures("no_run")
@pytest.mark.parametrize(("option", "value"), INVALID)
@pytest.mark.parametrize("through", ["simulate_main", "main"])
def test_an_invalid_value_is_a_one_line_error_naming_option_and_value(
    option: str, value: str, through: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [f"{option}={value}"]  # "=": "-inf" would otherwise read as an option
    status = simulate_main(argv) if through == "simulate_main" else main(["simulate", *argv])
    assert status == 2
    out, err = capsys.readouterr()
    assert out == ""
    line = _error_line(err)
    assert line.startswith(f"plumio simulate: error: argument {option}: ")
    assert repr(value) in line


@pytest.mark.usefixtures("no_run")
@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--kill-fraction", "-0.5"], "argument --kill-fraction: must be a number from 0 to 1"),
        (["--workers", "0"], "argument --workers: must be an integer >= 1, got '0'"),
        (["--workchains", "-5"], "argument --workchains: must be an integer >= 1, got '-5'"),
    ],
)
def test_the_reported_values_written_as_a_user_would(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", *argv]) == 2
    assert expected in _error_line(capsys.readouterr().err)


@pytest.mark.usefixtures("no_run")
def test_an_unknown_simulate_option_or_argument_is_an_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert simulate_main(["--wrokers", "3"]) == 2
    assert "unrecognized arguments: --wrokers 3" in _error_line(capsys.readouterr().err)
    assert simulate_main(["now"]) == 2
    assert "unrecognized arguments: now" in _error_line(capsys.readouterr().err)


@pytest.mark.usefixtures("no_run")
def test_a_simulate_option_before_the_command_says_where_it_goes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--workers", "3"]) == 2
    line = _error_line(capsys.readouterr().err, prog="plumio")
    assert line == (
        "plumio: error: unrecognized option '--workers' before the command "
        "(plumio simulate --workers ...)"
    )


# -- --json PATH --------------------------------------------------------------------------------


def _bad_json_paths(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    a_file = tmp_path / "a-file"
    a_file.write_text("keep")
    return {
        "missing directory": (tmp_path / "nowhere" / "out.json", "no directory"),
        "a directory": (tmp_path, "is a directory"),
        "under a file": (a_file / "out.json", "no directory"),
    }


@pytest.mark.usefixtures("no_run")
@pytest.mark.parametrize("case", ["missing directory", "a directory", "under a file"])
def test_a_bad_json_path_fails_before_the_run(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, reason = _bad_json_paths(tmp_path)[case]
    before = sorted(tmp_path.rglob("*"))
    assert simulate_main(["--workchains", "1", "--json", str(path)]) == 2
    line = _error_line(capsys.readouterr().err)
    assert line.startswith("plumio simulate: error: argument --json: ")
    assert repr(str(path)) in line
    assert reason in line
    assert sorted(tmp_path.rglob("*")) == before  # nothing created


@pytest.mark.usefixtures("no_run")
@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_json_path_fails_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    existing = tmp_path / "read-only.json"
    existing.write_text("{}")
    existing.chmod(0o444)
    locked.chmod(0o500)
    try:
        assert simulate_main(["--json", str(locked / "out.json")]) == 2
        assert "is not writable" in _error_line(capsys.readouterr().err)
        assert simulate_main(["--json", str(existing)]) == 2
        assert "permission denied" in _error_line(capsys.readouterr().err)
    finally:
        locked.chmod(0o700)


# -- SimulationConfig's own checks, and what reaches it -----------------------------------------


@attrs.frozen
class _FakeResult:
    tasks_lost: int = 0

    def table(self) -> str:
        return "tasks lost  0"

    def to_dict(self) -> dict[str, Any]:
        return {"tasks_lost": self.tasks_lost}


def _option(field: attrs.Attribute[Any]) -> str:
    return "--" + field.name.replace("_", "-")


def test_every_config_field_is_an_option_passed_through(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[SimulationConfig] = []

    def fake_simulate(config: SimulationConfig, **_kwargs: Any) -> _FakeResult:
        seen.append(config)
        return _FakeResult()

    monkeypatch.setattr(corelib.cluster._cli, "simulate", fake_simulate)
    assert simulate_main([]) == 0
    assert seen.pop() == SimulationConfig()
    # a value other than the default for each field, as the command line spells it
    wanted: dict[str, Any] = {
        "workchains": 7,
        "workers": 3,
        "backend": "trio",
        "rounds": 5,
        "seed": -11,
        "duration": 2.5,
        "storm_threads": 0,
        "kill_fraction": 1.0,
        "watchdog": 0.0,
    }
    fields = attrs.fields(SimulationConfig)
    assert {f.name for f in fields} <= set(wanted), "a new SimulationConfig field needs an option"
    argv = [f"{_option(f)}={wanted[f.name]}" for f in fields]
    assert simulate_main(argv) == 0
    assert seen.pop() == SimulationConfig(**wanted)
    assert capsys.readouterr().out == "tasks lost  0\n" * 2


def test_a_value_simulation_config_refuses_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def strict_config(**kwargs: Any) -> SimulationConfig:
        if not kwargs:  # the defaults shown in the help
            return SimulationConfig()
        raise ValueError(f"workers must be <= 64\n(this machine), got {kwargs['workers']}")

    monkeypatch.setattr(corelib.cluster._cli, "SimulationConfig", strict_config)
    monkeypatch.setattr(corelib.cluster._cli, "simulate", _NoRun())
    assert main(["simulate", "--workers", "65"]) == 2
    line = _error_line(capsys.readouterr().err)
    assert line == (
        "plumio simulate: error: argument --workers: workers must be <= 64 (this machine), got 65"
    )


def test_a_json_file_that_cannot_be_written_after_the_run_is_exit_status_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "later" / "out.json"
    (tmp_path / "later").mkdir()

    def vanishing_directory(config: SimulationConfig, **_kwargs: Any) -> _FakeResult:
        (tmp_path / "later").rmdir()
        return _FakeResult()

    monkeypatch.setattr(corelib.cluster._cli, "simulate", vanishing_directory)
    assert simulate_main(["--json", str(out)]) == 1
    out_text, err = capsys.readouterr()
    assert "tasks lost" in out_text  # the summary is still printed
    assert err.startswith(f"plumio simulate: error: cannot write --json {str(out)!r}: ")


# -- help, version, no command ------------------------------------------------------------------


@pytest.mark.usefixtures("wide", "no_run")
def test_simulate_help_shows_every_option_with_its_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert simulate_main(["--help"]) == 0
    text = capsys.readouterr().out
    assert main(["simulate", "--help"]) == 0
    assert capsys.readouterr().out == text
    assert text.startswith("usage: plumio simulate [-h] ")
    assert "example:\n  plumio simulate " in text
    options: dict[str, str] = {}  # each option's lines, joined
    section = text.split("\noptions:\n", 1)[1].split("\n\n", 1)[0]
    for line in section.splitlines():
        if line.startswith("  -"):
            name = line.split()[0].rstrip(",")
            options[name] = line
        elif line.startswith("   "):  # a long option's help goes on the next line
            options[name] += line
    del options["-h"]
    config_options = {_option(f) for f in attrs.fields(SimulationConfig)}
    assert set(options) == config_options | {"--json", "--quiet", "--log-failures"}
    default = SimulationConfig()
    for field in attrs.fields(SimulationConfig):
        assert f"(default: {getattr(default, field.name)})" in options[_option(field)]
    assert "(default: no JSON file)" in options["--json"]
    assert "(default: show it)" in options["--quiet"]
    assert "(default: the summary counts them" in options["--log-failures"]


@pytest.mark.usefixtures("wide")
def test_help_lists_the_commands_and_no_command_prints_it_with_status_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: plumio [-h] [--version] <command> [options]\n")
    assert "\n  simulate  run WorkChains" in text
    assert "--version" in text
    assert main([]) == 2
    assert capsys.readouterr() == (text, "")


def test_an_unknown_command_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fly"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    line = _error_line(err, prog="plumio")
    assert line.startswith("plumio: error: argument <command>: invalid choice: 'fly'")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"plumio {importlib.metadata.version('plumio')}\n"


def test_version_without_installed_metadata(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == "plumio unknown\n"


# -- python3 -m corelib and the plumio console script: the same command line --------------------

SAME_ARGS = [(["--help"], 0), ([], 2), (["fly"], 2), (["--version"], 0), (["simulate", "-h"], 0)]


def _run(command: list[str]) -> tuple[int, str, str]:
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "100"},
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize(("args", "status"), SAME_ARGS)
def test_python_m_corelib_is_the_plumio_command_line(args: list[str], status: int) -> None:
    code, out, err = _run([sys.executable, "-m", "corelib", *args])
    assert code == status, err
    assert "Traceback" not in err
    assert (out or err).startswith("usage: plumio") or out.startswith("plumio ")
    in_process = main(args)  # the same as calling main() here
    assert in_process == status


@pytest.mark.parametrize(("args", "status"), SAME_ARGS)
def test_the_plumio_script_and_python_m_corelib_print_the_same(
    args: list[str], status: int
) -> None:
    script = shutil.which("plumio")
    if script is None:
        pytest.skip("the plumio console script is not on PATH (package not installed?)")
    from_module = _run([sys.executable, "-m", "corelib", *args])
    assert _run([script, *args]) == from_module
    assert from_module[0] == status


# -- a tiny real run ----------------------------------------------------------------------------


def test_a_tiny_real_simulation_writes_its_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "summary.json"
    argv = ["--workchains", "3", "--workers", "1", "--storm-threads", "0", "--quiet"]
    assert simulate_main([*argv, "--json", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "tasks lost" in out
    assert err == ""  # --quiet: no progress bar
    summary = json.loads(path.read_text(encoding="utf-8"))
    assert summary["config"] == attrs.asdict(
        SimulationConfig(workchains=3, workers=1, storm_threads=0)
    )
    assert summary["tasks_sent"] == summary["tasks_replied"] == 3
    assert summary["tasks_lost"] == 0
    assert summary["rpc_count"] == 0
    assert summary["timed_out"] is False


@pytest.mark.parametrize("log_failures", [False, True])
def test_excepted_processes_are_logged_only_with_log_failures(
    log_failures: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[int] = []

    def fake_simulate(config: Any, **_kw: Any) -> Any:
        seen.append(logging.getLogger("corelib.process").getEffectiveLevel())
        return simulate(attrs.evolve(config, workchains=1), **_kw)

    monkeypatch.setattr(corelib.cluster._cli, "simulate", fake_simulate)
    args = ["--workchains", "1", "--workers", "1", "--storm-threads", "0", "--quiet"]
    assert simulate_main(args + (["--log-failures"] if log_failures else [])) == 0
    assert (seen[0] <= logging.WARNING) is log_failures
    assert logging.getLogger("corelib.process").level == logging.NOTSET  # restored
