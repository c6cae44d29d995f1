"""Shared pieces for the checkpoint, codec and persister tests: a user type, strategies, and an
exact (type-checking) comparison."""

from __future__ import annotations

import datetime
import enum
import math
from collections.abc import Mapping
from typing import Any

import attrs
from hypothesis import strategies as st

from corelib import AttributesFrozenDict, ExitCode
from corelib.persistence._checkpoint import CHECKPOINT_STATES, Checkpoint
from corelib.persistence._codec import CheckpointCodec


@attrs.frozen
class Point:
    """A user type, registered explicitly with the codec."""

    x: int
    y: int


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


def user_codec() -> CheckpointCodec:
    """A codec with the test's user types registered."""
    codec = CheckpointCodec()
    codec.register(Point, "test.Point", encode=lambda p: (p.x, p.y), decode=lambda v: Point(*v))
    codec.register_enum(Colour, "test.Colour")
    return codec


def rich_checkpoint(pid: str = "pid-1") -> Checkpoint:
    """A checkpoint using every field and every built-in encoding, plus user types."""
    return Checkpoint(
        pid=pid,
        process_class="tests.corelib._checkpoint_helpers:Point",
        state="waiting",
        state_data={"reason": "child", "next": "step_two", "args": (1, [2, (3,)]), "kwargs": {}},
        paused=True,
        inputs=AttributesFrozenDict(
            {"x": 1, "nested": {"deeper": {"t": (1, "a")}}, "blob": b"\x00\xff", "c": Colour.RED}
        ),
        outputs={
            "point": Point(1, 2),
            "points": (Point(3, 4), [Point(5, 6)]),
            "s": {1, 2, 3},
            "fs": frozenset({"a", "b"}),
            "when": datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.UTC),
            "day": datetime.date(2024, 5, 6),
            "inf": math.inf,
            "neg_zero": -0.0,
            "code": ExitCode(2, "bad {x}", "BAD"),
            "int_keys": {1: "one", (2, 3): "tuple key"},
            "reserved": {"!type": "not a tag", "value": 1},
            "big": 2**100,
            "text": "ünïcødé \U0001f642 \ud800",
        },
        ctx={"children": ["a", "b"], "frozen": AttributesFrozenDict({"k": (1,)})},
        cursor=[1, 0, 2],
        awaiting=[{"kind": "process", "pid": "child-1", "key": "child", "append": False}],
        exit_code=ExitCode(0),
        created_at=1700000000.5,
        saved_at=1700000001.25,
        meta={"listeners": []},
    )


def assert_identical(left: Any, right: Any, path: str = "value") -> None:
    """Assert ``left == right`` with the same types all the way down (``1 != True != 1.0``,
    ``(1,) != [1]``, ``dict != AttributesFrozenDict``), and NaN equal to NaN."""
    assert type(left) is type(right), f"{path}: {type(left)} is not {type(right)}"
    if isinstance(left, float):
        assert repr(left) == repr(right), f"{path}: {left!r} != {right!r}"
    elif isinstance(left, Mapping):
        left_keys = [(type(key), key) for key in left]
        right_keys = [(type(key), key) for key in right]
        assert left_keys == right_keys, f"{path}: keys {list(left)} != {list(right)}"
        for key in left:
            assert_identical(left[key], right[key], f"{path}[{key!r}]")
    elif isinstance(left, list | tuple):
        assert len(left) == len(right), f"{path}: {left!r} != {right!r}"
        for i, (a, b) in enumerate(zip(left, right, strict=True)):
            assert_identical(a, b, f"{path}[{i}]")
    else:
        assert left == right, f"{path}: {left!r} != {right!r}"


def assert_same_checkpoint(left: Checkpoint, right: Checkpoint) -> None:
    assert type(left) is type(right) is Checkpoint
    assert_identical(left.to_dict(), right.to_dict(), "checkpoint")


# --- hypothesis strategies ----------------------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=10)
    | st.just("\udc80 lone surrogate")
    | st.binary(max_size=10)
    | st.uuids()
    | st.datetimes()
    | st.dates()
    | st.builds(ExitCode, st.integers(-3, 3), st.none() | st.text(max_size=5))
)
_hashables = st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.binary(max_size=5)
_keys = st.text(max_size=6) | st.sampled_from(["!type", "value", ""])

plain_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(_keys, children, max_size=4)
        | st.dictionaries(_hashables, children, max_size=3)
        | st.dictionaries(st.text(max_size=5), children, max_size=3).map(AttributesFrozenDict)
        | st.frozensets(_hashables, max_size=4)
        | st.sets(_hashables, max_size=4)
    ),
    max_leaves=15,
)
_mappings = st.dictionaries(_keys, plain_values, max_size=4)
_timestamps = st.none() | st.floats(allow_nan=False)

pids = st.text(min_size=1, max_size=16)

checkpoints = st.builds(
    Checkpoint,
    pid=pids,
    process_class=st.sampled_from(["m:C", "pkg.mod:Outer.Inner"]),
    state=st.sampled_from(sorted(CHECKPOINT_STATES)),
    state_data=_mappings,
    paused=st.booleans(),
    inputs=_mappings | _mappings.map(AttributesFrozenDict),
    outputs=_mappings,
    ctx=st.none() | _mappings,
    cursor=st.none() | st.lists(st.integers(0, 5), max_size=4),
    awaiting=st.lists(_mappings, max_size=2),
    exit_code=st.none() | st.builds(ExitCode, st.integers(), st.none() | st.text(max_size=5)),
    created_at=_timestamps,
    saved_at=_timestamps,
    meta=_mappings,
)
