"""The runner: an anyio task group that drives processes on one event loop.

It owns launching, the pump that advances queued processes, parked processes, checkpoints on
transitions (with a persister), ``run``/``run_sync`` and continuing a process from its
checkpoint (:func:`continue_process`; :func:`continue_children` finds the children of a
WorkChain rebuilt from a checkpoint). Below it nothing knows about tasks or loops beyond a
step's own awaits.

Modules, top to bottom: ``_runner`` (:class:`Runner`, ``run`` and its twins), ``_pump`` (the
task that drives queued processes), ``_continue`` (continuing from checkpoints; it knows a
runner only through the small protocol it declares, so ``_runner`` can call it).
"""

from ._continue import continue_children as continue_children
from ._continue import continue_process as continue_process
from ._runner import Runner as Runner
from ._runner import run as run
from ._runner import run_get_process as run_get_process
from ._runner import run_get_process_sync as run_get_process_sync
from ._runner import run_sync as run_sync

__all__ = [
    "Runner",
    "continue_children",
    "continue_process",
    "run",
    "run_get_process",
    "run_get_process_sync",
    "run_sync",
]
