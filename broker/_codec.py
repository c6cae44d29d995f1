"""Codecs: how a message would look on the wire.

A :class:`MemoryBroker` normally hands payloads over by reference. Given a codec (strict mode)
it encodes every message, task, broadcast and reply when it is sent and decodes a fresh copy
for each receiver, exactly as a real broker would. A test then catches a payload that RabbitMQ
could not carry (an object, a set, a NaN), the error names the offending value and its path, and
the receiver sees what a real broker would deliver (a tuple arrives as a list, an ``int`` key as
a string).
"""

from __future__ import annotations

import json
import math
from typing import Any, Protocol, final, runtime_checkable

from ._errors import CodecError

__all__ = ["Codec", "JsonCodec"]


@runtime_checkable
class Codec(Protocol):
    """Turns message values into bytes and back. Must be thread-safe (stateless is best)."""

    def encode(self, value: Any, *, what: str = "msg") -> bytes:
        """Encode ``value``; raise :class:`CodecError` naming the bad value and its path."""
        ...

    def decode(self, data: bytes) -> Any:
        """Decode bytes produced by :meth:`encode`; raise :class:`CodecError` if malformed."""
        ...


def _find_unencodable(value: Any, path: str) -> str | None:
    """Return a description of the first value JSON cannot carry, or None."""
    if value is None or isinstance(value, bool | int | str):
        return None
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return f"{path}: {value!r} is not allowed in JSON"
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _find_unencodable(item, f"{path}[{i}]")
            if found:
                return found
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str | int | float | bool) and key is not None:
                return f"{path}: key {key!r} of type {type(key).__name__} can't be a JSON key"
            found = _find_unencodable(item, f"{path}[{key!r}]")
            if found:
                return found
        return None
    return f"{path}: object of type {type(value).__name__} is not JSON-serializable"


@final
class JsonCodec:
    """Strict JSON: ``None``, ``bool``, ``int``, finite ``float``, ``str``, lists, tuples (they
    arrive as lists) and dicts with scalar keys (they arrive as strings). NaN and infinities are
    refused, as is any other object.
    """

    __slots__ = ()

    def encode(self, value: Any, *, what: str = "msg") -> bytes:
        try:
            return json.dumps(value, allow_nan=False, separators=(",", ":")).encode()
        except (TypeError, ValueError):
            pass
        problem = _find_unencodable(value, what) or f"{what}: {value!r} is not JSON-serializable"
        raise CodecError(f"can't encode {problem}") from None

    def decode(self, data: bytes) -> Any:
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CodecError(f"can't decode {data[:60]!r}: {exc}") from None

    def __repr__(self) -> str:
        return "JsonCodec()"
