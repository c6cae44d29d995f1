"""Codecs: how a message would look on the wire.

A :class:`MemoryBroker` normally hands payloads over by reference. Given a codec (strict mode)
it encodes every message, task, broadcast and reply when it is sent and decodes a fresh copy
for each receiver, exactly as a real broker would. A test then catches a payload that RabbitMQ
could not carry (an object, a set, a NaN), the error names the offending value and its path, and
the receiver sees what a real broker would deliver (a tuple arrives as a list, an ``int`` key as
a string).

Depth: ``json`` recurses once per nested list or dict, so whether a deep payload can be encoded
or decoded depends on how deep the *caller's* stack already is. A payload a sender with a
shallow stack could encode would then fail to decode in a receiver with a deeper one. So the
codec has a fixed limit, :data:`MAX_DEPTH` nested containers, far below Python's recursion
limit: :meth:`JsonCodec.encode` refuses anything deeper, and :meth:`JsonCodec.decode` refuses
anything deeper too, whoever produced it, so both sides agree whatever their stacks. The check
works on the JSON text, never walks the value in Python: it costs nothing for a text shorter
than twice the limit (nearly every message) and a few passes of ``bytes`` methods, all in C,
otherwise (:func:`exceeds_depth`). Only a refused value is walked, to name where it goes wrong.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from typing import Any, ClassVar, Final, Protocol, final, runtime_checkable

from ._errors import CodecError

__all__ = ["Codec", "JsonCodec", "MAX_DEPTH", "exceeds_depth"]

#: how many lists/dicts may nest inside each other in a message (``[[1]]`` nests 2)
MAX_DEPTH: Final = 100


@runtime_checkable
class Codec(Protocol):
    """Turns message values into bytes and back. Must be thread-safe (stateless is best)."""

    def encode(self, value: Any, *, what: str = "msg") -> bytes:
        """Encode ``value``; raise :class:`CodecError` naming the bad value and its path."""
        ...

    def decode(self, data: bytes) -> Any:
        """Decode bytes produced by :meth:`encode`; raise :class:`CodecError` if malformed."""
        ...


# -- depth -------------------------------------------------------------------------------------

_KEEP_SKELETON: Final = bytes(b for b in range(256) if b not in b'[]{}"')
_SQUARE: Final = bytes.maketrans(b"{}", b"[]")


def exceeds_depth(data: bytes, limit: int) -> bool:
    """Whether the JSON text ``data`` nests more than ``limit`` lists/dicts inside each other.

    Brackets inside strings don't count. Every step is a pass of a ``bytes`` method (in C):
    drop the escapes that could hide a quote, keep only brackets and quotes, drop the strings,
    then remove the innermost ``[]`` pairs once per level. Meant for valid JSON; for anything
    else the answer is only a guess.
    """
    if len(data) <= 2 * limit + 1:
        return False  # too short to hold limit + 1 pairs of brackets (nearly every message)
    if b"\\" in data:  # only inside strings: \\ and \" are the escapes that matter here
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    skeleton = data.translate(_SQUARE, _KEEP_SKELETON)  # '[', ']' and '"' are left
    if skeleton.count(b"[") <= limit:
        return False  # fewer openings than the limit, strings' included: can't nest deeper
    quotes = skeleton.count(b'"')
    if quotes:
        if 2 * skeleton.count(b'""') == quotes:
            # every string is '""' now (the first quote opens one, the next closes it, and
            # so on): no string holds a bracket
            skeleton = skeleton.translate(None, b'"')
        else:  # strings with brackets in them: keep what is between the strings
            skeleton = b"".join(skeleton.split(b'"')[::2])
    for _ in range(limit):  # each pass removes the innermost pairs: one level of every branch
        if not skeleton:
            return False
        skeleton = skeleton.replace(b"[]", b"")
    return bool(skeleton)


# -- naming what can't be encoded (only on the error path) -------------------------------------

_TOO_DEEP: Final = f"nested more than {MAX_DEPTH} levels deep (the codec's max_depth)"
_BAD_KEY: Final = object()  # marks a dict entry whose key is the problem


def _int_problem(value: int, path: str, what: str = "an int") -> str | None:
    try:
        int.__repr__(value)
    except ValueError:
        limit = sys.get_int_max_str_digits()
        return (
            f"{path}: {what} of more than {limit} digits can't be written "
            "(sys.get_int_max_str_digits())"
        )
    return None


def _key_problem(key: Any, path: str) -> str | None:
    if isinstance(key, str) or key is None:
        return None
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        return _int_problem(key, path, "an int key")
    if isinstance(key, float):
        return None if math.isfinite(key) else f"{path}: key {key!r} is not allowed in JSON"
    return f"{path}: key {_short_repr(key)} of type {type(key).__name__} can't be a JSON key"


def _list_children(value: list[Any] | tuple[Any, ...], path: str) -> Iterator[tuple[Any, Any]]:
    for i, item in enumerate(value):
        yield f"{path}[{i}]", item


def _dict_children(value: dict[Any, Any], path: str) -> Iterator[tuple[Any, Any]]:
    for key, item in value.items():
        problem = _key_problem(key, path)
        if problem is not None:
            yield _BAD_KEY, problem
        else:
            yield f"{path}[{key!r}]", item


def _short_repr(value: Any, limit: int = 80) -> str:
    try:
        text = repr(value)
    except Exception:
        return f"<{type(value).__name__} object>"
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _short_path(path: str, limit: int = 200) -> str:
    return path if len(path) <= limit else f"{path[:120]}...{path[-60:]}"


def _find_problem(value: Any, what: str) -> str | None:
    """The first thing JSON can't carry in ``value`` (depth first), or None.

    Iterative, so it works however deep the payload and the caller's stack are; a cycle or a
    branch deeper than :data:`MAX_DEPTH` ends the walk.
    """
    stack: list[Iterator[tuple[Any, Any]]] = []
    ancestors: dict[int, str] = {}  # id -> path of the containers on the current branch
    ids: list[int] = []
    path, item = what, value
    while True:
        children: Iterator[tuple[Any, Any]] | None = None
        if item is None or isinstance(item, bool | str):
            pass
        elif isinstance(item, int):
            problem = _int_problem(item, path)
            if problem is not None:
                return problem
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"{path}: {item!r} is not allowed in JSON"
        elif isinstance(item, list | tuple):
            children = _list_children(item, path)
        elif isinstance(item, dict):
            children = _dict_children(item, path)
        else:
            return f"{path}: object of type {type(item).__name__} is not JSON-serializable"
        if children is not None:
            back = ancestors.get(id(item))
            if back is not None:
                return f"{_short_path(path)}: cyclic reference to {back}"
            if len(stack) == MAX_DEPTH:
                return f"{_short_path(path)}: {_TOO_DEEP}"
            stack.append(children)
            ancestors[id(item)] = _short_path(path)
            ids.append(id(item))
        while stack:
            entry = next(stack[-1], None)
            if entry is not None:
                if entry[0] is _BAD_KEY:
                    return str(entry[1])
                path, item = entry
                break
            stack.pop()
            del ancestors[ids.pop()]
        else:
            return None


def _describe(value: Any, what: str, exc: BaseException | None) -> str:
    """What can't be encoded in ``value``, and where (for :class:`CodecError`)."""
    try:
        problem = _find_problem(value, what)
    except Exception as walk_exc:  # a container's own code (a dict subclass's items()) raised
        problem = f"{what}: {type(walk_exc).__name__}: {walk_exc}"
    if problem is not None:
        return problem
    if exc is None:
        return f"{what}: {_TOO_DEEP}"
    if isinstance(exc, RecursionError):
        return f"{what}: the call stack is too deep here to encode it (RecursionError)"
    return f"{what}: {type(exc).__name__}: {exc}"


def _head(data: Any) -> str:
    try:
        return repr(data[:60])
    except Exception:
        return f"<{type(data).__name__}>"


_encode = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode


@final
class JsonCodec:
    """Strict JSON: ``None``, ``bool``, ``int``, finite ``float``, ``str``, lists, tuples (they
    arrive as lists) and dicts with scalar keys (they arrive as strings). NaN and infinities are
    refused, as is any other object, an ``int`` too long for ``str()`` (more than
    ``sys.get_int_max_str_digits()`` digits, 4300 by default) and a cyclic structure.

    At most :data:`MAX_DEPTH` (``max_depth``, 100) lists and dicts may nest inside each other:
    :meth:`encode` refuses a deeper value and :meth:`decode` a deeper text, whatever the depth
    of the caller's stack (see the module docstring), so a payload that encodes always decodes.

    Every failure is a :class:`CodecError` naming what and where, for example
    ``can't encode msg['items'][2]: object of type set is not JSON-serializable`` or
    ``can't encode msg[0][0]...: nested more than 100 levels deep``; nothing else escapes
    (a :class:`MemoryError` aside).
    """

    __slots__ = ()

    #: the depth limit (nested lists/dicts) that both directions enforce
    max_depth: ClassVar[int] = MAX_DEPTH

    def encode(self, value: Any, *, what: str = "msg") -> bytes:
        try:
            data = _encode(value).encode()
        except MemoryError:
            raise
        except Exception as exc:  # TypeError, ValueError, RecursionError, a container's code
            raise CodecError(f"can't encode {_describe(value, what, exc)}") from None
        if exceeds_depth(data, MAX_DEPTH):
            raise CodecError(f"can't encode {_describe(value, what, None)}")
        return data

    def decode(self, data: bytes) -> Any:
        try:
            value = json.loads(data)
        except MemoryError:
            raise
        except RecursionError:
            value = _TOO_DEEP_HERE
        except Exception as exc:  # ValueError, UnicodeDecodeError, TypeError (not bytes)
            raise CodecError(f"can't decode {_head(data)}: {exc}") from None
        if type(data) is not bytes:
            data = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
        if exceeds_depth(data, MAX_DEPTH):
            raise CodecError(f"can't decode {_head(data)}: {_TOO_DEEP}")
        if value is _TOO_DEEP_HERE:
            raise CodecError(
                f"can't decode {_head(data)}: the call stack is too deep here (RecursionError)"
            )
        return value

    def __repr__(self) -> str:
        return "JsonCodec()"


_TOO_DEEP_HERE: Final = object()
