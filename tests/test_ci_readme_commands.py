"""CI runs the README's two set-up commands verbatim, in a fresh venv, before it installs anything
else: so what CI proves is what a new user who follows the README gets."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"

#: a line that installs something (a Python package, a system package, or RabbitMQ)
INSTALLS = re.compile(
    r"\bpip3? install\b|\bapt(-get)? install\b|\buv (pip|sync|add)\b|rabbitmq\.sh"
)
#: what may follow a README command on its line: nothing, or a pipe, a redirection or an ||
AFTER_COMMAND = re.compile(r"(\s+(\|\|?|>|2>&1)\s.*)?")


def _readme_commands() -> list[str]:
    first_block = re.search(r"```\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert first_block is not None, f"{README} has no plain fenced block"
    commands = first_block.group(1).strip().splitlines()
    assert len(commands) == 2, f"the README's first block has {len(commands)} lines: {commands}"
    return commands


def _ci_lines() -> list[str]:
    """The script's logical lines (continuations joined), without blank or comment lines and
    without the lines that only print (``echo``, ``step``, ``die``)."""
    text = CI_RUN.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        line
        for line in lines
        if line and not line.startswith("#") and not re.match(r"(echo|step|die)\b", line)
    ]


def _index_of_command(lines: list[str], command: str) -> int:
    """Where ``command`` runs as written (the start of a line, then nothing that changes it)."""
    for index, line in enumerate(lines):
        if line.startswith(command) and AFTER_COMMAND.fullmatch(line[len(command) :]):
            return index
    raise AssertionError(f"{CI_RUN} never runs the README command {command!r} as written")


def test_ci_runs_both_readme_commands_verbatim() -> None:
    lines = _ci_lines()
    first, second = (_index_of_command(lines, command) for command in _readme_commands())
    assert first < second, "CI runs the README's commands in the README's order"


def test_the_readme_commands_are_the_first_installs() -> None:
    lines = _ci_lines()
    installs = [index for index, line in enumerate(lines) if INSTALLS.search(line)]
    expected = [_index_of_command(lines, command) for command in _readme_commands()]
    assert installs[:2] == expected, (
        f"{CI_RUN} installs before or between the README's commands: "
        f"{[lines[index] for index in installs[:3]]}"
    )


def test_ci_makes_and_activates_a_fresh_venv_first() -> None:
    lines = _ci_lines()
    first_command = _index_of_command(lines, _readme_commands()[0])
    before = lines[:first_command]
    assert any(re.match(r"python3 -m venv\b", line) for line in before), before
    assert any(re.match(r"(source|\.) .*/bin/activate\b", line) for line in before), before


def test_ci_checks_the_main_job_lost_no_task() -> None:
    lines = _ci_lines()
    after = lines[_index_of_command(lines, _readme_commands()[0]) + 1 :]
    assert any("tasks lost +0" in line for line in after)


def test_ci_runs_the_tests_again_with_the_amqp_extra_and_rabbitmq() -> None:
    lines = _ci_lines()
    after = lines[_index_of_command(lines, _readme_commands()[1]) + 1 :]
    rabbitmq = next(i for i, line in enumerate(after) if "rabbitmq.sh" in line)
    amqp = next(i for i, line in enumerate(after) if "pip install" in line and "amqp" in line)
    pytest_runs = [i for i, line in enumerate(after) if line.startswith("python3 -m pytest")]
    assert pytest_runs, f"{CI_RUN} runs the tests only once"
    assert max(rabbitmq, amqp) < pytest_runs[-1]


def test_ci_is_strict() -> None:
    assert "set -euo pipefail" in _ci_lines()
