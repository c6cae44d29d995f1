"""Chaos on RabbitMQ (#12): workers on AmqpCommunicators reach RabbitMQ through a local TCP
proxy that drops every connection at random moments, while workers are also crashed and
stopped. Seeded; each trial asserts that no task is lost, every sender gets one outcome,
no worker is lost to the faults it was not told to die of, and no step whose checkpoint was
written runs again.

A dropped connection makes RabbitMQ requeue the worker's unacknowledged tasks; the worker
reconnects, its launcher gives up the processes of the tasks it lost (silently: nothing is
checkpointed, announced or answered for them), and whichever worker gets a requeued task
continues its process from the last checkpoint.

Marked ``amqp``: skipped with the reason when aio-pika or RabbitMQ is missing."""

from __future__ import annotations

import os
import random
from typing import Any, Literal
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import pytest

from corelib import ClassLoader
from corelib.cluster._worker import Worker
from corelib.control._controller import ProcessController

from .._tcp_proxy import TcpProxy
from ..broker.conftest import AMQP_URL, amqp_namespace, require_amqp
from ._fault_procs import Counted, WatchedPersister

pytestmark = [
    pytest.mark.amqp,
    # aiormq never closes the StreamWriter of a connection the peer dropped (open upstream
    # bug mosquito/aiormq#231): the socket is closed when the writer is collected, with a
    # ResourceWarning; dropping connections is what these tests do
    pytest.mark.filterwarnings("ignore:unclosed <StreamWriter:ResourceWarning"),
    pytest.mark.filterwarnings("ignore:unclosed transport:ResourceWarning"),
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in.*StreamWriter.__del__:pytest.PytestUnraisableExceptionWarning"
    ),
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in.*_SelectorTransport.__del__"
        ":pytest.PytestUnraisableExceptionWarning"
    ),
]

Backend = Literal["asyncio", "trio"]
LOADER = ClassLoader(["tests.corelib"])
BOUND = 60.0
TASKS = int(os.environ.get("PLUMIO_CHAOS_AMQP_TASKS", "40"))


def _stop(worker: Worker) -> None:
    try:
        worker.stop(timeout=20)
    except TimeoutError:
        import asyncio
        import sys

        handle = worker._handle
        loop = getattr(handle, "native", None)
        if isinstance(loop, asyncio.AbstractEventLoop):
            for task in asyncio.all_tasks(loop):
                print("TASK", task.get_name(), file=sys.stderr)
                task.print_stack(limit=8, file=sys.stderr)
        else:
            print("NATIVE", type(loop), file=sys.stderr)
        raise


def _proxied(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host).geturl()


@pytest.mark.parametrize("seed", [11, 12, 13])
async def test_tasks_survive_connection_drops_and_worker_deaths(seed: int) -> None:
    require_amqp()
    from broker import AmqpCommunicator

    rng = random.Random(seed)
    namespace = amqp_namespace()
    persister = WatchedPersister()
    Counted.reset(persister)
    upstream = urlsplit(AMQP_URL).port or 5672

    with TcpProxy(upstream) as proxy:
        url = _proxied(AMQP_URL, proxy.port)

        def factory(name: str) -> Any:
            return AmqpCommunicator(
                url,
                namespace=namespace,
                name=name,
                queue_expires=120,
                publish_timeout=5,
                max_reconnect_delay=0.5,
                max_redeliveries=1000,
            )

        made = 0

        def worker() -> Worker:
            nonlocal made
            made += 1
            backend: Backend = ("asyncio", "trio")[made % 2]  # type: ignore[assignment]
            w = Worker(
                factory, backend=backend, persister=persister, loader=LOADER, name=f"w{made}"
            )
            w.start(timeout=BOUND)
            return w

        workers = [await anyio.to_thread.run_sync(worker) for _ in range(3)]
        faults = {"drops": 0, "crashes": 0, "stops": 0}
        try:
            async with AmqpCommunicator(
                AMQP_URL,
                namespace=namespace,
                name="client",
                queue_expires=120,
                max_redeliveries=1000,
            ) as client:
                ctl = ProcessController(client)
                outcomes: list[Any] = [None] * TASKS

                async def execute(i: int) -> None:
                    outcomes[i] = await ctl.execute(Counted, {"n": 4}, raise_on_failure=False)

                with anyio.fail_after(BOUND * 2):
                    async with anyio.create_task_group() as tg:
                        for i in range(TASKS):
                            tg.start_soon(execute, i)
                        for _ in range(6):
                            await anyio.sleep(rng.uniform(0.05, 0.3))  # the fault schedule
                            fault = rng.choice(["drop", "drop", "crash", "stop"])
                            if fault == "drop":
                                proxy.drop_all()
                                faults["drops"] += 1
                                continue
                            k = rng.randrange(len(workers))
                            victim = workers[k]
                            if fault == "crash":
                                victim.crash()
                                faults["crashes"] += 1
                            else:
                                faults["stops"] += 1
                                await anyio.to_thread.run_sync(_stop, victim)
                            assert await anyio.to_thread.run_sync(victim.join, BOUND)
                            workers[k] = await anyio.to_thread.run_sync(worker)
            alive = [w.name for w in workers if not w.alive]
        finally:
            for w in workers:
                await anyio.to_thread.run_sync(_stop, w)

    report = f"seed={seed} faults={faults} proxy accepted={proxy.accepted}"
    assert alive == [], f"workers lost: {alive} ({report})"
    states = [(o["state"], o["outputs"]) for o in outcomes]
    assert states == [("finished", {"i": 4})] * TASKS, report
    if Counted.violations:
        pid = Counted.violations[0][0]
        t0 = persister.trace[0][0]
        trace = [
            f"{t - t0:.4f} {thread} {state} {i}"
            for t, thread, p, state, i in persister.trace
            if p == pid
        ]
        raise AssertionError(f"{report}: {Counted.violations[:3]}\n" + "\n".join(trace))


async def test_poison_steps_and_invalid_tasks_on_rabbitmq_take_no_worker_down() -> None:
    """#12 points 3 and 7 on RabbitMQ: a step raising SystemExit, KeyboardInterrupt,
    GeneratorExit or a bare BaseException makes its process excepted and is answered; a task
    no worker can run is answered with InvalidTaskError; every worker stays alive and the
    next task runs."""
    require_amqp()
    from broker import AmqpCommunicator, RemoteError
    from corelib.testing._chaos_procs import POISONS, ChaosLeaf, PoisonStep

    namespace = amqp_namespace()

    def factory(name: str) -> Any:
        return AmqpCommunicator(AMQP_URL, namespace=namespace, name=name, queue_expires=120)

    loader = ClassLoader(["corelib.testing"])
    workers = [
        Worker(factory, backend=backend, persister=WatchedPersister(), loader=loader)
        for backend in ("asyncio", "trio")
    ]
    for w in workers:
        await anyio.to_thread.run_sync(w.start)
    try:
        async with AmqpCommunicator(
            AMQP_URL, namespace=namespace, name="client", queue_expires=120
        ) as client:
            ctl = ProcessController(client)
            with anyio.fail_after(BOUND):
                for kind in sorted(POISONS):
                    for asynchronous in (False, True):
                        outcome = await ctl.execute(
                            PoisonStep,
                            {"kind": kind, "asynchronous": asynchronous},
                            raise_on_failure=False,
                        )
                        assert outcome["state"] == "excepted", (kind, asynchronous, outcome)
                with pytest.raises(RemoteError, match="InvalidTaskError: unknown task type"):
                    await client.task_send({"task": "dance"})
                outcome = await ctl.execute(ChaosLeaf, {"x": 4})
                assert outcome["state"] == "finished"
        assert all(w.alive for w in workers)
    finally:
        for w in workers:
            await anyio.to_thread.run_sync(_stop, w)
