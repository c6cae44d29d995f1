"""A small cross-thread demo of the in-memory broker: ``python -m broker``.

Three threads share one :class:`~broker.MemoryBroker`: an asyncio worker, a trio worker and the
main thread, which runs no event loop and talks through a :class:`~broker.BlockingCommunicator`.
It prints what each message did and on which thread it ran.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Sequence
from typing import Any

import anyio

from broker import (
    BlockingCommunicator,
    BroadcastFilter,
    Communicator,
    LoopCommunicator,
    MemoryBroker,
    RemoteError,
    UnroutableError,
)


def _worker(
    broker: MemoryBroker,
    backend: str,
    ready: threading.Event,
    stop: threading.Event,
    log: list[str],
) -> None:
    async def main() -> None:
        async with LoopCommunicator(broker, name=backend) as comm:

            def status(_comm: Communicator, msg: Any) -> Any:
                return {"worker": backend, "thread": threading.current_thread().name, "asked": msg}

            async def square(_comm: Communicator, task: Any) -> Any:
                await anyio.lowlevel.checkpoint()  # an I/O-bound step would await here
                if task < 0:
                    raise ValueError(f"negative task {task}")
                return task * task

            def on_news(
                _comm: Communicator, body: Any, sender: Any, subject: Any, _cid: Any
            ) -> None:
                log.append(f"  {backend:7} heard {subject!r} from {sender!r}: {body!r}")

            await comm.add_rpc_subscriber(status, f"status-{backend}")
            await comm.add_task_subscriber(square, prefetch=2)
            await comm.add_broadcast_subscriber(BroadcastFilter(on_news, subject="news.*"))
            ready.set()
            await anyio.to_thread.run_sync(stop.wait)

    threading.current_thread().name = f"{backend}-worker"
    anyio.run(main, backend=backend.split("-")[0])


def _backends() -> tuple[str, str]:
    try:
        import trio  # noqa: F401
    except ImportError:
        print("(trio is not installed: both workers run asyncio; pip install 'plumio[trio]')")
        return ("asyncio", "asyncio-2")
    return ("asyncio", "trio")


_DESCRIPTION = """\
A small cross-thread demo of plumio's in-memory broker. Three threads share one MemoryBroker:
an asyncio worker, a trio worker (a second asyncio one when trio is not installed) and the main
thread, which runs no event loop and talks through a BlockingCommunicator. It sends RPCs,
tasks and broadcasts, and prints what each message did and on which thread it ran, in well
under a second. It takes no options."""


def main(argv: Sequence[str] | None = None) -> None:
    """Run the demo and print what happened; ``--help`` says what it does, without running it.

    ``argv`` defaults to ``sys.argv[1:]``; ``--help`` and unknown arguments exit (status 0 and 2).
    """
    parser = argparse.ArgumentParser(
        prog="python3 -m broker",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
    _demo()


def _demo() -> None:
    broker = MemoryBroker(strict=True)
    backends = _backends()
    stop = threading.Event()
    log: list[str] = []
    threads = []
    for backend in backends:
        ready = threading.Event()
        thread = threading.Thread(target=_worker, args=(broker, backend, ready, stop, log))
        thread.start()
        ready.wait(10)
        threads.append(thread)

    print(f"plumio broker demo: {backends[0]} and {backends[1]} worker threads, and this thread")
    print("(no event loop) on one in-memory broker in strict JSON mode.\n")
    started = time.perf_counter()
    with BlockingCommunicator(broker, timeout=10) as comm:
        print("RPC to each worker (the reply says which thread ran it):")
        for backend in backends:
            print(f"  status-{backend} -> {comm.rpc_send(f'status-{backend}', 'are you there?')}")
        try:
            comm.rpc_send("status-nobody", "hello?")
        except UnroutableError as exc:
            print(f"  status-nobody -> UnroutableError: {exc}")

        print("\nTask queue, 2 competing consumers (prefetch 2), 20 tasks in flight:")
        futures = [comm.task_send_future(n) for n in range(20)]
        print(f"  squares: {[f.result(10) for f in futures]}")
        try:
            comm.task_send(-1)
        except RemoteError as exc:
            print(f"  task -1 -> RemoteError({exc.type_name}): {exc.message}")

        print("\nBroadcasts (workers only listen to subjects 'news.*'):")
        comm.broadcast_send("plumio 0.1 is out", sender="demo", subject="news.release")
        comm.broadcast_send("nobody listens to this", sender="demo", subject="gossip")
        for backend in backends:  # per-sender order: the broadcasts arrived before these
            comm.rpc_send(f"status-{backend}", "flush")
        for line in sorted(log):
            print(line)

        stats = broker.statistics()
        print(
            f"\nbroker: {stats.communicators} communicators, {stats.rpc_subscribers} rpc, "
            f"{stats.task_subscribers} task and {stats.broadcast_subscribers} broadcast "
            f"subscribers; {stats.pending} pending, {stats.in_flight} in flight, "
            f"{stats.dead_letters} dead letters"
        )
    stop.set()
    for thread in threads:
        thread.join(10)
    print(f"done in {time.perf_counter() - started:.3f} s")


if __name__ == "__main__":
    main()
