"""Fault containment on every backend: no message, result or subscriber can end a dispatcher.

Each test sends something hostile, checks the answer (a typed :class:`RemoteError`, a
:class:`CodecError` at the sender, a log line) and then proves the communicator still serves
by sending a second, ordinary message. They run on the conformance backends (``comm_kind``:
the memory broker plain and strict, and RabbitMQ), on asyncio and trio.

The plain memory broker hands payloads over by reference and never encodes, so the codec
cases (too deep, cyclic, a long int) don't apply to it: there they arrive as sent, and the
tests say so.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from broker import (
    BlockingCommunicator,
    CodecError,
    Communicator,
    LoopCommunicator,
    MemoryBroker,
    RemoteError,
    wait_future,
)
from broker._codec import MAX_DEPTH
from broker.memory._broker import BroadcastDelivery, RpcCall

from .conftest import CommFactory
from .test_conformance import Recorder

TIMEOUT = 10


@pytest.fixture
def ran_to_the_end() -> Iterator[list[bool]]:
    """The test appends ``True`` as the last step inside its communicators' block.

    A cancellation exception escaping a dispatcher cancels the test's own task; the
    communicator's ``async with`` then absorbs that cancellation as if it were its own, and the
    rest of the block is skipped *without failing* the test: this catches that.
    """
    flag: list[bool] = []
    yield flag
    assert flag == [True], "the test body did not run to its end (cancelled from inside?)"


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def cyclic() -> Any:
    items: list[Any] = ["x"]
    items.append({"back": items})
    return items


#: results no codec can send, and what the CodecError says about each
UNSENDABLE: dict[str, tuple[Callable[[], Any], str]] = {
    "too-deep": (
        lambda: nested(MAX_DEPTH + 1),
        "reply[0][0][0]",
    ),
    "cyclic": (cyclic, "reply[1]['back']: cyclic reference to reply"),
    "long-int": (lambda: {"n": 10**5000}, "reply['n']: an int of more than 4300 digits"),
}


def _codec_remote_error(info: pytest.ExceptionInfo[RemoteError], fragment: str) -> None:
    assert info.value.type_name == "broker._errors.CodecError"
    assert info.value.message.startswith("can't encode reply")
    assert fragment in info.value.message


# -- 1. a broadcast nested too deeply ----------------------------------------------------------


async def test_an_over_deep_broadcast_is_refused_at_the_sender(
    open_comm: CommFactory, comm_kind: str
) -> None:
    """Reported: a ``pause`` broadcast nested deeply enough passed ``encode`` at the sender and
    raised RecursionError in every receiver's dispatcher (every worker of a LocalCluster).
    Now the codec refuses it at the sender, and the receivers never see it."""
    async with open_comm() as receiver, open_comm() as sender:
        rec = Recorder()
        await receiver.add_broadcast_subscriber(rec)
        deepest_ok, too_deep = nested(MAX_DEPTH), nested(MAX_DEPTH + 1)
        if comm_kind == "memory":  # by reference: no codec, no limit
            await sender.broadcast_send(too_deep, subject="pause")
        else:
            with pytest.raises(CodecError, match=r"nested more than 100 levels deep") as info:
                await sender.broadcast_send(too_deep, subject="pause")
            assert "[0][0][0]" in str(info.value)
        await sender.broadcast_send(deepest_ok, subject="pause")
        await sender.broadcast_send("after", subject="pause")
        with anyio.fail_after(TIMEOUT):
            calls = await rec.wait_for(2 if comm_kind != "memory" else 3)
        bodies = [c[0] for c in calls]
        assert bodies[-2:] == [deepest_ok, "after"]


def test_an_over_deep_broadcast_from_a_shallow_thread_does_not_kill_the_receivers() -> None:
    """The reported scenario itself, on the strict memory broker a LocalCluster uses: the
    sender is a plain thread with a shallow stack (a BlockingCommunicator), so ``json`` can
    encode 900 levels there, and the receivers decode deeper down their stacks (here, 300
    frames deeper), where 900 levels don't fit. Before, each receiver's dispatcher died of
    RecursionError; now the send raises CodecError and the receivers carry on."""
    broker = MemoryBroker(strict=True)
    got: list[list[Any]] = [[], []]
    errors: list[BaseException] = []
    readies = [threading.Event(), threading.Event()]

    def receiver(index: int, backend: str) -> None:
        async def main() -> None:
            async with LoopCommunicator(broker) as comm:
                done = anyio.Event()

                def on_broadcast(_c: Any, body: Any, *_rest: Any) -> None:
                    got[index].append(body)
                    if body == "after":
                        done.set()

                await comm.add_broadcast_subscriber(on_broadcast)
                readies[index].set()
                with anyio.fail_after(TIMEOUT):
                    await done.wait()

        try:
            _at_stack_depth(300, lambda: anyio.run(main, backend=backend))
        except BaseException as exc:
            errors.append(exc)
            readies[index].set()

    threads = [
        threading.Thread(target=receiver, args=(i, backend))
        for i, backend in enumerate(["asyncio", "trio"])
    ]
    for thread in threads:
        thread.start()
    outcome: list[BaseException | None] = []

    def sender() -> None:
        for ready in readies:
            ready.wait(TIMEOUT)
        comm = BlockingCommunicator(broker)
        try:
            try:
                comm.broadcast_send(nested(900), subject="pause")
            except BaseException as exc:
                outcome.append(exc)
            else:
                outcome.append(None)
            comm.broadcast_send("after", subject="pause")
        finally:
            comm.close()

    sending = threading.Thread(target=sender)
    sending.start()
    for thread in [sending, *threads]:
        thread.join(TIMEOUT + 5)
    assert not any(t.is_alive() for t in [sending, *threads])
    assert errors == []
    (error,) = outcome
    assert isinstance(error, CodecError)
    assert "nested more than 100 levels deep" in str(error)
    assert got == [["after"], ["after"]]


def _at_stack_depth(frames: int, fn: Callable[[], Any]) -> Any:
    return fn() if frames <= 0 else _at_stack_depth(frames - 1, fn)


# -- 2. a result the codec can't encode --------------------------------------------------------


@pytest.mark.parametrize("bad", sorted(UNSENDABLE))
@pytest.mark.parametrize("style", ["sync", "async"])
async def test_an_unsendable_rpc_result_is_answered_and_the_server_keeps_serving(
    open_comm: CommFactory,
    comm_kind: str,
    bad: str,
    style: str,
    caplog: pytest.LogCaptureFixture,
    ran_to_the_end: list[bool],
) -> None:
    make, fragment = UNSENDABLE[bad]
    sent: list[Any] = []

    def result(msg: Any) -> Any:
        if msg != bad:
            return msg
        sent.append(make())
        return sent[-1]

    async def async_result(_c: Communicator, msg: Any) -> Any:
        await anyio.lowlevel.checkpoint()
        return result(msg)

    subscriber = async_result if style == "async" else (lambda _c, msg: result(msg))
    async with open_comm() as server, open_comm() as client:
        await server.add_rpc_subscriber(subscriber, "server")
        with anyio.fail_after(TIMEOUT):
            if comm_kind == "memory":  # by reference
                assert await client.rpc_send("server", bad) is sent[0]
            else:
                with pytest.raises(RemoteError) as info:
                    await client.rpc_send("server", bad)
                _codec_remote_error(info, fragment)
                unsendable = [r for r in caplog.records if "can't be sent" in r.getMessage()]
                assert len(unsendable) == 1  # logged once
            assert await client.rpc_send("server", "second") == "second"
        ran_to_the_end.append(True)  # inside the block: see the fixture


@pytest.mark.parametrize("bad", sorted(UNSENDABLE))
@pytest.mark.parametrize("style", ["sync", "async"])
async def test_an_unsendable_task_result_gets_one_reply_and_is_acked(
    open_comm: CommFactory, comm_kind: str, bad: str, style: str, ran_to_the_end: list[bool]
) -> None:
    make, fragment = UNSENDABLE[bad]
    calls: list[Any] = []

    def result(task: Any) -> Any:
        calls.append(task)
        return make() if task == bad else task

    async def async_result(_c: Communicator, task: Any) -> Any:
        await anyio.lowlevel.checkpoint()
        return result(task)

    subscriber = async_result if style == "async" else (lambda _c, task: result(task))
    async with open_comm() as sender:
        async with open_comm() as worker:
            await worker.add_task_subscriber(subscriber, prefetch=1)
            with anyio.fail_after(TIMEOUT):
                if comm_kind == "memory":  # by reference
                    await sender.task_send(bad)
                else:
                    with pytest.raises(RemoteError) as info:
                        await sender.task_send(bad)
                    _codec_remote_error(info, fragment)
                assert await sender.task_send("second") == "second"
        # a task left unacknowledged would come back to the next consumer
        async with open_comm() as next_worker:
            await next_worker.add_task_subscriber(subscriber)
            with anyio.fail_after(TIMEOUT):
                assert await sender.task_send("third") == "third"
    assert calls == [bad, "second", "third"]
    ran_to_the_end.append(True)


# -- 3. whatever a subscriber raises -----------------------------------------------------------


class HostileResult:
    """A result whose mere inspection raises (``isinstance`` reads ``__class__``)."""

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        raise LookupError("no class for you")


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


FAILURES: dict[str, tuple[Callable[[], BaseException], str, str]] = {
    # name: (make the exception, RemoteError.type_name, RemoteError.message)
    "SystemExit": (lambda: SystemExit("bye"), "SystemExit", "bye"),
    "KeyboardInterrupt": (lambda: KeyboardInterrupt("stop"), "KeyboardInterrupt", "stop"),
    "GeneratorExit": (lambda: GeneratorExit("gen"), "GeneratorExit", "gen"),
    "unprintable": (
        lambda: Unprintable(),
        f"{__name__}.Unprintable",
        "<str() of the exception raised RuntimeError>",
    ),
    # asyncio's cancellation class, raised by the subscriber itself (a sync call can't
    # receive the loop's cancellation: this is the subscriber's failure, on both backends)
    "stray-cancel": (
        lambda: asyncio.CancelledError("mine"),
        "asyncio.exceptions.CancelledError",
        "mine",
    ),
}


def _raise(failure: str) -> Any:
    if failure == "hostile-result":
        return HostileResult()
    raise FAILURES[failure][0]()


def _expected(failure: str) -> tuple[str, str]:
    if failure == "hostile-result":
        return "LookupError", "no class for you"
    return FAILURES[failure][1], FAILURES[failure][2]


#: (failure, style): a hostile *result* is inspected only when a sync subscriber returns it
#: (to see whether it must be awaited); an async subscriber's result is just a value
FAILURE_CASES = [
    pytest.param(failure, style, id=f"{style}-{failure}")
    for failure in [*sorted(FAILURES), "hostile-result"]
    for style in ["sync", "async"]
    # an awaited cancellation can't be told from the communicator's own: it propagates
    if not (failure in ("hostile-result", "stray-cancel") and style == "async")
]


@pytest.mark.parametrize(("failure", "style"), FAILURE_CASES)
async def test_whatever_an_rpc_subscriber_raises_is_answered_and_serving_goes_on(
    open_comm: CommFactory, failure: str, style: str, ran_to_the_end: list[bool]
) -> None:
    async def async_sub(_c: Communicator, msg: Any) -> Any:
        await anyio.lowlevel.checkpoint()
        return _raise(msg) if msg != "ok" else "fine"

    def sync_sub(_c: Communicator, msg: Any) -> Any:
        return _raise(msg) if msg != "ok" else "fine"

    type_name, message = _expected(failure)
    async with open_comm() as server, open_comm() as client:
        await server.add_rpc_subscriber(async_sub if style == "async" else sync_sub, "s")
        with anyio.fail_after(TIMEOUT):
            for _ in range(2):  # and again: the first one ended nothing
                with pytest.raises(RemoteError) as info:
                    await client.rpc_send("s", failure)
                assert (info.value.type_name, info.value.message) == (type_name, message)
            assert await client.rpc_send("s", "ok") == "fine"
        ran_to_the_end.append(True)  # inside the block: see the fixture


@pytest.mark.parametrize(("failure", "style"), FAILURE_CASES)
async def test_whatever_a_task_subscriber_raises_is_answered_once_and_acked(
    open_comm: CommFactory, failure: str, style: str, ran_to_the_end: list[bool]
) -> None:
    calls: list[Any] = []

    async def async_sub(_c: Communicator, task: Any) -> Any:
        calls.append(task)
        await anyio.lowlevel.checkpoint()
        return _raise(task) if task != "ok" else "fine"

    def sync_sub(_c: Communicator, task: Any) -> Any:
        calls.append(task)
        return _raise(task) if task != "ok" else "fine"

    subscriber = async_sub if style == "async" else sync_sub
    type_name, message = _expected(failure)
    async with open_comm() as sender:
        async with open_comm() as worker:
            await worker.add_task_subscriber(subscriber, prefetch=1)
            with anyio.fail_after(TIMEOUT):
                with pytest.raises(RemoteError) as info:
                    await sender.task_send(failure)
                assert (info.value.type_name, info.value.message) == (type_name, message)
                assert await sender.task_send("ok") == "fine"
        async with open_comm() as next_worker:
            await next_worker.add_task_subscriber(subscriber)
            with anyio.fail_after(TIMEOUT):
                assert await sender.task_send("ok") == "fine"
    assert calls == [failure, "ok", "ok"]
    ran_to_the_end.append(True)


@pytest.mark.parametrize(("failure", "style"), FAILURE_CASES)
async def test_whatever_a_broadcast_subscriber_raises_is_logged_and_isolated(
    open_comm: CommFactory,
    failure: str,
    style: str,
    caplog: pytest.LogCaptureFixture,
    ran_to_the_end: list[bool],
) -> None:
    async def async_sub(_c: Communicator, body: Any, *_rest: Any) -> Any:
        await anyio.lowlevel.checkpoint()
        return _raise(failure)

    def sync_sub(_c: Communicator, body: Any, *_rest: Any) -> Any:
        return _raise(failure)

    rec = Recorder()
    async with open_comm() as comm:
        await comm.add_broadcast_subscriber(async_sub if style == "async" else sync_sub)
        await comm.add_broadcast_subscriber(rec)
        await comm.broadcast_send("one")
        await comm.broadcast_send("two")
        with anyio.fail_after(TIMEOUT):
            calls = await rec.wait_for(2)
            assert [c[0] for c in calls] == ["one", "two"]
            await comm.add_rpc_subscriber(lambda _c, m: m, "alive")
            assert await comm.rpc_send("alive", "yes") == "yes"
        ran_to_the_end.append(True)  # inside the block: see the fixture
    logged = [r for r in caplog.records if "broadcast subscriber" in r.getMessage()]
    assert len(logged) == 2  # once per broadcast


async def test_the_loop_s_own_cancellation_still_stops_a_subscriber(
    open_comm: CommFactory,
) -> None:
    """Containment never swallows the communicator's own cancellation: closing cancels a
    running handler, whose caller then hears that the recipient closed."""
    started = anyio.Event()

    async def forever(_c: Communicator, msg: Any) -> Any:
        started.set()
        await anyio.sleep_forever()

    async with open_comm() as client:
        async with open_comm() as server:
            await server.add_rpc_subscriber(forever, "forever")
            async with anyio.create_task_group() as tg:
                outcome: list[BaseException] = []

                async def call() -> None:
                    try:
                        await client.rpc_send("forever", 1)
                    except Exception as exc:
                        outcome.append(exc)

                tg.start_soon(call)
                with anyio.fail_after(TIMEOUT):
                    await started.wait()
                    await server.aclose()
        assert [type(e).__name__ for e in outcome] == ["UnroutableError"]


# -- the memory broker's own boundaries --------------------------------------------------------


async def test_a_broadcast_the_receiver_can_t_decode_is_logged_and_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A strict broker's receiver decodes each broadcast; one it can't decode (here, written
    by a foreign encoder with no depth limit) is logged once and dropped."""
    broker = MemoryBroker(strict=True)
    async with LoopCommunicator(broker) as comm:
        rec = Recorder()
        await comm.add_broadcast_subscriber(rec)
        foreign = b"[" * 2000 + b"]" * 2000
        broker.broadcast((foreign, b"null", b"null", b"null"), None, None, None)
        broker.broadcast((b"\xff", b"null", b"null", b"null"), None, None, None)
        await comm.broadcast_send("after")
        with anyio.fail_after(TIMEOUT):
            calls = await rec.wait_for(1)
    assert [c[0] for c in calls] == ["after"]
    dropped = [r for r in caplog.records if "dropped a broadcast" in r.getMessage()]
    assert len(dropped) == 2
    assert "nested more than 100 levels deep" in dropped[0].getMessage()


async def test_a_request_or_task_the_receiver_can_t_decode_is_answered_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = MemoryBroker(strict=True)
    async with LoopCommunicator(broker) as comm:
        await comm.add_rpc_subscriber(lambda _c, m: m, "echo")
        await comm.add_task_subscriber(lambda _c, t: t)
        foreign = b"[" * 2000 + b"]" * 2000  # from an encoder with no depth limit
        with anyio.fail_after(TIMEOUT):
            rpc: concurrent.futures.Future[Any] = concurrent.futures.Future()
            broker.rpc("echo", foreign, rpc)
            with pytest.raises(RemoteError, match=r"CodecError: can't decode b'\[\[\["):
                await wait_future(rpc)
            task: concurrent.futures.Future[Any] = concurrent.futures.Future()
            broker.send_task(foreign, task, None)
            with pytest.raises(RemoteError, match=r"nested more than 100 levels deep"):
                await wait_future(task)
            assert await comm.rpc_send("echo", "still") == "still"
            assert await comm.task_send("still") == "still"
    assert len([r for r in caplog.records if "can't decode" in r.getMessage()]) == 2


async def test_a_delivery_failing_inside_the_broker_is_logged_and_answered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The dispatcher's last line of defence: a delivery that raises inside the broker itself
    (simulated with an item the broker never sends) is logged and its sender answered."""
    broker = MemoryBroker()
    caplog.set_level(logging.CRITICAL, logger="broker")
    async with LoopCommunicator(broker) as comm:
        await comm.add_rpc_subscriber(lambda _c, m: m, "echo")

        bad = BroadcastDelivery((), "body", None, None, None)
        bad.subscribers = None  # type: ignore[assignment]  # iterating it raises TypeError
        comm._deliver(bad)
        with anyio.fail_after(TIMEOUT):
            assert await comm.rpc_send("echo", "still") == "still"
        sink = _Sink()
        call = RpcCall(lambda _c, m: m, "x", sink)
        comm._fail_item(call, RuntimeError("boom"))
        assert isinstance(sink.error, RemoteError)
    assert any("a delivery failed inside the broker" in r.getMessage() for r in caplog.records)


class _Sink:
    error: BaseException | None = None

    def set_result(self, value: Any) -> None:
        raise AssertionError(value)

    def set_exception(self, exc: BaseException) -> None:
        self.error = exc
