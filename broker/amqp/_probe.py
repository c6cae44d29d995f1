"""Whether an AMQP broker can be used: for tests that skip without one, benchmarks, and CLIs."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

__all__ = ["amqp_problem"]

_NOT_INSTALLED = "aio-pika is not installed (pip install 'plumio[amqp]')"


def amqp_problem(url: str, *, timeout: float = 2.0) -> str:
    """Why no AMQP broker can be used at ``url``; ``""`` when one can.

    Two things are needed, and both are checked, each independently of the other: aio-pika must
    be importable, and a broker must answer at the URL's host and port. The answer names exactly
    what is missing, so a skipped test says whether to install the ``amqp`` extra, to start a
    server, or both::

        aio-pika is not installed (pip install 'plumio[amqp]'); a broker answers on 127.0.0.1:5672
        no AMQP broker answers on 127.0.0.1:5672: [Errno 111] Connection refused
        aio-pika is not installed (pip install 'plumio[amqp]'); no AMQP broker answers on ...

    The server check opens a TCP connection and sends the AMQP 0-9-1 protocol header: a broker
    answers with a ``connection.start`` frame. Nothing is logged in, so no credentials are sent
    (and none appear in the answer).

    Args:
        url: an ``amqp://`` or ``amqps://`` URL (port 5672, or 5671 for ``amqps``, when it names
            none).
        timeout: seconds for the connection and for the answer.

    Returns:
        ``""`` when aio-pika is installed and a broker answers; otherwise the reason, which names
        the host and port but never the credentials.
    """
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    server = _server_problem(host, port, timeout)
    if _aio_pika_installed():
        return server
    if server:
        return f"{_NOT_INSTALLED}; {server}"
    return f"{_NOT_INSTALLED}; a broker answers on {host}:{port}"


def _aio_pika_installed() -> bool:
    try:
        import aio_pika  # noqa: F401
    except ImportError:
        return False
    return True


def _server_problem(host: str, port: int, timeout: float) -> str:
    """Why no AMQP broker answers on ``host:port``; ``""`` when one does."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            frame = sock.recv(7)
    except OSError as exc:
        return f"no AMQP broker answers on {host}:{port}: {exc}"
    if not frame:
        return f"no AMQP broker answers on {host}:{port}: the connection closed without a reply"
    if frame[:1] != b"\x01":
        return f"no AMQP broker answers on {host}:{port}: unexpected reply {frame!r}"
    return ""
