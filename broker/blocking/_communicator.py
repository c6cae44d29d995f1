"""A blocking facade for threads that run no event loop: scripts, CLIs, notebook cells.

:class:`BlockingCommunicator` owns a thread running its own event loop with a
:class:`~broker.LoopCommunicator` on it. Its subscribers run on that thread; its methods block
the caller (or return :class:`concurrent.futures.Future`). Calling a blocking method from a
thread that runs an event loop raises :class:`~broker.LoopThreadError` instead of stalling (or,
on trio, being refused): use the async API there.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Literal, Self, final

import anyio
import anyio.from_thread
import anyio.lowlevel

from .._errors import CommunicatorClosedError, LoopThreadError
from ..abc import BroadcastSubscriber, RpcSubscriber, TaskSubscriber
from ..memory import LoopCommunicator, MemoryBroker

__all__ = ["BlockingCommunicator"]


def _check_no_loop(what: str) -> None:
    try:
        anyio.lowlevel.current_token()
    except anyio.NoEventLoopError:
        return
    raise LoopThreadError(f"{what} would block this thread's event loop; await the async API")


@final
class BlockingCommunicator:
    """A communicator for plain threads, backed by a loop thread it owns.

    Args:
        broker: the broker to attach to.
        backend: the event loop the subscribers run on, ``"asyncio"`` or ``"trio"``.
        name: a label, also used for the thread's name.
        timeout: how long (seconds) blocking calls wait by default; ``None`` waits forever.

    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        broker: MemoryBroker,
        *,
        backend: Literal["asyncio", "trio"] = "asyncio",
        name: str | None = None,
        timeout: float | None = None,
    ) -> None:
        _check_no_loop("starting a BlockingCommunicator")
        self._name = name or f"blocking-comm-{id(self):x}"
        self._timeout = timeout
        self._comm = LoopCommunicator(broker, name=self._name)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._stop: anyio.Event | None = None
        self._closed = False
        self._thread = threading.Thread(
            target=self._thread_main, args=(backend,), name=self._name, daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _thread_main(self, backend: str) -> None:
        try:
            anyio.run(self._main, backend=backend)
        except BaseException as exc:  # reported to the constructor if it failed early
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._stop = anyio.Event()
        async with self._comm:
            self._token = anyio.lowlevel.current_token()
            self._ready.set()
            await self._stop.wait()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<BlockingCommunicator {self._name!r} {state}>"

    @property
    def communicator(self) -> LoopCommunicator:
        """The async endpoint behind this facade (it lives on the facade's loop thread)."""
        return self._comm

    @property
    def is_closed(self) -> bool:
        return self._closed or self._comm.is_closed

    def _run(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any, **kw: Any) -> Any:
        _check_no_loop(f"BlockingCommunicator.{fn.__name__}")
        if self.is_closed:
            raise CommunicatorClosedError(f"communicator {self._name!r} is closed")

        async def call() -> Any:
            return await fn(*args, **kw)

        return anyio.from_thread.run(call, token=self._token)

    def _wait(self, future: concurrent.futures.Future[Any], timeout: float | None) -> Any:
        return future.result(self._timeout if timeout is None else timeout)

    # -- subscriptions --------------------------------------------------------------------

    def add_rpc_subscriber(self, subscriber: RpcSubscriber, identifier: Any = None) -> str:
        """See :meth:`Communicator.add_rpc_subscriber`; the subscriber runs on our loop."""
        return self._run(self._comm.add_rpc_subscriber, subscriber, identifier)  # type: ignore[no-any-return]

    def remove_rpc_subscriber(self, identifier: Any) -> None:
        self._run(self._comm.remove_rpc_subscriber, identifier)

    def add_task_subscriber(
        self,
        subscriber: TaskSubscriber,
        identifier: Any = None,
        *,
        queue: str | None = None,
        prefetch: int = 0,
    ) -> str:
        return self._run(  # type: ignore[no-any-return]
            self._comm.add_task_subscriber, subscriber, identifier, queue=queue, prefetch=prefetch
        )

    def remove_task_subscriber(self, identifier: Any) -> None:
        self._run(self._comm.remove_task_subscriber, identifier)

    def add_broadcast_subscriber(
        self, subscriber: BroadcastSubscriber, identifier: Any = None
    ) -> str:
        return self._run(self._comm.add_broadcast_subscriber, subscriber, identifier)  # type: ignore[no-any-return]

    def remove_broadcast_subscriber(self, identifier: Any) -> None:
        self._run(self._comm.remove_broadcast_subscriber, identifier)

    # -- sending --------------------------------------------------------------------------

    def rpc_send(self, recipient_id: Any, msg: Any, *, timeout: float | None = None) -> Any:
        """Send an RPC and block until the reply (or ``TimeoutError``)."""
        _check_no_loop("waiting for a reply")
        return self._wait(self._comm.rpc_send_future(recipient_id, msg), timeout)

    def rpc_send_future(self, recipient_id: Any, msg: Any) -> concurrent.futures.Future[Any]:
        """Send an RPC and return a future of the reply at once."""
        return self._comm.rpc_send_future(recipient_id, msg)

    def task_send(
        self,
        task: Any,
        *,
        no_reply: bool = False,
        queue: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Queue a task and block until its reply (returns ``None`` at once if no_reply)."""
        _check_no_loop("waiting for a reply")
        if no_reply:
            self._comm._check_open()
            broker = self._comm.broker
            broker.send_task(broker.encode(task, "task"), None, queue)
            return None
        return self._wait(self._comm.task_send_future(task, queue=queue), timeout)

    def task_send_future(
        self, task: Any, *, queue: str | None = None
    ) -> concurrent.futures.Future[Any]:
        """Queue a task and return a future of its reply at once."""
        return self._comm.task_send_future(task, queue=queue)

    def broadcast_send(
        self,
        body: Any,
        *,
        sender: Any = None,
        subject: Any = None,
        correlation_id: Any = None,
    ) -> None:
        """Broadcast ``body`` to every broadcast subscriber (never blocks)."""
        self._comm.broadcast_send_nowait(
            body, sender=sender, subject=subject, correlation_id=correlation_id
        )

    # -- lifetime -------------------------------------------------------------------------

    def close(self, timeout: float | None = 10.0) -> None:
        """Close the communicator and stop its loop thread. Idempotent."""
        if self._closed:
            return
        _check_no_loop("BlockingCommunicator.close")
        self._closed = True
        stop = self._stop
        if stop is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop already finished
                anyio.from_thread.run_sync(stop.set, token=self._token)
        self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
