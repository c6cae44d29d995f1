"""``broker.amqp_problem``: whether an AMQP broker can be used, and if not, what is missing.

The reason has two independent parts, aio-pika and the server. Each test fixes whether aio-pika
is importable (a stand-in module, or a blocked import), so these tests pass the same with and
without the ``amqp`` extra; only ``test_the_local_broker_answers`` needs the real thing.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import types
from collections.abc import Iterator

import pytest

from broker import amqp_problem

from .conftest import AMQP_URL, require_amqp

TIMEOUT = 5
NOT_INSTALLED = "aio-pika is not installed (pip install 'plumio[amqp]')"
#: the start of a connection.start frame: type 1 (method), channel 0
AMQP_REPLY = b"\x01\x00\x00\x00\x00\x01\xf4"


@pytest.fixture(params=["installed", "missing"])
def aio_pika(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Whether ``import aio_pika`` works during the test, whatever this environment has."""
    if request.param == "installed":
        monkeypatch.setitem(sys.modules, "aio_pika", types.ModuleType("aio_pika"))
    else:
        monkeypatch.setitem(sys.modules, "aio_pika", None)  # import raises ImportError
    return request.param  # type: ignore[no-any-return]


def _with_package(aio_pika: str, server: str) -> str:
    """The whole reason expected when the server part is ``server``."""
    return server if aio_pika == "installed" else f"{NOT_INSTALLED}; {server}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _one_shot_server(reply: bytes) -> Iterator[int]:
    """A TCP server on 127.0.0.1 for one connection; yields its port.

    It reads the client's 8-byte protocol header, answers ``reply`` (nothing when empty) and
    closes. Its thread never outlives the block: every socket call has a timeout, and on the way
    out a connection of our own wakes an ``accept()`` that the probe never reached, before the
    thread is joined.
    """
    errors: list[OSError] = []
    with socket.socket() as server:
        server.settimeout(TIMEOUT)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = int(server.getsockname()[1])

        def answer() -> None:
            try:
                conn, _ = server.accept()
                with conn:
                    conn.settimeout(TIMEOUT)
                    conn.recv(8)
                    if reply:
                        conn.sendall(reply)
            except OSError as exc:
                errors.append(exc)

        thread = threading.Thread(target=answer, name=f"probe-test-server-{port}")
        thread.start()
        try:
            yield port
        finally:
            if thread.is_alive():
                with contextlib.suppress(OSError):
                    socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
            thread.join(TIMEOUT)
    assert not thread.is_alive(), f"server thread {thread.name} still runs after {TIMEOUT}s"
    assert errors == []


def test_nothing_listening_names_host_and_port(aio_pika: str) -> None:
    port = _free_port()
    problem = amqp_problem(f"amqp://user:secret@127.0.0.1:{port}/")
    assert problem.startswith(
        _with_package(aio_pika, f"no AMQP broker answers on 127.0.0.1:{port}: ")
    )
    assert "secret" not in problem


def test_a_server_that_is_not_amqp_is_refused(aio_pika: str) -> None:
    with _one_shot_server(b"HTTP/1.1 400\r\n") as port:
        problem = amqp_problem(f"amqp://127.0.0.1:{port}/", timeout=TIMEOUT)
    assert problem == _with_package(
        aio_pika, f"no AMQP broker answers on 127.0.0.1:{port}: unexpected reply b'HTTP/1.'"
    )


def test_a_server_that_closes_without_a_reply_is_refused(aio_pika: str) -> None:
    with _one_shot_server(b"") as port:
        problem = amqp_problem(f"amqp://127.0.0.1:{port}/", timeout=TIMEOUT)
    assert problem == _with_package(
        aio_pika,
        f"no AMQP broker answers on 127.0.0.1:{port}: the connection closed without a reply",
    )


def test_a_broker_that_answers_is_usable_with_aio_pika(aio_pika: str) -> None:
    with _one_shot_server(AMQP_REPLY) as port:
        problem = amqp_problem(f"amqp://guest:hunter2@127.0.0.1:{port}/", timeout=TIMEOUT)
    if aio_pika == "installed":
        assert problem == ""
    else:
        assert problem == f"{NOT_INSTALLED}; a broker answers on 127.0.0.1:{port}"


@pytest.mark.amqp
def test_the_local_broker_answers() -> None:
    require_amqp()
    assert amqp_problem(AMQP_URL) == ""
