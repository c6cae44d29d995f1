"""Fault containment at the codec boundary (pure, no loop): whatever a payload is, encoding and
decoding either work or raise :class:`CodecError` naming what and where; both directions share
one fixed depth limit, so what one side encodes the other decodes, whatever their stacks.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import CodecError, ErrorInfo, JsonCodec, MemoryBroker, RemoteError
from broker._codec import MAX_DEPTH, exceeds_depth
from broker.amqp import _wire as wire

codec = JsonCodec()


def nested(depth: int, leaf: Any = 0) -> Any:
    """``depth`` lists inside each other around ``leaf`` (``nested(2) == [[0]]``)."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def at_stack_depth(frames: int, fn: Callable[[], Any]) -> Any:
    """Call ``fn`` with about ``frames`` more Python frames on the stack."""
    if frames <= 0:
        return fn()
    return at_stack_depth(frames - 1, fn)


def headroom() -> int:
    """How many more frames this stack may take before RecursionError (about)."""
    depth = 0
    frame = sys._getframe()
    while frame is not None:
        depth += 1
        frame = frame.f_back  # type: ignore[assignment]
    return sys.getrecursionlimit() - depth


# -- the depth limit ---------------------------------------------------------------------------


def test_the_limit_is_documented_and_far_below_the_recursion_limit() -> None:
    assert JsonCodec.max_depth == MAX_DEPTH == 100
    assert f"{MAX_DEPTH}" in (JsonCodec.__doc__ or "")
    assert sys.getrecursionlimit() > MAX_DEPTH * 5


def test_encode_takes_the_limit_and_refuses_one_level_more() -> None:
    assert codec.decode(codec.encode(nested(MAX_DEPTH))) == nested(MAX_DEPTH)
    with pytest.raises(CodecError) as info:
        codec.encode(nested(MAX_DEPTH + 1))
    message = str(info.value)
    assert message.startswith("can't encode msg[0][0]")
    assert message.endswith(": nested more than 100 levels deep (the codec's max_depth)")


def test_the_depth_error_names_the_path_and_counts_dicts_too() -> None:
    # dict, list, dict and 97 lists: 100 levels; one more is refused, at its path
    ok = {"a": [{"b": nested(97)}]}
    assert codec.decode(codec.encode(ok)) == ok
    with pytest.raises(CodecError, match=r"^can't encode task\['a'\]\[0\]\['b'\]\[0\]\[0\]"):
        codec.encode({"a": [{"b": nested(98)}]}, what="task")


def test_brackets_in_strings_do_not_count() -> None:
    value = {"text": "[" * 500 + '{"' * 300, "k[": ["]]", '\\"[']}
    assert codec.decode(codec.encode(value)) == value
    assert not exceeds_depth(codec.encode(value), 3)


_tricky_text = st.text(alphabet=st.sampled_from('[]{}"\\\\a\n\u00e9'), max_size=6)
_json_values = st.recursive(
    st.none() | st.integers() | _tricky_text,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(_tricky_text, children, max_size=3)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(value=_json_values, limit=st.integers(0, 8), ensure_ascii=st.booleans())
def test_exceeds_depth_measures_the_nesting_whatever_the_strings_hold(
    value: Any, limit: int, ensure_ascii: bool
) -> None:
    data = json.dumps(value, ensure_ascii=ensure_ascii).encode()
    assert exceeds_depth(data, limit) == (_depth(value) > limit)


def test_decode_refuses_what_encode_refuses_whoever_wrote_it() -> None:
    # a foreign sender with no limit (the stdlib encoder, on a shallow stack) wrote these
    for depth in (MAX_DEPTH + 1, 900, 5000):
        data = b"[" * depth + b"]" * depth
        with pytest.raises(CodecError, match=r"nested more than 100 levels deep"):
            codec.decode(data)
    data = json.dumps({"x": nested(MAX_DEPTH)}).encode()  # 101 levels
    with pytest.raises(CodecError, match=r"nested more than 100 levels deep"):
        codec.decode(data)


@pytest.mark.parametrize("depth", [1, 2, 50, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 300])
def test_encode_and_decode_agree_at_every_depth(depth: int) -> None:
    for value in (nested(depth), nested(depth, {"k": "v[{"}), _dicts(depth)):
        try:
            data = codec.encode(value)
        except CodecError:
            encodes = False
            data = json.dumps(value).encode()
        else:
            encodes = True
        try:
            codec.decode(data)
        except CodecError:
            decodes = False
        else:
            decodes = True
        assert encodes == decodes == (_depth(value) <= MAX_DEPTH)


def _dicts(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = {f"k{i}": value, "s": "]"}
    return value


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


def test_a_payload_that_encodes_decodes_on_a_much_deeper_stack() -> None:
    """The reported defect: a sender on a shallow stack encoded a payload that a receiver
    deeper in its stack could not decode (RecursionError killed its dispatcher). Now
    the largest payload that encodes needs far less stack than any receiver has."""
    data = codec.encode(nested(MAX_DEPTH))
    deep = headroom() - 2 * MAX_DEPTH - 50  # a receiver with only ~250 frames to spare
    assert at_stack_depth(deep, lambda: codec.decode(data)) == nested(MAX_DEPTH)


def test_no_recursion_error_escapes_either_direction_on_an_exhausted_stack() -> None:
    data = codec.encode(nested(MAX_DEPTH))
    almost_full = headroom() - 40
    with pytest.raises(CodecError, match=r"^can't encode msg: the call stack is too deep here"):
        at_stack_depth(almost_full, lambda: codec.encode(nested(MAX_DEPTH)))
    with pytest.raises(CodecError, match=r"^can't decode b'\[\[\[.*the call stack is too deep"):
        at_stack_depth(almost_full, lambda: codec.decode(data))


# -- values the encoder can't write: always CodecError, naming what and where --------------------


def _cyclic_list() -> Any:
    items: list[Any] = [1]
    items.append({"back": items})
    return items


class _BadItems(dict[str, Any]):
    def items(self) -> Any:
        raise LookupError("items() of a hostile mapping")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            _cyclic_list,
            r"^can't encode msg\[1\]\['back'\]: cyclic reference to msg$",
        ),
        (
            lambda: {"n": 10**5000},
            r"^can't encode msg\['n'\]: an int of more than 4300 digits can't be written",
        ),
        (
            lambda: [{10**5000: 1}],
            r"^can't encode msg\[0\]: an int key of more than 4300 digits can't be written",
        ),
        (lambda: {math.nan: 1}, r"^can't encode msg: key nan is not allowed in JSON$"),
        (
            lambda: {"m": _BadItems(a=1)},
            r"^can't encode msg: LookupError: items\(\) of a hostile mapping$",
        ),
    ],
    ids=["cyclic", "long-int", "long-int-key", "nan-key", "hostile-mapping"],
)
def test_every_encode_failure_is_a_codec_error(make: Callable[[], Any], message: str) -> None:
    with pytest.raises(CodecError, match=message):
        codec.encode(make())


def test_decode_failures_are_codec_errors() -> None:
    for data in (b"\xff\xfe", b"[1,", "not bytes either", b"1" * 5000, None):
        with pytest.raises(CodecError, match=r"^can't decode "):
            codec.decode(data)  # type: ignore[arg-type]


def test_the_strict_memory_broker_turns_a_foreign_codecs_errors_into_codec_errors() -> None:
    class Clumsy:
        def encode(self, value: Any, *, what: str = "msg") -> bytes:
            raise ValueError(f"clumsy {what}")

        def decode(self, data: bytes) -> Any:
            raise RecursionError("clumsy decode")

    broker = MemoryBroker(codec=Clumsy())
    with pytest.raises(CodecError, match=r"^can't encode task: the codec raised ValueError"):
        broker.encode(1, "task")
    with pytest.raises(CodecError, match=r"^can't decode payload: the codec raised Recursion"):
        broker._decode(b"1")
    with pytest.raises(CodecError, match=r"^can't encode reply: the codec raised ValueError"):
        broker.round_trip(1, "reply")


# -- the AMQP wire: same limit below the envelope ------------------------------------------------


def test_the_wire_carries_the_limit_and_refuses_one_level_more() -> None:
    data = wire.encode_request("task", nested(MAX_DEPTH), "task")
    assert wire.decode_request(data, "task") == nested(MAX_DEPTH)
    with pytest.raises(CodecError, match=r"^can't encode task\[0\]"):
        wire.encode_request("task", nested(MAX_DEPTH + 1), "task")
    with pytest.raises(CodecError, match=r"^can't encode body\[0\]"):
        wire.encode_broadcast(nested(MAX_DEPTH + 1), None, None, None)
    with pytest.raises(CodecError, match=r"^can't encode reply\[1\]\['back'\]: cyclic reference"):
        wire.encode_reply(_cyclic_list())
    foreign = json.dumps({"v": 1, "kind": "rpc", "body": nested(MAX_DEPTH + 1)}).encode()
    with pytest.raises(wire.Malformed, match=r"^nested more than 100 levels deep"):
        wire.decode_request(foreign, "rpc")
    reply = b'{"v":1,"ok":true,"value":' + b"[" * 5000 + b"]" * 5000 + b"}"
    with pytest.raises(wire.Malformed, match=r"^nested more than 100 levels deep"):
        wire.decode_reply(reply)


@pytest.mark.parametrize(
    ("content_type", "ok"),
    [
        (None, True),
        ("", True),
        ("application/json", True),
        ("Application/JSON; charset=utf-8", True),
        ('application/json; charset="UTF8"', True),
        ("application/json; charset=latin-1", False),
        ("text/plain", False),
        ("application/x-python-serialize", False),  # a pickle: never decoded
        ("application/yaml", False),  # kiwipy's own
    ],
)
def test_only_json_content_is_decoded(content_type: str | None, ok: bool) -> None:
    if ok:
        wire.check_content_type(content_type)
    else:
        with pytest.raises(wire.Malformed, match=r"^content type .* is not 'application/json'"):
            wire.check_content_type(content_type)


# -- reporting a failure never fails ------------------------------------------------------------


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


class _Exit(SystemExit):
    def __str__(self) -> str:
        raise SystemExit("nor for you")


def test_error_info_of_an_exception_whose_str_raises() -> None:
    for exc in (_Unprintable("x"), _Exit(3)):
        info = ErrorInfo.from_exception(exc)
        assert info.type_name.endswith(type(exc).__qualname__)
        assert info.message.startswith("<str() of the exception raised ")
        assert str(RemoteError(info)).startswith(info.type_name)
