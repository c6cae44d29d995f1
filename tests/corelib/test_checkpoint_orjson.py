"""The codec's orjson paths give what its ``json`` paths give, and fall back to them.

orjson writes and reads the JSON-native checkpoints; everything it would write differently,
refuse, or read differently goes through the ``json`` paths, which stay the reference. Each
test compares the codec with orjson on against the same codec with it off (``_orjson_enabled``).
Also here: the quicker copies :func:`~corelib.checkpoint_of` makes of a live process.
"""

from __future__ import annotations

import enum
import json
import math
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings

from corelib import AttributesFrozenDict, InMemoryPersister, Runner, SqlitePersister
from corelib.persistence._checkpoint import Checkpoint, CheckpointEncodeError, CheckpointError
from corelib.persistence._codec import CheckpointCodec, _dumps, _orjson_enabled, _orjson_ready
from corelib.persistence._loader import class_identifier
from corelib.persistence._save_load import checkpoint_of
from corelib.process._frozen import thaw

from ._checkpoint_helpers import assert_same_checkpoint, checkpoints, plain_values, user_codec
from .test_checkpoint_fastpaths import native_checkpoints

orjson = pytest.importorskip("orjson")


@pytest.fixture
def without_orjson() -> Iterator[None]:
    _orjson_enabled[0] = False
    try:
        yield
    finally:
        _orjson_enabled[0] = True


def json_only(action: Any) -> Any:
    """``action()`` with the orjson paths off."""
    _orjson_enabled[0] = False
    try:
        return action()
    finally:
        _orjson_enabled[0] = True


def outcome(action: Any) -> Any:
    """``("ok", result)`` or ``("error", type, message)``."""
    try:
        return ("ok", action())
    except CheckpointError as exc:
        return ("error", type(exc), str(exc))


def same_json(left: bytes, right: bytes) -> bool:
    """Whether two encodings hold the same JSON (floats may be spelled differently)."""

    def normal(data: bytes) -> str:
        return _dumps(json.loads(data.decode("utf-8", "surrogatepass")))

    return normal(left) == normal(right)


def checkpoint(**fields: Any) -> Checkpoint:
    return Checkpoint(**{"pid": "p", "process_class": "m:C", "state": "running", **fields})


def test_orjson_is_on_by_default() -> None:
    assert _orjson_enabled == [True]


# --- encoding -----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(one=native_checkpoints)
def test_orjson_encoding_of_native_trees_is_the_json_encoding(one: Checkpoint) -> None:
    codec = CheckpointCodec()
    fast = codec.encode(one)
    slow = json_only(lambda: codec.encode(one))
    assert same_json(fast, slow)
    assert_same_checkpoint(codec.decode(fast), one)
    assert_same_checkpoint(json_only(lambda: codec.decode(fast)), one)


@settings(max_examples=300, deadline=None)
@given(one=checkpoints)
def test_orjson_encoding_of_any_tree_is_the_json_encoding(one: Checkpoint) -> None:
    codec = user_codec()
    fast = outcome(lambda: codec.encode(one))
    slow = json_only(lambda: outcome(lambda: codec.encode(one)))
    if fast[0] == "ok" and slow[0] == "ok":
        assert same_json(fast[1], slow[1])
        assert_same_checkpoint(codec.decode(fast[1]), codec.decode(slow[1]))
    else:
        assert fast == slow


@settings(max_examples=200, deadline=None)
@given(value=plain_values)
def test_any_value_encodes_as_with_json(value: Any) -> None:
    codec = CheckpointCodec()
    one = checkpoint(outputs={"v": value, "w": [value]}, ctx={"v": value})
    fast = outcome(lambda: codec.encode(one))
    slow = json_only(lambda: outcome(lambda: codec.encode(one)))
    if fast[0] == "ok" and slow[0] == "ok":
        assert same_json(fast[1], slow[1])
    else:
        assert fast == slow


def test_native_floats_are_spelled_as_json_spells_them_from_1e_minus_4() -> None:
    codec = CheckpointCodec()
    values = [0.0, -0.0, 1e-4, 0.5, 1.5, 123456789012345.6, 1e16, 1e300, 5e-324, -2.5e-308]
    one = checkpoint(ctx={"f": values})
    assert codec.encode(one) == json_only(lambda: codec.encode(one))
    tiny = checkpoint(ctx={"f": [1e-5, 1e-7, -3.5e-9]})  # orjson: 0.00001, 1e-7, ...
    fast, slow = codec.encode(tiny), json_only(lambda: codec.encode(tiny))
    assert same_json(fast, slow)
    assert codec.decode(fast).ctx == json_only(lambda: codec.decode(slow)).ctx == tiny.ctx


class IntColour(enum.IntEnum):
    RED = 1


class Colour(enum.Enum):
    RED = "red"


class MyStr(str):
    pass


class MyDict(dict[str, Any]):
    pass


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "value",
    [
        2**64,
        -(2**63) - 1,
        10**30,
        [1, 2**70],
        "\udc80 lone surrogate",
        {"\ud800": 1},
        math.nan,
        [math.inf, 1.0],
        {"x": -math.inf},
        [1e308, 1e308],  # finite, but their sum is not: only a false "no"
        (1, 2),
        {"k": (1,)},
        {1: "int key"},
        {MyStr("k"): 1},
        {"!type": "not a tag", "value": 1},
        MyStr("s"),
        MyDict(a=1),
        IntColour.RED,
        Colour.RED,
        uuid.UUID(int=7),
        b"bytes",
        AttributesFrozenDict({"a": (1,)}),
        _nested(300),  # deeper than orjson's limit, within json's
    ],
    ids=lambda value: type(value).__name__ + ":" + repr(value)[:20],
)
def test_what_orjson_would_change_takes_the_json_path(value: Any) -> None:
    codec = user_codec()
    codec.register_enum(IntColour, "IntColour")
    one = checkpoint(ctx={"v": value})
    fast = outcome(lambda: codec.encode(one))
    slow = json_only(lambda: outcome(lambda: codec.encode(one)))
    assert fast == slow  # byte for byte, or the same error
    if fast[0] == "ok":
        assert_same_checkpoint(codec.decode(fast[1]), json_only(lambda: codec.decode(slow[1])))


def test_orjson_encode_errors_are_the_json_errors() -> None:
    codec = CheckpointCodec()
    cycle: list[Any] = []
    cycle.append(cycle)
    for bad in [checkpoint(ctx={"c": cycle}), checkpoint(inputs={"p": object()})]:
        fast = outcome(lambda bad=bad: codec.encode(bad))
        assert fast[0] == "error"
        assert fast[1] is CheckpointEncodeError
        assert fast == json_only(lambda bad=bad: outcome(lambda: codec.encode(bad)))


def test_pre_scan_answers() -> None:
    assert _orjson_ready({"a": [1, 2.5, "s", None, False, {"b": {}}], "c": {}, "d": []})
    assert _orjson_ready(AttributesFrozenDict({"a": {"b": [1.5]}}))
    assert _orjson_ready({1: "x"})  # orjson itself refuses the key
    assert _orjson_ready([1, 2**70])  # orjson itself refuses the int
    assert not _orjson_ready({"a": [{"b": (1,)}]})
    assert not _orjson_ready({"a": [1.0, math.nan]})
    assert not _orjson_ready({"a": ["x", math.inf]})
    assert not _orjson_ready({"a": {"!type": 1}})
    assert not _orjson_ready(AttributesFrozenDict({"a": uuid.UUID(int=1)}))
    assert not _orjson_ready([MyStr("s")])
    assert not _orjson_ready(math.nan)


# --- decoding -----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(one=checkpoints)
def test_orjson_decoding_is_the_json_decoding(one: Checkpoint) -> None:
    codec = user_codec()
    try:
        data = json_only(lambda: codec.encode(one))
    except CheckpointEncodeError:
        return
    assert_same_checkpoint(codec.decode(data), json_only(lambda: codec.decode(data)))


def _text(ctx: str) -> bytes:
    head = '{"version":1,"pid":"p","process_class":"m:C","state":"running","ctx":'
    return f"{head}{ctx}}}".encode()


@pytest.mark.parametrize(
    "data",
    [
        _text('{"big":18446744073709551616}'),  # orjson would read a float
        _text('{"big":-9223372036854775809}'),
        _text('{"ok":18446744073709551615,"neg":-9223372036854775808}'),
        _text('{"s":"1234567890123456789012"}'),  # a long digit run in a string: only slower
        _text('{"f":0.00012345678901234567}'),
        _text('{"n":NaN,"i":-Infinity}'),
        _text('{"huge":1E400}'),
        _text('{"esc":"\\u00e9\\ud800"}'),
        _text('{"t":{"\\u0021type":"tuple","value":[1]}}'),
        _text('{"dup":1,"dup":2}'),
        _text('{"deep":' + "[" * 1100 + "]" * 1100 + "}"),
        b"\xef\xbb\xbf" + _text("{}"),
        _text("{}") + b" x",
        _text("[1,]"),
        b'{"version":1,"pid":"p","process_class":"m:C","state":"running","ctx":{"s":"\xff"}}',
        b'{"version":1,"pid":"p","process_class":"m:C","state":"running","ctx":{"s":"\xed\xa0\x80"}}',
        b'{"version":9,"pid":"p","process_class":"m:C","state":"running"}',
        b'{"version":1,"pid":"p","process_class":"m:C","state":"nope"}',
        b'{"version":1,"pid":"p","state":"running"}',
        b"[1, 2]",
        b"",
    ],
    ids=lambda data: repr(data[60:90]),
)
def test_what_orjson_reads_differently_takes_the_json_path(data: bytes) -> None:
    codec = CheckpointCodec()
    fast = outcome(lambda: codec.decode(data))
    slow = json_only(lambda: outcome(lambda: codec.decode(data)))
    if fast[0] == "ok" and slow[0] == "ok":
        assert_same_checkpoint(fast[1], slow[1])
    else:
        assert fast == slow


def test_big_integers_are_read_as_integers() -> None:
    decoded = CheckpointCodec().decode(_text('{"a":[18446744073709551616,-1]}'))
    assert decoded.ctx == {"a": [2**64, -1]}
    assert type(decoded.ctx["a"][0]) is int


# --- persisters: the same checkpoints with orjson on and off -----------------------------------


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_persisters_round_trip_with_and_without_orjson(kind: str, tmp_path: Any) -> None:
    values = [
        checkpoint(ctx={"f": [1e-7, 0.5], "n": None, "t": (1, 2)}),
        checkpoint(ctx={"big": 2**70, "s": "\udc80"}, inputs=AttributesFrozenDict({"a": {"b": 1}})),
        checkpoint(ctx={"plain": {"x": [1, "y", True]}}, cursor=[0, 2], saved_at=1.5),
    ]
    for enabled in (True, False):
        _orjson_enabled[0] = enabled
        try:
            persister: Any = (
                InMemoryPersister()
                if kind == "memory"
                else SqlitePersister(tmp_path / f"db{enabled}.sqlite")
            )
            async with persister:
                for index, one in enumerate(values):
                    await persister.save_checkpoint(one, f"t{index}")
                    assert_same_checkpoint(await persister.load_checkpoint("p", f"t{index}"), one)
        finally:
            _orjson_enabled[0] = True


# --- checkpoint_of: quicker copies of the live process ------------------------------------------


@pytest.mark.parametrize(
    "frozen",
    [
        AttributesFrozenDict(),
        AttributesFrozenDict({"a": 1, "b": [1, {"c": 2}], "t": (1,)}),
        AttributesFrozenDict({"a": {"b": {"c": [1]}, "d": 2}, "e": "x"}),
        AttributesFrozenDict({"o": {"k": 1}}),
    ],
    ids=repr,
)
def test_to_dict_fast_paths_are_the_general_thaw(frozen: AttributesFrozenDict) -> None:
    thawed = frozen.to_dict()
    general = {key: thaw(value) for key, value in frozen._data.items()}
    assert thawed == general
    assert repr(thawed) == repr(general)  # the same types all the way down
    assert thawed is not frozen._data


def test_to_dict_with_a_plain_dict_inside() -> None:
    # not built by __init__ (which freezes nested dicts): the general way
    odd = AttributesFrozenDict.__new__(AttributesFrozenDict)
    object.__setattr__(odd, "_data", {"d": {"x": 1}, "f": AttributesFrozenDict({"y": 2})})
    thawed = odd.to_dict()
    assert thawed == {"d": {"x": 1}, "f": {"y": 2}}
    assert thawed["d"] is not odd._data["d"]


class Named:
    pass


def test_class_ids_follow_a_renamed_class() -> None:
    assert class_identifier(Named) == f"{__name__}:Named"
    assert class_identifier(Named) == f"{__name__}:Named"  # cached
    original = Named.__qualname__
    Named.__qualname__ = "Renamed"
    try:
        assert class_identifier(Named) == f"{__name__}:Renamed"
    finally:
        Named.__qualname__ = original
    assert class_identifier(Named) == f"{__name__}:Named"

    def local() -> type:
        class Local:
            pass

        return Local

    with pytest.raises(CheckpointEncodeError, match="defined inside a function"):
        class_identifier(local())


async def test_checkpoint_of_shares_no_level_with_the_process() -> None:
    from .test_checkpoint_fastpaths import Base

    async with Runner() as runner:
        process = runner.submit(Base, {})
        await process.wait()
        one = checkpoint_of(process)
        assert one.ctx == {"seen": ["one"]}
        assert one.ctx is not process.ctx._data
        ctx = one.ctx
        assert type(ctx) is dict
        ctx["other"] = 1
        assert "other" not in process.ctx
        assert re.match(r"^tests\.corelib\.test_checkpoint_fastpaths:Base$", one.process_class)
