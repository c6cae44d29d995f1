"""Cross-thread hand-off into an event loop: the only module that touches a loop from outside.

Theory of operation
-------------------
Any thread may hand work to a loop; only that loop's own thread touches loop state. The
primitive is a non-blocking *call-soon*: ``loop.call_soon_threadsafe`` on asyncio,
``TrioToken.run_sync_soon`` on trio (anyio's ``run_sync_soon`` under ``current_token()``). It
never blocks the caller, so a loop thread may post into another loop (or its own) freely.

An :class:`Inbox` coalesces posts: the first item of a burst schedules one drain callback, the
following ones only append to a locked deque. The drain runs *in* the target loop, swaps the
deque out and hands the batch to a callback that must not raise: on trio an exception escaping
a call-soon callback is a ``TrioInternalError`` that kills the whole run, so user code never
runs inside it.

A :class:`ReplySlot` is a one-shot result that one loop awaits and any thread fills. Its wake-ups
go through a per-loop :class:`Inbox` too, so a thousand replies arriving from another thread
cost the waiting loop one wake-up, not a thousand.

Invariants:
- ``Inbox._scheduled`` is true exactly while a drain is posted and has not yet swapped the deque.
- A failed post (the loop has finished) leaves nothing behind: the item is removed again and
  the inbox is closed, so senders learn at once instead of waiting forever.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar, final

import anyio
import anyio.lowlevel

__all__ = ["LoopGone", "LoopHandle", "Inbox", "ReplySlot", "current_handle", "wait_future"]

logger = logging.getLogger("broker")

T = TypeVar("T")
_get_ident = threading.get_ident


class LoopGone(Exception):
    """Internal: the target loop has finished or the inbox is closed; the post did not happen."""


@final
class LoopHandle:
    """A handle on the running event loop of the thread that created it.

    Create it with :func:`current_handle` from inside the loop.
    """

    __slots__ = ("_post_native", "is_asyncio", "native", "thread_id", "token", "waker")

    def __init__(self, token: anyio.lowlevel.EventLoopToken) -> None:
        self.token = token
        self.thread_id = _get_ident()
        native: Any = token.native_token
        self.native = native
        self.is_asyncio = isinstance(native, asyncio.AbstractEventLoop)
        if self.is_asyncio:
            loop = native

            def post(fn: Callable[..., object], args: tuple[Any, ...]) -> None:
                try:
                    loop.call_soon_threadsafe(fn, *args)
                except RuntimeError:
                    raise LoopGone from None

        else:
            backend = token.backend_class

            def post(fn: Callable[..., object], args: tuple[Any, ...]) -> None:
                try:
                    backend.run_sync_soon(fn, args, native)
                except RuntimeError:  # anyio.RunFinishedError is a RuntimeError
                    raise LoopGone from None

        self._post_native = post
        #: the per-loop inbox that wakes reply slots awaited on this loop
        self.waker: Inbox[ReplySlot[Any]] = Inbox(self, _wake_slots)

    def post(self, fn: Callable[..., object], *args: Any) -> None:
        """Schedule ``fn(*args)`` in the loop; never blocks. Raises :class:`LoopGone`."""
        self._post_native(fn, args)

    def is_current(self) -> bool:
        """Whether the caller runs on this loop's thread."""
        return _get_ident() == self.thread_id

    def is_running_here(self) -> bool:
        """Whether this handle's loop is the one running in the calling thread (cheap)."""
        if self.is_asyncio:
            return asyncio._get_running_loop() is self.native
        trio = sys.modules.get("trio")
        if trio is None:  # pragma: no cover - a trio handle implies trio is imported
            return False
        try:
            return trio.lowlevel.current_trio_token() is self.native
        except RuntimeError:
            return False


_local = threading.local()


def current_handle() -> LoopHandle:
    """The :class:`LoopHandle` of the running loop, cached per thread.

    Raises:
        anyio.NoEventLoopError: if no event loop runs in this thread.
    """
    handle: LoopHandle | None = getattr(_local, "handle", None)
    if handle is not None and handle.is_running_here():
        return handle
    handle = LoopHandle(anyio.lowlevel.current_token())
    _local.handle = handle
    return handle


@final
class Inbox(Generic[T]):
    """A coalescing, thread-safe queue into one loop.

    Args:
        handle: the target loop.
        on_batch: called in the target loop with each drained batch (a deque). It must not
            raise; anything it raises is logged and the batch dropped.
    """

    __slots__ = ("_closed", "_handle", "_items", "_lock", "_on_batch", "_scheduled")

    def __init__(self, handle: LoopHandle, on_batch: Callable[[deque[T]], None]) -> None:
        self._handle = handle
        self._on_batch = on_batch
        self._lock = threading.Lock()
        self._items: deque[T] = deque()
        self._scheduled = False
        self._closed = False

    def post(self, item: T) -> None:
        """Append ``item``; the first post of a burst schedules one drain. Any thread.

        Raises:
            LoopGone: the inbox is closed or its loop has finished; ``item`` was not queued.
        """
        with self._lock:
            if self._closed:
                raise LoopGone
            self._items.append(item)
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._handle.post(self._drain)
        except LoopGone:
            with self._lock:
                # Nothing was scheduled since _scheduled was false, so the deque held only
                # items appended after the last drain: ours, and any that raced in behind it.
                self._closed = True
                self._scheduled = False
                self._items.clear()
            raise

    def close(self) -> list[T]:
        """Refuse further posts and return the items that were never drained."""
        with self._lock:
            self._closed = True
            items = list(self._items)
            self._items.clear()
        return items

    @property
    def closed(self) -> bool:
        return self._closed

    def _drain(self) -> None:
        # Runs in the target loop, inside a call-soon callback: must never raise.
        with self._lock:
            items = self._items
            self._items = deque()
            self._scheduled = False
        try:
            self._on_batch(items)
        except BaseException:  # pragma: no cover - on_batch is ours and does not raise
            logger.exception("inbox drain failed; %d items dropped", len(items))


def _wake_slots(slots: deque[ReplySlot[Any]]) -> None:
    for slot in slots:
        slot._fire()


_MISSING: Any = object()


@final
class ReplySlot(Generic[T]):
    """A one-shot result awaited on one loop and filled from any thread.

    Must be created inside the loop that will await it. The broker resolves each slot at most
    once; should a second result come anyway, the first one wins.

    On asyncio the wake-up is a bare ``asyncio.Future`` (the cheapest thing a task can wait
    on), on trio an :class:`anyio.Event`.
    """

    __slots__ = ("_exception", "_handle", "_signal", "_value")

    def __init__(self, handle: LoopHandle | None = None) -> None:
        self._handle = handle = handle if handle is not None else current_handle()
        self._signal: Any = handle.native.create_future() if handle.is_asyncio else anyio.Event()
        self._value: Any = _MISSING
        self._exception: BaseException | None = None

    def set_result(self, value: T) -> None:
        if self._value is not _MISSING or self._exception is not None:
            return
        self._value = value
        self._wake()

    def set_exception(self, exc: BaseException) -> None:
        if self._value is not _MISSING or self._exception is not None:
            return
        self._exception = exc
        self._wake()

    def _wake(self) -> None:
        handle = self._handle
        if handle.is_current():
            self._fire()
            return
        # if the waiting loop has finished, nobody is left to read the reply
        with contextlib.suppress(LoopGone):
            handle.waker.post(self)

    def _fire(self) -> None:
        # in the waiting loop
        signal = self._signal
        if self._handle.is_asyncio:
            if not signal.done():  # a cancelled waiter cancelled it
                signal.set_result(None)
        else:
            signal.set()

    def done(self) -> bool:
        return self._value is not _MISSING or self._exception is not None

    async def wait(self) -> T:
        """Wait for the result and return it (or raise the exception)."""
        if self._handle.is_asyncio:
            await self._signal
        else:
            await self._signal.wait()
        if self._exception is not None:
            raise self._exception
        return self._value  # type: ignore[no-any-return]


async def wait_future(future: concurrent.futures.Future[T]) -> T:
    """Await a :class:`concurrent.futures.Future` from any event loop, without blocking it.

    If the waiting task is cancelled, the future is cancelled too (which only succeeds when
    the work has not started). An already-completed future returns at once without yielding
    to other tasks (it still raises if the enclosing scope was cancelled).
    """
    if future.done():
        await anyio.lowlevel.checkpoint_if_cancelled()
    else:
        slot: ReplySlot[None] = ReplySlot()
        future.add_done_callback(lambda _: slot.set_result(None))
        try:
            await slot.wait()
        except anyio.get_cancelled_exc_class():
            future.cancel()
            raise
    return future.result()
