"""Cheap child tasks with an owner: what the hot paths spawn per message.

``anyio``'s ``TaskGroup.start_soon`` costs 12-28 µs per task on asyncio (a task handle, a
name, a wrapper coroutine and a cancel scope each time) against about 4 µs for the native
``loop.create_task``; on trio it costs about 17 µs against 5 µs for a native nursery. A worker
spawns one task per task-queue delivery and per awaited RPC handler, so that difference is a
large part of a launch. :func:`open_spawner` keeps the structure (every child has an owner
that waits for it, cancels it and re-raises its failure) and spawns natively.

How it is built: the owner is one anyio task, the *supervisor*, in an anyio task group the
``async with`` block opens. Children are native tasks (asyncio) or tasks of a native nursery
the supervisor holds (trio), each inside its own cancel scope, which :meth:`Spawner.start_soon`
returns so one child can be cancelled alone. The supervisor waits, shielded, until the block
has ended and no child is left, so children may be started (also by other children) until
then. Then:

- the block ends normally: the supervisor waits for the children still running;
- a child raises: the other children and the block are cancelled, and the ``async with``
  raises the exception in an exception group, as a task group does;
- the block raises or is cancelled: the children are cancelled through their scopes (shielded
  sections inside them are respected) and waited for. Children started after that start
  cancelled.

An outer cancellation reaches the children when it makes the block exit (the block is
cancelled at its next checkpoint), or at once if the block has already ended (and now waits
for them), as in a task group.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol, final

import anyio
from anyio.abc import TaskStatus

__all__ = ["ChildScope", "Spawner", "open_spawner"]


class ChildScope(Protocol):
    """What :meth:`Spawner.start_soon` returns: the child's own cancel scope."""

    def cancel(self) -> None: ...


class Spawner:
    """Spawns children owned by the ``async with open_spawner()`` block (see the module)."""

    __slots__ = ("_cancelled", "_closed", "_closing", "_count", "_errors", "_host", "_wake")

    def __init__(self, host: anyio.CancelScope) -> None:
        self._host = host  # the task group's scope: the block and the supervisor
        self._count = 0  # children not yet finished
        self._closing = False  # the block has ended: finish once no child is left
        self._closed = False  # the supervisor has finished: no more children
        self._cancelled = False  # children are being cancelled: new ones start cancelled
        self._errors: list[BaseException] = []
        self._wake: anyio.Event | None = None

    def start_soon(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None
    ) -> ChildScope:
        """Start ``fn(*args)`` as a child; returns its cancel scope.

        Children may start more children until the last one has finished.

        Raises:
            RuntimeError: the spawner has finished.
        """
        if self._closed:
            raise RuntimeError(f"can't start {fn!r}: the spawner has finished")
        scope = anyio.CancelScope()  # on trio: a thin wrapper of trio's own
        if self._cancelled:
            scope.cancel()
        self._start(scope, fn, args, name)
        self._count += 1
        return scope

    @property
    def running(self) -> int:
        """How many children have not finished yet."""
        return self._count

    def _start(
        self,
        scope: anyio.CancelScope,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        name: str | None,
    ) -> None:
        raise NotImplementedError  # pragma: no cover - the backends define it

    async def _child(
        self, scope: anyio.CancelScope, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]
    ) -> None:
        try:
            with scope:
                await fn(*args)
        except anyio.get_cancelled_exc_class():
            raise  # cancelled from outside its scope: not a failure
        except BaseException as exc:  # kept, and raised by the supervisor
            self._errors.append(exc)
            self._abort()
            self._host.cancel()  # the block, as a task group does when a child fails
        finally:
            self._count -= 1
            if self._wake is not None and not self._count:
                self._wake.set()

    def _abort(self) -> None:
        """Cancel every child, and those started from now on."""
        self._cancelled = True

    def _close(self) -> None:
        self._closing = True
        if self._wake is not None:
            self._wake.set()

    async def _supervise(self, *, task_status: TaskStatus[None]) -> None:
        """Own the children until the block has ended and none is left; then raise the
        first failure of a child, if any.

        While the block runs the wait is shielded: children may be started until it ends,
        and cancelling them is the decision of the block's exit (``_abort``) or of a failing
        child. Once the block has ended, an outer cancellation cancels the children.
        """
        try:
            with anyio.CancelScope(shield=True):
                task_status.started()
                while not self._closing:
                    await self._wait()
            try:
                while self._count:
                    await self._wait()
            except anyio.get_cancelled_exc_class():
                self._abort()
                with anyio.CancelScope(shield=True):
                    while self._count:
                        await self._wait()
                if not self._errors:
                    raise
        finally:
            self._wake = None
            self._closed = True
        if self._errors:
            raise self._errors[0]

    async def _wait(self) -> None:
        self._wake = anyio.Event()
        await self._wake.wait()


@final
class _AsyncioSpawner(Spawner):
    __slots__ = ("_loop", "_scopes")

    def __init__(self, host: anyio.CancelScope) -> None:
        super().__init__(host)
        self._loop = asyncio.get_running_loop()
        self._scopes: dict[asyncio.Task[Any], anyio.CancelScope] = {}

    def _start(
        self,
        scope: anyio.CancelScope,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        name: str | None,
    ) -> None:
        task = self._loop.create_task(self._child(scope, fn, args), name=name)
        self._scopes[task] = scope
        task.add_done_callback(self._scopes.__delitem__)

    def _abort(self) -> None:
        self._cancelled = True
        for scope in self._scopes.values():
            scope.cancel()


@final
class _TrioSpawner(Spawner):
    __slots__ = ("_nursery",)

    def __init__(self, host: anyio.CancelScope) -> None:
        super().__init__(host)
        self._nursery: Any = None

    def _start(
        self,
        scope: anyio.CancelScope,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        name: str | None,
    ) -> None:
        self._nursery.start_soon(self._child, scope, fn, args, name=name)

    def _abort(self) -> None:
        self._cancelled = True
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _supervise(self, *, task_status: TaskStatus[None]) -> None:
        import trio

        # The nursery holds the children (its own scope cancels them all); the children
        # never raise into it (see ``_child``), so it closes only after the supervisor's
        # shielded wait, once the block has ended and no child is left.
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await super()._supervise(task_status=task_status)


@asynccontextmanager
async def open_spawner() -> AsyncIterator[Spawner]:
    """A :class:`Spawner` whose children the block owns (see the module docstring).

    Raises:
        BaseExceptionGroup: a child raised (its exception inside), as a task group does.
    """
    on_asyncio = asyncio._get_running_loop() is not None  # anyio runs asyncio or trio
    async with anyio.create_task_group() as tg:
        spawner: Spawner = (
            _AsyncioSpawner(tg.cancel_scope) if on_asyncio else _TrioSpawner(tg.cancel_scope)
        )
        await tg.start(spawner._supervise)
        try:
            yield spawner
        except BaseException:
            spawner._abort()  # the block failed or was cancelled: so are the children
            raise
        finally:
            spawner._close()
