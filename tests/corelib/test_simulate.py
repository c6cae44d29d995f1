"""``plumio simulate``: a small run end to end, through the API and the command line."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from corelib._cli import main as cli_main
from corelib._simulate import SimulationConfig, simulate


def test_a_small_simulation_loses_no_task() -> None:
    config = SimulationConfig(workchains=40, workers=3, backend="mixed", rounds=2, duration=60)
    progress = io.StringIO()
    result = simulate(config, progress=progress)
    assert result.tasks_sent == result.tasks_replied == 40
    assert result.tasks_lost == 0
    assert (result.broker_pending, result.broker_in_flight, result.broker_dead_letters) == (0, 0, 0)
    assert sum(result.workchain_states.values()) == 40
    # each workchain and its 2 x 2 children end in some terminal state (kills cut some short)
    assert 40 < result.processes <= 40 * 5
    assert set(result.process_states) <= {"finished", "excepted", "killed"}
    assert not result.timed_out
    assert "40/40 workchains" in progress.getvalue()
    assert "tasks lost" in result.table()


def test_the_command_line_prints_a_summary_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "summary.json"
    status = cli_main(
        [
            "simulate",
            "--workchains",
            "10",
            "--workers",
            "2",
            "--backend",
            "trio",
            "--rounds",
            "1",
            "--seed",
            "3",
            "--json",
            str(out),
            "--quiet",
        ]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert re.search(r"^tasks lost +0$", printed, re.MULTILINE)
    summary = json.loads(out.read_text())
    assert summary["tasks_lost"] == 0
    assert summary["config"]["workchains"] == 10
    assert summary["config"]["backend"] == "trio"


def test_the_command_line_without_a_command_prints_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli_main([]) == 2
    assert cli_main(["fly"]) == 2
    assert "usage: plumio" in capsys.readouterr().out
