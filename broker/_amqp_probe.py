"""Whether an AMQP broker answers: for tests that skip without one, benchmarks, and CLIs."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

__all__ = ["amqp_problem"]


def amqp_problem(url: str, *, timeout: float = 2.0) -> str:
    """Why no AMQP broker can be used at ``url``; ``""`` when one answers.

    Checks that aio-pika is importable, then opens a TCP connection to the URL's host and port
    and sends the AMQP 0-9-1 protocol header: a broker answers with a ``connection.start``
    frame. Nothing is logged in, so no credentials are sent (and none appear in the answer).

    Args:
        url: an ``amqp://`` or ``amqps://`` URL (port 5672 when it names none).
        timeout: seconds for the connection and for the answer.
    """
    try:
        import aio_pika  # noqa: F401
    except ImportError:
        return "aio-pika is not installed (pip install 'plumio[amqp]')"
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            frame = sock.recv(7)
    except OSError as exc:
        return f"no AMQP broker answers on {host}:{port}: {exc}"
    if frame[:1] != b"\x01":
        return f"no AMQP broker answers on {host}:{port}: unexpected reply {frame[:7]!r}"
    return ""
