"""Workers and clusters: threads with their own loop, and the ``plumio`` command line.

It owns :class:`Worker` (a thread running a runner, a binding and a launcher on a broker),
:class:`LocalCluster`, the ``plumio simulate`` workload and the command line. Nothing below
it starts a thread.
"""

from ._worker import ClusterStatistics as ClusterStatistics
from ._worker import LocalCluster as LocalCluster
from ._worker import Worker as Worker
from ._worker import WorkerStatistics as WorkerStatistics

__all__ = [
    "ClusterStatistics",
    "LocalCluster",
    "Worker",
    "WorkerStatistics",
]
