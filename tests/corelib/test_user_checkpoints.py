"""Reloading a checkpoint in a new Python process: the refusal says how to allow the module,
and the README's two-file example works as two real processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from corelib import ClassLoader, ForbiddenClassError, Process

from ._procs import Fails

README = Path(__file__).resolve().parents[2] / "README.md"

_TAKERS = "load_process, continue_process, Runner, ProcessLauncher, Worker or LocalCluster"


def test_the_default_loader_names_its_prefixes_and_the_loader_to_pass() -> None:
    with pytest.raises(ForbiddenClassError) as info:
        ClassLoader().load("myapp.flows:Deploy", pid="p1", base=Process)
    assert str(info.value) == (
        "class 'myapp.flows:Deploy' of pid 'p1' is not allowed: module 'myapp.flows' is outside"
        " the allowed prefixes (the default loader's: 'corelib' and the modules of classes this"
        " interpreter checkpointed or sent); to allow it, pass"
        f" loader=ClassLoader(allowed_prefixes=('myapp.flows',)) to {_TAKERS}"
    )
    assert "myapp" not in sys.modules


def test_an_explicit_loader_names_its_prefixes_and_the_one_to_add() -> None:
    loader = ClassLoader(allowed_prefixes=("corelib", "myapp.other"))
    with pytest.raises(ForbiddenClassError) as info:
        loader.load("tests.corelib._procs:Fails", base=Process)
    message = str(info.value)
    assert message == (
        "class 'tests.corelib._procs:Fails' is not allowed: module 'tests.corelib._procs' is"
        " outside the allowed prefixes ('corelib', 'myapp.other'); to allow it, pass"
        " loader=ClassLoader(allowed_prefixes=('corelib', 'myapp.other', 'tests.corelib._procs'))"
        f" to {_TAKERS}"
    )
    # The advice is code that works as written.
    advice = re.search(r"loader=(ClassLoader\(.*\)) to ", message)
    assert advice is not None
    advised = eval(advice.group(1), {"ClassLoader": ClassLoader})
    assert advised.load("tests.corelib._procs:Fails", base=Process) is Fails


@pytest.mark.parametrize("loader", [ClassLoader(), ClassLoader(allowed_prefixes=("corelib",))])
def test_a_class_of_a_script_gets_other_advice(loader: ClassLoader) -> None:
    with pytest.raises(ForbiddenClassError) as info:
        loader.load("__main__:NeverIdentified", pid="p")
    message = str(info.value)
    assert message.startswith(
        "class '__main__:NeverIdentified' of pid 'p' is not allowed: module '__main__' is outside"
        " the allowed prefixes ("
    )
    assert message.endswith(
        "; a class defined in a script can't be found by name in another interpreter:"
        " define it in an importable module"
    )
    assert "loader=" not in message


def _readme_file(name: str) -> str:
    """The README block that starts with the comment ``# <name>``."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    [block] = [b for b in blocks if b.startswith(f"# {name}")]
    return str(block)


def _python(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
def test_the_readme_checkpoint_example_reloads_in_a_new_process(tmp_path: Path) -> None:
    for name in ("approvals.py", "checkpoints.py"):
        (tmp_path / name).write_text(_readme_file(name))
    saved = _python(["checkpoints.py", "save"], tmp_path)
    assert saved.returncode == 0, saved.stderr
    assert (tmp_path / "checkpoints" / "approval-1.json").is_file()

    loaded = _python(["checkpoints.py", "load"], tmp_path)  # a new interpreter
    assert loaded.returncode == 0, loaded.stderr
    assert "approvals" not in loaded.stderr

    # Without the loader, a new interpreter refuses, even with the module imported, and says
    # what to pass.
    refused = _python(
        [
            "-c",
            "import anyio, approvals\n"
            "from corelib import FilePersister, load_process\n"
            "async def main():\n"
            "    async with FilePersister('checkpoints') as persister:\n"
            "        load_process(await persister.load_checkpoint('approval-1'))\n"
            "anyio.run(main)\n",
        ],
        tmp_path,
    )
    assert refused.returncode == 1
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "corelib.persistence._checkpoint.ForbiddenClassError: class 'approvals:Approval'"
    )
    assert last.endswith(f"pass loader=ClassLoader(allowed_prefixes=('approvals',)) to {_TAKERS}")
