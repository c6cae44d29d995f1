"""A local TCP proxy that can drop every connection through it at once (for chaos tests).

``TcpProxy(upstream_port)`` listens on 127.0.0.1 (an ephemeral port); each accepted client
gets its own upstream connection and two pump threads. :meth:`TcpProxy.drop_all` resets every
pair (``SO_LINGER`` 0: the peers see a reset, as after a network failure) and returns how many
it dropped; new connections are accepted as before (so clients reconnect through it).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from types import TracebackType
from typing import Self

__all__ = ["TcpProxy"]


def _reset(sock: socket.socket) -> None:
    # shutdown first: it wakes a pump blocked in recv() on this socket (close alone does not)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``upstream``; see the module docstring."""

    def __init__(self, upstream: int, host: str = "127.0.0.1") -> None:
        self._upstream = (host, upstream)
        self._server = socket.create_server((host, 0))
        self.port: int = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.accepted = 0
        self.dropped = 0
        self._acceptor = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)

    def __enter__(self) -> Self:
        self._acceptor.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self._upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._closed:
                    _reset(client)
                    _reset(upstream)
                    return
                self.accepted += 1
                self._pairs.append((client, upstream))
                pumps = [
                    threading.Thread(target=self._pump, args=(a, b), daemon=True)
                    for a, b in ((client, upstream), (upstream, client))
                ]
                self._threads.extend(pumps)
            for pump in pumps:
                pump.start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        # one side ended: end the pair (the other pump sees it at once)
        _reset(source)
        _reset(sink)

    def drop_all(self) -> int:
        """Reset every connection through the proxy now; returns how many."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, upstream in pairs:
            _reset(client)
            _reset(upstream)
        self.dropped += len(pairs)
        return len(pairs)

    def close(self) -> None:
        """Stop accepting, drop every connection and join the threads."""
        with self._lock:
            self._closed = True
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)  # wakes accept() (close alone does not)
        with contextlib.suppress(OSError):
            self._server.close()
        self.drop_all()
        if self._acceptor.is_alive():
            self._acceptor.join(5)
        for thread in self._threads:
            thread.join(5)
