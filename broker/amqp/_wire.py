"""The AMQP adapter's wire format and broker object names: pure functions, no I/O.

Envelope (JSON, UTF-8, ``content_type=application/json``), version 1:

- RPC request: ``{"v": 1, "kind": "rpc", "body": <msg>}``
- task: ``{"v": 1, "kind": "task", "body": <task>}``
- broadcast: ``{"v": 1, "kind": "broadcast", "body": ..., "sender": ..., "subject": ...,
  "correlation_id": ...}``
- reply: ``{"v": 1, "ok": true, "value": <value>}``, or ``{"v": 1, "ok": false, "error":
  {"type": ..., "message": ..., "traceback": ...}}`` (a subscriber raised: :class:`RemoteError`
  on the receiving side), or ``{"v": 1, "ok": false, "fault": {"kind": "unroutable" |
  "dead_lettered", "message": ...}}`` (the broker side gave up: :class:`UnroutableError` /
  :class:`DeadLetteredError`).

Anything else (a ``content_type`` other than JSON, not JSON, NaN/Infinity, nested deeper than
the codec's ``max_depth`` below the envelope, another version, a kind the queue does not carry,
a missing field) is *malformed*: :func:`check_content_type`, :func:`decode_request` and friends
raise :class:`Malformed`, and the adapter rejects the message to the dead-letter queue. Extra
keys are ignored, so a later version may add fields. A message without a ``content_type`` is
taken for JSON (plain AMQP clients often leave it out).

Names (``ns`` is the namespace; it may not contain a dot, so every name below is unambiguous):

====================================  ========================================================
``{ns}.rpc``                          direct exchange; RPC routing key = the identifier
``{ns}.rpc.{identifier}``             exclusive queue per RPC subscriber (see :func:`escape`)
``{ns}.broadcast``                    fanout exchange every communicator binds to
``{ns}.broadcast.{uid}``              exclusive broadcast queue of one communicator
``{ns}.reply.{uid}``                  exclusive reply queue of one communicator
``{ns}.task.{queue}``                 durable quorum task queue (default exchange, key = name)
``{ns}.parked.{queue}``               durable quorum queue of tasks every consumer rejected
``{ns}.consumer.{uid}``               exclusive, empty presence queue of one task consumer
``{ns}.dlx`` / ``{ns}.dead-letters``  fanout dead-letter exchange and its durable queue
====================================  ========================================================

Only direct, fanout and the default exchange are used, so no identifier is ever a pattern:
``*`` and ``#`` are plain characters. Routing keys carry identifiers verbatim; inside queue
names, identifiers and task-queue names are escaped (:func:`escape`).
"""

from __future__ import annotations

import json
import re
from typing import Any, Final, final

import attrs

from .._codec import MAX_DEPTH, JsonCodec, exceeds_depth
from .._errors import DeadLetteredError, ErrorInfo, RemoteError, UnroutableError

__all__ = [
    "VERSION",
    "CONTENT_TYPE",
    "Malformed",
    "Names",
    "escape",
    "encode_request",
    "encode_broadcast",
    "encode_reply",
    "encode_error",
    "encode_fault",
    "check_content_type",
    "decode_request",
    "decode_broadcast",
    "decode_reply",
]

VERSION: Final = 1
#: the content type of every message the adapter publishes
CONTENT_TYPE: Final = "application/json"
#: AMQP short strings (queue names, routing keys) are at most 255 bytes
MAX_NAME_BYTES: Final = 255

_codec = JsonCodec()
_NAMESPACE_RE = re.compile(r"[A-Za-z0-9_\-:]+")


class Malformed(Exception):
    """Internal: a message that is not a valid envelope of the expected kind."""


#: what a queue name may contain (the client library refuses anything else); ``#`` escapes
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:@,/ ")


def escape(text: str) -> str:
    """Make ``text`` usable inside a queue name, reversibly and without collisions.

    Letters, digits and ``-_.:@,/`` and space stay; every other character becomes ``#`` and
    the hex of its UTF-8 bytes (``*`` is ``#2a``, ``#`` is ``#23``).
    """
    if all(c in _SAFE for c in text):
        return text
    return "".join(c if c in _SAFE else "".join(f"#{b:02x}" for b in c.encode()) for c in text)


def _check_name(name: str, what: str) -> str:
    if len(name.encode()) > MAX_NAME_BYTES:
        raise ValueError(f"{what} is too long for AMQP ({MAX_NAME_BYTES} bytes at most): {name!r}")
    return name


@final
@attrs.frozen
class Names:
    """Every broker object name of one namespace.

    Attributes:
        namespace: letters, digits, ``_``, ``-`` and ``:`` (no dot).
    """

    namespace: str = attrs.field()

    @namespace.validator
    def _check(self, _attribute: object, value: str) -> None:
        if not isinstance(value, str) or not _NAMESPACE_RE.fullmatch(value):
            raise ValueError(f"namespace must be letters, digits, '_', '-' or ':', got {value!r}")
        _check_name(f"{value}.dead-letters", "namespace")

    @property
    def rpc_exchange(self) -> str:
        return f"{self.namespace}.rpc"

    @property
    def broadcast_exchange(self) -> str:
        return f"{self.namespace}.broadcast"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.namespace}.dlx"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.namespace}.dead-letters"

    def rpc_queue(self, identifier: str) -> str:
        """The RPC queue of ``identifier``; raises ValueError if the name would be too long."""
        return _check_name(f"{self.namespace}.rpc.{escape(identifier)}", "rpc identifier")

    def task_queue(self, queue: str) -> str:
        return _check_name(f"{self.namespace}.task.{escape(queue)}", "task queue name")

    def parked_queue(self, queue: str) -> str:
        return _check_name(f"{self.namespace}.parked.{escape(queue)}", "task queue name")

    def broadcast_queue(self, uid: str) -> str:
        return f"{self.namespace}.broadcast.{uid}"

    def reply_queue(self, uid: str) -> str:
        return f"{self.namespace}.reply.{uid}"

    def presence_queue(self, uid: str) -> str:
        return f"{self.namespace}.consumer.{uid}"


# -- encoding ----------------------------------------------------------------------------------
#
# Each part is encoded on its own by the strict codec, so an error names the offending value
# by the caller's name for it (``task['when']``), not by its place in the envelope.


def encode_request(kind: str, body: Any, what: str) -> bytes:
    """Encode an RPC (``kind="rpc"``) or task (``"task"``) envelope.

    Raises:
        CodecError: ``body`` is not JSON-safe (the message names the value, under ``what``).
    """
    return b'{"v":1,"kind":"%s","body":%s}' % (kind.encode(), _codec.encode(body, what=what))


def encode_broadcast(body: Any, sender: Any, subject: Any, correlation_id: Any) -> bytes:
    """Encode a broadcast envelope; raises :class:`CodecError` naming the bad part."""
    return b'{"v":1,"kind":"broadcast","body":%s,"sender":%s,"subject":%s,"correlation_id":%s}' % (
        _codec.encode(body, what="body"),
        _codec.encode(sender, what="sender"),
        _codec.encode(subject, what="subject"),
        _codec.encode(correlation_id, what="correlation_id"),
    )


def encode_reply(value: Any) -> bytes:
    """Encode a successful reply; raises :class:`CodecError` for a value JSON can't carry."""
    return b'{"v":1,"ok":true,"value":%s}' % _codec.encode(value, what="reply")


def encode_error(info: ErrorInfo) -> bytes:
    """Encode a reply saying the subscriber raised."""
    return json.dumps({"v": VERSION, "ok": False, "error": info.to_dict()}).encode()


def encode_fault(kind: str, message: str) -> bytes:
    """Encode a reply saying the message was given up on (``unroutable``/``dead_lettered``)."""
    assert kind in _FAULTS
    return json.dumps(
        {"v": VERSION, "ok": False, "fault": {"kind": kind, "message": message}}
    ).encode()


# -- decoding ----------------------------------------------------------------------------------


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def check_content_type(content_type: str | None) -> None:
    """Raise :class:`Malformed` unless ``content_type`` is JSON (or absent).

    ``application/json`` may carry parameters; a charset, if given, must be UTF-8.
    """
    if not content_type or content_type == CONTENT_TYPE:
        return  # what we publish, and what plain clients leave out: the fast path
    media, *params = content_type.split(";")
    if media.strip().lower() == CONTENT_TYPE and all(
        value.strip().strip('"').lower() in ("utf-8", "utf8")
        for key, _, value in (param.partition("=") for param in params)
        if key.strip().lower() == "charset"
    ):
        return
    raise Malformed(f"content type {content_type!r} is not {CONTENT_TYPE!r}")


#: the envelope is one level around what the codec encoded
_ENVELOPE_DEPTH: Final = MAX_DEPTH + 1
_TOO_DEEP_HERE: Final = object()


def _load(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data, parse_constant=_refuse_constant)
    except RecursionError:
        # deeper than this thread's stack allows; the depth check below says why, if it can
        value = _TOO_DEEP_HERE
    except (ValueError, UnicodeDecodeError, TypeError) as exc:
        raise Malformed(f"not JSON: {exc}") from None
    if exceeds_depth(data, _ENVELOPE_DEPTH):
        raise Malformed(f"nested more than {MAX_DEPTH} levels deep below the envelope")
    if value is _TOO_DEEP_HERE:
        raise Malformed("not JSON: nested too deeply for this thread's stack")
    if not isinstance(value, dict):
        raise Malformed(f"not an envelope: a JSON {type(value).__name__}")
    if value.get("v") != VERSION or type(value.get("v")) is not int:
        raise Malformed(f"unknown envelope version {value.get('v')!r}")
    return value


def decode_request(data: bytes, kind: str) -> Any:
    """Return the body of an RPC or task envelope of ``kind``; raise :class:`Malformed`."""
    envelope = _load(data)
    if envelope.get("kind") != kind:
        raise Malformed(f"expected a {kind!r} envelope, got kind {envelope.get('kind')!r}")
    if "body" not in envelope:
        raise Malformed(f"{kind} envelope without a body")
    return envelope["body"]


def decode_broadcast(data: bytes) -> tuple[Any, Any, Any, Any]:
    """Return ``(body, sender, subject, correlation_id)``; raise :class:`Malformed`."""
    envelope = _load(data)
    if envelope.get("kind") != "broadcast":
        raise Malformed(f"expected a 'broadcast' envelope, got kind {envelope.get('kind')!r}")
    try:
        return (
            envelope["body"],
            envelope["sender"],
            envelope["subject"],
            envelope["correlation_id"],
        )
    except KeyError as exc:
        raise Malformed(f"broadcast envelope without {exc.args[0]!r}") from None


_FAULTS: Final = {"unroutable": UnroutableError, "dead_lettered": DeadLetteredError}


def decode_reply(data: bytes) -> tuple[bool, Any]:
    """Return ``(True, value)`` or ``(False, exception)``; raise :class:`Malformed`.

    The exception is a :class:`RemoteError`, :class:`UnroutableError` or
    :class:`DeadLetteredError`, ready to be raised where the reply is awaited.
    """
    envelope = _load(data)
    ok = envelope.get("ok")
    if ok is True:
        if "value" not in envelope:
            raise Malformed("reply without a value")
        return True, envelope["value"]
    if ok is not False:
        raise Malformed(f"reply 'ok' must be true or false, got {ok!r}")
    error = envelope.get("error")
    if isinstance(error, dict):
        try:
            return False, RemoteError(ErrorInfo.from_dict(error))
        except Exception as exc:  # CodecError
            raise Malformed(str(exc)) from None
    fault = envelope.get("fault")
    if isinstance(fault, dict):
        kind = fault.get("kind")
        exc_type = _FAULTS.get(kind) if isinstance(kind, str) else None
        message = fault.get("message")
        if exc_type is not None and isinstance(message, str):
            return False, exc_type(message)
    raise Malformed("failed reply without a valid 'error' or 'fault'")
