"""The loop side every communicator shares: binding to a loop, the dispatcher, handler tasks.

A communicator is opened with ``async with`` on some event loop (asyncio or trio); that loop
runs its subscribers. Backends differ in where messages come from (a :class:`MemoryBroker`, a
RabbitMQ connection on its own thread) and in how replies and acknowledgements leave; this base
class holds what they have in common:

- :meth:`_bind_loop` captures the loop and makes the coalescing :class:`Inbox` into it;
- :meth:`_serving` runs the dispatcher task and the handler task group for the lifetime of
  the ``async with`` block, and gives the block's own exception back unwrapped;
- the dispatcher drains the inbox and calls :meth:`_run_item` for each delivery (inline, so a
  plain-function subscriber costs no task), yielding every ``_BATCH`` items for fairness;
- deliveries that arrive after closing are handed to :meth:`_abandon` (an RPC then gets an
  "unroutable" reply instead of hanging its caller).

Fault containment: a subscriber is foreign code, and whatever it raises, or whatever its
result does when inspected, is *its* failure: the RPC or task is answered with a
:class:`~broker.RemoteError` (a broadcast subscriber's failure is logged), and the dispatcher
goes on. That includes :class:`BaseException` s that are not exceptions: ``SystemExit``,
``KeyboardInterrupt`` and ``GeneratorExit`` raised by a subscriber are answered and logged
like any failure, since a subscriber must not be able to stop every other subscriber of the
communicator. The one exception is cancellation of the communicator's own scopes (closing, a
removed consumer), which propagates as before; a sync subscriber can't receive that, so what
it raises is always its own. Encoding a result that can't be sent is the backend's boundary:
it answers with a :class:`~broker.RemoteError` for a :class:`~broker.CodecError`. Should a
delivery still raise inside the broker (a bug), the dispatcher logs it and carries on
(:meth:`_delivery_failed`).
"""

from __future__ import annotations

import abc
import inspect
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Any, Final, Self

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus

from ._errors import CommunicatorClosedError, TaskRejected, UnroutableError
from ._spawn import ChildScope, Spawner, open_spawner
from ._wakeup import Inbox, LoopHandle, ReplySlot, current_handle
from .abc import Communicator

__all__ = ["LoopEndpoint"]

logger = logging.getLogger("broker")

_get_ident = threading.get_ident

NEW: Final = "new"
OPEN: Final = "open"
CLOSING: Final = "closing"
CLOSED: Final = "closed"

#: items run between two checkpoints, so a flood of sync handlers can't starve the loop
_BATCH: Final = 128


class LoopEndpoint(Communicator):
    """Base of communicators whose subscribers run on the loop that opened them."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._state = NEW
        self._thread_id = -1
        self._local: deque[Any] = deque()
        self._handle: LoopHandle | None = None
        self._inbox: Inbox[Any] | None = None
        self._wake: anyio.Event | None = None
        self._handlers: Spawner | None = None
        self._serve_scope: anyio.CancelScope | None = None
        self._stopped: anyio.Event | None = None
        self._cm: AbstractAsyncContextManager[Any] | None = None
        self._task_scopes: dict[Any, ChildScope] = {}

    @property
    def name(self) -> str:
        return self._name

    @property
    def is_closed(self) -> bool:
        return self._state != OPEN

    # -- lifetime -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._cm is not None:
            raise CommunicatorClosedError(f"communicator {self._name!r} can't be reopened")
        self._cm = self._lifetime()
        await self._cm.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._cm is not None
        return await self._cm.__aexit__(exc_type, exc, tb)

    @abc.abstractmethod
    def _lifetime(self) -> AbstractAsyncContextManager[Any]:
        """Open the backend, ``async with self._serving()``, yield, close the backend."""

    def _bind_loop(self) -> LoopHandle:
        """Bind to the running loop: the inbox, the dispatcher's wake-up, the stop event."""
        self._handle = handle = current_handle()
        self._thread_id = handle.thread_id
        self._inbox = Inbox(handle, self._on_batch)
        self._wake = anyio.Event()
        self._stopped = anyio.Event()
        return handle

    @asynccontextmanager
    async def _serving(self) -> AsyncIterator[None]:
        """Run the dispatcher and the handler task group while the block runs."""
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self._serve)
                yield
        except BaseExceptionGroup as group:
            # Our own tasks never raise, so a group holds what the ``async with`` body
            # raised: give the caller that exception, not a group around it.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise  # pragma: no cover - only the body can raise

    async def _serve(self, *, task_status: TaskStatus[None]) -> None:
        assert self._stopped is not None
        try:
            with anyio.CancelScope() as self._serve_scope:
                async with open_spawner() as self._handlers:
                    task_status.started()
                    await self._dispatch_forever()
        finally:
            self._stopped.set()

    def _stop_serving(self) -> list[Any]:
        """Refuse further deliveries, cancel the handlers; return what was never run."""
        assert self._inbox is not None
        leftovers = self._inbox.close()
        leftovers.extend(self._local)
        self._local.clear()
        if self._serve_scope is not None:
            self._serve_scope.cancel()
        return leftovers

    # -- state ----------------------------------------------------------------------------

    def _on_own_thread(self) -> bool:
        return _get_ident() == self._thread_id

    def _check_state(self) -> None:
        if self._state != OPEN:
            if self._state == NEW:
                raise CommunicatorClosedError(
                    f"communicator {self._name!r} is not open; use 'async with'"
                )
            raise CommunicatorClosedError(f"communicator {self._name!r} is closed")

    def _closed_while_handling(self) -> UnroutableError:
        return UnroutableError(f"rpc recipient on {self._name!r} closed before replying")

    def _slot(self) -> ReplySlot[Any]:
        # the awaiting loop is ours when we're on our thread; else whichever loop is running
        if _get_ident() == self._thread_id:
            return ReplySlot(self._handle)
        return ReplySlot()

    # -- the dispatcher -------------------------------------------------------------------

    def _on_batch(self, items: deque[Any]) -> None:
        # in our loop, inside a call-soon callback: only move items and wake the dispatcher
        if self._state == OPEN:
            self._local.extend(items)
            self._wake.set()  # type: ignore[union-attr]
        else:
            for item in items:
                self._abandon(item)

    async def _dispatch_forever(self) -> None:
        local = self._local
        run = self._run_item
        while True:
            await self._wake.wait()  # type: ignore[union-attr]
            # replace the event before draining: a post during the drain sets the new one
            self._wake = anyio.Event()
            n = 0
            while local:
                item = local.popleft()
                try:
                    run(item)
                except BaseException as exc:  # sync code: no cancellation can arrive here
                    self._delivery_failed(item, exc)
                n += 1
                if n == _BATCH:
                    n = 0
                    await anyio.lowlevel.checkpoint()  # fairness: let other tasks run

    def _delivery_failed(self, item: Any, exc: BaseException) -> None:
        """Running ``item`` raised inside the broker (every boundary with foreign code is
        contained before this): log it, answer the sender if the backend can, go on."""
        logger.critical(
            "communicator %r: a delivery failed inside the broker (a bug); dropped",
            self._name,
            exc_info=exc,
        )
        try:
            self._fail_item(item, exc)
        except BaseException as again:
            logger.critical(
                "communicator %r: the sender of that delivery can't be answered",
                self._name,
                exc_info=again,
            )

    def _fail_item(self, item: Any, exc: BaseException) -> None:
        """Answer the sender of ``item``, which failed inside the broker, if that is safe
        (the backends know; by default nobody is answered)."""

    def _start(self, fn: Any, *args: Any) -> ChildScope:
        assert self._handlers is not None
        return self._handlers.start_soon(fn, *args)

    @abc.abstractmethod
    def _run_item(self, item: Any) -> None:
        """Run one delivery (in the dispatcher: must not raise)."""

    @abc.abstractmethod
    def _abandon(self, item: Any) -> None:
        """A delivery that will never run (we closed): answer its sender if it waits."""

    # -- running subscribers: what the backends share; how results leave is theirs --------

    def _handle_rpc(self, item: Any, subscriber: Callable[..., Any], msg: Any) -> None:
        try:
            result = subscriber(self, msg)
            pending = _isawaitable(result)  # runs the result's own code too
        except BaseException as exc:  # the subscriber's failure, whatever it is (see module)
            self._subscriber_raised("rpc", subscriber, exc)
            self._rpc_failed(item, exc)
            return
        if pending:
            self._start(self._await_rpc, result, item, subscriber)
        else:
            self._rpc_done(item, result)

    async def _await_rpc(self, awaitable: Awaitable[Any], item: Any, subscriber: Any) -> None:
        try:
            value = await awaitable
        except BaseException as exc:
            if _is_cancellation(exc):
                self._abandon(item)  # we are closing: the caller must not hang
                raise
            self._subscriber_raised("rpc", subscriber, exc)
            self._rpc_failed(item, exc)
        else:
            self._rpc_done(item, value)

    def _subscriber_raised(self, kind: str, subscriber: Any, exc: BaseException) -> None:
        # an Exception is an answer like any other; the rest is logged once, here
        if not isinstance(exc, Exception):
            logger.error(
                "%s subscriber %r on %r raised %s; answered as a failure, still serving",
                kind,
                subscriber,
                self._name,
                type(exc).__name__,
                exc_info=exc,
            )

    @abc.abstractmethod
    def _rpc_done(self, item: Any, value: Any) -> None:
        """Send ``value`` as the reply to RPC ``item``; one that can't be encoded is answered
        as a :class:`~broker.CodecError` failure (must not raise)."""

    @abc.abstractmethod
    def _rpc_failed(self, item: Any, exc: BaseException) -> None:
        """Send the failure ``exc`` as the reply to RPC ``item`` (must not raise)."""

    def _handle_task(self, item: Any, subscriber: Callable[..., Any], body: Any) -> None:
        try:
            result = subscriber(self, body)
            pending = _isawaitable(result)
        except TaskRejected:
            self._task_rejected(item)
            return
        except BaseException as exc:  # the subscriber's failure, whatever it is
            self._subscriber_raised("task", subscriber, exc)
            self._task_failed(item, exc)
            return
        if pending:
            # the handler's scope, known before it runs: a removal may cancel it at once
            self._task_scopes[item] = self._start(self._await_task, result, item, subscriber)
        else:
            self._task_done(item, result)

    async def _await_task(self, awaitable: Awaitable[Any], item: Any, subscriber: Any) -> None:
        # Runs inside its own cancel scope (``_task_scopes[item]``, see ``_handle_task``).
        # Cancellation means the consumer was removed or we are closing; either way the task
        # was put back in its queue, so a cancelled handler reports nothing.
        try:
            if not self._task_live(item):
                # removed between the call and this task's first step: don't start the work
                close = getattr(awaitable, "close", None)
                if close is not None:
                    close()
                return
            try:
                value = await awaitable
            except TaskRejected:
                self._task_rejected(item)
            except BaseException as exc:
                if _is_cancellation(exc):
                    raise  # the task went back to its queue; nothing to report
                self._subscriber_raised("task", subscriber, exc)
                self._task_failed(item, exc)
            else:
                self._task_done(item, value)
        finally:
            del self._task_scopes[item]

    def _cancel_task_handlers(self, which: Callable[[Any], bool]) -> None:
        """In our loop: cancel the running task handlers whose item ``which`` selects."""
        for item, scope in list(self._task_scopes.items()):
            if which(item):
                scope.cancel()

    def _task_live(self, item: Any) -> bool:
        """Whether ``item`` still belongs to a subscribed consumer (backends may know)."""
        return True

    @abc.abstractmethod
    def _task_done(self, item: Any, value: Any) -> None:
        """Acknowledge task ``item`` and reply ``value``; one that can't be encoded is
        answered as a :class:`~broker.CodecError` failure (must not raise)."""

    @abc.abstractmethod
    def _task_failed(self, item: Any, exc: BaseException) -> None:
        """Acknowledge task ``item`` and reply the failure ``exc`` (must not raise)."""

    @abc.abstractmethod
    def _task_rejected(self, item: Any) -> None:
        """The subscriber raised TaskRejected: hand ``item`` to another consumer."""

    def _handle_broadcast(self, subscribers: Iterable[Callable[..., Any]], *args: Any) -> None:
        for subscriber in subscribers:
            try:
                result = subscriber(self, *args)
                pending = _isawaitable(result)
            except BaseException as exc:  # the subscriber's failure, whatever it is
                self._broadcast_raised(subscriber, exc)
                continue
            if pending:
                self._start(self._await_broadcast, result, subscriber)

    async def _await_broadcast(self, awaitable: Awaitable[Any], subscriber: Any) -> None:
        try:
            await awaitable
        except BaseException as exc:
            if _is_cancellation(exc):
                raise
            self._broadcast_raised(subscriber, exc)

    def _broadcast_raised(self, subscriber: Any, exc: BaseException) -> None:
        logger.error("broadcast subscriber %r on %r raised", subscriber, self._name, exc_info=exc)


def _is_cancellation(exc: BaseException) -> bool:
    """Whether ``exc`` is (or carries) the running backend's cancellation exception."""
    cancelled = anyio.get_cancelled_exc_class()
    if isinstance(exc, cancelled):
        return True
    return isinstance(exc, BaseExceptionGroup) and exc.subgroup(cancelled) is not None


_PLAIN = frozenset({type(None), bool, int, float, str, bytes, list, dict, tuple})


def _isawaitable(value: object) -> bool:
    # most results are plain data: skip inspect's slower checks for them
    return type(value) not in _PLAIN and inspect.isawaitable(value)
