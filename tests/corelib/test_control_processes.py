"""Process control across OS processes over RabbitMQ: the "across machines" case.

Each worker is a real OS process (``tests/corelib/_amqp_worker_child.py``) with its own
``AmqpCommunicator``, a runner checkpointing into one SQLite file shared by all workers, a
``ProcessControl`` and a ``ProcessLauncher`` on the shared task queue and on a queue of its own.
The test's loop (asyncio or trio) is the client: a ``ProcessController`` on its own
``AmqpCommunicator`` in the same fresh namespace.

No sleeps: the test synchronises on the children's stdout lines (``ready``, and ``saved <pid>
<state> <paused|playing>`` after every checkpoint written) and on controller RPCs and
broadcasts; every wait is bounded (``anyio.fail_after``, timeouts on the line queue and on
``Popen.wait``). Children are terminated (then killed) in the fixture's teardown whatever
happened. Marked ``amqp`` and ``slow``; skipped with the reason when no broker answers.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from broker import AmqpCommunicator, BroadcastFilter, RemoteError, UnroutableError
from corelib import ControlOutcome
from corelib.control._controller import ProcessController

from ..broker.conftest import AMQP_URL, amqp_namespace, require_amqp
from ._amqp_worker_child import HoldingChain, make_communicator
from ._remote_procs import Double, Waiter

pytestmark = [
    pytest.mark.amqp,
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL"),
]

ROOT = Path(__file__).resolve().parents[2]
# seconds; a test takes about half a second, but the shared broker sometimes stalls for ~10 s
BOUND = 60.0


class ChildWorker:
    """A worker OS process; a thread moves its stdout lines into a queue."""

    def __init__(self, namespace: str, db: Path, backend: str, name: str, log: Path) -> None:
        self.name = name
        self._log_path = log
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.corelib._amqp_worker_child",
                AMQP_URL,
                namespace,
                str(db),
                backend,
                name,
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self.os_pid = 0
        threading.Thread(target=self._read, name=f"{name}-stdout", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, wanted: Callable[[str], bool], what: str, timeout: float = BOUND) -> str:
        """Read lines until one satisfies ``wanted``; fail after ``timeout`` or at EOF."""
        try:
            while True:
                line = self.lines.get(timeout=timeout)
                if line is None:
                    self.lines.put(None)  # stays at EOF
                    break
                self.seen.append(line)
                if wanted(line):
                    return line
        except queue.Empty:
            pass
        pytest.fail(
            f"worker {self.name} never printed {what} (exit code {self.proc.poll()}); "
            f"stdout so far: {self.seen[-20:]}; stderr:\n{self.stderr()}"
        )

    def expect_lines(self, wanted: set[str], timeout: float = BOUND) -> None:
        """Read until every line of ``wanted`` was printed (in any order)."""
        missing = set(wanted)
        while missing:
            missing.discard(self.expect(lambda line: line in missing, f"{missing}", timeout))

    def wait_ready(self) -> None:
        line = self.expect(lambda line: line.startswith("ready "), "ready")
        self.os_pid = int(line.split()[2])

    def stderr(self) -> str:
        self._log.flush()
        return self._log_path.read_text()[-4000:]

    def stop(self) -> None:
        """Terminate (SIGTERM: a graceful stop), kill if it lingers; always reaps it."""
        try:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self._log.close()


class Workers:
    """Starts worker children on one namespace and one SQLite file; stops them all."""

    def __init__(self, tmp_path: Path) -> None:
        self.namespace = amqp_namespace()
        self.db = tmp_path / "checkpoints.sqlite"
        self._tmp = tmp_path
        self.children: list[ChildWorker] = []

    def spawn(self, name: str, backend: str = "asyncio") -> ChildWorker:
        child = ChildWorker(self.namespace, self.db, backend, name, self._tmp / f"{name}.log")
        self.children.append(child)
        return child

    async def start(self, *specs: tuple[str, str]) -> list[ChildWorker]:
        """Start ``(name, backend)`` children at once; return when all print ``ready``."""
        children = [self.spawn(name, backend) for name, backend in specs]
        for child in children:
            await anyio.to_thread.run_sync(child.wait_ready, abandon_on_cancel=True)
        return children

    def client(self) -> AmqpCommunicator:
        return make_communicator(AMQP_URL, self.namespace, "client")

    def stop_all(self) -> None:
        for child in self.children:
            child.stop()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    require_amqp()
    group = Workers(tmp_path)
    try:
        yield group
    finally:
        group.stop_all()


async def expect(child: ChildWorker, wanted: Callable[[str], bool], what: str) -> str:
    return await anyio.to_thread.run_sync(child.expect, wanted, what, abandon_on_cancel=True)


async def expect_lines(child: ChildWorker, wanted: set[str]) -> None:
    await anyio.to_thread.run_sync(child.expect_lines, wanted, abandon_on_cancel=True)


class Watcher:
    """Collects ``state_changed`` broadcasts by sender; ``ended`` waits for terminal ones."""

    def __init__(self) -> None:
        self.subjects: dict[str, list[str]] = {}
        self.outcomes: dict[str, Any] = {}
        self._want: set[str] = set()
        self._done: anyio.Event | None = None

    def __call__(self, _comm: Any, body: Any, sender: Any, subject: Any, _cid: Any) -> None:
        self.subjects.setdefault(sender, []).append(subject)
        if subject.rsplit(".", 1)[-1] in ("finished", "excepted", "killed"):
            self.outcomes[sender] = body
            if self._done is not None and self._want <= self.outcomes.keys():
                self._done.set()

    async def ended(self, pids: set[str]) -> None:
        self._want = set(pids)
        if not pids <= self.outcomes.keys():
            self._done = anyio.Event()
            await self._done.wait()


async def test_rpc_control_of_a_process_in_another_os_process(workers: Workers) -> None:
    with anyio.fail_after(BOUND):
        children = await workers.start(("w1", "asyncio"), ("w2", "trio"))
        async with workers.client() as client:
            watcher = Watcher()
            await client.add_broadcast_subscriber(
                BroadcastFilter(watcher, subject="state_changed.*")
            )
            for child in children:  # a worker on each backend, addressed by its own queue
                ctl = ProcessController(client, queue=child.name)
                pid = await ctl.launch(Waiter, nowait=True)  # through the task queue
                # it runs in that OS process: its checkpoints are written there
                await expect(child, lambda line, pid=pid: line.startswith(f"saved {pid} "), pid)
                status = await ctl.status(pid)
                assert status["pid"] == pid
                assert status["process_class"] == "tests.corelib._remote_procs:Waiter"
                assert (status["state"], status["paused"]) == ("waiting", False)
                assert await ctl.pause(pid, "hold on") == ControlOutcome(True, "paused")
                assert await ctl.pause(pid) == ControlOutcome(True, "already paused")
                assert (await ctl.status(pid))["paused"] is True
                assert await ctl.play(pid) == ControlOutcome(True, "played")
                assert await ctl.play(pid) == ControlOutcome(True, "not paused")
                assert (await ctl.status(pid))["paused"] is False
                assert await ctl.kill(pid, "bye") == ControlOutcome(True, "killed")
                await watcher.ended({pid})
                assert watcher.outcomes[pid] == {"pid": pid, "state": "killed", "message": "bye"}
                assert watcher.subjects[pid][0] == "state_changed.None.created"
                assert watcher.subjects[pid][-1] == "state_changed.waiting.killed"
            with pytest.raises(UnroutableError):
                await ProcessController(client).status("nobody-has-this-pid")


async def test_pause_all_and_play_all_reach_every_worker_process(workers: Workers) -> None:
    with anyio.fail_after(BOUND):
        w1, w2 = await workers.start(("w1", "asyncio"), ("w2", "trio"))
        async with workers.client() as client:
            watcher = Watcher()
            await client.add_broadcast_subscriber(
                BroadcastFilter(watcher, subject="state_changed.*")
            )
            ctl = ProcessController(client)
            pids = {
                w1: [
                    await ProcessController(client, queue="w1").launch(Waiter, nowait=True)
                    for _ in range(2)
                ],
                w2: [
                    await ProcessController(client, queue="w2").launch(Waiter, nowait=True)
                    for _ in range(2)
                ],
            }
            every = [pid for group in pids.values() for pid in group]
            assert len(set(every)) == 4

            await ctl.pause_all("maintenance")
            # each worker checkpoints a process when it pauses: wait for all four
            for child, group in pids.items():
                await expect_lines(child, {f"saved {pid} waiting paused" for pid in group})
            assert [(await ctl.status(pid))["paused"] for pid in every] == [True] * 4

            await ctl.play_all()
            for child, group in pids.items():
                await expect_lines(child, {f"saved {pid} waiting playing" for pid in group})
            assert [(await ctl.status(pid))["paused"] for pid in every] == [False] * 4

            await ctl.kill_all("shutting down")
            await watcher.ended(set(every))
            assert {watcher.outcomes[pid]["state"] for pid in every} == {"killed"}
            assert {watcher.outcomes[pid]["message"] for pid in every} == {"shutting down"}


async def test_launch_execute_and_continue_through_the_task_queue(workers: Workers) -> None:
    with anyio.fail_after(BOUND):
        await workers.start(("w1", "asyncio"), ("w2", "trio"))
        async with workers.client() as client:
            ctl = ProcessController(client)
            # many launches at once on the shared queue: both workers compete for them
            results: dict[int, Any] = {}

            async def launch(x: int) -> None:
                results[x] = await ctl.launch(Double, {"x": x})

            async with anyio.create_task_group() as tg:
                for x in range(20):
                    tg.start_soon(launch, x)
            assert {x: r["outputs"]["y"] for x, r in results.items()} == {
                x: 2 * x for x in range(20)
            }
            assert {r["state"] for r in results.values()} == {"finished"}

            # execute on w1 (checkpoints in the shared SQLite file) ...
            executed = await ProcessController(client, queue="w1").execute(Double, {"x": 21})
            assert executed["outputs"] == {"y": 42}
            # ... continue on w2, another OS process: the terminal checkpoint answers
            continued = await ProcessController(client, queue="w2").continue_(executed["pid"])
            assert continued == executed

            # the workers only import classes under their allowed prefixes
            with pytest.raises(RemoteError) as refused:
                await ctl.launch("subprocess:Popen")
            assert refused.value.type_name.endswith("ForbiddenClassError")
            assert "outside the allowed prefixes" in refused.value.message


async def test_a_sigkilled_worker_hands_its_process_to_another_os_process(
    workers: Workers,
) -> None:
    with anyio.fail_after(BOUND):
        (first,) = await workers.start(("first", "asyncio"))
        async with workers.client() as client, anyio.create_task_group() as tg:
            watcher = Watcher()
            await client.add_broadcast_subscriber(
                BroadcastFilter(watcher, subject="state_changed.*")
            )
            ctl = ProcessController(client)
            pid = f"crash-{workers.namespace}"
            launched: dict[str, Any] = {}

            async def launch() -> None:
                # held unacknowledged by its worker until the process ends
                launched["outcome"] = await ctl.launch(HoldingChain, persist=True, pid=pid)

            tg.start_soon(launch)
            # only "first" consumes: it runs the chain until the chain pauses itself
            await expect(first, lambda line: line == f"saved {pid} running paused", "paused")
            status = await ctl.status(pid)
            assert (status["state"], status["paused"]) == ("running", True)

            # a second worker joins; the task stays with "first", which holds it
            (second,) = await workers.start(("second", "trio"))
            first.proc.send_signal(signal.SIGKILL)
            assert await anyio.to_thread.run_sync(first.proc.wait, BOUND) == -signal.SIGKILL

            # RabbitMQ requeues the launch; "second" continues from the shared checkpoint
            await expect(second, lambda line: line == f"saved {pid} running paused", "resume")
            status = await ctl.status(pid)  # answered by the new worker now
            assert (status["state"], status["paused"]) == ("running", True)
            assert "outcome" not in launched
            assert await ctl.play(pid) == ControlOutcome(True, "played")
            await watcher.ended({pid})
        # the reply of the redelivered task reached the original sender
        outcome = launched["outcome"]
        assert outcome["state"] == "finished"
        assert outcome["pid"] == pid
        # the first two steps ran in the dead worker, the last one in the new one: once each
        assert outcome["outputs"]["trace"] == [
            ["first", first.os_pid],
            ["hold", first.os_pid],
            ["finish", second.os_pid],
        ]
        assert watcher.outcomes[pid] == outcome
        # the terminal checkpoint answers a later continue, without running anything again
        async with workers.client() as client:
            assert await ProcessController(client).continue_(pid) == outcome
