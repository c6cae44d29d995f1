"""Process listeners: observers notified of a process's lifecycle events.

A listener is an observer, not an extension point: it cannot change what the process does.
Exceptions raised by a listener are logged (logger ``corelib.process``) and isolated, so one
broken listener affects neither the process nor the other listeners.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["ProcessListener", "fire_listeners", "notify_listeners"]

logger = logging.getLogger("corelib.process")


class ProcessListener:
    """Base class of process listeners; every method is a no-op, override the ones you need.

    Events fire in the process's own loop, right after the state (or flag) they report has
    been installed, so ``process.state`` already shows it. Each event fires exactly once per
    occurrence.

    ``process`` is the :class:`~corelib.Process` the event is about. It is annotated ``Any``
    because this module sits below the ``Process`` class (which imports it); it also lets an
    override annotate it as ``Process`` or as the subclass it listens to.
    """

    def on_process_created(self, process: Any) -> None:
        """The process was created (fires only for listeners given to the constructor)."""

    def on_process_running(self, process: Any) -> None:
        """The process entered RUNNING (again on every ``Continue`` and resume)."""

    def on_process_waiting(self, process: Any) -> None:
        """The process entered WAITING."""

    def on_process_paused(self, process: Any) -> None:
        """The process was paused."""

    def on_process_played(self, process: Any) -> None:
        """The process was played (unpaused)."""

    def on_output_emitted(self, process: Any, output_port: str, value: Any) -> None:
        """The process emitted a validated output on ``output_port`` (a dotted path)."""

    def on_process_finished(self, process: Any, outputs: Mapping[str, Any]) -> None:
        """The process finished (successfully or not); ``outputs`` is its outputs view."""

    def on_process_excepted(self, process: Any, reason: str) -> None:
        """The process excepted; ``reason`` is ``"<TypeName>: <message>"``."""

    def on_process_killed(self, process: Any, message: str | None) -> None:
        """The process was killed with ``message``."""


def fire_listeners(
    listeners: list[ProcessListener], call: Callable[[ProcessListener], object]
) -> None:
    """Call ``call(listener)`` for each listener, logging and swallowing any exception."""
    for listener in tuple(listeners):
        try:
            call(listener)
        except Exception:
            logger.exception("listener %r raised; ignored", listener)


def notify_listeners(listeners: list[ProcessListener], method: str, *args: Any) -> None:
    """Call ``listener.<method>(*args)`` for each listener, logging and swallowing any exception.

    The same as :func:`fire_listeners`, without a closure per event (the process's hot path).
    """
    for listener in tuple(listeners):
        try:
            getattr(listener, method)(*args)
        except Exception:
            logger.exception("listener %r raised; ignored", listener)
