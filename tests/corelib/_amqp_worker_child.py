"""Child process for ``test_control_processes.py``: one plumio worker on RabbitMQ, in its own
OS process.

``python -m tests.corelib._amqp_worker_child URL NAMESPACE DB BACKEND NAME`` assembles what a
:class:`~corelib.Worker` thread assembles, on an :class:`~broker.AmqpCommunicator` instead of
the memory broker: under ``anyio.run`` (``BACKEND`` is ``asyncio`` or ``trio``) it opens the
communicator (namespace ``NAMESPACE``), a :class:`~corelib.SqlitePersister` on the shared
database ``DB``, a :class:`~corelib.Runner` checkpointing into it, a
:class:`~corelib.ProcessControl` binding the two and a :class:`~corelib.ProcessLauncher` on the
task queue: the shared default queue and the queue named ``NAME`` (so a test can address one
worker). Then it prints ``ready`` and runs until it is terminated or killed.

Everything the parent needs to synchronise on is printed, one line each, flushed:

- ``ready <NAME> <os pid>`` once the launcher consumes tasks;
- ``saved <pid> <state> <paused|playing>`` after every checkpoint written (the runner's
  checkpoints and the launcher's), so the parent knows what a worker that dies from now on
  leaves behind;
- ``stopping`` when SIGTERM arrived (then it stops as a :class:`~corelib.Worker` does: held
  tasks are requeued, its processes abandoned).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import anyio

from broker import AmqpCommunicator
from corelib import ClassLoader, Runner, SqlitePersister, WorkChain
from corelib.control._binding import ProcessControl
from corelib.control._launcher import ProcessLauncher

#: Identical in every communicator of a namespace (they are part of the queue declarations).
QUEUE_EXPIRES = 60.0
MAX_REDELIVERIES = 3
#: Generous: the shared local broker was seen to stall for ~10 s (no new connection accepted)
#: during repeated runs; a stall must slow a test down, not fail it.
CONNECT_TIMEOUT = 30.0
PUBLISH_TIMEOUT = 20.0

LOADER_PREFIXES = ("corelib", "tests.corelib")


def make_communicator(url: str, namespace: str, name: str) -> AmqpCommunicator:
    """A communicator configured as every worker and client of the tests' namespaces is."""
    return AmqpCommunicator(
        url,
        namespace=namespace,
        name=name,
        queue_expires=QUEUE_EXPIRES,
        connect_timeout=CONNECT_TIMEOUT,
        publish_timeout=PUBLISH_TIMEOUT,
        max_redeliveries=MAX_REDELIVERIES,
    )


class HoldingChain(WorkChain):
    """Three steps; the second pauses the chain itself (a gate only ``play`` opens).

    Every step records the OS pid that ran it in ``trace``, so the outcome shows which worker
    ran which part of the chain: a chain continued from its checkpoint on another worker has
    the first worker's pid for ``first``/``hold`` and the second worker's for ``finish``.
    """

    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.output("trace", valid_type=list)
        spec.outline(cls.first, cls.hold, cls.finish)

    def first(self) -> None:
        self.ctx.trace = [["first", os.getpid()]]

    def hold(self) -> None:
        self.ctx.trace.append(["hold", os.getpid()])
        self.pause("holding")  # takes effect when this step returns

    def finish(self) -> None:
        self.ctx.trace.append(["finish", os.getpid()])
        self.out("trace", self.ctx.trace)


def say(line: str) -> None:
    print(line, flush=True)


class AnnouncingPersister(SqlitePersister):
    """A SQLite persister that prints a line after every checkpoint it wrote."""

    __slots__ = ()

    async def save_encoded(self, pid: str, tag: str | None, data: bytes) -> None:
        await super().save_encoded(pid, tag, data)
        self._announce(pid, data)

    async def save_many(self, items: Any) -> None:
        await super().save_many(items)  # a group commit: announced once it is written
        for pid, _tag, data in items:
            self._announce(pid, data)

    def _announce(self, pid: str, data: bytes) -> None:
        checkpoint = self.codec.decode(data)
        say(f"saved {pid} {checkpoint.state} {'paused' if checkpoint.paused else 'playing'}")


async def main(url: str, namespace: str, db: str, name: str) -> None:
    persister = AnnouncingPersister(db, durable=False)
    loader = ClassLoader(allowed_prefixes=LOADER_PREFIXES)
    async with persister, make_communicator(url, namespace, name) as comm:
        with anyio.CancelScope() as scope:
            async with (
                Runner(persister=persister, loader=loader) as runner,
                ProcessControl(runner, comm) as control,
            ):
                launcher = ProcessLauncher(control, persister=persister, loader=loader)
                # the shared queue, and one of its own so a test can pick the worker
                identifiers = [
                    await comm.add_task_subscriber(launcher),
                    await comm.add_task_subscriber(launcher, queue=name),
                ]
                with anyio.open_signal_receiver(signal.SIGTERM) as signals:
                    say(f"ready {name} {os.getpid()}")
                    async for _ in signals:
                        break
                say("stopping")
                # as Worker.stop(): held tasks go back to the queue, the processes are
                # abandoned without a word (no broadcast, no checkpoint)
                control.mute()
                for identifier in identifiers:
                    await comm.remove_task_subscriber(identifier)
                scope.cancel()


if __name__ == "__main__":
    url, namespace, db, backend, name = sys.argv[1:6]
    anyio.run(main, url, namespace, db, name, backend=backend)
