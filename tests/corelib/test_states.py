"""Sans-IO tests of the process state machine: every (state, event) pair, and the control table."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path
from typing import Any

import pytest

from corelib.process._errors import InvalidTransitionError
from corelib.process._states import (
    EVENT_TYPES,
    FLAG_EVENTS,
    NO_VALUE,
    TRANSITIONS,
    Action,
    Continue,
    Created,
    Decision,
    Event,
    Excepted,
    Fail,
    Finish,
    Finished,
    Kill,
    Killed,
    Pause,
    Play,
    ProcessState,
    ProcessStateMachine,
    Request,
    Resume,
    Running,
    Start,
    StateData,
    Transition,
    Wait,
    Waiting,
    decide,
    state_of,
)

S = ProcessState


def step_a() -> None:
    """A stand-in step function."""


def step_b(value: Any = None) -> None:
    """A stand-in continuation."""


#: One instance of every event type.
EVENTS: dict[type[Event], Event] = {
    Start: Start(),
    Continue: Continue(step_a, 1, k=2),
    Wait: Wait(None, step_b, "for godot"),
    Resume: Resume(7),
    Finish: Finish("done", True),
    Fail: Fail("ValueError", "boom", "tb"),
    Kill: Kill("stop"),
    Pause: Pause("hold"),
    Play: Play(),
}

#: A representative record for each state, as a machine in that state would hold.
RECORDS: dict[ProcessState, StateData] = {
    S.CREATED: Created(),
    S.RUNNING: Running("run"),
    S.WAITING: Waiting("step_b", "for godot"),
    S.FINISHED: Finished("done", True),
    S.EXCEPTED: Excepted("ValueError", "boom", "tb"),
    S.KILLED: Killed("stop"),
}

#: The expected matrix, written out independently of TRANSITIONS: state -> event -> new state.
#: A missing entry means the event is illegal in that state. Flag events keep the state.
EXPECTED: dict[ProcessState, dict[type[Event], ProcessState]] = {
    S.CREATED: {Start: S.RUNNING, Kill: S.KILLED, Fail: S.EXCEPTED, Pause: S.CREATED,
                Play: S.CREATED},
    S.RUNNING: {Continue: S.RUNNING, Wait: S.WAITING, Finish: S.FINISHED, Kill: S.KILLED,
                Fail: S.EXCEPTED, Pause: S.RUNNING, Play: S.RUNNING},
    S.WAITING: {Resume: S.RUNNING, Finish: S.FINISHED, Kill: S.KILLED, Fail: S.EXCEPTED,
                Pause: S.WAITING, Play: S.WAITING},
    S.FINISHED: {},
    S.EXCEPTED: {},
    S.KILLED: {},
}  # fmt: skip


def test_event_catalogue_is_complete() -> None:
    assert set(EVENTS) == set(EVENT_TYPES.values())
    assert set(RECORDS) == set(ProcessState)
    assert {name: t.__name__ for name, t in EVENT_TYPES.items()} == {n: n for n in EVENT_TYPES}


def test_table_matches_expected_matrix() -> None:
    for state in ProcessState:
        moves = {e: s for e, s in EXPECTED[state].items() if e not in FLAG_EVENTS}
        assert dict(TRANSITIONS[state]) == moves


@pytest.mark.parametrize(
    ("state", "event_type"),
    list(itertools.product(ProcessState, EVENTS)),
    ids=lambda v: v.name if isinstance(v, ProcessState) else v.__name__,
)
@pytest.mark.parametrize("paused", [False, True], ids=["unpaused", "paused"])
def test_every_state_event_pair(state: ProcessState, event_type: type[Event], paused: bool) -> None:
    machine = ProcessStateMachine(RECORDS[state], paused=paused, clock=lambda: 42.0)
    event = EVENTS[event_type]
    expected = EXPECTED[state].get(event_type)
    was_paused = machine.paused
    if expected is None:
        with pytest.raises(InvalidTransitionError) as info:
            machine.process(event)
        assert str(info.value) == f"can't handle {event_type.__name__} in state {state.name}"
        assert info.value.event == event_type.__name__
        assert info.value.state == state.name
        # Nothing changed.
        assert machine.state is state
        assert machine.data == RECORDS[state]
        assert machine.paused is was_paused
        assert machine.history == ()
        return
    assert machine.next_state(event) is expected
    move = machine.process(event)
    assert machine.state is expected
    assert state_of(machine.data) is expected
    if event_type in FLAG_EVENTS:
        assert move is None
        assert machine.history == ()
        assert machine.paused is (event_type is Pause)
        assert machine.data == RECORDS[state]
    else:
        assert move == Transition(state, expected, event_type.__name__, 42.0)
        assert machine.history == (move,)
        # Terminal states are never paused; other moves keep the flag.
        assert machine.paused is (False if expected.terminal else was_paused)


def test_paused_flag_ignored_for_terminal_record() -> None:
    assert not ProcessStateMachine(Finished(None), paused=True).paused


@pytest.mark.parametrize(
    ("state", "event", "record"),
    [
        (S.CREATED, Start(), Running("run")),
        (S.RUNNING, Continue(step_a, 1, k=2), Running("step_a", (1,), {"k": 2})),
        (S.RUNNING, Wait(None, step_b, "msg"), Waiting("step_b", "msg")),
        (S.WAITING, Resume(5), Running("step_b", (5,))),
        (S.WAITING, Resume(None), Running("step_b", (None,))),
        (S.WAITING, Resume(), Running("step_b", ())),
        (S.RUNNING, Finish(3, False), Finished(3, False)),
        (S.WAITING, Fail("KeyError", "'k'", "tb"), Excepted("KeyError", "'k'", "tb")),
        (S.CREATED, Kill(None), Killed(None)),
    ],
)
def test_state_records(state: ProcessState, event: Event, record: StateData) -> None:
    machine = ProcessStateMachine(RECORDS[state])
    machine.process(event)
    assert machine.data == record


def test_continue_keeps_kwargs() -> None:
    event = Continue(step_a, 1, 2, flag=True)
    assert event.fn is step_a
    assert event.args == (1, 2)
    assert dict(event.kwargs) == {"flag": True}
    with pytest.raises(TypeError):
        event.kwargs["x"] = 1  # type: ignore[index]


def test_fail_from_exception_keeps_type_message_traceback() -> None:
    try:
        raise ValueError("bad value")
    except ValueError as exc:
        fail = Fail.from_exception(exc)
    assert fail.type_name == "ValueError"
    assert fail.message == "bad value"
    assert "Traceback (most recent call last)" in fail.traceback
    assert fail.traceback.rstrip().endswith("ValueError: bad value")


def test_full_life_history() -> None:
    times = iter([1.0, 2.0, 3.0, 4.0, 5.0])
    machine = ProcessStateMachine(clock=lambda: next(times))
    for event in (Start(), Continue(step_a), Wait(None, step_b), Resume(), Finish(None)):
        machine.process(event)
    assert [(m.from_state, m.to_state, m.event, m.time) for m in machine.history] == [
        (S.CREATED, S.RUNNING, "Start", 1.0),
        (S.RUNNING, S.RUNNING, "Continue", 2.0),
        (S.RUNNING, S.WAITING, "Wait", 3.0),
        (S.WAITING, S.RUNNING, "Resume", 4.0),
        (S.RUNNING, S.FINISHED, "Finish", 5.0),
    ]


def test_terminal_clears_paused_and_stays_terminal() -> None:
    machine = ProcessStateMachine()
    machine.process(Pause())
    assert machine.paused
    machine.process(Kill("x"))
    assert not machine.paused
    for event in EVENTS.values():
        with pytest.raises(InvalidTransitionError):
            machine.process(event)
    assert machine.state is S.KILLED


def test_reprs() -> None:
    machine = ProcessStateMachine()
    assert repr(machine) == "<ProcessStateMachine CREATED>"
    machine.process(Pause())
    assert repr(machine) == "<ProcessStateMachine CREATED, paused>"
    assert repr(NO_VALUE) == "NO_VALUE"
    assert repr(Kill("m")) == "Kill(message='m')"


def test_terminal_property() -> None:
    assert {s for s in ProcessState if s.terminal} == {S.FINISHED, S.EXCEPTED, S.KILLED}
    assert [s.value for s in ProcessState] == [
        "created", "running", "waiting", "finished", "excepted", "killed"
    ]  # fmt: skip


def test_module_is_sans_io() -> None:
    import corelib.process._states as states

    tree = ast.parse(Path(states.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & {"anyio", "asyncio", "trio", "sniffio"}


# --------------------------------------------------------------------------------------------
# The control decision table


def expected_decision(
    request: Request,
    state: ProcessState,
    paused: bool,
    stepping: bool,
    pause_pending: bool,
    kill_pending: bool,
) -> Decision:
    """The decision table, restated row by row."""
    if state.terminal:
        return Decision(Action.REFUSE, f"process already {state.value}")
    if request is Request.PAUSE:
        if kill_pending:
            return Decision(Action.REFUSE, "kill pending")
        if paused:
            return Decision(Action.NOTHING, "already paused")
        if stepping:
            return Decision(Action.DEFER, "pause at step end")
        return Decision(Action.NOW, "paused")
    if request is Request.PLAY:
        if paused:
            return Decision(Action.NOW, "played")
        if pause_pending:
            return Decision(Action.CANCEL_PENDING_PAUSE, "pause cancelled")
        return Decision(Action.NOTHING, "not paused")
    if request is Request.KILL and stepping:
        return Decision(Action.DEFER, "kill at step end")
    return Decision(Action.NOW, "killed")


def _situations() -> list[tuple[ProcessState, bool, bool, bool, bool]]:
    """Every situation the driver can be in: a step runs only in RUNNING and never paused;
    requests are pending only while a step runs."""
    out = []
    for state in ProcessState:
        flags = itertools.product([False, True], repeat=4)
        for paused, stepping, pause_pending, kill_pending in flags:
            if state.terminal and (paused or stepping):
                continue
            if stepping and (state is not S.RUNNING or paused):
                continue
            if (pause_pending or kill_pending) and not stepping:
                continue
            if pause_pending and kill_pending:
                continue  # a kill request drops a pending pause
            out.append((state, paused, stepping, pause_pending, kill_pending))
    return out


@pytest.mark.parametrize("request_", list(Request), ids=lambda r: r.name)
@pytest.mark.parametrize(
    ("state", "paused", "stepping", "pause_pending", "kill_pending"),
    _situations(),
    ids=lambda v: v.name if isinstance(v, ProcessState) else str(int(v)),
)
def test_decision_table(
    request_: Request,
    state: ProcessState,
    paused: bool,
    stepping: bool,
    pause_pending: bool,
    kill_pending: bool,
) -> None:
    got = decide(
        request_,
        state,
        paused=paused,
        stepping=stepping,
        pause_pending=pause_pending,
        kill_pending=kill_pending,
    )
    assert got == expected_decision(request_, state, paused, stepping, pause_pending, kill_pending)


def test_decision_table_highlights() -> None:
    # The rows where plumpy went wrong, spelled out.
    assert decide(Request.KILL, S.RUNNING, paused=True, stepping=False).action is Action.NOW
    assert decide(Request.FORCE_KILL, S.RUNNING, paused=False, stepping=True).action is Action.NOW
    assert decide(Request.KILL, S.WAITING, paused=False, stepping=False).action is Action.NOW
    assert decide(Request.PAUSE, S.WAITING, paused=False, stepping=False).action is Action.NOW
    assert decide(Request.PLAY, S.FINISHED, paused=False, stepping=False) == Decision(
        Action.REFUSE, "process already finished"
    )


def test_history_is_kept_out_of_the_cyclic_collector() -> None:
    """A waiting process's history costs the garbage collector nothing: its moves are stored
    as tuples of atomic values, which CPython stops tracking, and read back as records."""
    import gc

    times = iter([10.0, 11.0])
    machine = ProcessStateMachine(clock=lambda: next(times))
    assert machine.first_move_time is None
    machine.apply(Start())
    moved = machine.process(Wait(None, step_b))
    assert moved == Transition(ProcessState.RUNNING, ProcessState.WAITING, "Wait", 11.0)
    assert machine.history == (
        Transition(ProcessState.CREATED, ProcessState.RUNNING, "Start", 10.0),
        moved,
    )
    assert machine.first_move_time == 10.0
    gc.collect()
    assert not any(gc.is_tracked(move) for move in machine._history)
