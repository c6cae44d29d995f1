"""Process control over RabbitMQ: the same binding, controller and launcher on an
``AmqpCommunicator`` (marked ``amqp``; skipped with a reason when no broker answers)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from broker import BroadcastFilter, UnroutableError
from corelib import ControlOutcome, Process, ProcessListener, ProcessState, Runner
from corelib.control._binding import ProcessControl
from corelib.control._controller import ProcessController
from corelib.control._launcher import ProcessLauncher

from ..broker.conftest import AMQP_URL, amqp_namespace, require_amqp
from ._remote_procs import Double, Waiter

pytestmark = pytest.mark.amqp

BOUND = 20.0


async def test_control_and_launch_over_rabbitmq() -> None:
    require_amqp()
    from broker import AmqpCommunicator

    namespace = amqp_namespace()

    def make(name: str) -> Any:
        return AmqpCommunicator(
            AMQP_URL, namespace=namespace, name=name, queue_expires=60, publish_timeout=5
        )

    with anyio.fail_after(BOUND):
        async with (
            make("worker") as comm,
            make("client") as client,
            Runner() as runner,
            ProcessControl(runner, comm) as control,
        ):
            await comm.add_task_subscriber(ProcessLauncher(control))
            ctl = ProcessController(client)
            subjects: list[str] = []
            ended = anyio.Event()

            def watch(_c: Any, body: Any, _s: Any, subject: Any, _cid: Any) -> None:
                subjects.append(subject)
                if subject.endswith(".killed"):
                    ended.set()

            await client.add_broadcast_subscriber(BroadcastFilter(watch, sender="amqp-w"))
            process = Waiter(pid="amqp-w")
            await control.start(process)
            assert (await ctl.status("amqp-w"))["state"] == "waiting"
            assert await ctl.pause("amqp-w") == ControlOutcome(True, "paused")
            played = anyio.Event()

            class Played(ProcessListener):
                def on_process_played(self, _process: Process) -> None:
                    played.set()

            process.add_process_listener(Played())
            await ctl.play_all()
            await played.wait()
            assert not process.paused
            assert await ctl.kill("amqp-w", "bye") == ControlOutcome(True, "killed")
            await ended.wait()
            assert process.state is ProcessState.KILLED
            assert subjects[0] == "state_changed.None.created"
            assert subjects[-1] == "state_changed.waiting.killed"

            outcome = await ctl.launch(Double, {"x": 4})
            assert outcome["outputs"] == {"y": 8}
            with pytest.raises(UnroutableError):
                await ctl.status("amqp-nobody")
