"""The pytest plugin's fixtures, used as a project would use them (on asyncio and trio).

The fixtures are imported here so this works whether or not the ``pytest11`` entry point is
installed; a project with plumio installed just names them as arguments.
"""

from __future__ import annotations

import anyio

from broker import LoopCommunicator, MemoryBroker
from corelib import ControlOutcome, ProcessState, Runner, pytest_plugin
from corelib.cluster._worker import LocalCluster
from corelib.control._controller import ProcessController
from corelib.testing.pytest_plugin import process_control

from ._remote_procs import BOUND, Double, Waiter

# The plugin's fixtures, made visible to this module (a project with plumio installed gets them
# from the pytest11 entry point without this).
memory_broker = pytest_plugin.memory_broker
communicator = pytest_plugin.communicator
runner = pytest_plugin.runner
controller = pytest_plugin.controller
cluster = pytest_plugin.cluster


async def test_control_a_process_of_the_runner_fixture(
    runner: Runner, controller: ProcessController
) -> None:
    process = runner.submit(Waiter)
    with anyio.fail_after(BOUND):
        await process_control(runner).subscribed(process)
        assert (await controller.status(process.pid))["state"] == "waiting"
        assert await controller.pause(process.pid, "hold on") == ControlOutcome(True, "paused")
        assert process.paused
        assert await controller.kill(process.pid) == ControlOutcome(True, "killed")
    assert process.state is ProcessState.KILLED


async def test_the_communicator_fixture_is_strict(
    communicator: LoopCommunicator, memory_broker: MemoryBroker
) -> None:
    assert communicator.broker is memory_broker
    assert memory_broker.codec is not None
    await communicator.add_rpc_subscriber(lambda _c, msg: msg, "echo")
    with anyio.fail_after(BOUND):
        assert await communicator.rpc_send("echo", (1, 2)) == [1, 2]  # JSON: tuples are lists


async def test_launch_on_the_cluster_fixture(
    cluster: LocalCluster, controller: ProcessController
) -> None:
    with anyio.fail_after(BOUND):
        outcome = await controller.launch(Double, {"x": 21})
        pid = await controller.launch(Waiter, nowait=True)
        assert await controller.kill(pid) == ControlOutcome(True, "killed")
    assert outcome["outputs"] == {"y": 42}
    assert {w.backend for w in cluster.statistics().workers} == {"asyncio", "trio"}
