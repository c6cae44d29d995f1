"""Fault containment of checkpoints (#12 points 8 and 9).

Whatever is wrong with a stored checkpoint, loading it raises a :class:`~corelib.CheckpointError`
naming the pid and what is wrong, never a bare ``KeyError``, ``ValueError`` or ``TypeError``:
a property test damages real checkpoints of a waiting Process, of a WorkChain at every step of
an outline with ``while_`` and ``if_``, and of paused ones. ``NaN`` and ``Infinity`` are not
JSON a checkpoint may hold. The step a checkpoint names is called when the process goes on, so
only real steps are accepted. The class loader returns only classes defined in allowed modules,
reached through classes.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corelib import (
    CheckpointCodec,
    CheckpointError,
    ClassLoader,
    CorruptCheckpointError,
    ForbiddenClassError,
    InMemoryPersister,
    Process,
    ProcessState,
    Runner,
    UnknownClassError,
    Wait,
    WorkChain,
    checkpoint_of,
    load_process,
)
from corelib.persistence._codec import _orjson_enabled

from ._chains import Pipeline, WaitsOnGate, expected_outputs
from ._procs import reach

TIMEOUT = 10
LOADER = ClassLoader(allowed_prefixes=("corelib", "tests.corelib"))
CODEC = CheckpointCodec()


class Stepper(Process):
    """Waits for ``resume(value)`` and outputs it; has every kind of attribute a checkpoint
    could name as its next step."""

    LIMIT = 3

    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.output("value", valid_type=int)

    def run(self) -> Any:
        return Wait(None, self.opened)

    def opened(self, value: int) -> None:
        self.out("value", value)

    async def scaled(self, value: int, *, scale: int = 1) -> None:
        """A function of its own: a step by the default rule."""
        self.out("value", value * scale)

    @property
    def prop(self) -> int:
        return 1

    @staticmethod
    def static(value: int = 0) -> None:
        pass

    @classmethod
    def klass(cls, value: int = 0) -> None:
        pass

    def on_finish(self, result: Any, successful: bool) -> None:
        super().on_finish(result, successful)


STEPPER = "tests.corelib.test_faults_checkpoint:Stepper"


def as_dict(process: Process) -> dict[str, Any]:
    """A checkpoint of ``process`` as the JSON object a persister stores."""
    data: dict[str, Any] = json.loads(CODEC.encode(checkpoint_of(process)))
    return data


async def _collect() -> list[dict[str, Any]]:
    """Real checkpoints: every checkpoint of a Pipeline run (its outline has a while_ and an
    if_, and it waits on children), a Stepper waiting, paused, and a WaitsOnGate paused while
    it waits on its child."""
    found: list[dict[str, Any]] = []
    async with Runner(persister=InMemoryPersister()) as runner:
        checkpointer = runner.checkpointer
        assert checkpointer is not None
        take = checkpointer.take

        def record(process: Any) -> None:
            if isinstance(process, Pipeline):
                found.append(as_dict(process))
            take(process)

        checkpointer.take = record  # type: ignore[method-assign]
        pipeline = runner.submit(Pipeline, {"n": 3}, pid="pipeline")
        with anyio.fail_after(TIMEOUT):
            await pipeline.wait()
        assert pipeline.outputs.to_dict() == expected_outputs(3)

        stepper = runner.submit(Stepper, pid="stepper")
        await reach(stepper, ProcessState.WAITING)
        found.append(as_dict(stepper))
        assert (await stepper.pause()).done
        found.append(as_dict(stepper))

        chain = runner.submit(WaitsOnGate, pid="chain")
        await reach(chain, ProcessState.WAITING)
        assert (await chain.pause()).done
        found.append(as_dict(chain))
        runner.kill_all("done")
    return found


BASES = anyio.run(_collect)


def test_the_bases_cover_the_kinds_of_process() -> None:
    pipeline = [c for c in BASES if c["pid"] == "pipeline"]
    assert {tuple(c.get("cursor", ())) for c in pipeline} >= {(), (1,), (1, 1, 0), (3,), (4,)}
    assert {c["state"] for c in pipeline} >= {"created", "running", "waiting", "finished"}
    assert {c["state_data"]["step"] for c in pipeline if c["state"] == "running"} == {
        "run",
        "_step",
        "_children_done",
    }
    assert {(c["pid"], c["state"], c.get("paused", False)) for c in BASES[-3:]} == {
        ("stepper", "waiting", False),
        ("stepper", "waiting", True),
        ("chain", "waiting", True),
    }
    for data in BASES:  # each loads as it is
        assert load_process(CODEC.decode(json.dumps(data).encode()), loader=LOADER)


@contextlib.contextmanager
def decoding_with(orjson: bool) -> Iterator[None]:
    """The codec's orjson paths on or off (the ``json`` paths are the reference)."""
    _orjson_enabled[0] = orjson
    try:
        yield
    finally:
        _orjson_enabled[0] = True


@pytest.fixture(params=[True, False], ids=["orjson", "json"])
def orjson_on(request: pytest.FixtureRequest) -> Iterator[bool]:
    with decoding_with(request.param):
        yield request.param


# --- damaged checkpoints: a CheckpointError or a process, nothing else ------------------------

JUNK: tuple[Any, ...] = (
    None,
    True,
    0,
    -1,
    7,
    2**70,
    1.5,
    "",
    "run",
    "_step",
    "_children_done",
    "opened",
    "setup",
    "more",
    "kill",
    "_fail",
    "pause",
    "__init__",
    "on_finish",
    "prop",
    "LIMIT",
    "created",
    "running",
    "waiting",
    "killed",
    "RUNNING",
    "bogus",
    [],
    [0],
    [-1],
    [9],
    [1, 9],
    [1, 1, 0, 0],
    [1, 2, 0],
    ["a"],
    [None],
    {},
    {"a": 1},
    {"kind": "process"},
    [{"key": 1, "pid": 2}],
    [{"kind": "event", "pid": "x", "key": "k"}],
    {"status": "0"},
    "corelib.workchain._workchain:WorkChain",
    "corelib:Process",
    "corelib.persistence._loader:threading.Thread",
    "tests.corelib._chains:Gate",
    "tests.corelib._chains:Pipeline",
    STEPPER,
    "evil.module:Thing",
)
KEYS = ("extra", "step", "next_step", "args", "kwargs", "message", "pid", "key", "append", "kind")


def _places(value: Any) -> Iterator[tuple[Any, Any]]:
    """Every (container, key or index) in ``value``."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield value, key
            yield from _places(item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield value, index
            yield from _places(item)


def _deep(value: Any, levels: int, as_list: bool) -> Any:
    for _ in range(levels):
        value = [value] if as_list else {"d": value}
    return value


@st.composite
def damaged(draw: st.DrawFn) -> dict[str, Any]:
    """A real checkpoint with one to three things broken in it."""
    data: dict[str, Any] = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        places = list(_places(data))
        if not places:
            break
        container, key = draw(st.sampled_from(places))
        match draw(st.sampled_from(["delete", "junk", "text", "number", "nest", "deep", "add"])):
            case "delete":
                del container[key]
            case "junk":
                container[key] = copy.deepcopy(draw(st.sampled_from(JUNK)))
            case "text":
                container[key] = draw(st.text(max_size=12))
            case "number":
                container[key] = draw(
                    st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                )
            case "nest":
                container[key] = draw(st.sampled_from([[container[key]], {"x": container[key]}]))
            case "deep":
                levels = draw(st.integers(50, 300))
                container[key] = _deep(container[key], levels, draw(st.booleans()))
            case _:
                target = container if isinstance(container, dict) else data
                target[draw(st.sampled_from(KEYS))] = copy.deepcopy(draw(st.sampled_from(JUNK)))
    return data


@pytest.mark.parametrize("orjson", [True, False], ids=["orjson", "json"])
@settings(max_examples=400, deadline=None)
@given(data=damaged())
def test_a_damaged_checkpoint_loads_or_raises_a_checkpoint_error(
    orjson: bool, data: dict[str, Any]
) -> None:
    with decoding_with(orjson):
        outcome = _outcome(json.dumps(data).encode())
    pid = data.get("pid")
    if isinstance(outcome, Process):
        assert outcome.pid == pid
    elif isinstance(pid, str) and pid:
        assert repr(pid) in str(outcome)


def _outcome(raw: bytes) -> Process | CheckpointError:
    """The process loaded from ``raw``, or the CheckpointError it raised (any other error
    fails the test)."""
    try:
        return load_process(CODEC.decode(raw), loader=LOADER)
    except CheckpointError as exc:
        return exc


# --- each defect the property test found, on its own ------------------------------------------


def _base(pid: str, state: str, cursor: tuple[int, ...] | None = None) -> dict[str, Any]:
    for data in BASES:
        if (
            data["pid"] == pid
            and data["state"] == state
            and (cursor is None or tuple(data.get("cursor", ())) == cursor)
        ):
            return copy.deepcopy(data)
    raise LookupError((pid, state, cursor))  # pragma: no cover


def _running_step() -> dict[str, Any]:
    data = _base("pipeline", "running", (1, 1, 0))
    data["state_data"] = {"step": "_step", "args": [], "kwargs": {}}
    return data


def _load(data: dict[str, Any] | bytes) -> Process:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return load_process(CODEC.decode(raw), loader=LOADER)


def _with(data: dict[str, Any], **changes: Any) -> dict[str, Any]:
    data.update(changes)
    return data


def _deep_ctx() -> bytes:
    data = _base("pipeline", "waiting", (1, 1, 0))
    text = json.dumps({**data, "ctx": {**data["ctx"], "deep": "HERE"}})
    return text.replace('"HERE"', "[" * 600 + "1" + "]" * 600).encode()


CORRUPT = {
    "kwargs not an object": (
        lambda: _with(_running_step(), state_data={"step": "_step", "kwargs": ":"}),
        "running state_data 'kwargs' must be an object with string keys, got ':'",
    ),
    "step not a string": (
        lambda: _with(_running_step(), state_data={"step": 5}),
        "running state_data 'step' must be a string, got 5",
    ),
    "no next_step": (
        lambda: _with(_base("stepper", "waiting"), state_data={"message": None}),
        "waiting state_data has no 'next_step'",
    ),
    "args that don't fit the step": (
        lambda: _with(_running_step(), state_data={"step": "_step", "args": [1]}),
        "state_data args don't fit step '_step': too many positional arguments",
    ),
    "a class with no outline": (
        lambda: _with(_running_step(), process_class="corelib.workchain._workchain:WorkChain"),
        "process_class 'corelib.workchain._workchain:WorkChain' can't be loaded, its spec"
        " fails: OutlineError: WorkChain declares no outline",
    ),
    "cursor past the outline": (
        lambda: _with(_running_step(), cursor=[9]),
        "cursor [9] does not fit the outline: index 9 past a block of 4",
    ),
    "cursor into a step": (
        lambda: _with(_running_step(), cursor=[0, 1]),
        "cursor [0, 1] does not fit the outline: Step has no positions inside it",
    ),
    "empty cursor inside the outline": (
        lambda: _with(_base("pipeline", "waiting", (1, 1, 0)), cursor=[]),
        "cursor is empty, but the next step is '_children_done'",
    ),
    "awaiting record": (
        lambda: _with(_base("pipeline", "waiting", (1, 1, 0)), awaiting=[{"key": 1, "pid": 2}]),
        "awaiting[0] must be a child process record, got {'key': 1, 'pid': 2}",
    ),
    "deep ctx": (_deep_ctx, "saved state nested too deeply to load"),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_each_corruption_is_a_corrupt_checkpoint_naming_the_pid(orjson_on: bool, case: str) -> None:
    make, problem = CORRUPT[case]
    pid = "pipeline" if case != "no next_step" else "stepper"
    with pytest.raises(CorruptCheckpointError) as info:
        _load(make())
    assert str(info.value) == f"checkpoint of pid {pid!r} is corrupt: {problem}"


# --- NaN and Infinity -------------------------------------------------------------------------


def _text(ctx: str) -> bytes:
    head = '{"version":1,"pid":"p","process_class":"m:C","state":"running","ctx":'
    return f"{head}{ctx}}}".encode()


@pytest.mark.parametrize(
    ("ctx", "where"),
    [
        ('{"n":NaN}', "ctx['n'] is NaN"),
        ('{"a":[1,{"b":Infinity}]}', "ctx['a'][1]['b'] is Infinity"),
        ('{"i":-Infinity}', "ctx['i'] is -Infinity"),
        ('{"huge":1E400}', "ctx['huge'] is 1E400"),
        ('{"t":{"!type":"tuple","value":[-1e999]}}', "ctx['t']['value'][0] is -1e999"),
    ],
)
def test_non_finite_json_numbers_are_refused(orjson_on: bool, ctx: str, where: str) -> None:
    with pytest.raises(
        CorruptCheckpointError,
        match=rf"^checkpoint of pid 'p' is corrupt: {re.escape(where)},"
        r" which a checkpoint can't hold untagged$",
    ):
        CODEC.decode(_text(ctx))


def test_tagged_non_finite_floats_still_load(orjson_on: bool) -> None:
    ctx = CODEC.decode(_text('{"n":{"!type":"float","value":"-inf"},"f":1e308}')).ctx
    assert ctx == {"n": float("-inf"), "f": 1e308}


# --- the step a checkpoint names --------------------------------------------------------------


def _stepper(state: str, name: str, **state_data: Any) -> dict[str, Any]:
    key = "step" if state == "running" else "next_step"
    return {
        "version": 1,
        "pid": "p1",
        "process_class": STEPPER,
        "state": state,
        "state_data": {key: name, **state_data},
    }


REFUSED = {
    "kill": "which is a method of Process itself, not a step",
    "_fail": "which is a method of Process itself, not a step",
    "pause": "which is a method of Process itself, not a step",
    "on_finish": "which is a method of Process itself, not a step",
    "__init__": "which is not a method a checkpoint may call",
    "__class__": "which is not a method a checkpoint may call",
    "prop": "which is not a method of Stepper",
    "LIMIT": "which is not a method of Stepper",
    "static": "which is not a method of Stepper",
    "klass": "which is not a method of Stepper",
    "missing": "which is not a method of Stepper",
}


@pytest.mark.parametrize("state", ["running", "waiting"])
@pytest.mark.parametrize("name", list(REFUSED))
def test_a_step_must_be_a_step(state: str, name: str) -> None:
    field = "step" if state == "running" else "next_step"
    with pytest.raises(
        CorruptCheckpointError,
        match=rf"^checkpoint of pid 'p1' is corrupt: state_data {field} names {name!r},"
        rf" {re.escape(REFUSED[name])}$",
    ):
        _load(_stepper(state, name))


@pytest.mark.parametrize(
    ("state", "name", "args"),
    [("running", "run", []), ("waiting", "opened", []), ("running", "scaled", [2])],
)
def test_steps_of_the_class_itself_load(state: str, name: str, args: list[Any]) -> None:
    extra = {"args": args} if state == "running" else {}
    process = _load(_stepper(state, name, **extra))
    assert isinstance(process, Stepper)


WORKCHAIN_REFUSED = ["more", "is_even", "kill", "pause", "exposed_inputs", "to_context", "ctx"]


@pytest.mark.parametrize("name", WORKCHAIN_REFUSED)
def test_a_workchain_step_is_one_of_its_outline_or_its_own(name: str) -> None:
    data = _with(_running_step(), state_data={"step": name})
    with pytest.raises(
        CorruptCheckpointError,
        match=rf"^checkpoint of pid 'pipeline' is corrupt: state_data step names {name!r},"
        r" which is not a step of Pipeline$",
    ):
        _load(data)


def test_a_workchains_steps_are_its_outline_and_internal_ones() -> None:
    assert Pipeline._checkpoint_steps() == {
        "run",
        "_step",
        "_children_done",
        "setup",
        "launch",
        "add_even",
        "add_odd",
        "both",
        "finish",
    }
    assert issubclass(Pipeline, WorkChain)
    for name in ("setup", "_step"):
        _load(_with(_running_step(), state_data={"step": name}))


async def test_a_loaded_step_goes_on() -> None:
    with anyio.fail_after(TIMEOUT):
        async with Runner() as runner:
            waiting = runner.launch(_load(_stepper("waiting", "opened")))
            await reach(waiting, ProcessState.WAITING)
            assert waiting.resume(4)
            await waiting.wait()
            running = runner.launch(
                _load(_stepper("running", "scaled", args=[2], kwargs={"scale": 3}))
            )
            await running.wait()
    assert waiting.outputs.to_dict() == {"value": 4}
    assert running.outputs.to_dict() == {"value": 6}


# --- the class loader: classes of allowed modules, reached through classes --------------------

TRAVERSAL = "tests.corelib._loader_traversal"


@pytest.mark.parametrize(
    ("qualname", "problem"),
    [
        ("subprocess.Popen", "'subprocess' is module 'subprocess', not a class"),
        ("Popen", "it is 'Popen' of module 'subprocess', outside the allowed prefixes"),
        ("Holder.Outside", "it is 'Popen' of module 'subprocess', outside the allowed prefixes"),
        ("make.Cls", "'make' is a function, not a class"),
        ("CONST.real.__class__", "'CONST' is an object of type int, not a class"),
    ],
)
def test_the_loader_refuses_what_is_not_a_class_of_an_allowed_module(
    qualname: str, problem: str
) -> None:
    identifier = f"{TRAVERSAL}:{qualname}"
    loader = ClassLoader(allowed_prefixes=(TRAVERSAL,))
    message = (
        rf"^class {re.escape(repr(identifier))} of pid 'p1' is not allowed: {re.escape(problem)}$"
    )
    with pytest.raises(ForbiddenClassError, match=message):
        loader.load(identifier, pid="p1")
    with pytest.raises(ForbiddenClassError, match=message):
        loader.load(identifier, pid="p1", base=object)


def test_the_default_loader_refuses_what_corelib_imported() -> None:
    with pytest.raises(
        ForbiddenClassError,
        match=r"^class 'corelib.persistence._loader:threading.Thread' is not allowed:"
        r" 'threading' is module 'threading', not a class$",
    ):
        ClassLoader().load("corelib.persistence._loader:threading.Thread")


def test_the_loader_still_loads_classes_and_their_aliases() -> None:
    from . import _loader_traversal as module

    loader = ClassLoader(allowed_prefixes=(TRAVERSAL,))
    assert loader.load(f"{TRAVERSAL}:Local") is module.Local
    assert loader.load(f"{TRAVERSAL}:Local.Inner") is module.Local.Inner
    assert loader.load(f"{TRAVERSAL}:Alias") is module.Local
    assert sys.modules[TRAVERSAL] is module
    with pytest.raises(
        UnknownClassError, match=rf"^can't load class '{TRAVERSAL}:CONST': it is not a class$"
    ):
        loader.load(f"{TRAVERSAL}:CONST")
    with pytest.raises(UnknownClassError, match=r"it is not a class$"):
        loader.load(f"{TRAVERSAL}:make")
