"""Run a communicator on another thread with its own event loop, for cross-thread tests."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from broker import LoopCommunicator, MemoryBroker

Setup = Callable[[LoopCommunicator], Awaitable[Any]]


class RemoteLoop:
    """A thread running ``anyio.run`` on ``backend`` with one open :class:`LoopCommunicator`.

    ``setup(comm)`` runs on that loop before :meth:`start` returns (register subscribers
    there). The loop then idles until :meth:`stop`.
    """

    def __init__(self, broker: MemoryBroker, backend: str, setup: Setup | None = None) -> None:
        self.broker = broker
        self.backend = backend
        self.setup = setup
        self.comm: LoopCommunicator | None = None
        self.thread_id: int | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"remote-{backend}", daemon=True)

    def _run(self) -> None:
        try:
            anyio.run(self._main, backend=self.backend)
        except BaseException as exc:  # surfaced by stop()
            self.error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        async with LoopCommunicator(self.broker, name=f"remote-{self.backend}") as comm:
            self.comm = comm
            self.thread_id = threading.get_ident()
            if self.setup is not None:
                await self.setup(comm)
            self._ready.set()
            await anyio.to_thread.run_sync(self._stop.wait)

    async def start(self) -> RemoteLoop:
        self._thread.start()
        await anyio.to_thread.run_sync(self._ready.wait, 5)
        if self.error is not None:
            raise self.error
        assert self.comm is not None, "remote loop did not start in time"
        return self

    async def stop(self) -> None:
        self._stop.set()
        await anyio.to_thread.run_sync(self._thread.join, 5, abandon_on_cancel=True)
        assert not self._thread.is_alive(), "remote loop did not stop"
        if self.error is not None:
            raise self.error

    async def __aenter__(self) -> RemoteLoop:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
