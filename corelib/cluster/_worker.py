"""Workers: threads that each run an event loop, a runner and a launcher on a broker.

A :class:`Worker` owns one thread. On it, under ``anyio.run`` (asyncio or trio), it opens a
:class:`~broker.LoopCommunicator`, a :class:`~corelib.Runner`, a
:class:`~corelib.ProcessControl` binding them, and registers a
:class:`~corelib.ProcessLauncher` on the task queue. Its public methods are synchronous and
meant for plain threads (the test's main thread, a CLI); they never block an event loop for
longer than the worker takes to start (:meth:`Worker.start`) or stop (:meth:`Worker.stop`).

Stopping has two flavours:

- ``stop()`` (the default, like a daemon worker told to shut down): the worker abandons its
  processes (cancelled without announcing it: no ``killed`` broadcast, no checkpoint, no
  reply to the tasks it held), then closes its communicator, which in one step releases every
  pid it answered RPCs for and requeues every task it held; whichever worker gets a requeued
  task continues the process from its last checkpoint (or launches it again). So a requeued
  task never meets its process's pid still taken here, and no stale "killed" outcome can
  answer it;
- ``stop(drain=True)``: new tasks are rejected (they go to other workers), the processes it
  runs are waited for (at most ``timeout`` seconds), then it stops as above.

:meth:`Worker.crash` is the test double of a worker dying: the same as ``stop()`` but without
waiting for the thread.

Submitting from a plain thread: :meth:`Worker.submit` hands the creation of a process to the
worker's loop with a non-blocking call-soon (:meth:`~broker._wakeup.LoopHandle.post`), where a
task of the worker's :class:`~corelib.ProcessControl` creates it and starts it (subscribed
first, so it answers RPCs before its first step); the caller waits on a
:class:`concurrent.futures.Future` that the task fills. Every such future is registered until
it is done, and the worker's thread fails the ones left when its loop ends, so a submit that
races with a stop gets :class:`~corelib.RunnerNotRunningError` instead of waiting forever.
:meth:`Worker.get_process` (and :meth:`LocalCluster.get_process`) looks a live process up by
pid, from any thread.

Checkpoints: given a persister, a worker's runner checkpoints every process it runs under
its ``checkpoint_policy`` (default :attr:`~corelib.CheckpointPolicy.EVERY_TRANSITION`, so
after every step), and a process continued after its worker died resumes after its last
checkpointed step: a step that completed and was checkpointed is never run again. (A step
that completed but whose checkpoint was not written yet when the worker died runs again:
at-least-once, as in plumpy and AiiDA.) The checkpoints of a stopping worker that are being
written when it stops are finished before its tasks are requeued.

Slots: ``prefetch`` limits the tasks whose processes *run*. A held task whose process waits
(on children, on a resume) or is paused frees its slot, so the worker takes another task,
and takes it back when the process runs again (until then the worker takes no new task).
So parents waiting on children can never hold every slot and starve their own children
(the deadlock of aiida-core #1397). While parked processes resume, running processes may
briefly exceed ``prefetch``; they never stay above it.

:class:`LocalCluster` starts several workers (mixed backends allowed) on one broker.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import itertools
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, Self, final

import anyio
import anyio.lowlevel
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from broker import (
    BlockingCommunicator,
    BrokerStatistics,
    Communicator,
    LoopCommunicator,
    LoopThreadError,
    MemoryBroker,
)
from broker._wakeup import LoopGone, LoopHandle, current_handle

from ..control._binding import ControlStatistics, ProcessControl
from ..control._controller import BlockingProcessController
from ..control._launcher import ProcessLauncher
from ..control._messages import new_pid
from ..persistence._loader import ClassLoader
from ..persistence._persisters import Persister
from ..persistence._save_load import CheckpointPolicy
from ..process._errors import ProcessNotFoundError, RunnerNotRunningError
from ..process._listener import ProcessListener
from ..process._process import Process
from ..process._states import ProcessState
from ..runner._runner import Runner

__all__ = [
    "Worker",
    "WorkerStatistics",
    "LocalCluster",
    "ClusterStatistics",
    "ProcessNotFoundError",
]

Backend = Literal["asyncio", "trio"]

#: Makes a worker's communicator, unopened, from the worker's name (it is opened and closed
#: on the worker's thread): ``lambda name: AmqpCommunicator(url, name=name)``.
CommunicatorFactory = Callable[[str], Communicator]

_names = itertools.count(1)

# what Worker.submit hands to the worker's loop: class, inputs, pid, and the caller's future
_Submission = tuple[
    type[Process], Mapping[str, Any] | None, str, concurrent.futures.Future[Process]
]


def _dead_lettered(broker: MemoryBroker, pid: str) -> str | None:
    """Why the task of ``pid`` (in any queue) was dead-lettered, or ``None`` (it was not)."""
    for letter in broker.dead_letters():
        body = letter.body
        if isinstance(body, Mapping) and body.get("pid") == pid:
            return letter.reason
    return None


def _check_no_loop(worker: str, what: str, handle: LoopHandle | None) -> None:
    if handle is not None and handle.is_running_here():
        raise LoopThreadError(
            f"{what} can't be called on the thread of worker {worker!r}; in a step there,"
            " use self.submit(...) instead"
        )
    try:
        anyio.lowlevel.current_token()
    except anyio.NoEventLoopError:
        return
    raise LoopThreadError(
        f"{what} would block this thread's event loop; call it through"
        " anyio.to_thread.run_sync(...) instead"
    )


@final
class _Slots(ProcessListener):
    """A worker's slot count: ``limit`` tasks whose processes run, plus one per held task
    whose process is parked (waiting or paused), set as its subscription's prefetch."""

    __slots__ = ("_comm", "_held", "_identifier", "_limit", "_parked", "_prefetch")

    def __init__(self, comm: Any, limit: int) -> None:
        self._comm = comm
        self._limit = limit
        self._prefetch = limit
        self._identifier: str | None = None
        self._held: dict[Process, int] = {}  # process -> tasks held for it
        self._parked: set[Process] = set()

    @property
    def prefetch(self) -> int:
        """The prefetch set now: the limit plus the tasks of parked processes."""
        return self._prefetch

    def attach(self, identifier: str) -> None:
        self._identifier = identifier

    def detach(self) -> None:
        """Stop adjusting the prefetch (the worker is stopping)."""
        self._identifier = None

    def holding(self, process: Process, held: bool) -> None:
        n = self._held.get(process, 0)
        if held:
            self._held[process] = n + 1
            if n == 0:
                process.add_process_listener(self)
            self._update(process)
        elif n > 1:
            self._held[process] = n - 1
            self._apply()
        elif n == 1:
            del self._held[process]
            process.remove_process_listener(self)
            self._parked.discard(process)
            self._apply()

    def _update(self, process: Process) -> None:
        if process not in self._held:
            return
        state = process.state
        if not state.terminal and (process.paused or state is ProcessState.WAITING):
            self._parked.add(process)
        else:
            self._parked.discard(process)
        self._apply()

    def _apply(self) -> None:
        prefetch = self._limit + sum(self._held[p] for p in self._parked)
        if prefetch == self._prefetch or self._identifier is None:
            return
        self._prefetch = prefetch
        with contextlib.suppress(Exception):  # closing: nothing more to deliver anyway
            self._comm.set_task_prefetch(self._identifier, prefetch)

    def on_process_running(self, process: Process) -> None:
        self._update(process)

    def on_process_waiting(self, process: Process) -> None:
        self._update(process)

    def on_process_paused(self, process: Process) -> None:
        self._update(process)

    def on_process_played(self, process: Process) -> None:
        self._update(process)


@final
@attrs.frozen
class WorkerStatistics:
    """A snapshot of one worker.

    Attributes:
        name: the worker's name (also its thread's name).
        backend: ``"asyncio"`` or ``"trio"``.
        alive: whether its loop runs.
        processes: processes it runs that are not terminal.
        launched: processes its launcher started so far.
        control: its binding's statistics (``None`` when not running).
    """

    name: str
    backend: str
    alive: bool
    processes: int
    launched: int
    control: ControlStatistics | None


@final
class Worker:
    """A thread with its own event loop that runs processes sent through the task queue.

    Args:
        broker: the in-memory broker to consume from, or a :data:`CommunicatorFactory`
            (e.g. ``lambda name: AmqpCommunicator(url, name=name)`` for RabbitMQ): the same
            worker then runs on that communicator (its ``prefetch`` is then the plain
            broker prefetch unless the communicator has ``set_task_prefetch``: RabbitMQ's
            quorum queues can't change it for a running consumer).
        backend: the worker's event loop, ``"asyncio"`` or ``"trio"``.
        persister: where checkpoints go; needed for ``persist``, ``continue`` and
            ``execute`` tasks (a task that needs one on a worker without one is answered
            with :class:`~corelib.InvalidTaskError`). Shared persisters must be thread-safe
            (the built-in ones are).
        checkpoint_policy: when the worker's runner checkpoints its processes to
            ``persister`` (ignored without one); every transition by default, so a process
            continued elsewhere after this worker died runs no checkpointed step again.
        prefetch: how many tasks whose processes run it holds at once (0 = no limit). A
            task is held until its process ends (unless ``nowait``), but one whose process
            waits or is paused does not count (see the module docstring): parents waiting on
            children launched through the queue never starve them.
        loader: resolves process classes named in tasks.
        queue: the task queue to consume from (the broker's default when ``None``).
        name: a label, also the thread's name.
    """

    def __init__(
        self,
        broker: MemoryBroker | CommunicatorFactory,
        *,
        backend: Backend = "asyncio",
        persister: Persister | None = None,
        checkpoint_policy: CheckpointPolicy = CheckpointPolicy.EVERY_TRANSITION,
        prefetch: int = 0,
        loader: ClassLoader | None = None,
        queue: str | None = None,
        name: str | None = None,
    ) -> None:
        if backend not in ("asyncio", "trio"):
            raise ValueError(f"backend must be 'asyncio' or 'trio', got {backend!r}")
        if not isinstance(checkpoint_policy, CheckpointPolicy):
            raise TypeError(
                f"checkpoint_policy must be a CheckpointPolicy, got {checkpoint_policy!r}"
            )
        if not isinstance(prefetch, int) or isinstance(prefetch, bool) or prefetch < 0:
            raise ValueError(f"prefetch must be an int >= 0, got {prefetch!r}")
        self._broker = broker
        self._backend: Backend = backend
        self._persister = persister
        self._checkpoint_policy = checkpoint_policy
        self._prefetch = prefetch
        self._loader = loader
        self._queue = queue
        self._name = name or f"worker-{next(_names)}"
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._handle: LoopHandle | None = None
        self._stop_event: anyio.Event | None = None
        self._drain_timeout: float | None = None
        self._runner: Runner | None = None
        self._control: ProcessControl | None = None
        self._launcher: ProcessLauncher | None = None
        # submissions not done yet; failed by the thread when its loop has ended (_finished)
        self._submissions_lock = threading.Lock()
        self._submissions: set[concurrent.futures.Future[Process]] = set()
        self._finished = False
        self._submit: MemoryObjectSendStream[_Submission] | None = None

    def __repr__(self) -> str:
        return f"<Worker {self._name!r} {self._backend} {'alive' if self.alive else 'stopped'}>"

    @property
    def name(self) -> str:
        return self._name

    @property
    def backend(self) -> str:
        return self._backend

    @property
    def alive(self) -> bool:
        """Whether the worker's thread runs."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def thread(self) -> threading.Thread | None:
        """The worker's thread (``None`` before :meth:`start`)."""
        return self._thread

    # -- lifetime ---------------------------------------------------------------------------

    def start(self, timeout: float | None = 10.0) -> None:
        """Start the thread and return once the worker consumes tasks.

        Raises:
            RuntimeError: it was started before.
            TimeoutError: it did not get ready in time.
        """
        if self._thread is not None:
            raise RuntimeError(f"worker {self._name!r} was already started")
        self._thread = threading.Thread(target=self._thread_main, name=self._name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"worker {self._name!r} did not start within {timeout} s")
        if self._error is not None:
            raise self._error

    def _thread_main(self) -> None:
        try:
            anyio.run(self._main, backend=self._backend)
        except BaseException as exc:
            self._error = exc
        finally:
            self._fail_submissions()
            self._ready.set()

    def _fail_submissions(self) -> None:
        # the loop has ended: no submission can be carried out any more
        with self._submissions_lock:
            self._finished = True
            left, self._submissions = self._submissions, set()
        for future in left:
            with contextlib.suppress(concurrent.futures.InvalidStateError):  # done meanwhile
                future.set_exception(self._not_running())

    def _not_running(self) -> RunnerNotRunningError:
        return RunnerNotRunningError(f"worker {self._name!r} is not running")

    async def _main(self) -> None:
        self._stop_event = anyio.Event()
        broker = self._broker
        made = (
            LoopCommunicator(broker, name=self._name)
            if isinstance(broker, MemoryBroker)
            else broker(self._name)
        )
        async with made as comm:
            with anyio.CancelScope() as scope:
                async with (
                    Runner(
                        persister=self._persister,
                        checkpoint_policy=self._checkpoint_policy,
                        loader=self._loader,
                    ) as runner,
                    ProcessControl(runner, comm) as control,
                ):
                    adjustable = callable(getattr(comm, "set_task_prefetch", None))
                    slots = _Slots(comm, self._prefetch) if self._prefetch and adjustable else None
                    launcher = ProcessLauncher(
                        control,
                        persister=self._persister,
                        loader=self._loader,
                        holding=None if slots is None else slots.holding,
                        dead_lettered=(
                            functools.partial(_dead_lettered, broker)
                            if isinstance(broker, MemoryBroker)
                            else None
                        ),
                    )
                    self._runner, self._control, self._launcher = runner, control, launcher
                    identifier = await comm.add_task_subscriber(
                        launcher, queue=self._queue, prefetch=self._prefetch
                    )
                    if slots is not None:
                        slots.attach(identifier)
                    send, receive = anyio.create_memory_object_stream[_Submission](math.inf)
                    control.spawn(self._serve_submissions, control, receive, name="submissions")
                    with send, receive:  # closed here even if the task never ran
                        self._submit = send
                        self._handle = current_handle()
                        self._ready.set()
                        await self._stop_event.wait()
                        send.close()  # submissions from now on fail at once
                        if self._drain_timeout is not None:
                            launcher.stop_accepting()
                            with anyio.move_on_after(self._drain_timeout):
                                while runner.processes:
                                    await next(iter(runner.processes.values())).wait()
                        self._abandon(runner, control, launcher, slots)
                        scope.cancel()
            self._runner = None
        # Closing the communicator released every pid and requeued every task in one step.

    @staticmethod
    def _abandon(
        runner: Runner, control: ProcessControl, launcher: ProcessLauncher, slots: _Slots | None
    ) -> None:
        # Everything here is synchronous: no step of this worker runs in between. From now on
        # nothing is announced, answered or checkpointed for the processes left; cancelling
        # the runner's scope ends them ("killed by cancellation", seen by nobody) once the
        # checkpoints being written are written; then the communicator closes.
        launcher.abandon()
        control.mute()
        if slots is not None:
            slots.detach()
        checkpointer = runner.checkpointer
        if checkpointer is not None:
            for process in tuple(runner.processes.values()):
                process.remove_process_listener(checkpointer)
                checkpointer.discard(process.pid)

    def _request_stop(self, drain_timeout: float | None) -> None:
        # on the worker's loop
        self._drain_timeout = drain_timeout
        if self._stop_event is not None:
            self._stop_event.set()

    def stop(self, *, drain: bool = False, timeout: float | None = 10.0) -> None:
        """Stop the worker and join its thread (see the module docstring). Idempotent.

        Args:
            drain: finish the processes it runs first (for at most ``timeout`` seconds).
            timeout: how long to wait for the thread.

        Raises:
            TimeoutError: the thread did not end in time.
        """
        self._post_stop(timeout if drain else None)
        thread = self._thread
        if thread is not None:
            thread.join(None if timeout is None else timeout * (2 if drain else 1))
            if thread.is_alive():
                raise TimeoutError(f"worker {self._name!r} did not stop within {timeout} s")

    def crash(self) -> None:
        """Make the worker die at once (for tests): like :meth:`stop`, without waiting."""
        self._post_stop(None)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; returns whether it did."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _post_stop(self, drain_timeout: float | None) -> None:
        handle = self._handle
        if handle is None or not self.alive:
            return
        with contextlib.suppress(LoopGone):
            handle.post(self._request_stop, drain_timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- submitting -------------------------------------------------------------------------

    def submit(
        self,
        process_class: type[Process],
        inputs: Mapping[str, Any] | None = None,
        *,
        pid: str | None = None,
        timeout: float | None = 10.0,
    ) -> Process:
        """Create a process on the worker's loop, start it there, and return it.

        Returns once the process is launched and answers RPCs under its pid (it may have
        run steps, or even ended, by then). Call it from a plain thread: it blocks the
        caller until then. Unlike a launch task, the process is not checkpointed and is
        not counted in :attr:`WorkerStatistics.launched`.

        The returned process lives on the worker's loop. From other threads, read it only
        (``pid``, ``state``, ``statistics()``) and control it through a controller with its
        pid (``cluster.controller().pause(process.pid)``): its async methods
        (``await process.wait()``) and its requests (``pause()``, ``kill()``) belong to code
        running on the worker's loop, e.g. its own steps.

        Args:
            process_class: the class to instantiate (no class loader is involved).
            inputs: its inputs.
            pid: its pid; a fresh one when ``None``.
            timeout: how long to wait for the launch (``None``: forever).

        Raises:
            LoopThreadError: called from a thread that runs an event loop (the worker's own
                included): there, await ``anyio.to_thread.run_sync(worker.submit, ...)``,
                or submit to the runner directly from a step on the worker.
            RunnerNotRunningError: the worker is not running (or stopped before the process
                started).
            TimeoutError: the process did not start in time (if the worker had already
                begun starting it, it may still start; the message names the pid).
            PortValidationError: ``inputs`` do not match the spec (raised by the worker's
                loop, as everything ``process_class(...)`` raises).
            DuplicateSubscriberError: a process with this pid answers RPCs already.
        """
        _check_no_loop(self._name, "Worker.submit", self._handle)
        pid = new_pid() if pid is None else str(pid)
        future: concurrent.futures.Future[Process] = concurrent.futures.Future()
        with self._submissions_lock:
            handle = self._handle
            if handle is None or self._finished:
                raise self._not_running()
            self._submissions.add(future)
        future.add_done_callback(self._forget_submission)
        try:
            handle.post(self._accept, process_class, inputs, pid, future)
        except LoopGone:
            future.cancel()
            raise self._not_running() from None
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            if future.cancel():  # the loop had not picked it up: nothing will happen
                raise TimeoutError(
                    f"worker {self._name!r} did not start process {pid!r} within {timeout} s"
                ) from None
            if future.done():  # it finished just now
                return future.result()
            raise TimeoutError(
                f"worker {self._name!r} did not start process {pid!r} within {timeout} s;"
                " it is being started and may still run"
            ) from None

    def _forget_submission(self, future: concurrent.futures.Future[Process]) -> None:
        with self._submissions_lock:
            self._submissions.discard(future)

    def _accept(
        self,
        process_class: type[Process],
        inputs: Mapping[str, Any] | None,
        pid: str,
        future: concurrent.futures.Future[Process],
    ) -> None:
        # A call-soon callback on the worker's loop, outside any task: it must never raise
        # (on trio that would end the whole run) and can't start tasks (no task context on
        # asyncio), so it only hands the submission to the serving task's stream.
        try:
            if not future.set_running_or_notify_cancel():
                return  # the caller gave up (timed out) before we got here
            send, stop = self._submit, self._stop_event
            if send is None or stop is None or stop.is_set():
                raise self._not_running()
            send.send_nowait((process_class, inputs, pid, future))
        except Exception as exc:
            if isinstance(exc, anyio.ClosedResourceError):
                exc = self._not_running()
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                future.set_exception(exc)

    async def _serve_submissions(
        self, control: ProcessControl, receive: MemoryObjectReceiveStream[_Submission]
    ) -> None:
        # Each submission starts in a task of its own: a start waits for its subscription,
        # and one slow start must not hold up the others.
        # ends when the worker closes the stream (the futures left are failed by the thread)
        with contextlib.suppress(anyio.ClosedResourceError):
            async for process_class, inputs, pid, future in receive:
                stop = self._stop_event
                if stop is None or stop.is_set():  # accepted, then the worker began to stop
                    with contextlib.suppress(concurrent.futures.InvalidStateError):
                        future.set_exception(self._not_running())
                    continue
                control.spawn(
                    self._start_submitted,
                    control,
                    process_class,
                    inputs,
                    pid,
                    future,
                    name=f"submit {pid}",
                )

    async def _start_submitted(
        self,
        control: ProcessControl,
        process_class: type[Process],
        inputs: Mapping[str, Any] | None,
        pid: str,
        future: concurrent.futures.Future[Process],
    ) -> None:
        try:
            process = process_class(inputs, pid=pid)
            await control.start(process)
        except anyio.get_cancelled_exc_class():
            future.set_exception(
                RunnerNotRunningError(
                    f"worker {self._name!r} stopped before process {pid!r} started"
                )
            )
            raise
        except Exception as exc:
            future.set_exception(exc)
        else:
            future.set_result(process)

    # -- observing --------------------------------------------------------------------------

    def get_process(self, pid: str) -> Process:
        """The live process with ``pid`` that this worker runs; from any thread.

        See :meth:`submit` for what may be done with it outside the worker's loop.

        Raises:
            RunnerNotRunningError: the worker is not running.
            ProcessNotFoundError: it runs no process ``pid`` (never here, or terminated).
        """
        runner = self._runner
        if runner is None or not self.alive:
            raise self._not_running()
        process = runner.processes.get(str(pid))  # one dict lookup: safe against the writer
        if process is None:
            raise ProcessNotFoundError(str(pid), f"worker {self._name!r}")
        return process

    def processes(self) -> tuple[Process, ...]:
        """The processes it runs that are not terminal yet (empty when it does not run).

        Read from another thread this is a snapshot that may be a step behind; read their
        :meth:`~corelib.Process.statistics` to see where each one stands.
        """
        runner = self._runner
        if runner is None:
            return ()
        return tuple(runner.processes.values())  # one C-level copy: safe against the writer

    def statistics(self) -> WorkerStatistics:
        """A snapshot (read from another thread: the counts are approximate while it runs)."""
        runner, control, launcher = self._runner, self._control, self._launcher
        return WorkerStatistics(
            name=self._name,
            backend=self._backend,
            alive=self.alive,
            processes=len(runner.processes) if runner is not None else 0,
            launched=launcher.launched if launcher is not None else 0,
            control=control.statistics() if control is not None and self.alive else None,
        )


@final
@attrs.frozen
class ClusterStatistics:
    """A snapshot of a :class:`LocalCluster`: its workers and its broker."""

    workers: tuple[WorkerStatistics, ...]
    broker: BrokerStatistics

    @property
    def processes(self) -> int:
        """Live processes on all workers."""
        return sum(w.processes for w in self.workers)


@final
class LocalCluster:
    """Several workers on one in-memory broker, in this interpreter.

    Use it as a context manager (``with LocalCluster(workers=3) as cluster:``) from a thread
    without a running event loop, or call :meth:`start` / :meth:`stop`.

    Args:
        workers: how many workers.
        backends: their backends, assigned round-robin (``("asyncio", "trio")`` alternates).
        broker: the broker; a strict (JSON) :class:`~broker.MemoryBroker` when ``None``.
        persister: shared by every worker (must be thread-safe).
        checkpoint_policy: each worker's checkpoint policy (see :class:`Worker`).
        prefetch: each worker's prefetch.
        loader: resolves process classes named in tasks.
        queue: the task queue.
    """

    def __init__(
        self,
        workers: int = 2,
        *,
        backends: Sequence[Backend] = ("asyncio",),
        broker: MemoryBroker | None = None,
        persister: Persister | None = None,
        checkpoint_policy: CheckpointPolicy = CheckpointPolicy.EVERY_TRANSITION,
        prefetch: int = 0,
        loader: ClassLoader | None = None,
        queue: str | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers!r}")
        if not backends:
            raise ValueError("backends must name at least one backend")
        self.broker = MemoryBroker(strict=True) if broker is None else broker
        self.persister = persister
        self._queue = queue
        self.workers: tuple[Worker, ...] = tuple(
            Worker(
                self.broker,
                backend=backends[i % len(backends)],
                persister=persister,
                checkpoint_policy=checkpoint_policy,
                prefetch=prefetch,
                loader=loader,
                queue=queue,
                name=f"worker-{i}",
            )
            for i in range(workers)
        )
        self._clients: list[BlockingCommunicator] = []

    def __repr__(self) -> str:
        return f"<LocalCluster {len(self.workers)} workers>"

    def start(self, timeout: float | None = 10.0) -> None:
        """Start every worker; returns once all consume tasks."""
        for worker in self.workers:
            worker.start(timeout)

    def stop(self, *, drain: bool = False, timeout: float | None = 10.0) -> None:
        """Stop the workers (see :meth:`Worker.stop`) and close the controllers' communicators."""
        for worker in self.workers:
            worker._post_stop(timeout if drain else None)
        errors = []
        for worker in self.workers:
            try:
                worker.stop(drain=drain, timeout=timeout)
            except TimeoutError as exc:
                errors.append(exc)
        for client in self._clients:
            client.close()
        self._clients.clear()
        if errors:
            raise errors[0]

    def get_process(self, pid: str) -> Process:
        """The live process with ``pid``, on whichever running worker runs it.

        See :meth:`Worker.submit` for what may be done with it outside its worker's loop.

        Raises:
            ProcessNotFoundError: no running worker runs a process ``pid``.
        """
        for worker in self.workers:
            with contextlib.suppress(ProcessNotFoundError, RunnerNotRunningError):
                return worker.get_process(pid)
        raise ProcessNotFoundError(str(pid), f"any worker of {self!r}")

    def controller(
        self, *, backend: Backend = "asyncio", timeout: float | None = 10.0
    ) -> BlockingProcessController:
        """A blocking controller on its own communicator (closed by :meth:`stop`)."""
        comm = BlockingCommunicator(self.broker, backend=backend, timeout=timeout)
        self._clients.append(comm)
        return BlockingProcessController(comm, queue=self._queue)

    def statistics(self) -> ClusterStatistics:
        """A snapshot of the workers and the broker."""
        return ClusterStatistics(
            workers=tuple(w.statistics() for w in self.workers),
            broker=self.broker.statistics(),
        )

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
