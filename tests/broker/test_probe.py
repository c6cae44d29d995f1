"""``broker.amqp_problem``: whether an AMQP broker answers, with a reason when not."""

from __future__ import annotations

import socket
import threading

import pytest

from broker import amqp_problem

from .conftest import AMQP_URL, require_amqp


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_nothing_listening_names_host_and_port() -> None:
    port = _free_port()
    problem = amqp_problem(f"amqp://user:secret@127.0.0.1:{port}/")
    assert problem.startswith(f"no AMQP broker answers on 127.0.0.1:{port}: ")
    assert "secret" not in problem


def test_a_server_that_is_not_amqp_is_refused() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(8)
                conn.sendall(b"HTTP/1.1 400\r\n")

        thread = threading.Thread(target=answer)
        thread.start()
        problem = amqp_problem(f"amqp://127.0.0.1:{port}/", timeout=5)
        thread.join(5)
    assert problem == f"no AMQP broker answers on 127.0.0.1:{port}: unexpected reply b'HTTP/1.'"


@pytest.mark.amqp
def test_the_local_broker_answers() -> None:
    require_amqp()
    assert amqp_problem(AMQP_URL) == ""
