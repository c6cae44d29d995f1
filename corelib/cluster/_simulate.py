"""``plumio simulate``: many WorkChains on a local cluster, under a storm of control messages.

The simulation starts a :class:`~corelib.LocalCluster` of ``workers`` threads (asyncio, trio
or both) on a strict (JSON) in-memory broker and launches ``workchains`` :class:`SimChain`
WorkChains through the task queue. Each one runs a few rounds; every round it submits a local
child (on its own worker) and a remote child (through the task queue, usually on another
worker, awaited through its state broadcasts), and waits for both. Children do short ``async``
waits, so thousands of processes are in flight at once.

Meanwhile controller threads send random control RPCs to live processes (status, pause, play
and the odd kill) and measure their latency. A monitor counts every state broadcast. When the
launches are done (or ``duration`` is up: what is left is killed) the storm stops, everything is
played, and a summary is printed: processes per second, RPC latency p50/p99, final states, and
*tasks lost*, which must be 0: every task sent got exactly one reply, and the broker statistics
show no task pending, in flight or dead-lettered.
"""

from __future__ import annotations

import concurrent.futures
import functools
import math
import random
import statistics as stats
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import IO, Any, Literal, final

import anyio
import attrs

from broker import BlockingCommunicator, BroadcastFilter, MemoryBroker, UnroutableError

from ..control._messages import TERMINAL_SUBJECT_STATES
from ..control._remote import submit_remote
from ..process._process import Process
from ..process._spec import ProcessSpec
from ..workchain._workchain import ToContext, WorkChain, WorkChainSpec, while_
from ._worker import Backend, LocalCluster

_OUTSTANDING = 16

__all__ = [
    "ExceptionSummary",
    "SimChain",
    "SimChild",
    "SimulationConfig",
    "SimulationResult",
    "simulate",
]


class SimChild(Process):
    """A child that waits a little (``delay`` ms, in ``steps`` async steps) and reports."""

    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.input("delay", valid_type=float, default=1.0)
        spec.input("steps", valid_type=int, default=2)
        spec.output("value", valid_type=int)

    async def run(self) -> None:
        for _ in range(self.inputs.steps):
            await anyio.sleep(self.inputs.delay / 1000 / self.inputs.steps)
        self.out("value", self.inputs.steps)


class SimChain(WorkChain):
    """``rounds`` rounds of one local and one remote child; sums their values."""

    @classmethod
    def define(cls, spec: WorkChainSpec) -> None:  # type: ignore[override]
        super().define(spec)
        spec.input("rounds", valid_type=int, default=2)
        spec.input("seed", valid_type=int, default=0)
        spec.input("remote", valid_type=bool, default=True)
        spec.output("total", valid_type=int)
        spec.outline(cls.setup, while_(cls.more)(cls.spawn, cls.collect), cls.finalize)

    def setup(self) -> None:
        self.ctx.round = 0
        self.ctx.total = 0

    def more(self) -> bool:
        return bool(self.ctx.round < self.inputs.rounds)

    def spawn(self) -> ToContext:
        rng = random.Random(self.inputs.seed * 1000 + self.ctx.round)
        inputs = {"delay": rng.uniform(0.5, 3.0), "steps": rng.randint(1, 3)}
        entries: dict[str, Any] = {"local": self.submit(SimChild, inputs)}
        if self.inputs.remote:
            entries["remote"] = submit_remote(SimChild, dict(inputs, steps=inputs["steps"]))
        return ToContext(**entries)

    def collect(self) -> None:
        self.ctx.round += 1
        self.ctx.total += self.ctx.local["value"]
        if "remote" in self.ctx:
            self.ctx.total += self.ctx.remote["value"]

    def finalize(self) -> None:
        self.out("total", self.ctx.total)


BackendChoice = Literal["asyncio", "trio", "mixed"]

_BACKENDS: tuple[BackendChoice, ...] = ("asyncio", "trio", "mixed")


def _count(minimum: int) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if type(value) is not int or value < minimum:
            raise ValueError(f"{attribute.name} must be an integer >= {minimum}, got {value!r}")

    return check


def _number(low: float, high: float, *, low_open: bool = False) -> Callable[..., None]:
    def check(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        ok = (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and (value > low if low_open else value >= low)
            and value <= high
        )
        if not ok:
            bound = f"> {low}" if low_open else f">= {low}"
            upper = "" if math.isinf(high) else f" and <= {high}"
            raise ValueError(
                f"{attribute.name} must be a finite number {bound}{upper}, got {value!r}"
            )

    return check


def _backend(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in _BACKENDS:
        raise ValueError(f"{attribute.name} must be one of {list(_BACKENDS)}, got {value!r}")


def _seed(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not int:
        raise ValueError(f"{attribute.name} must be an integer, got {value!r}")


@final
@attrs.frozen
class SimulationConfig:
    """What to simulate. Every field is checked: a bad value raises :class:`ValueError`
    naming the field and the value.

    Attributes:
        workchains: how many WorkChains to launch (>= 1).
        workers: how many worker threads (>= 1).
        backend: the workers' loops; ``"mixed"`` alternates asyncio and trio.
        rounds: rounds (each one local and one remote child) per WorkChain (>= 1).
        seed: seeds every random choice (the thread interleaving still varies).
        duration: the most seconds to run (> 0); what is left then is killed, and the
            summary says the run timed out.
        storm_threads: controller threads sending random control RPCs (>= 0).
        kill_fraction: the share of storm messages that are kills (0 to 1).
        watchdog: seconds without any progress (no state change anywhere, no workchain done)
            after which what is stuck is reported; 0 turns the watchdog off.
    """

    workchains: int = attrs.field(default=2000, validator=_count(1))
    workers: int = attrs.field(default=4, validator=_count(1))
    backend: BackendChoice = attrs.field(default="mixed", validator=_backend)
    rounds: int = attrs.field(default=3, validator=_count(1))
    seed: int = attrs.field(default=0, validator=_seed)
    duration: float = attrs.field(default=60.0, validator=_number(0, math.inf, low_open=True))
    storm_threads: int = attrs.field(default=2, validator=_count(0))
    kill_fraction: float = attrs.field(default=0.01, validator=_number(0, 1))
    watchdog: float = attrs.field(default=10.0, validator=_number(0, math.inf))


@final
@attrs.frozen
class ExceptionSummary:
    """The processes that excepted with one exception type.

    Attributes:
        count: how many.
        example: the message of the first one seen (with its pid).
    """

    count: int
    example: str


@final
@attrs.frozen
class SimulationResult:
    """What happened; :meth:`to_dict` is the ``--json`` output.

    ``rpc_count`` counts the storm's control RPCs that were answered (the progress bar shows
    the same figure); ``rpc_unreachable`` those whose process had already ended, and
    ``rpc_failed`` those that failed otherwise. ``tasks_lost`` counts tasks that got no reply
    after the run drained (in-flight tasks are waited for first) plus tasks the broker still
    holds or dead-lettered. ``stalls`` counts the watchdog's reports.
    """

    config: SimulationConfig
    elapsed: float
    processes: int
    processes_per_second: float
    rpc_count: int
    rpc_unreachable: int
    rpc_failed: int
    rpc_p50_ms: float
    rpc_p99_ms: float
    status_p50_ms: float
    status_p99_ms: float
    workchain_states: dict[str, int]
    process_states: dict[str, int]
    exceptions: dict[str, ExceptionSummary]
    tasks_sent: int
    tasks_replied: int
    tasks_lost: int
    broker_pending: int
    broker_in_flight: int
    broker_dead_letters: int
    redeliveries: int
    timed_out: bool
    killed_at_timeout: int
    stalls: int
    per_worker: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    def table(self) -> str:
        """The summary as an aligned text table."""
        if self.timed_out:
            outcome = (
                f"TIMED OUT after {self.config.duration:g} s: "
                f"{self.killed_at_timeout} unfinished workchains were killed"
            )
        else:
            outcome = "completed"
        rows = [
            ("result", outcome),
            ("workers", f"{self.config.workers} ({self.config.backend})"),
            ("workchains", str(self.config.workchains)),
            ("processes", str(self.processes)),
            ("elapsed", f"{self.elapsed:.2f} s"),
            ("processes/s", f"{self.processes_per_second:,.0f}"),
            (
                "control RPCs answered",
                f"{self.rpc_count} ({self.rpc_unreachable} unreachable, {self.rpc_failed} failed)",
            ),
            ("status RPC latency p50", f"{self.status_p50_ms:.3f} ms"),
            ("status RPC latency p99", f"{self.status_p99_ms:.3f} ms"),
            ("control RPC latency p50", f"{self.rpc_p50_ms:.3f} ms (pauses wait for a step end)"),
            ("control RPC latency p99", f"{self.rpc_p99_ms:.3f} ms"),
            ("workchain states", _counts(self.workchain_states)),
            ("process states", _counts(self.process_states)),
        ]
        for type_name, summary in sorted(self.exceptions.items()):
            rows.append((f"excepted: {type_name}", f"{summary.count} (e.g. {summary.example})"))
        rows += [
            ("launches per worker", _counts(self.per_worker)),
            ("tasks sent/replied", f"{self.tasks_sent}/{self.tasks_replied}"),
            ("redeliveries", str(self.redeliveries)),
            (
                "broker at the end",
                f"pending {self.broker_pending}, in flight {self.broker_in_flight}, "
                f"dead letters {self.broker_dead_letters}",
            ),
            ("watchdog stalls", str(self.stalls)),
            ("tasks lost", str(self.tasks_lost)),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "-"


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return stats.quantiles(values, n=100, method="inclusive")[min(98, max(0, int(q) - 1))]


@final
class _Monitor:
    """Follows the state broadcasts: live pids for the storm, final states, exceptions, and
    the pids a storm paused (so that it plays them again)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.live: list[str] = []
        self._index: dict[str, int] = {}
        self.final: Counter[str] = Counter()
        self.moves = 0  # every state broadcast: the watchdog's measure of progress
        self.exceptions: dict[str, list[Any]] = {}  # type name -> [count, example]
        self.paused: dict[str, None] = {}  # paused by a storm and not played since (ordered)

    def __call__(self, _comm: Any, body: Any, sender: Any, subject: Any, _cid: Any) -> None:
        if not isinstance(subject, str) or not isinstance(sender, str):
            return
        to = subject.rsplit(".", 1)[-1]
        with self.lock:
            self.moves += 1
            if subject.startswith("state_changed.None."):
                self._index[sender] = len(self.live)
                self.live.append(sender)
            elif to in TERMINAL_SUBJECT_STATES:
                self.final[to] += 1
                self.paused.pop(sender, None)
                if to == "excepted":
                    self._excepted(sender, body)
                i = self._index.pop(sender, None)
                if i is not None:  # swap-remove
                    last = self.live.pop()
                    if last != sender:
                        self.live[i] = last
                        self._index[last] = i

    def _excepted(self, pid: str, body: Any) -> None:
        text = body.get("exception") if isinstance(body, dict) else None
        text = text if isinstance(text, str) else "?: (no outcome)"
        type_name, _, message = text.partition(": ")
        entry = self.exceptions.get(type_name)
        if entry is None:
            self.exceptions[type_name] = [1, f"{pid}: {message}"]
        else:
            entry[0] += 1

    def pick(self, rng: random.Random) -> str | None:
        with self.lock:
            return rng.choice(self.live) if self.live else None

    def mark_paused(self, pid: str) -> None:
        with self.lock:
            if pid in self._index:
                self.paused[pid] = None

    def take_paused(self, rng: random.Random) -> str | None:
        """A pid a storm paused and nobody played since (forgotten once taken)."""
        with self.lock:
            if not self.paused:
                return None
            pids = list(self.paused) if len(self.paused) < 64 else None
            pid = rng.choice(pids) if pids is not None else next(iter(self.paused))
            del self.paused[pid]
            return pid


@final
@attrs.frozen
class _Request:
    pid: str
    intent: str
    start: float


@final
class _Storm:
    """Random control RPCs from one thread, never waiting for their replies in line.

    At most ``capacity`` requests are unanswered at once. That cap must never stop the storm
    for good: a pause of a WorkChain that awaits a child answers only once the child ended,
    and that child may itself be paused by the storm. With every slot held by such pauses,
    the storm could never send the play that releases them, and the run stalled (what
    ``plumio simulate --workchains 20000`` did). So when the slots are full the storm plays a
    process it paused (plays answer at once and hold no slot), and the random ``play`` intent
    prefers those processes too: every pause is eventually followed by a play.
    """

    def __init__(
        self,
        comm: Any,
        monitor: _Monitor,
        rng: random.Random,
        kill_fraction: float,
        *,
        capacity: int = _OUTSTANDING,
    ) -> None:
        self._comm = comm
        self._monitor = monitor
        self._rng = rng
        rest = (1.0 - kill_fraction) / 3
        self._weights = [rest, rest, rest, kill_fraction]
        self._capacity = capacity
        self._cond = threading.Condition()
        self._pending: dict[int, _Request] = {}  # unanswered, by id; plays are not slots
        self._slots = 0
        self._ids = 0
        self.latencies: list[tuple[str, float]] = []
        self.counts: Counter[str] = Counter()

    @property
    def answered(self) -> int:
        """Requests answered so far (what the summary calls control RPCs)."""
        return len(self.latencies)

    def pending(self) -> list[_Request]:
        """The requests still waiting for a reply, oldest first."""
        with self._cond:
            return sorted(self._pending.values(), key=lambda r: r.start)

    def wait_for_replies(self, timeout: float) -> bool:
        """Wait until every request sent so far was answered; returns whether it was."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending, timeout)

    def run(self, stop: threading.Event) -> None:
        """Send until ``stop`` is set (the body of a storm thread)."""
        self.run_until(stop.is_set)

    def run_until(self, done: Callable[[], bool], timeout: float | None = None) -> None:
        """Send until ``done()`` is true.

        Raises:
            TimeoutError: ``timeout`` seconds passed first.
        """
        deadline = None if timeout is None else time.perf_counter() + timeout
        while not done():
            if deadline is not None and time.perf_counter() > deadline:
                raise TimeoutError(f"the storm ran {timeout} s and it was still not done")
            if not self.step():
                with self._cond:  # wait for an answer or a new live process
                    self._cond.wait(0.05)

    def step(self) -> bool:
        """Send one request; returns False when there was nothing to send."""
        with self._cond:
            full = self._slots >= self._capacity
        if full:
            pid = self._monitor.take_paused(self._rng)
            return pid is not None and self.send("play", pid)
        intent = self._rng.choices(_INTENTS, self._weights)[0]
        pid = self._monitor.take_paused(self._rng) if intent == "play" else None
        if pid is None:
            pid = self._monitor.pick(self._rng)
        return pid is not None and self.send(intent, pid)

    def send(self, intent: str, pid: str) -> bool:
        """Send one control RPC to ``pid`` without waiting for its reply."""
        msg = {"intent": intent, "message": "storm", "force_kill": False}
        start = time.perf_counter()
        slot = intent != "play"
        with self._cond:
            self._ids += 1
            ident = self._ids
            self._pending[ident] = _Request(pid, intent, start)
            self._slots += slot
        try:
            future = self._comm.rpc_send_future(pid, msg)
        except UnroutableError:
            self._done(ident, slot, "unreachable", None)
            return True
        if intent == "pause":
            self._monitor.mark_paused(pid)
        future.add_done_callback(functools.partial(self._answered, ident, slot, intent, start))
        return True

    def _answered(self, ident: int, slot: bool, intent: str, start: float, future: Any) -> None:
        latency = time.perf_counter() - start
        if future.cancelled() or future.exception() is not None:
            exc = None if future.cancelled() else future.exception()
            self._done(
                ident, slot, "unreachable" if isinstance(exc, UnroutableError) else "failed", None
            )
        else:
            self._done(ident, slot, intent, latency)

    def _done(self, ident: int, slot: bool, outcome: str, latency: float | None) -> None:
        with self._cond:
            request = self._pending.pop(ident)
            self._slots -= slot
            self.counts[outcome] += 1
            if latency is not None:
                self.latencies.append((request.intent, latency))
            self._cond.notify_all()


_INTENTS = ("status", "pause", "play", "kill")


@final
class _Progress:
    """The progress display: a rich bar on a terminal, a plain line every few seconds
    otherwise (so a redirected log gets no ``\\r`` frames)."""

    _LINE_EVERY = 5.0

    def __init__(self, out: IO[str], total: int) -> None:
        self._out = out
        self._total = total
        self._last_line = -math.inf
        self._bar: Any = None
        if out.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=24),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:>8.0f}/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[rpcs]} control RPCs answered {task.fields[note]}"),
                console=Console(file=out),
            )
            self._task = self._bar.add_task("workchains", total=total, rate=0.0, rpcs=0, note="")
            self._bar.start()

    def update(
        self, done: int, elapsed: float, rpcs: int, note: str = "", *, final: bool = False
    ) -> None:
        rate = done / elapsed if elapsed > 0 else 0.0
        if self._bar is not None:
            self._bar.update(self._task, completed=done, rate=rate, rpcs=rpcs, note=note)
            if final:
                self._bar.stop()
            return
        if not final and elapsed - self._last_line < self._LINE_EVERY:
            return
        self._last_line = elapsed
        left = self._total - done
        eta = f"ETA {left / rate:.0f} s" if rate > 0 and left else "ETA -"
        self._out.write(
            f"simulate: {done}/{self._total} workchains, {elapsed:.1f} s, {rate:,.0f}/s, "
            f"{eta}, {rpcs} control RPCs answered{' ' + note if note else ''}\n"
        )
        self._out.flush()


@final
class _Watchdog:
    """Decides when nothing has progressed for ``limit`` seconds (sans I/O: the caller
    passes what it saw and the time). ``limit`` 0 never fires."""

    def __init__(self, limit: float, now: float) -> None:
        self._limit = limit
        self._seen: object = None
        self._since = now
        self.reports = 0

    def observe(self, seen: object, now: float) -> float | None:
        """Record what progress looks like now; returns the idle time when a report is due
        (then again after each further ``limit`` seconds without change)."""
        if seen != self._seen:
            self._seen, self._since = seen, now
            return None
        idle = now - self._since
        if not self._limit or idle < self._limit:
            return None
        self.reports += 1
        self._since = now
        return idle


def _stuck_report(
    cluster: LocalCluster,
    storms: list[_Storm],
    done: int,
    total: int,
    idle: float,
    limit: int = 20,
) -> str:
    """What the watchdog prints: every live process (state, paused, what it waits for) and
    every control request still waiting for its reply."""
    lines = [
        f"plumio simulate: no progress for {idle:.1f} s ({done}/{total} workchains done); "
        "what is stuck:"
    ]
    now = time.perf_counter()
    for worker in cluster.workers:
        processes = worker.processes()
        lines.append(f"  {worker.name} ({worker.backend}): {len(processes)} live processes")
        for process in processes[:limit]:
            st = process.statistics()
            flags = [
                name
                for name, on in (
                    ("paused", st.paused),
                    ("stepping", st.stepping),
                    ("parked", st.blocked),
                    ("pause pending", st.pause_pending),
                    ("kill pending", st.kill_pending),
                )
                if on
            ]
            lines.append(
                f"    {process.pid} {type(process).__name__} {st.state.value}"
                f"{' [' + ', '.join(flags) + ']' if flags else ''}"
            )
        if len(processes) > limit:
            lines.append(f"    ... and {len(processes) - limit} more")
    pending = sorted((r for s in storms for r in s.pending()), key=lambda r: r.start)
    lines.append(f"  control requests waiting for a reply: {len(pending)}")
    for request in pending[:limit]:
        lines.append(f"    {request.intent} {request.pid} ({now - request.start:.1f} s)")
    if len(pending) > limit:
        lines.append(f"    ... and {len(pending) - limit} more")
    broker = cluster.broker.statistics()
    lines.append(
        f"  broker: pending {broker.pending}, in flight {broker.in_flight}, "
        f"dead letters {broker.dead_letters}"
    )
    return "\n".join(lines) + "\n"


def _backends(choice: BackendChoice) -> tuple[Backend, ...]:
    if choice == "mixed":
        return ("asyncio", "trio")
    return (choice,)


_DRAIN_SECONDS = 30.0


def simulate(
    config: SimulationConfig,
    *,
    progress: IO[str] | None = None,
    on_tick: Callable[[int, int], None] | None = None,
    report: IO[str] | None = None,
) -> SimulationResult:
    """Run the simulation from a plain thread and return its result.

    Args:
        config: what to simulate.
        progress: where to show progress (e.g. ``sys.stderr``): a bar on a terminal, a line
            every few seconds otherwise; none when ``None``.
        on_tick: called about ten times a second with (workchains done, total).
        report: where the watchdog writes what is stuck (``sys.stderr`` when ``None``).
    """
    report = sys.stderr if report is None else report
    rng = random.Random(config.seed)
    broker = MemoryBroker(strict=True)
    monitor = _Monitor()
    stop_storm = threading.Event()
    timed_out = False
    killed_at_timeout = 0
    with (
        LocalCluster(config.workers, backends=_backends(config.backend), broker=broker) as cluster,
        BlockingCommunicator(broker, name="monitor", timeout=30) as watch,
    ):
        watch.add_broadcast_subscriber(BroadcastFilter(monitor, subject="state_changed.*"))
        ctl = cluster.controller(timeout=30)
        storm_comms = [
            BlockingCommunicator(broker, name=f"storm-{i}") for i in range(config.storm_threads)
        ]
        storms = [
            _Storm(comm, monitor, random.Random(rng.random()), config.kill_fraction)
            for comm in storm_comms
        ]
        threads = [
            threading.Thread(target=s.run, args=(stop_storm,), name=f"storm-{i}", daemon=True)
            for i, s in enumerate(storms)
        ]
        bar = _Progress(progress, config.workchains) if progress is not None else None
        start = time.perf_counter()
        futures = [
            ctl.launch_future(
                SimChain, {"rounds": config.rounds, "seed": config.seed * 100_000 + i}
            )
            for i in range(config.workchains)
        ]
        for thread in threads:
            thread.start()
        deadline = start + config.duration
        watchdog = _Watchdog(config.watchdog, start)
        try:
            while True:
                now = time.perf_counter()
                done = sum(f.done() for f in futures)
                if bar is not None:
                    bar.update(done, now - start, sum(s.answered for s in storms))
                if on_tick is not None:
                    on_tick(done, len(futures))
                if done == len(futures):
                    break
                if now > deadline:
                    timed_out = True
                    break
                idle = watchdog.observe((done, monitor.moves), now)
                if idle is not None:
                    report.write(_stuck_report(cluster, storms, done, len(futures), idle))
                    report.flush()
                time.sleep(0.1)
        finally:
            stop_storm.set()
            for thread in threads:
                thread.join(30)
            for comm in storm_comms:
                comm.close()
        if timed_out:
            killed_at_timeout = sum(not f.done() for f in futures)
            ctl.kill_all("simulation timed out", force=True)
        # Drain: pauses sent by the storm may still be taking effect (at the end of a step),
        # and remote children may still be queued: play everyone until every workchain is
        # back and the broker holds no task, so that "tasks lost" counts only lost tasks.
        end_by = time.perf_counter() + _DRAIN_SECONDS
        while time.perf_counter() < end_by:
            ctl.play_all()
            concurrent.futures.wait(futures, 0.2)
            quiet = broker.statistics()
            if all(f.done() for f in futures) and not (quiet.pending or quiet.in_flight):
                break
        elapsed = time.perf_counter() - start
        answered = sum(s.answered for s in storms)
        if bar is not None:
            done = sum(f.done() for f in futures)
            note = "(timed out)" if timed_out else ""
            bar.update(done, elapsed, answered, note, final=True)
        replied = 0
        wc_states: Counter[str] = Counter()
        for f in futures:
            if not f.done():
                continue
            replied += 1
            try:
                wc_states[f.result()["state"]] += 1
            except Exception:
                wc_states["error"] += 1
        # The remote children's tasks were sent by the workers: count them from the broker.
        cluster_stats = cluster.statistics()
        queue = cluster_stats.broker.queues.get(broker.default_queue)
        with monitor.lock:
            process_states = dict(monitor.final)
            exceptions = {
                name: ExceptionSummary(count, example)
                for name, (count, example) in monitor.exceptions.items()
            }
        processes = sum(process_states.values())
        per_worker = {w.name: w.launched for w in cluster_stats.workers}
        broker_stats = cluster_stats.broker
    latencies = [item for s in storms for item in s.latencies]
    counts: Counter[str] = sum((s.counts for s in storms), Counter())
    all_times = [t for _, t in latencies]
    status_times = [t for intent, t in latencies if intent == "status"]
    return SimulationResult(
        config=config,
        elapsed=elapsed,
        processes=processes,
        processes_per_second=processes / elapsed if elapsed else 0.0,
        rpc_count=len(latencies),
        rpc_unreachable=counts["unreachable"],
        rpc_failed=counts["failed"],
        status_p50_ms=_percentile(status_times, 50) * 1000,
        status_p99_ms=_percentile(status_times, 99) * 1000,
        rpc_p50_ms=_percentile(all_times, 50) * 1000,
        rpc_p99_ms=_percentile(all_times, 99) * 1000,
        workchain_states=dict(wc_states),
        process_states=process_states,
        exceptions=exceptions,
        tasks_sent=len(futures),
        tasks_replied=replied,
        tasks_lost=(len(futures) - replied)
        + broker_stats.pending
        + broker_stats.in_flight
        + broker_stats.dead_letters,
        broker_pending=broker_stats.pending,
        broker_in_flight=broker_stats.in_flight,
        broker_dead_letters=broker_stats.dead_letters,
        redeliveries=queue.redeliveries if queue is not None else 0,
        timed_out=timed_out,
        killed_at_timeout=killed_at_timeout,
        stalls=watchdog.reports,
        per_worker=per_worker,
    )
