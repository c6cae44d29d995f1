"""Checkpoint records, the checkpoint codec and the class loader (all sync: no event loop)."""

from __future__ import annotations

import enum
import json
import math
import re
import sys
import uuid
from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import given, settings

from corelib import AttributesFrozenDict, ExitCode, ProcessError
from corelib.persistence._checkpoint import (
    CHECKPOINT_VERSION,
    Checkpoint,
    CheckpointEncodeError,
    CheckpointError,
    CheckpointVersionError,
    CorruptCheckpointError,
    ForbiddenClassError,
    UnknownClassError,
)
from corelib.persistence._codec import CheckpointCodec
from corelib.persistence._loader import ClassLoader, class_identifier

from ._checkpoint_helpers import (
    Colour,
    Point,
    assert_identical,
    assert_same_checkpoint,
    checkpoints,
    plain_values,
    rich_checkpoint,
    user_codec,
)


def minimal(**fields: Any) -> Checkpoint:
    fields = {"pid": "p", "process_class": "m:C", "state": "created", **fields}
    return Checkpoint(**fields)


def minimal_dict(**changes: Any) -> dict[str, Any]:
    data = minimal().to_dict()
    data.update(changes)
    return data


# --- the record ---------------------------------------------------------------------------------


def test_defaults_and_to_dict() -> None:
    checkpoint = minimal()
    assert checkpoint.version == CHECKPOINT_VERSION == 1
    assert checkpoint.to_dict() == {
        "version": 1,
        "pid": "p",
        "process_class": "m:C",
        "state": "created",
        "state_data": {},
        "paused": False,
        "inputs": {},
        "outputs": {},
        "ctx": None,
        "cursor": None,
        "awaiting": [],
        "exit_code": None,
        "created_at": None,
        "saved_at": None,
        "meta": {},
    }
    repr(checkpoint)  # smoke test


def test_sequences_are_kept_as_tuples_and_written_as_lists() -> None:
    checkpoint = minimal(cursor=[1, 2], awaiting=[{"kind": "process"}])
    assert checkpoint.cursor == (1, 2)
    assert checkpoint.awaiting == ({"kind": "process"},)
    data = checkpoint.to_dict()
    assert data["cursor"] == [1, 2]
    assert data["awaiting"] == [{"kind": "process"}]


def test_to_dict_from_dict_round_trip() -> None:
    checkpoint = rich_checkpoint()
    assert_same_checkpoint(Checkpoint.from_dict(checkpoint.to_dict()), checkpoint)


def test_from_dict_fills_optional_fields() -> None:
    data = {"version": 1, "pid": "p", "process_class": "m:C", "state": "finished"}
    assert Checkpoint.from_dict(data) == Checkpoint(pid="p", process_class="m:C", state="finished")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "checkpoint is corrupt: expected an object, got list"),
        ({"version": 1}, "checkpoint is corrupt: pid must be a non-empty string, got None"),
        (minimal_dict(pid=""), "checkpoint is corrupt: pid must be a non-empty string, got ''"),
        (
            {"version": 1, "pid": "p", "state": "created"},
            "checkpoint of pid 'p' is corrupt: missing field 'process_class'",
        ),
        (minimal_dict(extra=1), "checkpoint of pid 'p' is corrupt: unknown field 'extra'"),
        (
            minimal_dict(version=0),
            "checkpoint of pid 'p' is corrupt: version must be a positive integer, got 0",
        ),
        (
            minimal_dict(version=True),
            "checkpoint of pid 'p' is corrupt: version must be a positive integer, got True",
        ),
        (
            minimal_dict(process_class="m.C"),
            "checkpoint of pid 'p' is corrupt:"
            " process_class must be a 'module:qualname' string, got 'm.C'",
        ),
        (
            minimal_dict(state="CREATED"),
            "checkpoint of pid 'p' is corrupt: state 'CREATED' is not a process state",
        ),
        (
            minimal_dict(state=["running"]),
            "checkpoint of pid 'p' is corrupt: state ['running'] is not a process state",
        ),
        (
            minimal_dict(cursor=[str(i) for i in range(100)]),
            "checkpoint of pid 'p' is corrupt: cursor must be a list of integers or null,"
            " got ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '10', ...",
        ),
        (
            minimal_dict(inputs=[1]),
            "checkpoint of pid 'p' is corrupt: inputs must be a mapping, got list",
        ),
        (
            minimal_dict(ctx=3),
            "checkpoint of pid 'p' is corrupt: ctx must be a mapping or null, got int",
        ),
        (
            minimal_dict(paused="no"),
            "checkpoint of pid 'p' is corrupt: paused must be a boolean, got 'no'",
        ),
        (
            minimal_dict(cursor=[1, "2"]),
            "checkpoint of pid 'p' is corrupt:"
            " cursor must be a list of integers or null, got [1, '2']",
        ),
        (
            minimal_dict(awaiting=["x"]),
            "checkpoint of pid 'p' is corrupt: awaiting must be a list of mappings, got ['x']",
        ),
        (
            minimal_dict(exit_code={"status": "0"}),
            "checkpoint of pid 'p' is corrupt: exit_code status must be an integer, got '0'",
        ),
        (
            minimal_dict(saved_at="now"),
            "checkpoint of pid 'p' is corrupt: saved_at must be a number or null, got 'now'",
        ),
    ],
)
def test_from_dict_names_the_problem(data: Any, message: str) -> None:
    with pytest.raises(CorruptCheckpointError, match=f"^{re.escape(message)}$"):
        Checkpoint.from_dict(data)


def test_version_from_the_future() -> None:
    # Newer schemas may add fields: the version is what gets reported, not the unknown field.
    data = minimal_dict(version=7, pid="x", new_field=1)
    with pytest.raises(
        CheckpointVersionError,
        match=r"^checkpoint of pid 'x' has schema version 7, newer than this plumio \(1\)$",
    ) as info:
        Checkpoint.from_dict(data)
    assert info.value.version == 7
    assert info.value.pid == "x"


def test_error_taxonomy() -> None:
    for error in (
        CheckpointEncodeError,
        CorruptCheckpointError,
        CheckpointVersionError,
        ForbiddenClassError,
        UnknownClassError,
    ):
        assert issubclass(error, CheckpointError)
    assert issubclass(CheckpointError, ProcessError)


# --- the codec ----------------------------------------------------------------------------------


def round_trip(value: Any, codec: CheckpointCodec | None = None) -> Any:
    codec = user_codec() if codec is None else codec
    return codec.decode(codec.encode(minimal(inputs={"v": value}))).inputs["v"]


def test_codec_round_trips_a_rich_checkpoint() -> None:
    codec = user_codec()
    checkpoint = rich_checkpoint()
    data = codec.encode(checkpoint)
    assert isinstance(data, bytes)
    assert_same_checkpoint(codec.decode(data), checkpoint)


@pytest.mark.parametrize(
    "value",
    [
        (1, (2, "3")),
        {1, 2},
        frozenset({"a"}),
        b"\x00\x01\xfe",
        uuid.UUID(int=5),
        ExitCode(3, "m", "L"),
        AttributesFrozenDict({"a": {"b": [1, {"c": 2}]}}),
        {"!type": "tuple", "value": [1]},
        {1: "a", None: "b", (1, 2): "c"},
        [math.inf, -math.inf, -0.0, 1e308],
        2**200,
        "\ud800",
        Point(1, 2),
        Colour.GREEN,
        [Point(1, 2), (Point(3, 4),)],
    ],
    ids=repr,
)
def test_values_round_trip_with_their_types(value: Any) -> None:
    assert_identical(round_trip(value), value)


def test_nan_round_trips() -> None:
    assert math.isnan(round_trip(math.nan))


def test_frozendict_comes_back_frozen_at_every_level() -> None:
    value = round_trip(AttributesFrozenDict({"a": {"b": {"c": 1}}}))
    assert type(value) is AttributesFrozenDict
    assert type(value.a) is AttributesFrozenDict
    assert type(value.a.b) is AttributesFrozenDict


def test_reserved_key_is_escaped() -> None:
    codec = CheckpointCodec()
    data = codec.encode(minimal(inputs={"x": {"!type": "bytes", "value": "AAAA"}}))
    assert codec.decode(data).inputs == {"x": {"!type": "bytes", "value": "AAAA"}}


def test_output_is_json() -> None:
    data = user_codec().encode(minimal(inputs={"t": (1, 2)}))
    assert json.loads(data)["inputs"] == {"t": {"!type": "tuple", "value": [1, 2]}}


class Foo:
    pass


class Number(enum.IntEnum):
    ONE = 1


class MyDict(dict[str, Any]):
    pass


@pytest.mark.parametrize(
    ("checkpoint", "message"),
    [
        (
            minimal(inputs={"x": [0, 1, Foo()]}),
            "can't encode inputs['x'][2]: object of type Foo is not registered",
        ),
        (
            minimal(state_data={"args": (1, {"k": Foo()})}),
            "can't encode state_data['args'][1]['k']: object of type Foo is not registered",
        ),
        (
            minimal(outputs={"d": {Foo(): 1}}),
            "can't encode outputs['d'].keys()[0]: object of type Foo is not registered",
        ),
        (
            minimal(ctx={"n": Number.ONE}),
            "can't encode ctx['n']: object of type Number is not registered",
        ),
        (
            minimal(inputs={"d": MyDict()}),
            "can't encode inputs['d']: object of type MyDict is not registered",
        ),
        (
            minimal(inputs={"d": OrderedDict()}),
            "can't encode inputs['d']: object of type OrderedDict is not registered",
        ),
        (
            minimal(awaiting=[{"key": Foo()}]),
            "can't encode awaiting[0]['key']: object of type Foo is not registered",
        ),
        (
            minimal(meta={"f": AttributesFrozenDict({"x": Foo()})}),
            "can't encode meta['f']['x']: object of type Foo is not registered",
        ),
        (
            minimal(state="bogus"),
            "can't encode checkpoint of pid 'p': state 'bogus' is not a process state",
        ),
        (
            Checkpoint(pid="", process_class="m:C", state="created"),
            "can't encode checkpoint: pid must be a non-empty string, got ''",
        ),
    ],
)
def test_encode_errors_name_the_path(checkpoint: Checkpoint, message: str) -> None:
    with pytest.raises(CheckpointEncodeError, match=f"^{re.escape(message)}$"):
        user_codec().encode(checkpoint)


def test_encode_error_inside_a_user_type() -> None:
    codec = CheckpointCodec()
    codec.register(Point, "pt", encode=lambda p: [p.x, Foo()], decode=lambda v: Point(*v))
    with pytest.raises(
        CheckpointEncodeError,
        match=r"^can't encode inputs\['p'\]<pt>\[1\]: object of type Foo is not registered$",
    ):
        codec.encode(minimal(inputs={"p": Point(1, 2)}))


def test_failing_or_looping_encoders() -> None:
    def fail(point: Point) -> Any:
        raise RuntimeError("boom")

    codec = CheckpointCodec()
    codec.register(Point, "pt", encode=fail, decode=lambda v: Point(*v))
    with pytest.raises(
        CheckpointEncodeError,
        match=r"^can't encode inputs\['p'\]: encoder of 'pt' failed: RuntimeError: boom$",
    ):
        codec.encode(minimal(inputs={"p": Point(1, 2)}))

    codec = CheckpointCodec()
    codec.register(Point, "pt", encode=lambda p: p, decode=lambda v: v)
    with pytest.raises(CheckpointEncodeError, match=r"returned a Point again$"):
        codec.encode(minimal(inputs={"p": Point(1, 2)}))


def test_cyclic_value() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(
        CheckpointEncodeError, match=r"^can't encode inputs: nested too deeply \(or cyclic\)$"
    ):
        CheckpointCodec().encode(minimal(inputs={"c": cycle}))


def test_register_refuses_clashes() -> None:
    codec = CheckpointCodec()
    codec.register(Point, "pt", encode=lambda p: [p.x, p.y], decode=lambda v: Point(*v))
    with pytest.raises(ValueError, match=r"^type name 'pt' is already registered$"):
        codec.register(Foo, "pt", encode=repr, decode=lambda v: Foo())
    with pytest.raises(ValueError, match=r"^type name 'tuple' is already registered$"):
        codec.register(Foo, "tuple", encode=repr, decode=lambda v: Foo())
    with pytest.raises(ValueError, match=r"^type Point is already registered as 'pt'$"):
        codec.register(Point, "pt2", encode=repr, decode=lambda v: Point(0, 0))
    with pytest.raises(ValueError, match=r"^can't register dict: it is written natively$"):
        codec.register(dict, "d", encode=repr, decode=dict)
    with pytest.raises(ValueError, match=r"^type name must be a non-empty string, got ''$"):
        codec.register(Foo, "", encode=repr, decode=lambda v: Foo())
    repr(codec)  # smoke test


def test_register_enum_default_name() -> None:
    codec = CheckpointCodec()
    codec.register_enum(Colour)
    data = codec.encode(minimal(inputs={"c": Colour.RED}))
    assert json.loads(data)["inputs"]["c"] == {
        "!type": "tests.corelib._checkpoint_helpers:Colour",
        "value": "red",
    }
    assert codec.decode(data).inputs["c"] is Colour.RED


def encoded(inputs: str) -> bytes:
    return (
        '{"version":1,"pid":"p","process_class":"m:C","state":"created","inputs":' + inputs + "}"
    ).encode()


CORRUPT_P = "checkpoint of pid 'p' is corrupt: "


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (encoded('{"x":{"!type":"Foo","value":1}}'), CORRUPT_P + "unknown type tag 'Foo'"),
        (encoded('{"x":{"!type":["list"],"value":1}}'), CORRUPT_P + "unknown type tag ['list']"),
        (
            encoded('{"x":{"!type":"tuple","value":[1],"more":2}}'),
            CORRUPT_P + "tagged object 'tuple' must have exactly '!type' and 'value'",
        ),
        (
            encoded('{"x":{"!type":"bytes","value":"not base64!"}}'),
            CORRUPT_P + "can't decode 'bytes' value: Error: Only base64 data is allowed",
        ),
        (
            encoded('{"x":{"!type":"tuple","value":3}}'),
            CORRUPT_P + "can't decode 'tuple' value: ValueError: expected a list, got int",
        ),
        (
            encoded('{"x":{"!type":"float","value":"1.5"}}'),
            CORRUPT_P
            + "can't decode 'float' value: ValueError: '1.5' is not 'nan', 'inf' or '-inf'",
        ),
        (
            encoded('{"x":{"!type":"dict","value":[[[1],2]]}}'),
            CORRUPT_P + "can't decode 'dict' value: TypeError: unhashable type: 'list'",
        ),
        (
            encoded('{"x":1'),
            "checkpoint is corrupt:"
            " invalid JSON (Expecting ',' delimiter: line 1 column 80 (char 79))",
        ),
        (b"\xff\xfe", "checkpoint is corrupt: not UTF-8 (invalid start byte at byte 0)"),
        (b"", "checkpoint is corrupt: invalid JSON (Expecting value: line 1 column 1 (char 0))"),
        (b"[1]", "checkpoint is corrupt: expected an object, got list"),
    ],
)
def test_decode_errors(data: bytes, message: str) -> None:
    with pytest.raises(CorruptCheckpointError, match=f"^{re.escape(message)}$"):
        CheckpointCodec().decode(data)


def test_user_tag_unknown_to_another_codec() -> None:
    data = user_codec().encode(minimal(pid="p9", inputs={"pt": Point(1, 2)}))
    with pytest.raises(
        CorruptCheckpointError, match=r"^checkpoint of pid 'p9' is corrupt: unknown type tag"
    ):
        CheckpointCodec().decode(data)


def test_decode_version_from_the_future() -> None:
    codec = CheckpointCodec()
    data = codec.encode(minimal(version=7))
    with pytest.raises(
        CheckpointVersionError, match=r"^checkpoint of pid 'p' has schema version 7"
    ):
        codec.decode(data)


def test_truncated_data_is_always_corrupt() -> None:
    codec = user_codec()
    data = codec.encode(rich_checkpoint())
    for end in range(0, len(data) - 1, 7):
        with pytest.raises(CorruptCheckpointError):
            codec.decode(data[:end])


@settings(max_examples=200, deadline=None)
@given(value=plain_values)
def test_plain_values_round_trip_exactly(value: Any) -> None:
    assert_identical(round_trip(value, CheckpointCodec()), value)


@settings(max_examples=100, deadline=None)
@given(checkpoint=checkpoints)
def test_checkpoints_round_trip_exactly(checkpoint: Checkpoint) -> None:
    codec = CheckpointCodec()
    assert_same_checkpoint(codec.decode(codec.encode(checkpoint)), checkpoint)


# --- class identifiers and the loader -----------------------------------------------------------


class Outer:
    class Inner:
        pass


def not_a_class() -> None:
    pass


FORBIDDEN_MODULE = "tests.corelib._loader_target"


def test_class_identifier_and_default_loader() -> None:
    assert class_identifier(Outer) == "tests.corelib.test_checkpoint:Outer"
    assert class_identifier(Outer.Inner) == "tests.corelib.test_checkpoint:Outer.Inner"
    loader = ClassLoader()
    assert loader.load("tests.corelib.test_checkpoint:Outer.Inner") is Outer.Inner
    # plumio's own package is always allowed by default.
    assert loader.load("corelib.process._exit_code:ExitCode") is ExitCode
    repr(loader)  # smoke test


def test_local_classes_are_refused() -> None:
    class Local:
        pass

    with pytest.raises(
        CheckpointEncodeError,
        match=r"^can't identify class 'test_local_classes_are_refused\.<locals>\.Local':"
        r" a class defined inside a function can't be reloaded by name$",
    ):
        class_identifier(Local)


def test_forbidden_module_is_not_imported() -> None:
    assert FORBIDDEN_MODULE not in sys.modules
    for loader in (ClassLoader(), ClassLoader(allowed_prefixes=("tests.corelib.test_checkpoint",))):
        with pytest.raises(
            ForbiddenClassError,
            match=rf"^class '{FORBIDDEN_MODULE}:Target' of pid 'p1' is not allowed:"
            rf" module '{FORBIDDEN_MODULE}' is outside the allowed prefixes \(",
        ):
            loader.load(f"{FORBIDDEN_MODULE}:Target", pid="p1")
    assert FORBIDDEN_MODULE not in sys.modules
    with pytest.raises(ForbiddenClassError, match=r"^class 'os:system' is not allowed"):
        ClassLoader().load("os:system")


def test_allowed_module_is_imported() -> None:
    assert FORBIDDEN_MODULE not in sys.modules
    try:
        cls = ClassLoader(allowed_prefixes=("tests.corelib",)).load(f"{FORBIDDEN_MODULE}:Target")
        assert cls.__name__ == "Target"
        assert FORBIDDEN_MODULE in sys.modules
    finally:
        sys.modules.pop(FORBIDDEN_MODULE, None)


def test_prefixes_match_whole_module_names() -> None:
    loader = ClassLoader(allowed_prefixes=("tests.corelib.test_check",))
    with pytest.raises(ForbiddenClassError):
        loader.load("tests.corelib.test_checkpoint:Outer")
    assert loader.is_allowed("tests.corelib.test_check")
    assert loader.is_allowed("tests.corelib.test_check.sub")
    assert not loader.is_allowed("tests.corelib")


@pytest.mark.parametrize(
    ("identifier", "message"),
    [
        (
            "tests.corelib._no_such_module:X",
            "can't load class 'tests.corelib._no_such_module:X' of pid 'p1':"
            " module 'tests.corelib._no_such_module' not found",
        ),
        (
            "tests.corelib.test_checkpoint:Outer.Missing",
            "can't load class 'tests.corelib.test_checkpoint:Outer.Missing' of pid 'p1':"
            " module 'tests.corelib.test_checkpoint' has no attribute 'Outer.Missing'",
        ),
        (
            "tests.corelib.test_checkpoint:not_a_class",
            "can't load class 'tests.corelib.test_checkpoint:not_a_class' of pid 'p1':"
            " it is not a class",
        ),
        (
            "tests.corelib.test_checkpoint",
            "can't load class 'tests.corelib.test_checkpoint' of pid 'p1':"
            " not a 'module:qualname' identifier",
        ),
        (
            "tests.corelib:f.<locals>.X",
            "can't load class 'tests.corelib:f.<locals>.X' of pid 'p1':"
            " not a 'module:qualname' identifier",
        ),
    ],
)
def test_unknown_classes(identifier: str, message: str) -> None:
    loader = ClassLoader(allowed_prefixes=("tests.corelib",))
    with pytest.raises(UnknownClassError, match=f"^{re.escape(message)}$"):
        loader.load(identifier, pid="p1")


def test_base_class_is_checked() -> None:
    loader = ClassLoader(allowed_prefixes=("tests.corelib",))
    assert loader.load("tests.corelib.test_checkpoint:Outer", base=Outer) is Outer
    with pytest.raises(
        ForbiddenClassError,
        match=r"^class 'tests.corelib.test_checkpoint:Foo' is not allowed:"
        r" it is not a subclass of Outer$",
    ):
        loader.load("tests.corelib.test_checkpoint:Foo", base=Outer)


def test_allowed_prefixes_are_validated() -> None:
    with pytest.raises(TypeError, match=r"^allowed_prefixes must be a sequence of strings"):
        ClassLoader(allowed_prefixes="myapp")
    with pytest.raises(ValueError, match=r"^allowed prefix 'my app' is not a dotted module name$"):
        ClassLoader(allowed_prefixes=["my app"])
    assert ClassLoader(allowed_prefixes=["a.b"]).allowed_prefixes == ("a.b",)
