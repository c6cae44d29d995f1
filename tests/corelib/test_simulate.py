"""``plumio simulate``: a small run end to end, through the API and the command line."""

from __future__ import annotations

import io
import json
import math
import random
import re
import threading
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

from broker import BlockingCommunicator, BroadcastFilter, MemoryBroker
from corelib import (
    Continue,
    LocalCluster,
    Process,
    ProcessSpec,
    ToContext,
    WorkChain,
    WorkChainSpec,
)
from corelib.cluster._cli import main as cli_main
from corelib.cluster._simulate import (
    ExceptionSummary,
    SimulationConfig,
    _Monitor,
    _Progress,
    _Storm,
    _stuck_report,
    _Watchdog,
    simulate,
)
from corelib.control._remote import submit_remote

from ._remote_procs import Waiter


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


# --------------------------------------------------------------------------------------------
# The stall of `plumio simulate --workchains 20000`, reproduced small.
#
# Its cause: the storm allowed 16 unanswered requests and then waited for a free slot. A pause
# of a WorkChain that awaits a remote child answers only once the child ended; when the storm
# had paused that child too, and every slot held such a pause, no play could ever be sent:
# every worker idle, every process waiting for a play that never came.

_GATE = threading.Event()
_STARTED: dict[str, str] = {}
_CHILD_STARTED = threading.Event()


class GatedChild(Process):
    """Its first step waits for the test to open the gate."""

    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.output("value", valid_type=int)

    async def run(self) -> Continue:
        _STARTED["child"] = self.pid
        _CHILD_STARTED.set()
        await anyio.to_thread.run_sync(_GATE.wait)
        return Continue(self.finish)  # a pause sent meanwhile holds it before this step

    def finish(self) -> None:
        self.out("value", 1)


class AwaitsRemoteChild(WorkChain):
    @classmethod
    def define(cls, spec: WorkChainSpec) -> None:  # type: ignore[override]
        super().define(spec)
        spec.output("value", valid_type=int)
        spec.outline(cls.spawn, cls.collect)

    def spawn(self) -> ToContext:
        _STARTED["parent"] = self.pid
        return ToContext(child=submit_remote(GatedChild))

    def collect(self) -> None:
        self.out("value", self.ctx.child["value"])


class _Recording:
    """A communicator wrapper that remembers what the storm sent."""

    def __init__(self, comm: BlockingCommunicator) -> None:
        self._comm = comm
        self.sent: list[tuple[str, str]] = []

    def rpc_send_future(self, pid: str, msg: dict[str, Any]) -> Any:
        self.sent.append((msg["intent"], pid))
        return self._comm.rpc_send_future(pid, msg)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_full_storm_plays_the_child_its_pause_of_the_parent_waits_for(backend: str) -> None:
    _GATE.clear()
    _CHILD_STARTED.clear()
    _STARTED.clear()
    broker = MemoryBroker(strict=True)
    try:
        with (
            LocalCluster(2, backends=(backend,), broker=broker) as cluster,
            BlockingCommunicator(broker, name="monitor", timeout=30) as watch,
            BlockingCommunicator(broker, name="storm", timeout=30) as storm_comm,
        ):
            monitor = _Monitor()
            watch.add_broadcast_subscriber(BroadcastFilter(monitor, subject="state_changed.*"))
            comm = _Recording(storm_comm)
            storm = _Storm(comm, monitor, random.Random(0), 0.0, capacity=1)
            launched = cluster.controller(timeout=30).launch_future(AwaitsRemoteChild)
            assert _CHILD_STARTED.wait(30)
            parent, child = _STARTED["parent"], _STARTED["child"]

            # The child's step waits on the gate: a pause answers only once that step ends,
            # so this pause holds the storm's only slot. (Before #12 a WorkChain awaiting a
            # remote child ran an async step, so pausing the parent did the same; now it is
            # WAITING and answers at once.)
            # the monitor knows the child once a broadcast sent after its "created" one
            # (same inbox, in order) has reached it
            flushed = threading.Event()
            watch.add_broadcast_subscriber(
                BroadcastFilter(lambda *_: flushed.set(), subject="test.flush")
            )
            watch.broadcast_send(None, subject="test.flush")
            assert flushed.wait(30)
            storm.send("pause", child)
            assert [r.intent for r in storm.pending()] == ["pause"]

            # Every slot is held. The old storm waited here for a free slot, forever.
            assert storm.step()
            assert comm.sent[-1] in {("play", child), ("play", parent)}
            _GATE.set()
            # and, storming on, it lets the pair finish
            storm.run_until(launched.done, timeout=30)
            assert launched.result(0)["state"] == "finished"
    finally:
        _GATE.set()


class _FakeFuture:
    def __init__(self) -> None:
        self.callbacks: list[Any] = []

    def add_done_callback(self, fn: Any) -> None:
        self.callbacks.append(fn)


class _FakeComm:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, _FakeFuture]] = []

    def rpc_send_future(self, pid: str, msg: dict[str, Any]) -> _FakeFuture:
        future = _FakeFuture()
        self.sent.append((msg["intent"], pid, future))
        return future


def _live_monitor(*pids: str) -> _Monitor:
    monitor = _Monitor()
    for pid in pids:
        monitor(None, None, pid, "state_changed.None.created", None)
    return monitor


def test_a_full_storm_sends_only_plays_of_what_it_paused() -> None:
    monitor = _live_monitor("a", "b")
    comm = _FakeComm()
    storm = _Storm(comm, monitor, random.Random(1), 0.0, capacity=2)
    storm.send("pause", "a")
    storm.send("pause", "b")
    assert storm.step()  # full: plays one of its paused pids
    assert storm.step()
    assert not storm.step()  # full, and nothing left to play: it waits for a reply
    assert sorted(pid for intent, pid, _ in comm.sent[2:]) == ["a", "b"]
    assert {intent for intent, _, _ in comm.sent[2:]} == {"play"}
    assert [r.intent for r in storm.pending()] == ["pause", "pause", "play", "play"]


def test_a_random_play_prefers_what_the_storm_paused_and_ended_pids_are_forgotten() -> None:
    monitor = _live_monitor("a", "b")
    comm = _FakeComm()
    storm = _Storm(comm, monitor, random.Random(0), 0.0)
    storm.send("pause", "a")
    storm.send("pause", "b")
    monitor(None, {"pid": "b", "state": "finished"}, "b", "state_changed.waiting.finished", None)
    assert monitor.take_paused(random.Random(0)) == "a"
    assert monitor.take_paused(random.Random(0)) is None


# --------------------------------------------------------------------------------------------
# The watchdog


def test_the_watchdog_fires_after_the_limit_without_change_and_again_later() -> None:
    dog = _Watchdog(10.0, now=0.0)
    assert dog.observe((0, 5), 0.0) is None
    assert dog.observe((0, 5), 9.9) is None
    assert dog.observe((0, 5), 10.0) == pytest.approx(10.0)
    assert dog.observe((0, 5), 15.0) is None
    assert dog.observe((0, 5), 20.5) == pytest.approx(10.5)
    assert dog.observe((1, 5), 21.0) is None  # progress: the clock restarts
    assert dog.observe((1, 5), 30.0) is None
    assert dog.reports == 2


def test_a_watchdog_of_zero_never_fires() -> None:
    dog = _Watchdog(0.0, now=0.0)
    dog.observe("x", 0.0)
    assert dog.observe("x", 1e9) is None
    assert dog.reports == 0


def test_the_stuck_report_names_pids_states_paused_flags_and_pending_requests() -> None:
    broker = MemoryBroker(strict=True)
    with (
        LocalCluster(1, backends=("asyncio",), broker=broker) as cluster,
        BlockingCommunicator(broker, name="storm", timeout=30),
    ):
        ctl = cluster.controller(timeout=30)
        outcome = ctl.launch(Waiter, nowait=True)
        pid = str(outcome)
        assert ctl.pause(pid).done
        storm = _Storm(_FakeComm(), _live_monitor(pid), random.Random(0), 0.0)
        storm.send("kill", pid)
        text = _stuck_report(cluster, [storm], done=3, total=10, idle=12.5)
        ctl.kill(pid)
    assert text.startswith("plumio simulate: no progress for 12.5 s (3/10 workchains done)")
    assert "worker-0 (asyncio): 1 live processes" in text
    assert re.search(rf"{pid} Waiter waiting \[paused, parked\]", text), text
    assert "control requests waiting for a reply: 1" in text
    assert re.search(rf"kill {pid} \(\d+\.\d s\)", text)
    assert "broker: pending 0, in flight 0, dead letters 0" in text


# --------------------------------------------------------------------------------------------
# Honest summaries


def test_a_timed_out_run_says_so_and_loses_no_task() -> None:
    config = SimulationConfig(workchains=300, workers=2, rounds=2, duration=0.05, watchdog=0)
    progress = io.StringIO()
    result = simulate(config, progress=progress)
    assert result.timed_out
    assert result.killed_at_timeout > 0
    assert result.tasks_lost == 0  # the in-flight tasks were drained, not counted as lost
    assert result.tasks_replied == 300
    assert "TIMED OUT after 0.05 s" in result.table()
    assert f"{result.killed_at_timeout} unfinished workchains were killed" in result.table()
    assert progress.getvalue().rstrip().endswith("(timed out)")


def test_excepted_processes_are_summarised_by_type_with_one_example() -> None:
    monitor = _live_monitor("p1", "p2", "p3")
    for pid, text in (
        ("p1", "ValueError: bad x"),
        ("p2", "ValueError: bad y"),
        ("p3", "KeyError: 'k'"),
    ):
        monitor(
            None,
            {"pid": pid, "state": "excepted", "exception": text},
            pid,
            "state_changed.running.excepted",
            None,
        )
    assert monitor.exceptions == {"ValueError": [2, "p1: bad x"], "KeyError": [1, "p3: 'k'"]}


def test_the_table_lists_exception_types() -> None:
    config = SimulationConfig(workchains=4, workers=1, storm_threads=0)
    result = simulate(config)
    table = attrs.evolve(
        result,
        exceptions={"ChildProcessFailedError": ExceptionSummary(3, "ab12: child cd34 was killed")},
    ).table()
    assert re.search(
        r"^excepted: ChildProcessFailedError +3 \(e\.g\. ab12: child cd34 was killed\)$",
        table,
        re.MULTILINE,
    )
    assert re.search(r"^result +completed$", table, re.MULTILINE)


def test_the_progress_rpc_count_is_the_summary_s() -> None:
    progress = io.StringIO()
    result = simulate(SimulationConfig(workchains=30, workers=2, rounds=1), progress=progress)
    last = progress.getvalue().strip().splitlines()[-1]
    assert "\r" not in progress.getvalue()  # not a terminal: plain lines
    assert f"{result.rpc_count} control RPCs answered" in last
    assert "30/30 workchains" in last


class _FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_bar_shows_rate_and_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    out = _FakeTty()
    bar = _Progress(out, total=10)
    bar.update(4, 2.0, 7)
    bar.update(10, 4.0, 9, "(timed out)", final=True)
    text = out.getvalue()
    assert "10/10" in text
    assert "2/s" in text
    assert "ETA" in text
    assert "9 control RPCs answered (timed out)" in text


# --------------------------------------------------------------------------------------------
# Configuration


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("workchains", 0),
        ("workchains", -1),
        ("workchains", 2.5),
        ("workchains", True),
        ("workers", 0),
        ("rounds", 0),
        ("storm_threads", -1),
        ("duration", 0),
        ("duration", -3.0),
        ("duration", math.nan),
        ("duration", math.inf),
        ("kill_fraction", -0.5),
        ("kill_fraction", 2),
        ("kill_fraction", math.nan),
        ("watchdog", -1),
        ("backend", "curio"),
        ("seed", 1.5),
    ],
)
def test_a_bad_config_value_is_refused_naming_field_and_value(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=rf"^{field} must .*got {re.escape(repr(value))}$"):
        SimulationConfig(**{field: value})


def test_the_limits_themselves_are_accepted() -> None:
    config = SimulationConfig(
        workchains=1, workers=1, rounds=1, storm_threads=0, kill_fraction=1, watchdog=0
    )
    assert config.kill_fraction == 1
