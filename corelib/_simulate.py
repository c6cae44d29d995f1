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
import random
import statistics as stats
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import IO, Any, Literal, final

import anyio
import attrs

from broker import BlockingCommunicator, BroadcastFilter, MemoryBroker, UnroutableError

from ._control import TERMINAL_SUBJECT_STATES, submit_remote
from ._process import Process
from ._spec import ProcessSpec
from ._workchain import ToContext, WorkChain, WorkChainSpec, while_
from ._worker import Backend, LocalCluster

_OUTSTANDING = 16

__all__ = ["SimChain", "SimChild", "SimulationConfig", "SimulationResult", "simulate"]


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


@final
@attrs.frozen
class SimulationConfig:
    """What to simulate.

    Attributes:
        workchains: how many WorkChains to launch.
        workers: how many worker threads.
        backend: the workers' loops; ``"mixed"`` alternates asyncio and trio.
        rounds: rounds (each one local and one remote child) per WorkChain.
        seed: seeds every random choice (the thread interleaving still varies).
        duration: the most seconds to run; what is left then is killed.
        storm_threads: controller threads sending random control RPCs.
        kill_fraction: the share of storm messages that are kills.
    """

    workchains: int = 2000
    workers: int = 4
    backend: BackendChoice = "mixed"
    rounds: int = 3
    seed: int = 0
    duration: float = 60.0
    storm_threads: int = 2
    kill_fraction: float = 0.01


@final
@attrs.frozen
class SimulationResult:
    """What happened; :meth:`to_dict` is the ``--json`` output."""

    config: SimulationConfig
    elapsed: float
    processes: int
    processes_per_second: float
    rpc_count: int
    rpc_unreachable: int
    rpc_p50_ms: float
    rpc_p99_ms: float
    status_p50_ms: float
    status_p99_ms: float
    workchain_states: dict[str, int]
    process_states: dict[str, int]
    tasks_sent: int
    tasks_replied: int
    tasks_lost: int
    broker_pending: int
    broker_in_flight: int
    broker_dead_letters: int
    redeliveries: int
    timed_out: bool
    per_worker: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    def table(self) -> str:
        """The summary as an aligned text table."""
        rows = [
            ("workers", f"{self.config.workers} ({self.config.backend})"),
            ("workchains", str(self.config.workchains)),
            ("processes", str(self.processes)),
            ("elapsed", f"{self.elapsed:.2f} s"),
            ("processes/s", f"{self.processes_per_second:,.0f}"),
            ("control RPCs", f"{self.rpc_count} ({self.rpc_unreachable} unreachable)"),
            ("status RPC latency p50", f"{self.status_p50_ms:.3f} ms"),
            ("status RPC latency p99", f"{self.status_p99_ms:.3f} ms"),
            ("control RPC latency p50", f"{self.rpc_p50_ms:.3f} ms (pauses wait for a step end)"),
            ("control RPC latency p99", f"{self.rpc_p99_ms:.3f} ms"),
            ("workchain states", _counts(self.workchain_states)),
            ("process states", _counts(self.process_states)),
            ("launches per worker", _counts(self.per_worker)),
            ("tasks sent/replied", f"{self.tasks_sent}/{self.tasks_replied}"),
            ("redeliveries", str(self.redeliveries)),
            (
                "broker at the end",
                f"pending {self.broker_pending}, in flight {self.broker_in_flight}, "
                f"dead letters {self.broker_dead_letters}",
            ),
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
    """Counts state broadcasts; keeps the set of live pids for the storm."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.live: list[str] = []
        self._index: dict[str, int] = {}
        self.final: Counter[str] = Counter()

    def __call__(self, _comm: Any, body: Any, sender: Any, subject: Any, _cid: Any) -> None:
        if not isinstance(subject, str) or not isinstance(sender, str):
            return
        to = subject.rsplit(".", 1)[-1]
        with self.lock:
            if subject.startswith("state_changed.None."):
                self._index[sender] = len(self.live)
                self.live.append(sender)
            elif to in TERMINAL_SUBJECT_STATES:
                self.final[to] += 1
                i = self._index.pop(sender, None)
                if i is not None:  # swap-remove
                    last = self.live.pop()
                    if last != sender:
                        self.live[i] = last
                        self._index[last] = i

    def pick(self, rng: random.Random) -> str | None:
        with self.lock:
            return rng.choice(self.live) if self.live else None


def _storm(
    comm: BlockingCommunicator,
    monitor: _Monitor,
    stop: threading.Event,
    rng: random.Random,
    kill_fraction: float,
    latencies: list[tuple[str, float]],
    counts: Counter[str],
) -> None:
    """Send random control RPCs, at most ``_OUTSTANDING`` unanswered at once.

    Replies are not waited for in this thread: a pause of a WorkChain that awaits a child
    answers only once the child ended, and the child may be paused too.
    """
    intents = ["status", "pause", "play", "kill"]
    rest = (1.0 - kill_fraction) / 3
    weights = [rest, rest, rest, kill_fraction]
    slots = threading.BoundedSemaphore(_OUTSTANDING)
    lock = threading.Lock()

    def answered(intent: str, start: float, future: Any) -> None:
        latency = time.perf_counter() - start
        slots.release()
        with lock:
            if future.cancelled() or future.exception() is not None:
                counts["failed"] += 1
            else:
                latencies.append((intent, latency))
                counts[intent] += 1

    while not stop.is_set():
        pid = monitor.pick(rng)
        if pid is None or not slots.acquire(timeout=0.05):
            continue
        intent = rng.choices(intents, weights)[0]
        msg = {"intent": intent, "message": "storm", "force_kill": False}
        start = time.perf_counter()
        try:
            future = comm.rpc_send_future(pid, msg)
        except UnroutableError:
            slots.release()
            with lock:
                counts["unreachable"] += 1
            continue
        future.add_done_callback(functools.partial(answered, intent, start))


def _progress(out: IO[str], done: int, total: int, elapsed: float, rpcs: int) -> None:
    width = 30
    filled = int(width * done / total) if total else width
    bar = "#" * filled + "." * (width - filled)
    out.write(f"\r[{bar}] {done}/{total} workchains  {elapsed:5.1f} s  {rpcs} control RPCs")
    out.flush()


def _wait_all(futures: list[Any], timeout: float) -> bool:
    done, _ = concurrent.futures.wait(futures, timeout)
    return len(done) == len(futures)


def _backends(choice: BackendChoice) -> tuple[Backend, ...]:
    if choice == "mixed":
        return ("asyncio", "trio")
    return (choice,)


def simulate(
    config: SimulationConfig,
    *,
    progress: IO[str] | None = None,
    on_tick: Callable[[int, int], None] | None = None,
) -> SimulationResult:
    """Run the simulation from a plain thread and return its result.

    Args:
        config: what to simulate.
        progress: where to draw a progress bar (e.g. ``sys.stderr``); none when ``None``.
        on_tick: called about ten times a second with (workchains done, total).
    """
    rng = random.Random(config.seed)
    broker = MemoryBroker(strict=True)
    monitor = _Monitor()
    latencies: list[tuple[str, float]] = []
    counts: Counter[str] = Counter()
    stop_storm = threading.Event()
    timed_out = False
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
            threading.Thread(
                target=_storm,
                args=(
                    comm,
                    monitor,
                    stop_storm,
                    random.Random(rng.random()),
                    config.kill_fraction,
                    latencies,
                    counts,
                ),
                name=f"storm-{i}",
                daemon=True,
            )
            for i, comm in enumerate(storm_comms)
        ]
        start = time.perf_counter()
        futures = [
            ctl.launch_future(
                SimChain, {"rounds": config.rounds, "seed": config.seed * 100_000 + i}
            )
            for i in range(config.workchains)
        ]
        for storm in storms:
            storm.start()
        deadline = start + config.duration
        try:
            while True:
                done = sum(f.done() for f in futures)
                if progress is not None:
                    _progress(
                        progress,
                        done,
                        len(futures),
                        time.perf_counter() - start,
                        sum(counts.values()),
                    )
                if on_tick is not None:
                    on_tick(done, len(futures))
                if done == len(futures):
                    break
                if time.perf_counter() > deadline:
                    timed_out = True
                    break
                time.sleep(0.1)
        finally:
            stop_storm.set()
            for storm in storms:
                storm.join(30)
            for comm in storm_comms:
                comm.close()
        if timed_out:
            ctl.kill_all("simulation timed out", force=True)
        # Pauses sent by the storm may still be taking effect (at the end of a step): play
        # everyone until every workchain is back.
        end_by = time.perf_counter() + 30
        while time.perf_counter() < end_by:
            ctl.play_all()
            if _wait_all(futures, 0.2):
                break
        elapsed = time.perf_counter() - start
        if progress is not None:
            _progress(
                progress,
                sum(f.done() for f in futures),
                len(futures),
                elapsed,
                sum(counts.values()),
            )
            progress.write("\n")
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
        processes = sum(process_states.values())
        per_worker = {w.name: w.launched for w in cluster_stats.workers}
        broker_stats = cluster_stats.broker
    all_times = [t for _, t in latencies]
    status_times = [t for intent, t in latencies if intent == "status"]
    return SimulationResult(
        config=config,
        elapsed=elapsed,
        processes=processes,
        processes_per_second=processes / elapsed if elapsed else 0.0,
        rpc_count=len(latencies),
        status_p50_ms=_percentile(status_times, 50) * 1000,
        status_p99_ms=_percentile(status_times, 99) * 1000,
        rpc_unreachable=counts["unreachable"],
        rpc_p50_ms=_percentile(all_times, 50) * 1000,
        rpc_p99_ms=_percentile(all_times, 99) * 1000,
        workchain_states=dict(wc_states),
        process_states=process_states,
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
        per_worker=per_worker,
    )
