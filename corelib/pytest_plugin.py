"""pytest fixtures for testing processes under control: a broker, a communicator, a runner on
it, a controller, and a local cluster of worker threads.

Registered as a pytest plugin through the entry point
``[project.entry-points.pytest11] plumio = "corelib.pytest_plugin"``. The async fixtures run on
the test's own event loop through anyio's pytest plugin, so they work on asyncio and trio alike
(parametrize ``anyio_backend`` as usual)::

    async def test_pause(runner, controller):
        process = runner.submit(MyProcess, {"x": 1})
        await process_control(runner).subscribed(process)
        assert (await controller.pause(process.pid)).done

Fixtures:

- ``memory_broker``: a strict (JSON) :class:`~broker.MemoryBroker`;
- ``communicator``: a :class:`~broker.LoopCommunicator` on it, opened on the test's loop;
- ``runner``: a :class:`~corelib.Runner` bound to ``communicator`` by a
  :class:`~corelib.ProcessControl` (every process it runs answers control RPCs); processes
  still running when the test ends are killed;
- ``controller``: a :class:`~corelib.ProcessController` on its own communicator;
- ``cluster``: a started :class:`~corelib.LocalCluster` of two workers (an asyncio and a trio
  thread) on ``memory_broker``, stopped after the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from broker import LoopCommunicator, MemoryBroker

from ._control import ProcessControl, control_of
from ._controller import ProcessController
from ._runner import Runner
from ._worker import LocalCluster

__all__ = [
    "memory_broker",
    "communicator",
    "runner",
    "controller",
    "cluster",
    "process_control",
]


def process_control(runner: Runner) -> ProcessControl:
    """The :class:`~corelib.ProcessControl` of a runner from the ``runner`` fixture."""
    control = control_of(runner)
    if control is None:
        raise LookupError("this runner is not bound to a communicator")
    return control


@pytest.fixture
def memory_broker() -> MemoryBroker:
    """A strict in-memory broker: every message round-trips through JSON."""
    return MemoryBroker(strict=True)


@pytest.fixture
async def communicator(memory_broker: MemoryBroker) -> AsyncIterator[LoopCommunicator]:
    """A communicator on ``memory_broker``, bound to the test's loop."""
    async with LoopCommunicator(memory_broker, name="test") as comm:
        yield comm


@pytest.fixture
async def runner(communicator: LoopCommunicator) -> AsyncIterator[Runner]:
    """A runner whose processes answer control messages through ``communicator``."""
    async with Runner() as the_runner, ProcessControl(the_runner, communicator):
        yield the_runner
        the_runner.kill_all("test finished", force=True)


@pytest.fixture
async def controller(memory_broker: MemoryBroker) -> AsyncIterator[ProcessController]:
    """A process controller on its own communicator (on the test's loop)."""
    async with LoopCommunicator(memory_broker, name="test-controller") as comm:
        yield ProcessController(comm)


@pytest.fixture
def cluster(memory_broker: MemoryBroker) -> Iterator[LocalCluster]:
    """Two worker threads (asyncio and trio) consuming launch tasks from ``memory_broker``."""
    with LocalCluster(2, backends=("asyncio", "trio"), broker=memory_broker) as the_cluster:
        yield the_cluster
