"""Chaos trials: seeded storms of faults against a cluster of workers (issue #12).

Theory of operation
-------------------
A *trial* (:func:`run_trial`) is one seeded run. Everything random in it comes from
``random.Random(config.seed)`` and is drawn up front into a *plan* (:func:`_plan`): which
tasks are sent with which inputs, which of them are poison, the control traffic, which
faults strike and where, and the small gaps between actions. The plan is then carried out
from the calling thread, a plain thread without an event loop:

- **sends**: ``execute`` tasks of :class:`~corelib.testing._chaos_procs.ChaosChain`,
  :class:`~corelib.testing._chaos_procs.ChaosParent` (which launches children through the
  queue) and :class:`~corelib.testing._chaos_procs.ChaosLeaf`; *poison steps*
  (:class:`~corelib.testing._chaos_procs.PoisonStep` raising ``ValueError``, ``SystemExit``,
  ``KeyboardInterrupt``, ``GeneratorExit`` or a bare ``BaseException``, sync and async); and
  *poison payloads* sent raw through the communicator (see :data:`PAYLOADS`);
- **control**: ``pause``/``play``/``kill`` RPCs to pids sent so far, and ``play`` broadcasts;
- **faults**: whatever the cluster can inject (:attr:`ChaosCluster.fault_kinds`); the
  in-memory cluster crashes or stops a worker (and starts a fresh one in its place) or opens
  a *dying consumer*: a plain task subscriber on its own communicator that takes one task
  and is closed without answering it, so the broker redelivers the task.

After every action the cluster is *ticked* (:meth:`ChaosCluster.tick`): dying consumers that
took their task are closed, and a worker that died on its own (not crashed or stopped by the
trial) is recorded as *lost* and replaced, so that one lost worker costs one failed
assertion, not a trial that hangs. Then the trial *drains*: it waits for every reply
(ticking, and broadcasting ``play`` so that nothing stays paused), up to ``config.timeout``
seconds after the trial began, and then for the broker to hold nothing pending or in
flight.

The threads are real, so their interleaving is not seeded: re-running a seed replays the
same workload and fault schedule, not the same thread schedule. A failing seed usually
fails again within a few runs; every report says which seed to re-run.

What a :class:`TrialReport` counts, and how
-------------------------------------------
- **lost**: senders (tasks and RPCs) not answered within the timeout, plus tasks left
  pending or in flight in the broker after draining. A send refused at once (a
  ``CodecError`` for a payload too deep for the codec, an ``UnroutableError`` for an RPC to
  an unknown pid) is answered *at the send*. A dead-lettered task is answered (its sender
  gets ``DeadLetteredError``); dead letters are reported on their own.
- **duplicated replies**: delivery is at-least-once, so a task may be worked on by two
  consumers (its first consumer went away, the broker requeued it). The sender's future can
  only be resolved once, so a second answer can't be *seen* there; it is a reply the broker
  drops because the task was already answered (or dead-lettered). The in-memory cluster
  counts those: a task completed by more than one attempt (see :class:`_ReplyAudit`).
  Separately, **processes ended twice**: a monitor counts, per pid, the terminal state
  broadcasts (``state_changed.*.finished|excepted|killed``); a process whose end was
  announced more than once ran to its end twice (an abandoned process is muted, so its
  "killed by cancellation" is never announced). Both must be 0.
- **workers lost**: workers that died without the trial crashing or stopping them: to a
  payload, a step, or anything else. Must be 0.
- **step violations**: a ChaosChain step that ran while the persister already held a
  checkpoint showing it done (:class:`~corelib.testing._chaos_procs.StepLedger`). Must be
  0. (A step re-run *without* its checkpoint written is allowed: at-least-once.)
- **unexpected outcomes**: an answer that contradicts what was sent: a ChaosChain that did
  not finish with ``i == n`` (and was neither killed by the trial nor dead-lettered), a
  poison step that did not end EXCEPTED with its own exception, a poison payload not
  answered with the error it must get. Must be empty.
- **incidents**: anything else that went wrong around the trial (a worker that would not
  stop in time). Must be empty.

The cluster side is :class:`ChaosCluster`, the seam for other brokers: the engine only
sends through controllers the cluster gives it, and asks the cluster to inject faults, to
tick, and for its counts. :class:`MemoryChaosCluster` runs workers on a strict
:class:`~broker.MemoryBroker`; a RabbitMQ cluster (workers on ``AmqpCommunicator``, with
connection drops through a TCP proxy as another fault kind) plugs in the same way.
"""

from __future__ import annotations

import abc
import concurrent.futures
import random
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Final, final

import anyio
import attrs

from broker import (
    BlockingCommunicator,
    BroadcastFilter,
    DeadLetteredError,
    MemoryBroker,
    RemoteError,
)

from ..cluster import Worker
from ..control import BlockingProcessController, launch_body
from ..persistence import InMemoryPersister, Persister, SqlitePersister
from ._chaos_procs import (
    POISONS,
    ChaosChain,
    ChaosLeaf,
    ChaosParent,
    PoisonStep,
    StepLedger,
    WatchingPersister,
    installed_ledger,
)

__all__ = [
    "ChaosConfig",
    "TrialReport",
    "ChaosSummary",
    "ChaosCluster",
    "MemoryChaosCluster",
    "run_trial",
    "run_trials",
    "WORKLOADS",
    "PAYLOADS",
    "STEP_POISONS",
]

#: Well-behaved execute tasks, by label.
WORKLOADS: Final = ("chain", "parent", "leaf")

#: Poison steps: ``step:<exception>:<sync|async>``.
STEP_POISONS: Final = tuple(f"step:{kind}:{mode}" for kind in POISONS for mode in ("sync", "async"))

#: Poison payloads sent raw through the communicator, and what must answer each.
PAYLOADS: Final[Mapping[str, str]] = {
    "unknown-task-type": "RemoteError InvalidTaskError",
    "not-a-dict": "RemoteError InvalidTaskError",
    "unknown-class": "RemoteError UnknownClassError",
    "forbidden-class": "RemoteError ForbiddenClassError",
    "bad-inputs": "RemoteError PortValidationError",
    "deep-inputs-90": "RemoteError PortValidationError",
    "deep-inputs-150": "CodecError at the send",
    "deep-broadcast": "CodecError at the send",
    "rpc-unknown-pid": "UnroutableError at the send",
    "bad-intent-rpc": "",  # any answer: the pid may be live or gone
    "bad-pause-broadcast": "",  # no reply: a broadcast; pauses everything, played later
}

_FAULTS_MEMORY: Final = ("crash", "stop", "dying-consumer")

# how long a dying consumer stays open (in ticks) when it takes no task
_DYING_TICKS: Final = 4
# how often the drain re-sends `play` and ticks the cluster while replies are missing
_DRAIN_POLL: Final = 0.2
# control actions target one of the last this many pids sent
_RECENT: Final = 6
# the labels of senders that are RPCs, not tasks
_RPC_LABELS: Final = frozenset({"pause", "play", "kill", "rpc-unknown-pid", "bad-intent-rpc"})


# -- configuration -----------------------------------------------------------------------------


def _strs(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _check_backends(_inst: Any, _attr: Any, value: tuple[str, ...]) -> None:
    if not value or any(b not in ("asyncio", "trio") for b in value):
        raise ValueError(f"backends must name 'asyncio' and/or 'trio', got {value!r}")


def _check_persister(_inst: Any, _attr: Any, value: str) -> None:
    if value not in ("memory", "sqlite"):
        raise ValueError(f"persister must be 'memory' or 'sqlite', got {value!r}")


def _check_rate(_inst: Any, attr: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attr.name} must be between 0 and 1, got {value!r}")


def _check_int(minimum: int) -> Callable[[Any, attrs.Attribute[int], int], None]:
    def check(_inst: Any, attr: attrs.Attribute[int], value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{attr.name} must be an int >= {minimum}, got {value!r}")

    return check


def _check_seconds(_inst: Any, attr: attrs.Attribute[float], value: float) -> None:
    if not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise ValueError(f"{attr.name} must be a finite number of seconds >= 0, got {value!r}")


@final
@attrs.frozen
class ChaosConfig:
    """What one chaos trial does; every field but ``seed`` has a default.

    Attributes:
        seed: seeds everything random in the trial.
        workers: how many workers run at once (a crashed or stopped one is replaced).
        backends: the workers' event loops, assigned round-robin as they are made.
        tasks: how many sends (well-behaved tasks, poison steps and poison payloads).
        poison_rate: the share of sends that are poison (half steps, half payloads).
        control_rate: the chance of a control action (pause, play, kill, ...) after a send.
        faults: how many faults strike during the sends.
        fault_kinds: which kinds (the cluster's :attr:`ChaosCluster.fault_kinds`).
        max_redeliveries: the broker's: a task whose consumers went away more often is
            dead-lettered (answered with ``DeadLetteredError``).
        persister: ``"memory"`` or ``"sqlite"`` (a file in a temporary folder).
        prefetch: each worker's prefetch (0: no limit).
        step_delay: a ChaosChain step sleeps up to this many seconds (the work a worker
            may die in).
        gap: up to this many seconds pass between two actions.
        timeout: seconds from the trial's start by which every sender must be answered.
    """

    seed: int = attrs.field(validator=_check_int(-(2**63)))
    workers: int = attrs.field(default=3, validator=_check_int(1))
    backends: tuple[str, ...] = attrs.field(
        default=("asyncio", "trio"), converter=_strs, validator=_check_backends
    )
    tasks: int = attrs.field(default=40, validator=_check_int(1))
    poison_rate: float = attrs.field(default=0.2, validator=_check_rate)
    control_rate: float = attrs.field(default=0.15, validator=_check_rate)
    faults: int = attrs.field(default=6, validator=_check_int(0))
    fault_kinds: tuple[str, ...] = attrs.field(default=_FAULTS_MEMORY, converter=_strs)
    max_redeliveries: int = attrs.field(default=20, validator=_check_int(0))
    persister: str = attrs.field(default="memory", validator=_check_persister)
    prefetch: int = attrs.field(default=0, validator=_check_int(0))
    step_delay: float = attrs.field(default=0.005, validator=_check_seconds)
    gap: float = attrs.field(default=0.005, validator=_check_seconds)
    timeout: float = attrs.field(default=30.0, validator=_check_seconds)

    @fault_kinds.validator
    def _check_fault_kinds(self, _attr: Any, value: tuple[str, ...]) -> None:
        if self.faults and not value:
            raise ValueError("fault_kinds must name at least one kind when faults > 0")


# -- the report --------------------------------------------------------------------------------


@final
@attrs.frozen
class TrialReport:
    """What one trial sent, what answered, and what went wrong (see the module docstring).

    Attributes:
        seed: the trial's seed (re-run it with ``attrs.evolve(config, seed=seed)``).
        config: the trial's configuration.
        sent: senders that must be answered: tasks, RPCs, and sends refused at once.
        tasks: how many of them were tasks.
        answered: senders answered (at the send, or by a reply within the timeout).
        outcomes: answers by kind (``finished``, ``excepted``, ``killed``, ``dead-lettered``,
            ``RemoteError <type>``, ``<error> at the send``, ``control reply``...).
        faults: faults injected, by kind (poison sends and control actions included).
        fault_effects: what the cluster counted of their effects (e.g. tasks that dying
            consumers took).
        unanswered: the senders never answered (label and pid).
        left_in_broker: tasks pending or in flight in the broker after draining.
        duplicated_replies: replies dropped because their task was already answered.
        ended_twice: pids whose end was announced more than once, with the count.
        workers_lost: workers that died without the trial crashing or stopping them.
        step_violations: checkpointed steps that ran again, as ``pid step i (saved i)``.
        step_reruns: steps re-run before their checkpoint was written (allowed).
        dead_letters: tasks dead-lettered by the broker.
        unexpected: answers that contradict what was sent.
        incidents: anything else that went wrong (a worker that would not stop).
        elapsed: the trial's wall time in seconds.
    """

    seed: int
    config: ChaosConfig
    sent: int
    tasks: int
    answered: int
    outcomes: Mapping[str, int]
    faults: Mapping[str, int]
    fault_effects: Mapping[str, int]
    unanswered: tuple[str, ...]
    left_in_broker: int
    duplicated_replies: int
    ended_twice: tuple[str, ...]
    workers_lost: tuple[str, ...]
    step_violations: tuple[str, ...]
    step_reruns: int
    dead_letters: int
    unexpected: tuple[str, ...]
    incidents: tuple[str, ...]
    elapsed: float

    @property
    def lost(self) -> int:
        """Senders never answered, plus the tasks left in the broker that none of them
        accounts for (an unanswered task's sender and its task in flight are one loss)."""
        tasks = sum(1 for u in self.unanswered if u.split(" ", 1)[0] not in _RPC_LABELS)
        return len(self.unanswered) + max(0, self.left_in_broker - tasks)

    @property
    def faults_injected(self) -> int:
        return sum(self.faults.values())

    def problems(self) -> tuple[str, ...]:
        """One line per broken promise; empty when the trial passed."""
        out = []
        if self.lost:
            out.append(
                f"lost {self.lost}: unanswered {list(self.unanswered)[:10]},"
                f" left in the broker {self.left_in_broker}"
            )
        if self.duplicated_replies:
            out.append(f"duplicated replies {self.duplicated_replies}")
        if self.ended_twice:
            out.append(f"processes ended twice: {list(self.ended_twice)[:10]}")
        if self.workers_lost:
            out.append(f"workers lost {len(self.workers_lost)}: {list(self.workers_lost)[:5]}")
        if self.step_violations:
            out.append(f"step violations: {list(self.step_violations)[:10]}")
        if self.unexpected:
            out.append(f"unexpected outcomes {len(self.unexpected)}: {list(self.unexpected)[:10]}")
        if self.incidents:
            out.append(f"incidents: {list(self.incidents)[:5]}")
        return tuple(out)

    @property
    def ok(self) -> bool:
        return not self.problems()

    def line(self) -> str:
        """A one-line summary."""
        return (
            f"seed={self.seed} sent={self.sent} answered={self.answered} lost={self.lost}"
            f" dup={self.duplicated_replies + len(self.ended_twice)}"
            f" workers_lost={len(self.workers_lost)}"
            f" violations={len(self.step_violations)} dead={self.dead_letters}"
            f" faults={self.faults_injected} unexpected={len(self.unexpected)}"
            f" {self.elapsed:.2f}s"
        )

    def failure_message(self) -> str:
        """The report as an assertion message: what broke, and the seed to re-run."""
        lines = [f"chaos trial failed; re-run with seed={self.seed} ({self.config!r})"]
        lines += [f"  {p}" for p in self.problems()]
        lines.append(f"  {self.line()}")
        lines.append(f"  outcomes {dict(self.outcomes)}")
        lines.append(f"  faults {dict(self.faults)}, effects {dict(self.fault_effects)}")
        return "\n".join(lines)


@final
@attrs.frozen
class ChaosSummary:
    """Totals over many trials (:meth:`of`)."""

    trials: int
    failed_seeds: tuple[int, ...]
    sent: int
    tasks: int
    answered: int
    lost: int
    duplicated_replies: int
    ended_twice: int
    workers_lost: int
    step_violations: int
    step_reruns: int
    dead_letters: int
    unexpected: int
    incidents: int
    faults: Mapping[str, int]
    fault_effects: Mapping[str, int]
    outcomes: Mapping[str, int]
    elapsed: float

    @classmethod
    def of(cls, reports: Iterable[TrialReport]) -> ChaosSummary:
        reports = tuple(reports)
        faults: Counter[str] = Counter()
        effects: Counter[str] = Counter()
        outcomes: Counter[str] = Counter()
        for r in reports:
            faults.update(r.faults)
            effects.update(r.fault_effects)
            outcomes.update(r.outcomes)
        return cls(
            trials=len(reports),
            failed_seeds=tuple(r.seed for r in reports if not r.ok),
            sent=sum(r.sent for r in reports),
            tasks=sum(r.tasks for r in reports),
            answered=sum(r.answered for r in reports),
            lost=sum(r.lost for r in reports),
            duplicated_replies=sum(r.duplicated_replies for r in reports),
            ended_twice=sum(len(r.ended_twice) for r in reports),
            workers_lost=sum(len(r.workers_lost) for r in reports),
            step_violations=sum(len(r.step_violations) for r in reports),
            step_reruns=sum(r.step_reruns for r in reports),
            dead_letters=sum(r.dead_letters for r in reports),
            unexpected=sum(len(r.unexpected) for r in reports),
            incidents=sum(len(r.incidents) for r in reports),
            faults=dict(sorted(faults.items())),
            fault_effects=dict(sorted(effects.items())),
            outcomes=dict(sorted(outcomes.items())),
            elapsed=sum(r.elapsed for r in reports),
        )


# -- the cluster seam --------------------------------------------------------------------------


class ChaosCluster(abc.ABC):
    """The cluster side of a trial: workers on some broker, and the faults it can inject.

    The engine calls :meth:`start`, then, from its own thread, :meth:`controller` (a
    controller on a communicator of its own, for sends and for the monitor),
    :meth:`inject` and :meth:`tick` while it works, the counting methods at the end, and
    :meth:`close`. Implementations are built as ``cluster(config, persister)``.
    """

    #: the fault kinds :meth:`inject` knows
    fault_kinds: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def start(self) -> None:
        """Start ``config.workers`` workers; returns once they consume tasks."""

    @abc.abstractmethod
    def controller(self) -> BlockingProcessController:
        """A controller on a communicator of its own (closed by :meth:`close`)."""

    @abc.abstractmethod
    def inject(self, kind: str, pick: float) -> None:
        """Inject a fault of ``kind``; ``pick`` in [0, 1) chooses its target."""

    @abc.abstractmethod
    def tick(self) -> None:
        """Between actions: end faults that have run their course, replace lost workers."""

    @abc.abstractmethod
    def left_in_broker(self) -> int:
        """Tasks pending or in flight now (dead letters excluded)."""

    @abc.abstractmethod
    def dead_letters(self) -> int:
        """Tasks dead-lettered so far."""

    @abc.abstractmethod
    def duplicated_replies(self) -> int:
        """Replies dropped because their task was already answered (or dead-lettered)."""

    @abc.abstractmethod
    def workers_lost(self) -> tuple[str, ...]:
        """Workers that died without being crashed or stopped, with why."""

    @abc.abstractmethod
    def fault_counts(self) -> Mapping[str, int]:
        """Counts the cluster keeps about its faults (e.g. tasks dying consumers took)."""

    @abc.abstractmethod
    def incidents(self) -> tuple[str, ...]:
        """Anything else that went wrong (a worker that would not stop in time)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop every worker and close every communicator. Idempotent."""


@final
class _ReplyAudit:
    """Counts the completions a :class:`~broker.MemoryBroker` drops.

    The broker answers a task's sender once, on the first attempt that completes, and
    silently ignores any later completion of the same task (an attempt whose consumer went
    away and which finished anyway, or a task dead-lettered meanwhile); it keeps no count of
    them. This audit stands in the broker's ``complete`` (on this one broker instance, owned
    by the trial) and counts completions per task; at the end, a task completed ``n`` times
    dropped ``n - 1`` replies (``n`` if it was dead-lettered).
    """

    __slots__ = ("_complete", "_lock", "_tasks")

    def __init__(self, broker: MemoryBroker) -> None:
        self._complete = broker.complete
        self._lock = threading.Lock()
        self._tasks: Counter[Any] = Counter()
        broker.complete = self  # type: ignore[method-assign]

    def __call__(self, attempt: Any, ok: bool, value: Any) -> None:
        with self._lock:
            self._tasks[attempt.task] += 1
        self._complete(attempt, ok, value)

    def dropped(self) -> int:
        with self._lock:
            counts = tuple(self._tasks.items())
        # the broker's task record: its state is "dead" once dead-lettered
        return sum(n if getattr(t, "state", None) == "dead" else n - 1 for t, n in counts)


@final
class _DyingConsumer:
    """A task subscriber that takes one task and never answers; closed by the trial."""

    __slots__ = ("_comm", "age", "took")

    def __init__(self, broker: MemoryBroker, backend: str, name: str) -> None:
        self.took = threading.Event()
        self.age = 0
        self._comm = BlockingCommunicator(broker, backend=backend, name=name)  # type: ignore[arg-type]
        self._comm.add_task_subscriber(self._take, prefetch=1)

    async def _take(self, _comm: Any, _task: Any) -> Any:
        self.took.set()
        await anyio.sleep_forever()

    def close(self) -> None:
        self._comm.close()


@final
class MemoryChaosCluster(ChaosCluster):
    """Worker threads on a strict :class:`~broker.MemoryBroker` (see the module docstring).

    Faults: ``crash`` and ``stop`` a worker (:meth:`~corelib.Worker.crash`,
    :meth:`~corelib.Worker.stop`; a fresh worker takes its place at once), and
    ``dying-consumer``.
    """

    fault_kinds: ClassVar[tuple[str, ...]] = _FAULTS_MEMORY

    def __init__(self, config: ChaosConfig, persister: Persister) -> None:
        self.broker = MemoryBroker(strict=True, max_redeliveries=config.max_redeliveries)
        self._audit = _ReplyAudit(self.broker)
        self._config = config
        self._persister = persister
        self._workers: list[Worker] = []
        self._retired: list[Worker] = []  # crashed or stopped by the trial
        self._lost: list[str] = []
        self._incidents: list[str] = []
        self._made = 0
        self._dying: list[_DyingConsumer] = []
        self._dying_made = 0
        self._took = 0
        self._clients: list[BlockingCommunicator] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"<MemoryChaosCluster {len(self._workers)} workers>"

    def _new_worker(self) -> Worker:
        n = self._made
        self._made += 1
        backends = self._config.backends
        worker = Worker(
            self.broker,
            backend=backends[n % len(backends)],  # type: ignore[arg-type]
            persister=self._persister,
            prefetch=self._config.prefetch,
            name=f"chaos-w{n}",
        )
        worker.start()
        return worker

    def start(self) -> None:
        for _ in range(self._config.workers):
            self._workers.append(self._new_worker())

    def controller(self) -> BlockingProcessController:
        comm = BlockingCommunicator(self.broker, name=f"chaos-client-{len(self._clients)}")
        self._clients.append(comm)
        return BlockingProcessController(comm)

    def inject(self, kind: str, pick: float) -> None:
        if kind in ("crash", "stop"):
            i = int(pick * len(self._workers))
            victim = self._workers[i]
            self._retired.append(victim)
            if kind == "crash":
                victim.crash()
            else:
                self._stop(victim)
            self._workers[i] = self._new_worker()
        elif kind == "dying-consumer":
            n = self._dying_made
            self._dying_made += 1
            backend = self._config.backends[int(pick * len(self._config.backends))]
            self._dying.append(_DyingConsumer(self.broker, backend, f"chaos-dying-{n}"))
        else:
            raise ValueError(f"unknown fault kind {kind!r}; this cluster has {self.fault_kinds}")

    def _stop(self, worker: Worker) -> None:
        try:
            worker.stop()
        except TimeoutError as exc:
            self._incidents.append(str(exc))

    def tick(self) -> None:
        keep = []
        for dying in self._dying:
            dying.age += 1
            if dying.took.is_set() or dying.age >= _DYING_TICKS:
                self._took += dying.took.is_set()
                dying.close()
            else:
                keep.append(dying)
        self._dying = keep
        for i, worker in enumerate(self._workers):
            if not worker.alive:
                # not crashed or stopped by the trial: it died of what it ran
                why = getattr(worker, "_error", None)
                self._lost.append(f"{worker.name} ({worker.backend}): {why!r}")
                self._workers[i] = self._new_worker()

    def left_in_broker(self) -> int:
        stats = self.broker.statistics()
        return stats.pending + stats.in_flight

    def dead_letters(self) -> int:
        return len(self.broker.dead_letters())

    def duplicated_replies(self) -> int:
        return self._audit.dropped()

    def workers_lost(self) -> tuple[str, ...]:
        return tuple(self._lost)

    def fault_counts(self) -> Mapping[str, int]:
        return {"dying-consumer took a task": self._took}

    def incidents(self) -> tuple[str, ...]:
        return tuple(self._incidents)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for dying in self._dying:
            self._took += dying.took.is_set()
            dying.close()
        self._dying = []
        for worker in self._workers:
            worker.crash()  # posts the stop to every worker first: they stop in parallel
        for worker in self._workers + self._retired:
            self._stop(worker)
        for client in self._clients:
            client.close()


# -- the plan ----------------------------------------------------------------------------------


@final
@attrs.frozen
class _Action:
    kind: str  # "send", "control" or "fault"
    name: str  # the send's label, the control intent, or the fault kind
    gap: float  # seconds to let pass before it
    pick: float  # in [0, 1): chooses a target
    inputs: Mapping[str, Any] = attrs.field(factory=dict)


def _plan(config: ChaosConfig, rng: random.Random) -> list[_Action]:
    """Draw every action of a trial from ``rng``, in order."""

    def gap() -> float:
        return rng.uniform(0.0, config.gap)

    fault_at = Counter(rng.randrange(config.tasks) for _ in range(config.faults))
    actions: list[_Action] = []
    play_later: list[int] = []  # play broadcasts due after the bad pause broadcasts
    for n in range(config.tasks):
        actions.extend(
            _Action("fault", rng.choice(config.fault_kinds), gap(), rng.random())
            for _ in range(fault_at[n])
        )
        if rng.random() < config.poison_rate:
            if rng.random() < 0.5:
                label = rng.choice(STEP_POISONS)
                _step, kind, mode = label.split(":")
                inputs: dict[str, Any] = {"kind": kind, "asynchronous": mode == "async"}
            else:
                label = rng.choice(tuple(PAYLOADS))
                inputs = {}
                if label == "bad-pause-broadcast":
                    play_later.append(n + rng.randint(1, 3))
        else:
            label = rng.choice(WORKLOADS)
            if label == "chain":
                inputs = {
                    "n": rng.randint(2, 5),
                    "delay": round(rng.uniform(0, config.step_delay), 4),
                }
            elif label == "parent":
                inputs = {"n": rng.randint(1, 3)}
            else:
                inputs = {"x": rng.randint(0, 1000)}
        actions.append(_Action("send", label, gap(), rng.random(), inputs))
        if rng.random() < config.control_rate:
            intent = rng.choice(("pause", "pause", "play", "play", "kill"))
            actions.append(_Action("control", intent, gap(), rng.random()))
        while n in play_later:
            play_later.remove(n)
            actions.append(_Action("control", "play-all", gap(), 0.0))
    return actions


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


# -- the trial ---------------------------------------------------------------------------------


@attrs.define(eq=False)
class _Sender:
    label: str
    pid: str | None
    inputs: Mapping[str, Any]
    future: concurrent.futures.Future[Any] | None = None
    refused: BaseException | None = None  # what the send raised: answered at the send


def _outcome_kind(sender: _Sender) -> str | None:
    """How ``sender`` was answered (``None``: it was not)."""
    if sender.refused is not None:
        return f"{type(sender.refused).__name__} at the send"
    future = sender.future
    if future is None:
        return "sent"  # a broadcast: nothing answers it
    if not future.done():
        return None
    exc = future.exception()
    if exc is None:
        value = future.result()
        if isinstance(value, dict) and "state" in value:
            return str(value["state"])
        if isinstance(value, dict) and "done" in value:
            return "control reply"
        return "reply"
    if isinstance(exc, DeadLetteredError):
        return "dead-lettered"
    if isinstance(exc, RemoteError):
        return f"RemoteError {exc.type_name.rsplit('.', 1)[-1]}"
    return type(exc).__name__


def _unexpected(sender: _Sender, kind: str, killed: set[str]) -> str | None:
    """Why ``sender``'s answer (of ``kind``) contradicts what was sent; ``None`` if it
    doesn't."""
    label = sender.label
    if kind == "dead-lettered" or label in ("pause", "play", "kill", "bad-intent-rpc"):
        return None
    if label in PAYLOADS:
        return None if kind == PAYLOADS[label] else f"{label}: {kind}, not {PAYLOADS[label]}"
    if kind == "killed" and sender.pid in killed:
        return None
    assert sender.future is not None
    value = sender.future.result() if kind in ("finished", "excepted", "killed") else None
    what = f"{label} {sender.pid} {dict(sender.inputs)}"
    if label.startswith("step:"):
        raised = label.split(":")[1]
        if kind == "excepted":
            text = str(value.get("exception", "")) if isinstance(value, dict) else ""
            if text.split(":", 1)[0].rsplit(".", 1)[-1] == raised:
                return None
        return f"{what}: {kind} {_brief(value, sender)}, not excepted with {raised}"
    if kind == "finished":
        outputs = value.get("outputs") if isinstance(value, dict) else None
        expected = _expected_outputs(label, sender.inputs)
        return None if outputs == expected else f"{what}: outputs {outputs}, not {expected}"
    if label == "parent" and kind == "excepted":
        text = str(value.get("exception", "")) if isinstance(value, dict) else ""
        if "DeadLettered" in text:  # a child's launch task was dead-lettered
            return None
    return f"{what}: {kind} {_brief(value, sender)}"


def _brief(value: Any, sender: _Sender) -> str:
    if value is None and sender.future is not None and sender.future.done():
        exc = sender.future.exception()
        return "" if exc is None else f"({str(exc)[:200]})"
    if isinstance(value, dict):
        detail = value.get("exception") or value.get("message")
        return "" if detail is None else f"({str(detail)[:200]})"
    return ""


def _expected_outputs(label: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
    if label == "chain":
        return {"i": inputs["n"]}
    if label == "parent":
        n = inputs["n"]
        return {"total": n * (n - 1)}  # children x = 0 .. n-1, each y = 2x
    return {"y": 2 * inputs["x"]}


_CLASSES: Final[Mapping[str, type[Any]]] = {
    "chain": ChaosChain,
    "parent": ChaosParent,
    "leaf": ChaosLeaf,
}


@final
class _Trial:
    """Carries out one plan against one cluster (see the module docstring)."""

    def __init__(self, config: ChaosConfig, cluster: ChaosCluster) -> None:
        self._config = config
        self._cluster = cluster
        self._ctl = cluster.controller()
        self._senders: list[_Sender] = []
        self._faults: Counter[str] = Counter()
        self._pids: list[str] = []  # of the execute tasks, in the order sent
        self._paused: list[str] = []
        self._killed: set[str] = set()
        self._ends: Counter[str] = Counter()  # terminal announcements per pid
        self._ends_lock = threading.Lock()
        self._flushed = threading.Event()
        monitor = cluster.controller().communicator
        monitor.add_broadcast_subscriber(BroadcastFilter(self._on_state, subject="state_changed.*"))
        monitor.add_broadcast_subscriber(BroadcastFilter(self._on_flush, subject="chaos.flush"))
        self._monitor = monitor

    # -- the monitor (on its communicator's loop) -----------------------------------------

    def _on_state(self, _comm: Any, _body: Any, sender: Any, subject: Any, _cid: Any) -> None:
        if isinstance(subject, str) and subject.rsplit(".", 1)[-1] in (
            "finished",
            "excepted",
            "killed",
        ):
            with self._ends_lock:
                self._ends[str(sender)] += 1

    def _on_flush(self, *_args: Any) -> None:
        self._flushed.set()

    # -- acting ---------------------------------------------------------------------------

    def _track(
        self,
        label: str,
        pid: str | None,
        inputs: Mapping[str, Any],
        send: Callable[[], concurrent.futures.Future[Any] | None],
    ) -> None:
        sender = _Sender(label, pid, inputs)
        try:
            sender.future = send()
        except Exception as exc:
            sender.refused = exc
        self._senders.append(sender)

    def run(self, plan: Iterable[_Action]) -> None:
        for action in plan:
            if action.gap:
                time.sleep(action.gap)  # the workload's pace, drawn from the seed
            if action.kind == "send":
                self._send(action)
            elif action.kind == "control":
                self._control(action)
            else:
                self._faults[action.name] += 1
                self._cluster.inject(action.name, action.pick)
            self._cluster.tick()

    def _send(self, action: _Action) -> None:
        label, inputs = action.name, action.inputs
        comm = self._ctl.communicator
        if label in _CLASSES or label.startswith("step:"):
            if label.startswith("step:"):
                self._faults["poison step"] += 1
            cls = _CLASSES.get(label, PoisonStep)
            body = launch_body(cls, inputs, persist=True, task="execute")
            self._pids.append(body["pid"])
            self._track(label, body["pid"], inputs, lambda: comm.task_send_future(body))
            return
        self._faults["poison payload"] += 1
        if label == "bad-pause-broadcast":
            comm.broadcast_send({"intent": ["pause"], "message": {"not": "text"}}, subject="pause")
            return
        if label == "deep-broadcast":
            self._track(
                label,
                None,
                {},
                lambda: comm.broadcast_send(_nested(150), subject="chaos.deep"),
            )
            return
        if label == "rpc-unknown-pid":
            pid = f"chaos-nobody-{uuid.uuid4().hex}"
            self._track(label, pid, {}, lambda: self._ctl.status_future(pid))
            return
        if label == "bad-intent-rpc":
            pid = self._pick(action.pick) or f"chaos-nobody-{uuid.uuid4().hex}"
            msg = {"intent": "dance", "message": ["not", "text"]}
            self._track(label, pid, {}, lambda: self._ctl.rpc_future(pid, msg))
            return
        task: Any
        if label == "unknown-task-type":
            task = {"task": "dance", "pid": uuid.uuid4().hex}
        elif label == "not-a-dict":
            task = ["execute", "corelib.testing._chaos_procs:ChaosLeaf"]
        elif label == "unknown-class":
            task = launch_body(ChaosLeaf, {}, persist=True, task="execute")
            task["process_class"] = "corelib.testing._chaos_procs:NoSuchProcess"
        elif label == "forbidden-class":
            task = launch_body(ChaosLeaf, {}, persist=True, task="execute")
            task["process_class"] = "os:system"
        elif label == "bad-inputs":
            task = launch_body(ChaosLeaf, {"x": "not an int", "y": 1}, persist=True, task="execute")
        elif label == "deep-inputs-90":
            task = launch_body(ChaosLeaf, {"x": _nested(90)}, persist=True, task="execute")
        elif label == "deep-inputs-150":
            task = launch_body(ChaosLeaf, {"x": _nested(150)}, persist=True, task="execute")
        else:  # pragma: no cover - the plan draws from PAYLOADS
            raise AssertionError(f"unknown payload {label!r}")
        self._track(label, None, {}, lambda: comm.task_send_future(task))

    def _pick(self, pick: float) -> str | None:
        # among the last few pids sent: the older ones have mostly ended
        recent = self._pids[-_RECENT:]
        if not recent:
            return None
        return recent[int(pick * len(recent))]

    def _control(self, action: _Action) -> None:
        intent = action.name
        self._faults[intent] += 1
        if intent == "play-all":
            self._ctl.play_all()
            return
        if intent == "play" and self._paused:
            pid: str | None = self._paused.pop(0)
        else:
            pid = self._pick(action.pick)
        if pid is None:
            return
        ctl = self._ctl
        if intent == "pause":
            self._paused.append(pid)
            self._track(intent, pid, {}, lambda: ctl.pause_future(pid, "chaos"))
        elif intent == "play":
            self._track(intent, pid, {}, lambda: ctl.play_future(pid))
        else:
            self._killed.add(pid)
            self._track(intent, pid, {}, lambda: ctl.kill_future(pid, "chaos"))

    # -- draining -------------------------------------------------------------------------

    def drain(self, deadline: float) -> int:
        """Wait for every answer, then for an empty broker (until ``deadline``); returns
        the tasks left in the broker."""
        waiting = {s.future for s in self._senders if s.future is not None}
        while waiting:
            # nothing stays paused (a bad pause broadcast pauses everything, a pause RPC
            # may meet no play; a process continued from a paused checkpoint comes back
            # paused), and a worker lost meanwhile is replaced
            self._ctl.play_all()
            self._cluster.tick()
            left = deadline - time.monotonic()
            if left <= 0:
                break
            _done, waiting = concurrent.futures.wait(waiting, timeout=min(_DRAIN_POLL, left))
        # Children launched by parents that were killed meanwhile may still be queued:
        # a bounded poll of the broker's counts (nothing signals an empty queue).
        left_in_broker = self._cluster.left_in_broker()
        while left_in_broker and time.monotonic() < deadline:
            self._ctl.play_all()
            self._cluster.tick()
            time.sleep(0.01)
            left_in_broker = self._cluster.left_in_broker()
        # Every terminal broadcast sent so far reached the monitor's inbox before this one
        self._monitor.broadcast_send(None, subject="chaos.flush")
        self._flushed.wait(max(1.0, deadline - time.monotonic()))
        return left_in_broker

    def report(
        self, config: ChaosConfig, ledger: StepLedger, left_in_broker: int, elapsed: float
    ) -> TrialReport:
        cluster = self._cluster
        outcomes: Counter[str] = Counter()
        unanswered, unexpected = [], []
        for sender in self._senders:
            kind = _outcome_kind(sender)
            if kind is None:
                unanswered.append(f"{sender.label} {sender.pid}")
                continue
            outcomes[kind] += 1
            why = _unexpected(sender, kind, self._killed)
            if why is not None:
                unexpected.append(why)
        with self._ends_lock:
            ended_twice = tuple(f"{pid} x{n}" for pid, n in self._ends.items() if n > 1)
        return TrialReport(
            seed=config.seed,
            config=config,
            sent=len(self._senders),
            tasks=sum(
                1
                for s in self._senders
                if s.label not in _RPC_LABELS and s.label != "deep-broadcast"
            ),
            answered=len(self._senders) - len(unanswered),
            outcomes=dict(sorted(outcomes.items())),
            faults=dict(sorted(self._faults.items())),
            fault_effects=dict(sorted(cluster.fault_counts().items())),
            unanswered=tuple(unanswered),
            left_in_broker=left_in_broker,
            duplicated_replies=cluster.duplicated_replies(),
            ended_twice=ended_twice,
            workers_lost=cluster.workers_lost(),
            step_violations=tuple(
                f"{pid} step {i} (saved i={saved})" for pid, i, saved in ledger.violations
            ),
            step_reruns=ledger.reruns,
            dead_letters=cluster.dead_letters(),
            unexpected=tuple(unexpected),
            incidents=cluster.incidents(),
            elapsed=elapsed,
        )


def _open_persister(kind: str, folder: str) -> Persister:
    if kind == "sqlite":
        return SqlitePersister(Path(folder) / "chaos.sqlite")
    return InMemoryPersister()


ClusterFactory = Callable[[ChaosConfig, Persister], ChaosCluster]


def run_trial(config: ChaosConfig, *, cluster: ClusterFactory = MemoryChaosCluster) -> TrialReport:
    """Run one chaos trial (see the module docstring) and report on it.

    Call it from a thread without an event loop; trials run one at a time (the steps'
    ledger is process-wide).

    Args:
        config: what the trial does; ``config.seed`` seeds all of it.
        cluster: makes the cluster, as ``cluster(config, persister)``.

    Raises:
        ValueError: ``config.fault_kinds`` names a kind the cluster can't inject.
        RuntimeError: another trial runs in this interpreter.
    """
    unknown = set(config.fault_kinds) - set(getattr(cluster, "fault_kinds", config.fault_kinds))
    if unknown:
        raise ValueError(f"the cluster can't inject {sorted(unknown)}")
    start = time.monotonic()
    rng = random.Random(config.seed)
    plan = _plan(config, rng)
    ledger = StepLedger()
    with (
        installed_ledger(ledger),
        tempfile.TemporaryDirectory(prefix="plumio-chaos-") as folder,
    ):
        persister = WatchingPersister(_open_persister(config.persister, folder), ledger)
        try:
            made = cluster(config, persister)
            try:
                made.start()
                trial = _Trial(config, made)
                trial.run(plan)
                left = trial.drain(start + config.timeout)
                made.tick()  # the last look for lost workers
            finally:
                made.close()
            return trial.report(config, ledger, left, time.monotonic() - start)
        finally:
            anyio.run(persister.aclose)


def run_trials(
    seeds: Iterable[int],
    template: ChaosConfig | None = None,
    *,
    cluster: ClusterFactory = MemoryChaosCluster,
) -> Iterator[TrialReport]:
    """Run a trial per seed (``template`` with that seed), yielding each report as it ends."""
    base = ChaosConfig(seed=0) if template is None else template
    for seed in seeds:
        yield run_trial(attrs.evolve(base, seed=seed), cluster=cluster)
