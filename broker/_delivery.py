"""What every backend's sending side shares: where a reply goes, and the default task queue.

A send that expects a reply hands the backend a *sink*: a :class:`~broker._wakeup.ReplySlot`
when the caller awaits on a loop, a :class:`concurrent.futures.Future` for the ``*_future``
variants. Whoever produces the reply (the in-memory broker, the AMQP adapter's I/O thread)
completes it with :func:`resolve`, exactly once.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

__all__ = ["DEFAULT_QUEUE", "ReplySink", "resolve"]

#: the task queue used when ``queue=None`` (every backend's default)
DEFAULT_QUEUE: Final = "tasks"


class ReplySink(Protocol):
    """Where a reply goes: a :class:`~broker._wakeup.ReplySlot` or a concurrent future."""

    def set_result(self, value: Any, /) -> None: ...
    def set_exception(self, exc: BaseException, /) -> None: ...


def resolve(sink: ReplySink | None, ok: bool, value: Any) -> None:
    """Complete ``sink`` with a value or an exception; ignores an already-done future."""
    if sink is None:
        return
    try:
        if ok:
            sink.set_result(value)
        else:
            sink.set_exception(value)
    except Exception:  # concurrent.futures.InvalidStateError: the caller cancelled it
        pass
