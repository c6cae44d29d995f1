"""The codec's and persisters' fast paths give exactly what the slow paths give.

The codec writes JSON-native trees with one C-level ``json`` call (after a pre-scan), decodes
untagged text without a per-object hook, adopts freshly decoded dicts as frozen mappings and
checks shapes with exact type tests first. Each of these is compared here with the general
path it short-cuts, byte for byte and type for type. These are the ``json`` paths: the module
runs with the codec's orjson paths off (``test_checkpoint_orjson.py`` compares those with these).
"""

from __future__ import annotations

import enum
import json
import math
import os
import re
import sys
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corelib import AttributesFrozenDict, ExitCode, WorkChain
from corelib.persistence._checkpoint import (
    Checkpoint,
    CheckpointEncodeError,
    CorruptCheckpointError,
    _shape_ok,
    _shape_problem,
)
from corelib.persistence._codec import (
    _OMITTED_WHEN_EMPTY,
    CheckpointCodec,
    _dumps,
    _json_native,
    _orjson_enabled,
)
from corelib.persistence._file import FilePersister
from corelib.persistence._persisters import INLINE_IO_BYTES, InMemoryPersister
from corelib.persistence._snapshot import _decode_frozendict

from ._checkpoint_helpers import (
    Point,
    assert_identical,
    assert_same_checkpoint,
    checkpoints,
    plain_values,
    rich_checkpoint,
    user_codec,
)


@pytest.fixture(autouse=True, scope="module")
def _json_paths_only() -> Iterator[None]:
    _orjson_enabled[0] = False
    try:
        yield
    finally:
        _orjson_enabled[0] = True


def slow_encode(codec: CheckpointCodec, checkpoint: Checkpoint) -> bytes:
    """What :meth:`CheckpointCodec.encode` writes without its fast path (default-valued
    fields left out, as the codec does)."""
    data = checkpoint.to_dict()
    assert _shape_problem(data) is None
    for key, empty in _OMITTED_WHEN_EMPTY:
        if data[key] == empty and type(data[key]) is type(empty):
            del data[key]
    plain = {key: codec._to_plain(value, key) for key, value in data.items()}
    return _dumps(plain).encode("utf-8", "surrogatepass")


def slow_decode(codec: CheckpointCodec, data: bytes) -> Checkpoint:
    """:meth:`CheckpointCodec.decode` with the object hook always on."""
    plain = json.loads(data.decode("utf-8", "surrogatepass"), object_hook=codec._from_object)
    return Checkpoint.from_dict(plain)


def checkpoint(**fields: Any) -> Checkpoint:
    return Checkpoint(**{"pid": "p", "process_class": "m:C", "state": "running", **fields})


# JSON-native trees (the ones the fast encoder takes), plus frozen mappings.
_native_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.just("\udc80 lone surrogate")
)
native_values = st.recursive(
    _native_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=5), children, max_size=4)
        | st.dictionaries(st.text(max_size=5), children, max_size=3).map(AttributesFrozenDict)
    ),
    max_leaves=20,
)
native_mappings = st.dictionaries(st.text(max_size=6), native_values, max_size=4)
native_checkpoints = st.builds(
    checkpoint,
    inputs=native_mappings.map(AttributesFrozenDict),
    outputs=native_mappings.map(AttributesFrozenDict),
    ctx=st.none() | native_mappings,
    state_data=native_mappings,
    cursor=st.none() | st.lists(st.integers(0, 5), max_size=4),
    saved_at=st.none() | st.floats(allow_nan=False),
)


# --- encoding -----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(checkpoint=native_checkpoints)
def test_fast_encoding_of_native_trees_is_the_slow_encoding(checkpoint: Checkpoint) -> None:
    codec = CheckpointCodec()
    data = codec.encode(checkpoint)
    assert data == slow_encode(codec, checkpoint)
    assert_same_checkpoint(codec.decode(data), checkpoint)
    assert_same_checkpoint(slow_decode(codec, data), checkpoint)


@settings(max_examples=300, deadline=None)
@given(checkpoint=checkpoints)
def test_encoding_of_any_tree_is_the_slow_encoding(checkpoint: Checkpoint) -> None:
    codec = user_codec()
    data = codec.encode(checkpoint)
    assert data == slow_encode(codec, checkpoint)
    assert_same_checkpoint(slow_decode(codec, data), checkpoint)


@settings(max_examples=200, deadline=None)
@given(value=plain_values)
def test_any_value_encodes_as_the_slow_path(value: Any) -> None:
    codec = CheckpointCodec()
    one = checkpoint(outputs={"v": value, "w": [value]}, ctx={"v": value})
    assert codec.encode(one) == slow_encode(codec, one)


def test_the_rich_checkpoint_encodes_as_the_slow_path() -> None:
    codec = user_codec()
    rich = rich_checkpoint()
    assert codec.encode(rich) == slow_encode(codec, rich)


def test_native_trees_take_the_fast_path() -> None:
    codec = CheckpointCodec()
    data = checkpoint(
        inputs=AttributesFrozenDict({"a": {"b": [1, 2.5, "x", None, True]}}),
        ctx={"values": {f"v{i}": i * 1.5 for i in range(40)}, "log": ["a", "b"]},
    ).to_dict()
    text = codec._encode_fast(data)
    assert text is not None
    assert text == _dumps({key: codec._to_plain(value, key) for key, value in data.items()})


class IntColour(enum.IntEnum):
    RED = 1


class MyDict(dict[str, Any]):
    pass


class MyStr(str):
    pass


@pytest.mark.parametrize(
    "value",
    [
        (1, 2),
        [1, (2,)],
        {"k": (1,)},
        {1: "int key"},
        {None: "null key"},
        {1.5: "float key"},
        {True: "bool key"},
        {"!type": "not a tag", "value": 1},
        {"deep": {"!type": "x"}},
        MyDict(a=1),
        MyStr("s"),
        {MyStr("k"): 1},
        IntColour.RED,
        math.nan,
        [math.inf],
        {"x": -math.inf},
    ],
    ids=repr,
)
def test_values_json_would_change_leave_the_fast_path(value: Any) -> None:
    """``json`` would write these silently (tuples as lists, keys as strings, subclasses as
    their base, NaN refused): the codec must tag them or refuse them, with paths."""
    codec = CheckpointCodec()
    data = checkpoint(ctx={"v": value}).to_dict()
    assert codec._encode_fast(data) is None
    try:
        expected = slow_encode(codec, checkpoint(ctx={"v": value}))
    except CheckpointEncodeError as exc:
        with pytest.raises(CheckpointEncodeError, match=f"^{re.escape(str(exc))}$"):
            codec.encode(checkpoint(ctx={"v": value}))
    else:
        assert codec.encode(checkpoint(ctx={"v": value})) == expected


def test_pre_scan_answers() -> None:
    assert _json_native({"a": [1, 2.0, "s", None, False, {"b": {}}], "c": {}})
    assert _json_native([])
    assert _json_native(Point(1, 2))  # left to the default hook
    assert _json_native(AttributesFrozenDict({"a": (1,)}))  # idem, tagged by _plain
    assert not _json_native({"a": [{"b": (1,)}]})
    assert not _json_native({"a": [{2: 1}]})
    assert not _json_native(OrderedDict(a=1))


def test_errors_from_the_default_hook_keep_their_paths() -> None:
    codec = CheckpointCodec()
    with pytest.raises(
        CheckpointEncodeError,
        match=r"^can't encode inputs\['a'\]\['b'\]: object of type Point is not registered$",
    ):
        codec.encode(checkpoint(inputs=AttributesFrozenDict({"a": {"b": Point(1, 2)}})))
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(CheckpointEncodeError, match=r"nested too deeply \(or cyclic\)"):
        codec.encode(checkpoint(ctx={"c": cycle}))
    frozen_cycle: list[Any] = []
    frozen_cycle.append(AttributesFrozenDict({"x": frozen_cycle}))
    with pytest.raises(CheckpointEncodeError, match=r"nested too deeply \(or cyclic\)"):
        codec.encode(checkpoint(ctx={"c": frozen_cycle}))


def test_a_registered_type_inside_a_native_tree() -> None:
    codec = user_codec()
    one = checkpoint(outputs={"p": [Point(1, 2), {"q": Point(3, 4)}]})
    assert codec.encode(one) == slow_encode(codec, one)
    assert_same_checkpoint(codec.decode(codec.encode(one)), one)


# --- decoding -----------------------------------------------------------------------------------


def test_untagged_text_decodes_without_the_hook_to_the_same_values() -> None:
    codec = CheckpointCodec()
    one = checkpoint(ctx={"a": [1, 2.5, {"b": None}]}, inputs={"x": "y"})
    data = codec.encode(one)
    assert b'"!type"' not in data
    assert_same_checkpoint(codec.decode(data), one)
    assert_same_checkpoint(slow_decode(codec, data), one)


def test_an_escaped_reserved_key_is_still_a_tag() -> None:
    codec = CheckpointCodec()
    text = codec.encode(checkpoint(ctx={"x": 1})).decode()
    assert '"ctx":{"x":1}' in text
    text = text.replace('"ctx":{"x":1}', '"ctx":{"t":{"\\u0021type":"tuple","value":[1]}}')
    assert '"!type"' not in text
    decoded = codec.decode(text.encode())
    assert decoded.ctx == {"t": (1,)}
    bad = text.replace('"tuple"', '"nonsense"')
    with pytest.raises(CorruptCheckpointError, match="unknown type tag 'nonsense'"):
        codec.decode(bad.encode())


def test_decoded_frozen_mappings_are_frozen_all_the_way_down() -> None:
    adopted = _decode_frozendict({"a": 1, "b": [1], "c": AttributesFrozenDict({"d": 2})})
    assert_identical(adopted, AttributesFrozenDict({"a": 1, "b": [1], "c": {"d": 2}}))
    copied = _decode_frozendict({"a": {"b": {"c": 1}}})
    assert type(copied["a"]) is AttributesFrozenDict
    assert type(copied["a"]["b"]) is AttributesFrozenDict
    with pytest.raises(ValueError, match="expected an object"):
        _decode_frozendict([1])


@settings(max_examples=200, deadline=None)
@given(checkpoint=checkpoints)
def test_quick_shape_check_never_contradicts_the_full_one(checkpoint: Checkpoint) -> None:
    data = checkpoint.to_dict()
    if _shape_ok(data):
        assert _shape_problem(data) is None
    # from_dict's every-field shortcut builds the same record as the field-by-field path
    partial = {key: value for key, value in data.items() if key != "meta"}
    assert_same_checkpoint(Checkpoint.from_dict(data), checkpoint)
    assert_same_checkpoint(Checkpoint.from_dict(partial), attrs_evolve(checkpoint, meta={}))


def attrs_evolve(checkpoint: Checkpoint, **changes: Any) -> Checkpoint:
    return attrs.evolve(checkpoint, **changes)


@pytest.mark.parametrize(
    "change",
    [
        {"version": True},
        {"cursor": [True]},
        {"cursor": (1, 2.0)},
        {"paused": 1},
        {"awaiting": [OrderedDict()]},
        {"ctx": OrderedDict(a=1)},
        {"exit_code": {"status": True}},
        {"saved_at": True},
    ],
    ids=repr,
)
def test_quick_shape_check_defers_unusual_types(change: dict[str, Any]) -> None:
    data = {**checkpoint().to_dict(), **change}
    assert not _shape_ok(data)
    expected = _shape_problem(data)
    if expected is None:
        Checkpoint.from_dict(data)
    else:
        with pytest.raises(CorruptCheckpointError, match=re.escape(expected)):
            Checkpoint.from_dict(data)


def test_exit_codes_pass_the_quick_shape_check() -> None:
    data = checkpoint(exit_code=ExitCode(1, "bad", "BAD")).to_dict()
    assert _shape_ok(data)
    assert Checkpoint.from_dict(data).exit_code == ExitCode(1, "bad", "BAD")


# --- file persister: small non-durable I/O in the calling thread -------------------------------


async def test_non_durable_small_files_skip_the_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[object] = []
    real = anyio.to_thread.run_sync

    async def counting(fn: Any, *args: Any, **kwargs: Any) -> Any:
        threads.append(fn)
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    async with FilePersister(tmp_path, durable=False) as persister:
        small = checkpoint(ctx={"x": "y"})
        await persister.save_checkpoint(small)
        assert_same_checkpoint(await persister.load_checkpoint("p"), small)
        assert threads == []
        assert sorted(os.listdir(tmp_path)) == ["p.json"]  # no temp file left

        big = checkpoint(ctx={"x": "y" * INLINE_IO_BYTES})
        await persister.save_checkpoint(big, "big")
        assert len(threads) == 1
        assert_same_checkpoint(await persister.load_checkpoint("p", "big"), big)
        assert len(threads) == 2
        assert sorted(os.listdir(tmp_path)) == ["p.big.json", "p.json"]

    async with FilePersister(tmp_path, durable=True) as persister:
        await persister.save_checkpoint(small)
        assert_same_checkpoint(await persister.load_checkpoint("p"), small)
        assert len(threads) == 4  # durable I/O always goes to a worker thread


async def test_non_durable_inline_save_is_a_checkpoint(tmp_path: Path) -> None:
    async with FilePersister(tmp_path, durable=False) as persister:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await persister.save_checkpoint(checkpoint())
        assert scope.cancelled_caught
        assert os.listdir(tmp_path) == []  # cancelled before the write started
        await persister.save_checkpoint(checkpoint())
        with anyio.CancelScope() as scope:
            scope.cancel()
            await persister.load_checkpoint("p")
        assert scope.cancelled_caught


async def test_non_durable_inline_save_replaces_atomically(tmp_path: Path) -> None:
    async with FilePersister(tmp_path, durable=False) as persister:
        await persister.save_checkpoint(checkpoint(ctx={"n": 1}))
        await persister.save_checkpoint(checkpoint(ctx={"n": 2}))
        assert (await persister.load_checkpoint("p")).ctx == {"n": 2}
        (tmp_path / "p.t.json").mkdir()
        (tmp_path / "p.t.json" / "x").write_bytes(b"")
        with pytest.raises(OSError):
            await persister.save_checkpoint(checkpoint(), "t")
        assert sorted(os.listdir(tmp_path)) == ["p.json", "p.t.json"]
        (tmp_path / "p.json").write_bytes(b"{")
        with pytest.raises(CorruptCheckpointError):
            await persister.load_checkpoint("p")


# --- workchains: the compiled outline is cached per class ---------------------------------------


class Base(WorkChain):
    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.outline(cls.one)

    def one(self) -> None:
        self.ctx.seen = [*self.ctx.get("seen", []), "one"]


class Derived(Base):
    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.outline(cls.one, cls.two)

    def two(self) -> None:
        self.ctx.seen = [*self.ctx.get("seen", []), "two"]


def test_compiled_outline_is_cached_per_class() -> None:
    base, derived = Base(), Derived()
    assert base._navigator() is Base.spec().compiled_outline
    assert derived._navigator() is Derived.spec().compiled_outline
    assert base._navigator() is not derived._navigator()
    assert Base()._navigator() is base._navigator()


# -- ints too long for str(): a specific error with the path, from every way of saving ---------


def _huge_int_checkpoint() -> Checkpoint:
    return Checkpoint(
        pid="p-huge",
        process_class="tests.corelib:X",
        state="waiting",
        ctx={"a": [1, 10 ** (sys.get_int_max_str_digits() + 10)]},
    )


def test_encode_names_the_int_too_long_for_str() -> None:
    with pytest.raises(CheckpointEncodeError, match=r"p-huge.*ctx\['a'\]\[1\].*digits"):
        CheckpointCodec().encode(_huge_int_checkpoint())


@pytest.mark.anyio
async def test_in_memory_save_refuses_the_int_too_long_for_str() -> None:
    persister = InMemoryPersister()
    with pytest.raises(CheckpointEncodeError, match=r"ctx\['a'\]\[1\]"):
        await persister.save_checkpoint(_huge_int_checkpoint())
    assert await persister.get_checkpoints() == []
