"""Continuing processes from their checkpoints, and finding the children of reloaded WorkChains.

Theory of operation
-------------------
:func:`continue_process` loads a process by pid (:func:`~corelib.load_process`) and launches it
in a runner; a waiting WorkChain re-attaches to its children by pid, continuing those too when
they are not running yet (a child that already terminated is loaded, not run again).

A WorkChain rebuilt by :func:`~corelib.load_process` and launched by hand
(``runner.launch``) finds its children the same way: :func:`reattach_children` (called by the
launch) takes those running in that runner, the others are continued from the runner's
persister when the WorkChain next needs them (:func:`continue_children`, which the launch
hands the WorkChain through :meth:`~corelib.WorkChain.attach_children`), and without a
persister the launch raises :class:`~corelib.ChildrenNotFoundError` at once, so that it never
waits for children nobody runs.

This module knows of a runner only what :class:`ContinueHost` names (the
:class:`~corelib.Runner` is one), so that the runner module can call it without an import
cycle; it knows of a WorkChain only its public re-attaching API (``pending_children``,
``attach_children``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Final, Protocol, TypeVar

from ..persistence._checkpoint import CheckpointNotFoundError
from ..persistence._loader import ClassLoader
from ..persistence._persisters import Persister
from ..persistence._save_load import ChildrenNotFoundError, load_process
from ..process._process import Process
from ..workchain._workchain import WorkChain

__all__ = ["continue_process", "continue_children"]

_P = TypeVar("_P", bound=Process)

_NO_PERSISTER: Final = (
    "which don't run in this runner, and the runner has no persister to continue them from: "
    "launch them in this runner first, or launch it in a runner with a persister that holds "
    "their checkpoints (or use continue_process(runner, persister, pid))"
)
_NOT_PERSISTED: Final = (
    "which don't run in this runner, and its persister holds no checkpoint of them"
)


class ContinueHost(Protocol):
    """What continuing needs of a runner; :class:`~corelib.Runner` is one."""

    @property
    def processes(self) -> Mapping[str, Process]:
        """The processes running there, by pid."""

    @property
    def persister(self) -> Persister | None:
        """Where its processes are checkpointed, if anywhere."""

    @property
    def loader(self) -> ClassLoader | None:
        """What loads the classes of checkpoints continued there."""

    def launch(self, process: _P) -> _P:
        """Start running ``process`` there."""


async def continue_process(
    runner: ContinueHost,
    persister: Persister,
    pid: str,
    *,
    tag: str | None = None,
    loader: ClassLoader | None = None,
) -> Process:
    """Load process ``pid`` from ``persister`` and launch it in ``runner``.

    A process already running in ``runner`` is returned as is. A terminal one is loaded (its
    result and outputs are there) but not launched. A waiting WorkChain re-attaches to its
    children by pid, continuing each child the same way first.

    Args:
        runner: a running :class:`~corelib.Runner`.
        persister: where the checkpoints are.
        pid: the process to continue.
        tag: its checkpoint's tag (``None``: the untagged one).
        loader: resolves the checkpoint's class; the default :class:`~corelib.ClassLoader`
            if omitted.

    Raises:
        CheckpointNotFoundError: no checkpoint of ``pid`` (and ``tag``).
        ChildrenNotFoundError: a WorkChain waits for children that don't run in ``runner``
            and of which ``persister`` holds no checkpoint; nothing of it was launched.
        CheckpointError: the checkpoint can't be loaded (see :func:`~corelib.load_process`).
    """
    running = runner.processes.get(pid)
    if running is not None:
        return running
    checkpoint = await persister.load_checkpoint(pid, tag)
    process = load_process(checkpoint, loader=loader)
    if process.has_terminated():
        return process
    await continue_children(process, runner, persister, loader=loader)
    runner.launch(process)  # waits again on what it waited for
    return process


async def continue_children(
    process: Process,
    runner: ContinueHost,
    persister: Persister | None,
    *,
    loader: ClassLoader | None = None,
) -> None:
    """Find the children a WorkChain rebuilt from a checkpoint knows only by pid: each is the
    process of that pid running in ``runner``, or is continued there from ``persister`` (see
    :func:`continue_process`). Anything else (another process, a WorkChain with no pending
    children) is left alone.

    Raises:
        ChildrenNotFoundError: some children don't run in ``runner``, and ``persister`` is
            ``None`` or holds no checkpoint of them; none was re-attached.
    """
    if not isinstance(process, WorkChain):
        return
    pending = process.pending_children
    if not pending:
        return
    found: dict[str, Process] = {}
    missing: list[tuple[str, str]] = []
    for key, pid in pending:
        if pid in found:
            continue
        child = runner.processes.get(pid)
        if child is None and persister is not None:
            try:
                child = await continue_process(runner, persister, pid, loader=loader)
            except CheckpointNotFoundError:
                child = None
        if child is None:
            missing.append((key, pid))
        else:
            found[pid] = child
    if missing:
        reason = _NO_PERSISTER if persister is None else _NOT_PERSISTED
        raise ChildrenNotFoundError(process.pid, missing, reason)
    process.attach_children(found)


def reattach_children(process: Process, runner: ContinueHost) -> None:
    """Before ``runner`` launches a process rebuilt from a checkpoint: re-attach a WorkChain
    to the children it knows by pid that run in ``runner``; those that don't are continued
    from the runner's persister once it needs them (:func:`continue_children`).

    Raises:
        ChildrenNotFoundError: some children don't run in ``runner``, which has no persister;
            nothing was re-attached.
    """
    if not isinstance(process, WorkChain):
        return
    pending = process.pending_children
    if not pending:
        return
    running = runner.processes
    missing: list[tuple[str, str]] = []
    for key, pid in pending:
        if pid not in running and (key, pid) not in missing:
            missing.append((key, pid))
    persister = runner.persister
    if missing and persister is None:
        raise ChildrenNotFoundError(process.pid, missing, _NO_PERSISTER)
    found = {pid: running[pid] for _, pid in pending if pid in running}
    find_rest = (
        functools.partial(
            continue_children, runner=runner, persister=persister, loader=runner.loader
        )
        if missing
        else None
    )
    process.attach_children(found, find_rest=find_rest)
