"""Fault containment on RabbitMQ: foreign messages, hostile headers, failed opens.

A message published by anyone (another client, a forged header, a foreign content type) must
end in the dead-letter queue with one log line saying why, or be answered, and never wedge a
consumer (a task held unacknowledged keeps its prefetch slot for ever). A communicator that
fails to open must leave nothing behind: no I/O thread, no file descriptor.

The raw publishing and reading go through aio-pika on a helper thread running asyncio, so every
test runs on both backends.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread
import pytest

from broker import BrokerUnavailableError, Communicator
from broker.amqp import AmqpCommunicator

from .conftest import AMQP_URL, make_amqp
from .test_conformance import Recorder

pytestmark = pytest.mark.amqp

TIMEOUT = 10


async def _on_raw_connection(work: Callable[[Any, Any], Awaitable[Any]]) -> Any:
    """Run ``work(aio_pika, channel)`` on a fresh aio-pika connection, on a helper thread."""

    async def main() -> Any:
        import aio_pika

        async with asyncio.timeout(TIMEOUT):
            connection = await aio_pika.connect(AMQP_URL)
            async with connection:
                return await work(aio_pika, await connection.channel())

    return await anyio.to_thread.run_sync(lambda: asyncio.run(main()))


def _envelope(kind: str, body: Any) -> bytes:
    return json.dumps({"v": 1, "kind": kind, "body": body}).encode()


async def _publish(
    namespace: str, exchange: str, routing_key: str, body: bytes, **properties: Any
) -> None:
    async def work(aio_pika: Any, channel: Any) -> None:
        target = (
            channel.default_exchange
            if not exchange
            else await channel.get_exchange(f"{namespace}.{exchange}")
        )
        await target.publish(aio_pika.Message(body, **properties), routing_key)

    await _on_raw_connection(work)


async def _dead_letters(namespace: str, n: int) -> list[Any]:
    """The first ``n`` messages of the namespace's dead-letter queue (consumed)."""

    async def work(aio_pika: Any, channel: Any) -> list[Any]:
        queue = await channel.get_queue(f"{namespace}.dead-letters")
        got: list[Any] = []
        enough = asyncio.Event()

        async def on_message(message: Any) -> None:
            got.append(message)
            await message.ack()
            if len(got) >= n:
                enough.set()

        tag = await queue.consume(on_message)
        await enough.wait()
        await queue.cancel(tag)
        return got

    return await _on_raw_connection(work)


def _log_lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


# -- 4a. a task whose plumio-rejected-by header is not consumer ids ------------------------------


class RawString(str):
    """A header string that goes on the wire as these raw bytes, invalid UTF-8 included, as
    another client may send it (pamqp itself would encode it as UTF-8; it decodes a long
    string that isn't UTF-8 as ``bytes``)."""

    raw: bytes

    def __new__(cls, raw: bytes) -> RawString:
        self = super().__new__(cls, raw.decode("latin-1"))
        self.raw = raw
        return self

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


@pytest.mark.parametrize(
    "rejected_by",
    [[RawString(b"\xff\xfe not utf-8")], "not a list", [1, 2]],
    ids=["non-utf8-bytes", "not-a-list", "not-text"],
)
async def test_a_task_with_a_bad_rejected_by_header_is_dead_lettered_not_wedged(
    namespace: str, rejected_by: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Reported: non-UTF-8 bytes in ``plumio-rejected-by`` raised UnicodeDecodeError in the
    consumer callback, so the task was never acked nor dead-lettered and held its prefetch slot
    (with ``prefetch=1``, the consumer got nothing ever again)."""
    caplog.set_level(logging.WARNING, logger="broker.amqp")
    calls: list[Any] = []
    async with make_amqp(namespace) as worker, make_amqp(namespace) as sender:
        await worker.add_task_subscriber(lambda _c, t: calls.append(t) or t, prefetch=1)
        with anyio.fail_after(TIMEOUT):
            assert await sender.task_send("warm-up") == "warm-up"
            await _publish(
                namespace,
                "",
                f"{namespace}.task.tasks",
                _envelope("task", "forged"),
                content_type="application/json",
                headers={"plumio-rejected-by": rejected_by},
            )
            assert await sender.task_send("after") == "after"
            (dead,) = await _dead_letters(namespace, 1)
    assert json.loads(dead.body)["body"] == "forged"
    assert calls == ["warm-up", "after"]
    (line,) = _log_lines(caplog, "malformed")
    assert "header 'plumio-rejected-by'" in line


# -- 4b. a foreign content type is dead-lettered, never decoded ----------------------------------


FOREIGN = ["application/x-python-serialize", "text/plain", "application/json; charset=latin-1"]


@pytest.mark.parametrize("content_type", FOREIGN)
async def test_a_task_with_a_foreign_content_type_is_dead_lettered(
    namespace: str, content_type: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="broker.amqp")
    calls: list[Any] = []
    async with make_amqp(namespace) as worker, make_amqp(namespace) as sender:
        await worker.add_task_subscriber(lambda _c, t: calls.append(t) or t, prefetch=1)
        with anyio.fail_after(TIMEOUT):
            assert await sender.task_send("warm-up") == "warm-up"
            # a valid envelope: only the content type says it is not ours to decode
            await _publish(
                namespace,
                "",
                f"{namespace}.task.tasks",
                _envelope("task", "foreign"),
                content_type=content_type,
            )
            assert await sender.task_send("after") == "after"
            (dead,) = await _dead_letters(namespace, 1)
    assert dead.content_type == content_type
    assert calls == ["warm-up", "after"]
    (line,) = _log_lines(caplog, "malformed")
    assert line.endswith(f"content type {content_type!r} is not 'application/json'")


@pytest.mark.parametrize("content_type", FOREIGN)
async def test_an_rpc_or_broadcast_with_a_foreign_content_type_is_dead_lettered(
    namespace: str, content_type: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="broker.amqp")
    rpc_calls: list[Any] = []
    rec = Recorder()
    async with make_amqp(namespace) as server, make_amqp(namespace) as client:
        await server.add_rpc_subscriber(lambda _c, m: rpc_calls.append(m) or m, "server")
        await server.add_broadcast_subscriber(rec)
        with anyio.fail_after(TIMEOUT):
            await _publish(
                namespace,
                "rpc",
                "server",
                _envelope("rpc", "foreign rpc"),
                content_type=content_type,
                reply_to="nowhere",
                correlation_id="c1",
            )
            await _publish(
                namespace,
                "broadcast",
                "",
                json.dumps(
                    {
                        "v": 1,
                        "kind": "broadcast",
                        "body": "foreign broadcast",
                        "sender": None,
                        "subject": None,
                        "correlation_id": None,
                    }
                ).encode(),
                content_type=content_type,
            )
            dead = await _dead_letters(namespace, 2)
            # still serving, and nothing foreign got through
            assert await client.rpc_send("server", "ours") == "ours"
            await client.broadcast_send("ours")
            calls = await rec.wait_for(1)
    assert sorted(json.loads(m.body)["body"] for m in dead) == [
        "foreign broadcast",
        "foreign rpc",
    ]
    assert rpc_calls == ["ours"]
    assert [c[0] for c in calls] == ["ours"]
    assert len(_log_lines(caplog, "malformed")) == 2


async def test_a_reply_with_a_foreign_content_type_is_dead_lettered(
    namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A reply is decoded only when it says it is JSON: a forged one is dead-lettered, and the
    real one still resolves the call."""
    caplog.set_level(logging.WARNING, logger="broker.amqp")
    release = anyio.Event()
    sent = anyio.Event()
    seen: list[tuple[str, str]] = []

    async def slow(_c: Communicator, msg: Any) -> Any:
        await release.wait()
        return msg

    async with make_amqp(namespace) as server, make_amqp(namespace) as client:
        await server.add_rpc_subscriber(slow, "slow")
        original = client._pending.add

        def spy(sink: Any) -> str:
            correlation_id = original(sink)
            seen.append((client._settings.names.reply_queue(client._uid), correlation_id))
            sent.set()
            return correlation_id

        client._pending.add = spy  # type: ignore[method-assign]
        async with anyio.create_task_group() as tg:
            result: list[Any] = []

            async def call() -> None:
                result.append(await client.rpc_send("slow", "real"))

            tg.start_soon(call)
            with anyio.fail_after(TIMEOUT):
                await sent.wait()
                reply_queue, correlation_id = seen[0]
                await _publish(
                    namespace,
                    "",
                    reply_queue,
                    json.dumps({"v": 1, "ok": True, "value": "forged"}).encode(),
                    content_type="application/x-python-serialize",
                    correlation_id=correlation_id,
                )
                (dead,) = await _dead_letters(namespace, 1)
                release.set()
    assert result == ["real"]
    assert json.loads(dead.body)["value"] == "forged"
    assert len(_log_lines(caplog, "malformed")) == 1


# -- 4c. a failed open leaves no thread and no file descriptor ------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _resources() -> tuple[set[threading.Thread], set[str]]:
    gc.collect()
    return set(threading.enumerate()), set(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
@pytest.mark.parametrize("target", ["closed-port", "wrong-credentials"])
async def test_a_failed_open_leaves_no_thread_and_no_file_descriptor(
    namespace: str, target: str
) -> None:
    """Reported: each failed open leaked its I/O thread, its event loop and 3 descriptors."""
    if target == "closed-port":
        url = f"amqp://guest:guest@127.0.0.1:{_closed_port()}/"
    else:
        url = AMQP_URL.replace("guest:guest@", "guest:not-the-password@", 1)
        assert url != AMQP_URL, "the test broker's URL carries no guest:guest credentials"

    async def fail_to_open() -> None:
        comm = AmqpCommunicator(url, namespace=namespace, connect_timeout=5)
        with pytest.raises(BrokerUnavailableError):
            async with comm:
                pass

    with anyio.fail_after(TIMEOUT * 3):
        await fail_to_open()  # warm-up: what the first use of a library opens for good
        threads, fds = _resources()
        for _ in range(5):
            await fail_to_open()
        threads_after, fds_after = _resources()
    assert [t.name for t in threads_after - threads] == []
    assert fds_after - fds == set()
