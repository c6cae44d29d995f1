"""Control requests' answers: the awaitable :class:`ControlHandle` and its :class:`ControlOutcome`.

A control request (``pause``, ``play``, ``kill``) is a plain sync method of the process that
returns at once with a handle; the process resolves the handle when the request took effect,
was refused or was superseded (see :class:`~corelib.process._process.Process`). Nothing here
decides anything: the decisions are :func:`~corelib.process._states.decide`'s.
"""

from __future__ import annotations

from typing import Any, final

import anyio
import anyio.lowlevel
import attrs

from ._states import Request

__all__ = ["ControlOutcome", "ControlHandle"]


@final
@attrs.frozen
class ControlOutcome:
    """How a control request (pause, play, kill) ended; true if and only if it is ``done``.

    So ``if await proc.pause():`` is true when the process is paused (or already was), and
    false when the pause was refused (the process terminated), superseded by a kill or
    cancelled by a play.

    Attributes:
        done: whether the process now is as requested *because of* this request or already
            was (``"already paused"``, ``"not paused"``). ``False`` when the request could
            not act or was superseded.
        reason: a short lower-case explanation, one of ``"paused"``, ``"already paused"``,
            ``"played"``, ``"not paused"``, ``"pause cancelled"``, ``"killed"``,
            ``"kill pending"``, ``"pause cancelled by play"``, ``"superseded by kill"``,
            ``"superseded by a later kill"``, ``"process already <state>"``.
    """

    done: bool
    reason: str

    def __bool__(self) -> bool:
        """``done``: ``if await proc.pause():`` holds only if the process is paused now.

        A request that was refused (``"process already finished"``), superseded (``"superseded
        by kill"``) or cancelled (``"pause cancelled by play"``) is falsy.
        """
        return self.done


@final
class ControlHandle:
    """The awaitable result of a control request; it always resolves.

    ``await handle`` (or ``await handle.wait()``) returns the :class:`ControlOutcome`. Requests
    that act at once return an already resolved handle; deferred ones resolve when the running
    step ends, when a later request supersedes them, or when the process terminates, whichever
    comes first.
    """

    __slots__ = ("_event", "_outcome", "_request")

    def __init__(self, request: Request) -> None:
        self._request = request
        self._outcome: ControlOutcome | None = None
        self._event: anyio.Event | None = None

    def __repr__(self) -> str:
        return f"<ControlHandle {self._request.value}: {self._outcome!r}>"

    @property
    def request(self) -> Request:
        """The request this handle answers."""
        return self._request

    @property
    def outcome(self) -> ControlOutcome | None:
        """The outcome, or ``None`` while the request is still pending."""
        return self._outcome

    def done(self) -> bool:
        """Whether the outcome is known."""
        return self._outcome is not None

    async def wait(self) -> ControlOutcome:
        """Wait for and return the outcome."""
        if self._outcome is None:
            if self._event is None:
                self._event = anyio.Event()
            await self._event.wait()
        else:
            await anyio.lowlevel.checkpoint()
        assert self._outcome is not None
        return self._outcome

    def __await__(self) -> Any:
        return self.wait().__await__()

    def _resolve(self, done: bool, reason: str) -> None:
        if self._outcome is not None:
            return
        self._outcome = ControlOutcome(done, reason)
        if self._event is not None:
            self._event.set()


def resolved(request: Request, done: bool, reason: str) -> ControlHandle:
    """A handle for ``request``, already resolved with ``ControlOutcome(done, reason)``."""
    handle = ControlHandle(request)
    handle._resolve(done, reason)
    return handle


def force_of(force: bool | None, force_kill: bool | None) -> bool:
    """Whether a kill is forced, given ``force=`` and plumpy's ``force_kill=`` (either may be
    omitted, as ``None``).

    Raises:
        ValueError: both were given, with different values.
    """
    if force_kill is None:
        return bool(force)
    if force is None or bool(force) == bool(force_kill):
        return bool(force_kill)
    raise ValueError(
        f"kill got force={force!r} and force_kill={force_kill!r}; pass one of them "
        "(force_kill is plumpy's name for force)"
    )
