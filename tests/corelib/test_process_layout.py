"""The shape of the process layer: the class chain behind Process, its host interface, sizes.

``Process`` is the top of a chain of classes (``Process`` -> ``ProcessDriver`` ->
``ProcessCore``); these tests keep the chain invisible to users and to the other layers (every
method the single class had is still on ``Process``; slots stay complete), keep the runner
behind the :class:`~corelib.process.ProcessHost` protocol, and keep modules and classes of a
readable size (as ``tests/test_broker_layout.py`` does for broker). Plain sync tests: no event
loop.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import corelib.process
from corelib import Runner
from corelib.process import Process, ProcessHost
from corelib.process._core import DriverHost, ProcessCore
from corelib.process._driver import ProcessDriver

PACKAGE = Path(corelib.process.__file__).parent

# Every method and property Process had when it was a single class; tests and the other
# layers call the private ones (``_bind``, ``_advance``, ``_drive``, ``_restore``, ...).
PROCESS_MEMBERS = (
    "__init__", "__repr__", "_advance", "_after_step", "_apply_pause", "_apply_play",
    "_apply_result", "_await_step", "_bind", "_call_hook", "_can_go_on", "_check_not_launched",
    "_decide", "_deliver", "_deliver_error", "_drive", "_driver_failed", "_entered_hooks",
    "_entering_hook", "_fail", "_finish", "_is_parked", "_kill_now", "_let_go", "_notify",
    "_on_terminal", "_restore", "_restored_awaitable", "_rewait", "_setup",
    "_supersede_pending_kill", "_transition", "_wakeup", "_watch", "add_process_listener",
    "ctime", "current", "define", "exception", "exit_code", "exit_codes", "has_terminated",
    "history", "inputs", "kill", "load_instance_state", "on_create", "on_except", "on_excepted",
    "on_exit_running", "on_exit_waiting", "on_finish", "on_finished", "on_kill", "on_killed",
    "on_output_emitted", "on_paused", "on_played", "on_run", "on_running", "on_terminated",
    "on_wait", "on_waiting", "out", "outputs", "pause", "paused", "pid", "play",
    "remove_process_listener", "result", "resume", "run", "runner", "save_instance_state",
    "spec", "state", "state_data", "statistics", "submit", "successful", "wait",
)  # fmt: skip

# Modules allowed over 800 lines, each saying why in its docstring.
BIG_MODULES = {"_states.py": "one table of rule 1"}
MAX_MODULE_LINES = 800
MAX_CLASS_LINES = 400  # a class over it says why in its docstring ("over 400 lines")


def test_process_is_the_top_of_the_chain() -> None:
    assert Process.__mro__ == (Process, ProcessDriver, ProcessCore, object)


@pytest.mark.parametrize("name", PROCESS_MEMBERS)
def test_process_keeps_every_member(name: str) -> None:
    assert hasattr(Process, name)


def test_slots_are_complete_across_the_chain() -> None:
    class Slotted(Process):
        __slots__ = ()

    proc = Slotted()
    assert not hasattr(proc, "__dict__")
    slots = [slot for cls in Process.__mro__ for slot in cls.__dict__.get("__slots__", ())]
    assert len(slots) == len(set(slots))  # no field declared twice


def _members(protocol: type) -> set[str]:
    return {
        name
        for name, value in vars(protocol).items()
        if inspect.isfunction(value) and not name.startswith("__")
    }


def test_runner_has_every_member_of_the_host_protocols() -> None:
    assert _members(DriverHost) <= _members(ProcessHost)
    assert _members(ProcessHost) == {
        "submit", "_spawn", "_park", "_unpark", "_forget", "_terminated",
    }  # fmt: skip
    for name in _members(ProcessHost):
        expected = inspect.signature(getattr(ProcessHost, name))
        actual = inspect.signature(getattr(Runner, name))
        assert list(actual.parameters) == list(expected.parameters), name


def test_the_process_layer_imports_no_other_layer() -> None:
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.level <= 1, f"{path.name} imports {'.' * node.level}{node.module}"
                assert not (node.module or "").startswith("corelib"), path.name
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("corelib") for a in node.names), path.name


def test_modules_and_classes_stay_readable() -> None:
    for path in sorted(PACKAGE.glob("*.py")):
        source = path.read_text()
        tree = ast.parse(source)
        if path.name in BIG_MODULES:
            docstring = ast.get_docstring(tree) or ""
            assert "stays whole" in docstring, path.name
        else:
            assert len(source.splitlines()) <= MAX_MODULE_LINES, path.name
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    docstring = ast.get_docstring(node) or ""
                    assert f"over {MAX_CLASS_LINES} lines" in docstring, (
                        f"{path.name}: {node.name} has {size} lines and its docstring does "
                        "not say why"
                    )
