"""Sync tests for ports, port namespaces and the frozen mapping (no event loop involved)."""

from __future__ import annotations

import copy
import pickle
import re
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corelib import (
    UNSPECIFIED,
    AttributesFrozenDict,
    InputPort,
    OutputPort,
    Port,
    PortNamespace,
    PortValidationError,
    SpecSealedError,
)


def exact(message: str) -> str:
    """A ``match=`` pattern for exactly ``message``."""
    return f"^{re.escape(message)}$"


# -- sentinel and error ----------------------------------------------------------------------------


def test_unspecified_is_a_named_singleton() -> None:
    assert repr(UNSPECIFIED) == "UNSPECIFIED"
    assert UNSPECIFIED is copy.deepcopy(UNSPECIFIED)
    assert UNSPECIFIED is not None


def test_port_validation_error_fields_and_str() -> None:
    err = PortValidationError("inputs.sub.x", "expected int, got 'a'")
    assert isinstance(err, ValueError)
    assert err.port_path == "inputs.sub.x"
    assert err.reason == "expected int, got 'a'"
    assert str(err) == "inputs.sub.x: expected int, got 'a'"
    clone = pickle.loads(pickle.dumps(err))
    assert (clone.port_path, clone.reason, str(clone)) == (err.port_path, err.reason, str(err))


def test_spec_sealed_error_is_a_runtime_error() -> None:
    assert issubclass(SpecSealedError, RuntimeError)


# -- leaf ports ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "a.b", ".a"])
def test_port_rejects_bad_names(name: str) -> None:
    with pytest.raises(ValueError, match=exact(f"invalid port name {name!r}")):
        InputPort(name)


@pytest.mark.parametrize("valid_type", [5, "int", (), (int, 5)])
def test_port_rejects_bad_valid_type(valid_type: Any) -> None:
    with pytest.raises(
        TypeError, match=exact(f"valid_type must be a type or a tuple of types, got {valid_type!r}")
    ):
        OutputPort("x", valid_type=valid_type)


def test_port_type_check_messages() -> None:
    assert InputPort("x", valid_type=int).validate(1) is None
    assert InputPort("x", valid_type=int).validate("a") == "expected int, got 'a'"
    assert InputPort("x", valid_type=(int, str)).validate(1.5) == "expected int or str, got 1.5"
    three = InputPort("x", valid_type=(int, str, float))
    assert three.validate(None) == "expected int, str or float, got None"
    assert InputPort("x").validate(object) is None


def test_long_values_are_abbreviated_in_messages() -> None:
    reason = InputPort("x", valid_type=int).validate("a" * 500)
    assert reason is not None
    assert reason.startswith("expected int, got 'aaa")
    assert len(reason) < 100


def test_none_is_an_ordinary_value() -> None:
    assert InputPort("x", valid_type=int).validate(None) == "expected int, got None"
    assert InputPort("x", valid_type=(int, type(None))).validate(None) is None
    assert InputPort("x").validate(None) is None


def test_port_validator_gets_value_and_port() -> None:
    seen: list[tuple[Any, Port]] = []

    def positive(value: Any, port: Port) -> str | None:
        seen.append((value, port))
        return None if value > 0 else f"{port.name} must be positive"

    port = InputPort("x", valid_type=int, validator=positive)
    assert port.validate(2) is None
    assert port.validate(-1) == "x must be positive"
    assert seen == [(2, port), (-1, port)]


def test_validator_is_not_called_when_the_type_is_wrong() -> None:
    calls: list[Any] = []
    port = InputPort("x", valid_type=int, validator=lambda v, p: calls.append(v))
    assert port.validate("a") == "expected int, got 'a'"
    assert calls == []


def test_validator_returning_a_non_string_is_a_type_error() -> None:
    port = OutputPort("x", validator=lambda v, p: 42)  # type: ignore[arg-type,return-value]
    with pytest.raises(
        TypeError, match=exact("validator of 'x' returned 42, expected a str or None")
    ):
        port.validate(1)


def test_input_port_default_makes_it_optional() -> None:
    port = InputPort("x", valid_type=int, default=0, required=True)
    assert port.required is False
    assert port.has_default()
    assert port.default_value() == 0
    assert InputPort("y").required is True
    assert not InputPort("y").has_default()


def test_input_port_checks_a_plain_default_when_declared() -> None:
    with pytest.raises(
        ValueError, match=exact("invalid default for port 'x': expected int, got 'a'")
    ):
        InputPort("x", valid_type=int, default="a")
    with pytest.raises(ValueError, match=exact("invalid default for port 'x': too small")):
        InputPort("x", default=1, validator=lambda v, p: "too small" if v < 5 else None)


def test_input_port_callable_default_is_called_each_time() -> None:
    calls = iter(range(100))
    port = InputPort("x", valid_type=str, default=lambda: next(calls))
    # Not checked (or called) at declaration.
    assert port.default_value() == 0
    assert port.default_value() == 1


def test_input_port_without_default_has_no_default_value() -> None:
    with pytest.raises(LookupError, match=exact("port 'x' has no default")):
        InputPort("x").default_value()


def test_ports_are_immutable_values() -> None:
    port = InputPort("x", valid_type=int, help="an x")
    with pytest.raises(AttributeError):
        port.valid_type = str  # type: ignore[misc]
    assert port == InputPort("x", valid_type=int, help="an x")
    other: Port = OutputPort("x", valid_type=int, help="an x")
    assert port != other


def test_port_reprs() -> None:
    repr(InputPort("x", valid_type=int, default=1))  # smoke test
    assert "OutputPort(name='y'" in repr(OutputPort("y"))


# -- namespace structure ---------------------------------------------------------------------------


def namespace_at(root: PortNamespace, path: str) -> PortNamespace:
    namespace = root.get_port(path)
    assert isinstance(namespace, PortNamespace)
    return namespace


def make_namespace() -> PortNamespace:
    root = PortNamespace("inputs")
    root.add_port(InputPort("a", valid_type=int))
    sub = root.create_namespace("sub")
    sub.add_port(InputPort("x", valid_type=int, default=1))
    sub.add_port(InputPort("y", required=False))
    return root


def test_namespace_is_a_mapping_of_ports() -> None:
    root = make_namespace()
    assert isinstance(root, Mapping)
    assert list(root) == ["a", "sub"]
    assert len(root) == 2
    assert "a" in root
    assert "x" not in root
    assert isinstance(root["sub"], PortNamespace)
    assert root.get_port("sub.x") == InputPort("x", valid_type=int, default=1)
    assert root.get_port("sub") is root["sub"]


def test_get_port_missing_is_a_key_error() -> None:
    root = make_namespace()
    for path in ["b", "sub.z", "a.b"]:
        with pytest.raises(KeyError):
            root.get_port(path)


def test_namespaces_compare_by_identity() -> None:
    assert PortNamespace("n") != PortNamespace("n")
    namespace = PortNamespace("n")
    assert namespace == namespace
    assert len({namespace, namespace}) == 1


def test_namespace_repr() -> None:
    assert repr(make_namespace()) == (
        "PortNamespace('inputs', ports=['a', 'sub'], required=True, dynamic=False, "
        "valid_type=None, sealed=False)"
    )


def test_valid_type_implies_dynamic() -> None:
    assert PortNamespace("n", valid_type=int).dynamic
    namespace = PortNamespace("n")
    assert not namespace.dynamic
    namespace.valid_type = (int, str)
    assert namespace.dynamic
    namespace.valid_type = None
    assert namespace.dynamic  # clearing the type does not clear dynamic (as in plumpy)


def test_add_port_replaces_same_kind_in_place() -> None:
    root = make_namespace()
    root.add_port(InputPort("a", valid_type=str))
    assert list(root) == ["a", "sub"]
    assert root["a"] == InputPort("a", valid_type=str)
    replacement = PortNamespace("sub")
    root.add_port(replacement)
    assert root["sub"] is replacement


def test_add_port_refuses_to_change_kind() -> None:
    root = make_namespace()
    with pytest.raises(ValueError, match=exact("'inputs.sub' is already a namespace")):
        root.add_port(InputPort("sub"))
    with pytest.raises(ValueError, match=exact("'inputs.a' is already a port")):
        root.add_port(PortNamespace("a"))
    with pytest.raises(ValueError, match=exact("a nested namespace needs a name")):
        root.add_port(PortNamespace())


def test_create_namespace_makes_intermediates_and_updates_options() -> None:
    root = PortNamespace("inputs")
    deep = root.create_namespace("a.b.c", dynamic=True, help="deep")
    assert root.get_port("a.b.c") is deep
    assert deep.dynamic
    assert deep.help == "deep"
    assert isinstance(root["a"], PortNamespace)
    assert not root["a"].dynamic
    deep.add_port(InputPort("x"))
    again = root.create_namespace("a.b.c", required=False)
    assert again is deep
    assert list(again) == ["x"]  # ports kept
    assert (again.dynamic, again.required, again.help) == (False, False, None)  # options replaced


def test_create_namespace_through_a_leaf_fails() -> None:
    root = make_namespace()
    with pytest.raises(ValueError, match=exact("'inputs.a' is a port, not a namespace")):
        root.create_namespace("a.b")
    with pytest.raises(ValueError, match=exact("'inputs.a' is already a port")):
        root.create_namespace("a")
    with pytest.raises(ValueError, match=exact("invalid port name 'a..b'")):
        root.create_namespace("a..b")


def test_requires_value() -> None:
    root = make_namespace()
    assert root.requires_value  # 'a' is required
    assert not namespace_at(
        root, "sub"
    ).requires_value  # all of its ports have defaults or are optional
    assert not PortNamespace("empty").requires_value
    optional = PortNamespace("opt", required=False)
    optional.add_port(InputPort("z"))
    assert not optional.requires_value
    defaulted = PortNamespace("d", default={"z": 1})
    defaulted.add_port(InputPort("z"))
    assert not defaulted.requires_value
    outer = PortNamespace("outer")
    inner = outer.create_namespace("inner")
    assert not outer.requires_value
    inner.add_port(OutputPort("z"))
    assert outer.requires_value


# -- sealing ---------------------------------------------------------------------------------------


def test_sealed_namespace_refuses_changes_recursively() -> None:
    root = make_namespace()
    root.seal()
    assert root.sealed
    assert namespace_at(root, "sub").sealed
    with pytest.raises(
        SpecSealedError, match=exact("namespace 'inputs' is sealed, can't add port 'b'")
    ):
        root.add_port(InputPort("b"))
    with pytest.raises(
        SpecSealedError, match=exact("namespace 'sub' is sealed, can't add port 'b'")
    ):
        root["sub"].add_port(InputPort("b"))  # type: ignore[union-attr]
    with pytest.raises(
        SpecSealedError, match=exact("namespace 'inputs' is sealed, can't change dynamic")
    ):
        root.dynamic = True
    with pytest.raises(
        SpecSealedError, match=exact("namespace 'inputs' is sealed, can't change required")
    ):
        root.required = False
    for attribute in ["help", "validator", "valid_type", "default"]:
        with pytest.raises(
            SpecSealedError, match=exact(f"namespace 'inputs' is sealed, can't change {attribute}")
        ):
            setattr(root, attribute, None)
    with pytest.raises(
        SpecSealedError, match=exact("namespace 'sub' is sealed, can't change its options")
    ):
        root.create_namespace("sub")
    with pytest.raises(
        SpecSealedError, match=exact("namespace 'inputs' is sealed, can't absorb ports")
    ):
        root.absorb(PortNamespace("other"))
    assert list(root) == ["a", "sub"]


def test_copy_is_deep_and_unsealed() -> None:
    root = make_namespace()
    root.validator = lambda values, namespace: None
    root.seal()
    clone = root.copy()
    assert not clone.sealed
    assert not namespace_at(clone, "sub").sealed
    assert clone["sub"] is not root["sub"]
    assert clone.validator is root.validator
    clone.add_port(InputPort("new"))
    assert "new" not in root


# -- parsing: types, required, defaults ------------------------------------------------------------


def test_validate_returns_frozen_values() -> None:
    parsed = make_namespace().validate({"a": 3, "sub": {"y": "why"}})
    assert isinstance(parsed, AttributesFrozenDict)
    assert parsed == {"a": 3, "sub": {"x": 1, "y": "why"}}
    assert parsed.sub.x == 1


def test_validate_reports_the_full_path() -> None:
    root = make_namespace()
    with pytest.raises(PortValidationError, match=exact("inputs.a: expected int, got 'a'")) as info:
        root.validate({"a": "a"})
    assert info.value.port_path == "inputs.a"
    assert info.value.reason == "expected int, got 'a'"
    with pytest.raises(PortValidationError, match=exact("inputs.sub.x: expected int, got 2.5")):
        root.validate({"a": 1, "sub": {"x": 2.5}})


def test_validate_missing_required() -> None:
    with pytest.raises(
        PortValidationError, match=exact("inputs.a: required value was not provided")
    ):
        make_namespace().validate({})
    with pytest.raises(
        PortValidationError, match=exact("inputs.a: required value was not provided")
    ):
        make_namespace().validate(None)


def test_validate_requires_a_mapping() -> None:
    with pytest.raises(PortValidationError, match=exact("inputs.sub: expected a mapping, got 5")):
        make_namespace().validate({"a": 1, "sub": 5})
    with pytest.raises(PortValidationError, match=exact("inputs: expected a mapping, got [1]")):
        make_namespace().validate([1])  # type: ignore[arg-type]


def test_undeclared_key_in_non_dynamic_namespace() -> None:
    with pytest.raises(
        PortValidationError, match=exact("inputs.sub.q: undeclared port in non-dynamic namespace")
    ):
        make_namespace().validate({"a": 1, "sub": {"q": 1}})


def test_unnamed_root_paths_start_at_the_port() -> None:
    root = PortNamespace()
    root.add_port(InputPort("x", valid_type=int))
    with pytest.raises(PortValidationError, match=exact("x: expected int, got None")):
        root.validate({"x": None})


def test_default_only_applies_when_absent() -> None:
    root = PortNamespace("inputs")
    root.add_port(InputPort("x", valid_type=int, default=5))
    assert root.validate({}) == {"x": 5}
    assert root.validate({"x": 7}) == {"x": 7}
    with pytest.raises(PortValidationError, match=exact("inputs.x: expected int, got None")):
        root.validate({"x": None})


@pytest.mark.parametrize("default", [0, False, "", None, ()])
def test_falsy_defaults_are_kept(default: Any) -> None:
    root = PortNamespace("inputs")
    root.add_port(InputPort("x", default=default))
    parsed = root.validate({})
    assert "x" in parsed
    assert parsed["x"] == default


def test_callable_default_is_evaluated_on_every_parse() -> None:
    made: list[list[int]] = []

    def fresh() -> list[int]:
        made.append([])
        return made[-1]

    root = PortNamespace("inputs")
    root.add_port(InputPort("x", valid_type=list, default=fresh))
    first = root.validate({})
    second = root.validate({})
    assert len(made) == 2
    assert first.x is made[0]
    assert second.x is made[1]
    assert root.validate({"x": [1]}) == {"x": [1]}
    assert len(made) == 2  # not called when a value is given


def test_callable_default_result_is_checked() -> None:
    root = PortNamespace("inputs")
    root.add_port(InputPort("x", valid_type=int, default=lambda: "no"))
    with pytest.raises(PortValidationError, match=exact("inputs.x: expected int, got 'no'")):
        root.validate({})


def test_a_callable_given_as_a_value_is_not_called() -> None:
    root = PortNamespace("inputs")
    root.add_port(InputPort("x", default=lambda: 1))
    function = len
    assert root.validate({"x": function}).x is function


def test_dict_values_of_leaf_ports_are_frozen_after_the_type_check() -> None:
    root = PortNamespace("inputs")
    root.add_port(InputPort("params", valid_type=dict))
    raw = {"params": {"k": {"deep": 1}}}
    parsed = root.validate(raw)
    assert isinstance(parsed.params, AttributesFrozenDict)
    assert parsed.params.k.deep == 1
    assert raw == {"params": {"k": {"deep": 1}}}


# -- parsing: nested namespaces --------------------------------------------------------------------


def test_omitted_required_namespace_gets_its_defaults() -> None:
    assert make_namespace().validate({"a": 1}) == {"a": 1, "sub": {"x": 1}}


def test_omitted_required_namespace_reports_missing_ports() -> None:
    root = PortNamespace("inputs")
    root.create_namespace("sub.deeper").add_port(InputPort("x"))
    with pytest.raises(
        PortValidationError, match=exact("inputs.sub.deeper.x: required value was not provided")
    ):
        root.validate({})


def test_omitted_required_namespace_with_optional_ports_is_present_and_empty() -> None:
    root = PortNamespace("inputs")
    root.create_namespace("sub").add_port(InputPort("x", required=False))
    root.create_namespace("empty", dynamic=True)
    parsed = root.validate({})
    assert parsed == {"sub": {}}  # a namespace declaring no ports is left out


def test_omitted_optional_namespace_is_absent() -> None:
    root = PortNamespace("inputs")
    optional = root.create_namespace("opt", required=False, valid_type=int)
    optional.add_port(InputPort("x"))
    assert root.validate({}) == {}
    assert root.validate({"opt": {}}) == {"opt": {}}
    with pytest.raises(
        PortValidationError, match=exact("inputs.opt.x: required value was not provided")
    ):
        root.validate({"opt": {"y": 1}})


def test_omitted_optional_namespace_still_gets_nested_defaults() -> None:
    root = PortNamespace("inputs")
    optional = root.create_namespace("opt", required=False)
    optional.add_port(InputPort("b", default=5))
    optional.add_port(InputPort("needed"))  # not reported: the whole namespace was omitted
    optional.create_namespace("inner").add_port(InputPort("c", default=6))
    assert root.validate({}) == {"opt": {"b": 5, "inner": {"c": 6}}}


def test_required_namespace_inside_an_omitted_optional_one_is_left_out() -> None:
    root = PortNamespace("inputs")
    optional = root.create_namespace("opt", required=False)
    optional.create_namespace("inner").add_port(InputPort("x"))
    optional.create_namespace("other").add_port(InputPort("y", default=1))
    assert root.validate({}) == {"opt": {"other": {"y": 1}}}


def test_optional_namespace_given_empty_is_present_and_not_checked() -> None:
    calls: list[Any] = []
    root = PortNamespace("inputs")

    def never(values: AttributesFrozenDict, namespace: PortNamespace) -> str:
        calls.append(values)
        return "never"

    optional = root.create_namespace("opt", required=False, validator=never)
    optional.add_port(InputPort("x"))
    optional.add_port(InputPort("d", default=4))
    assert root.validate({"opt": {}}) == {"opt": {"d": 4}}
    assert calls == []
    with pytest.raises(PortValidationError, match=exact("inputs.opt: never")):
        root.validate({"opt": {"x": 1}})


def test_namespace_default_is_used_when_omitted() -> None:
    root = PortNamespace("inputs")
    sub = root.create_namespace("sub", default={"x": 2})
    sub.add_port(InputPort("x", valid_type=int))
    sub.add_port(InputPort("y", default=3))
    assert root.validate({}) == {"sub": {"x": 2, "y": 3}}
    assert root.validate({"sub": {"x": 9}}) == {"sub": {"x": 9, "y": 3}}


def test_namespace_callable_default_is_called_per_parse() -> None:
    calls: list[int] = []
    root = PortNamespace("inputs")

    def make() -> dict[str, int]:
        calls.append(1)
        return {"x": len(calls)}

    root.create_namespace("sub", default=make).add_port(InputPort("x", valid_type=int))
    assert root.validate({}) == {"sub": {"x": 1}}
    assert root.validate({}) == {"sub": {"x": 2}}


def test_bad_namespace_default_is_reported_with_its_path() -> None:
    root = PortNamespace("inputs")
    root.create_namespace("sub", default=lambda: 3)
    with pytest.raises(PortValidationError, match=exact("inputs.sub: expected a mapping, got 3")):
        root.validate({})


# -- parsing: dynamic namespaces -------------------------------------------------------------------


def test_dynamic_namespace_accepts_undeclared_keys_and_nested_dicts() -> None:
    root = PortNamespace("inputs", dynamic=True)
    root.add_port(InputPort("known", valid_type=int))
    parsed = root.validate({"known": 1, "extra": "e", "nested": {"deep": {"er": [1]}}})
    assert parsed == {"known": 1, "extra": "e", "nested": {"deep": {"er": [1]}}}
    assert isinstance(parsed.nested.deep, AttributesFrozenDict)
    with pytest.raises(PortValidationError, match=exact("inputs.known: expected int, got 'a'")):
        root.validate({"known": "a", "extra": 1})


def test_dynamic_valid_type_checks_undeclared_values_recursively() -> None:
    root = PortNamespace("inputs")
    root.create_namespace("dyn", valid_type=int).add_port(InputPort("name", valid_type=str))
    parsed = root.validate({"dyn": {"name": "n", "a": 1, "b": {"c": 2, "d": {"e": 3}}}})
    assert parsed.dyn.b.d.e == 3
    with pytest.raises(PortValidationError, match=exact("inputs.dyn.b.d.e: expected int, got 'x'")):
        root.validate({"dyn": {"name": "n", "b": {"d": {"e": "x"}}}})
    with pytest.raises(PortValidationError, match=exact("inputs.dyn.a: expected int, got [1]")):
        root.validate({"dyn": {"a": [1], "name": "n"}})
    # Declared ports are checked against their own type, not the namespace's.
    with pytest.raises(PortValidationError, match=exact("inputs.dyn.name: expected str, got 1")):
        root.validate({"dyn": {"name": 1}})


def test_dynamic_valid_type_that_is_a_mapping_type_accepts_dicts_whole() -> None:
    root = PortNamespace("inputs", valid_type=dict)
    parsed = root.validate({"a": {"b": 1}})
    assert parsed == {"a": {"b": 1}}  # {"b": 1} is a dict, so it is not looked into
    with pytest.raises(PortValidationError, match=exact("inputs.c: expected dict, got 1")):
        root.validate({"a": {"b": 1}, "c": 1})


# -- parsing: validators ---------------------------------------------------------------------------


def test_port_validator_runs_on_given_and_default_values_only() -> None:
    seen: list[Any] = []

    def record(value: Any, port: Port) -> str | None:
        seen.append(value)
        return "must not be 13" if value == 13 else None

    root = PortNamespace("inputs")
    root.add_port(InputPort("x", validator=record, required=False))
    root.add_port(InputPort("y", validator=record, default=lambda: 2))
    assert root.validate({}) == {"y": 2}
    assert seen == [2]
    with pytest.raises(PortValidationError, match=exact("inputs.x: must not be 13")):
        root.validate({"x": 13})


def test_namespace_validator_sees_the_parsed_values_after_its_ports() -> None:
    seen: list[tuple[Any, PortNamespace]] = []

    def check(values: AttributesFrozenDict, namespace: PortNamespace) -> str | None:
        seen.append((values, namespace))
        return "x must be less than y" if values["x"] >= values["y"] else None

    root = PortNamespace("inputs")
    sub = root.create_namespace("sub", validator=check)
    sub.add_port(InputPort("x", valid_type=int))
    sub.add_port(InputPort("y", valid_type=int, default=10))
    assert root.validate({"sub": {"x": 1}}) == {"sub": {"x": 1, "y": 10}}
    assert seen == [({"x": 1, "y": 10}, sub)]
    assert isinstance(seen[0][0], AttributesFrozenDict)
    with pytest.raises(PortValidationError, match=exact("inputs.sub: x must be less than y")):
        root.validate({"sub": {"x": 11}})
    # A port error is reported first; the namespace validator does not run.
    seen.clear()
    with pytest.raises(PortValidationError, match=exact("inputs.sub.x: expected int, got 'a'")):
        root.validate({"sub": {"x": "a"}})
    assert seen == []


def test_root_namespace_validator_error_names_the_root() -> None:
    root = PortNamespace(
        "inputs", validator=lambda values, ns: "need a or b" if not values else None
    )
    root.add_port(InputPort("a", required=False))
    root.add_port(InputPort("b", required=False))
    assert root.validate({"b": 1}) == {"b": 1}
    with pytest.raises(PortValidationError, match=exact("inputs: need a or b")):
        root.validate({})


def test_namespace_validator_returning_a_non_string_is_a_type_error() -> None:
    root = PortNamespace("inputs", validator=lambda values, ns: True)  # type: ignore[arg-type,return-value]
    with pytest.raises(
        TypeError, match=exact("validator of 'inputs' returned True, expected a str or None")
    ):
        root.validate({})


def test_namespace_validator_not_run_for_an_absent_optional_namespace() -> None:
    calls: list[Any] = []
    root = PortNamespace("inputs")
    root.create_namespace("opt", required=False, validator=lambda v, n: calls.append(v))
    assert root.validate({}) == {}
    assert calls == []


# -- single values and missing outputs -------------------------------------------------------------


def make_outputs() -> PortNamespace:
    outputs = PortNamespace("outputs")
    outputs.add_port(OutputPort("x", valid_type=int))
    outputs.add_port(OutputPort("leaf"))
    sub = outputs.create_namespace("sub")
    sub.add_port(OutputPort("y", valid_type=str))
    sub.add_port(OutputPort("z", required=False))
    outputs.create_namespace("dyn", valid_type=int)
    outputs.create_namespace("opt", required=False).add_port(OutputPort("w"))
    return outputs


def test_validate_value_leaf_and_nested() -> None:
    outputs = make_outputs()
    outputs.validate_value("x", 1)
    outputs.validate_value("sub.y", "s")
    with pytest.raises(PortValidationError, match=exact("outputs.x: expected int, got 'a'")):
        outputs.validate_value("x", "a")
    with pytest.raises(PortValidationError, match=exact("outputs.sub.y: expected str, got 1")):
        outputs.validate_value("sub.y", 1)


def test_validate_value_undeclared() -> None:
    outputs = make_outputs()
    with pytest.raises(
        PortValidationError, match=exact("outputs.nope: undeclared port in non-dynamic namespace")
    ):
        outputs.validate_value("nope", 1)
    with pytest.raises(
        PortValidationError,
        match=exact("outputs.sub.nope: undeclared port in non-dynamic namespace"),
    ):
        outputs.validate_value("sub.nope.deeper", 1)
    with pytest.raises(
        PortValidationError, match=exact("outputs.leaf.q: 'outputs.leaf' is not a namespace")
    ):
        outputs.validate_value("leaf.q", 1)
    with pytest.raises(ValueError, match=exact("invalid port name 'sub.'")):
        outputs.validate_value("sub.", 1)


def test_validate_value_in_dynamic_namespace_never_changes_the_spec() -> None:
    outputs = make_outputs()
    outputs.validate_value("dyn.a", 1)
    outputs.validate_value("dyn.a.b.c", 1)
    outputs.validate_value("dyn.m", {"n": 2})
    with pytest.raises(PortValidationError, match=exact("outputs.dyn.a.b: expected int, got 'x'")):
        outputs.validate_value("dyn.a.b", "x")
    with pytest.raises(PortValidationError, match=exact("outputs.dyn.m.n: expected int, got 'x'")):
        outputs.validate_value("dyn.m", {"n": "x"})
    assert list(outputs["dyn"]) == []  # type: ignore[arg-type]


def test_validate_value_for_a_whole_namespace_is_partial() -> None:
    outputs = make_outputs()
    outputs.validate_value("sub", {"z": 1})  # 'y' may still come later
    with pytest.raises(PortValidationError, match=exact("outputs.sub.y: expected str, got 1")):
        outputs.validate_value("sub", {"y": 1})
    with pytest.raises(PortValidationError, match=exact("outputs.sub: expected a mapping, got 1")):
        outputs.validate_value("sub", 1)


def test_missing_required() -> None:
    outputs = make_outputs()
    assert outputs.missing_required({}) == ["x", "leaf", "sub.y"]
    assert outputs.missing_required({"x": 1, "leaf": 2, "sub": {"y": "s"}}) == []
    assert outputs.missing_required({"x": 1, "leaf": 2, "sub": {}, "opt": {}}) == ["sub.y", "opt.w"]
    assert outputs.missing_required({"x": 1}, prefix="outputs.") == [
        "outputs.leaf",
        "outputs.sub.y",
    ]


def test_validate_outputs_checks_required_without_defaults() -> None:
    outputs = make_outputs()
    assert outputs.validate_outputs({"x": 1, "leaf": 2, "sub": {"y": "s"}}) == {
        "x": 1,
        "leaf": 2,
        "sub": {"y": "s"},
    }
    with pytest.raises(
        PortValidationError, match=exact("outputs.sub.y: required value was not provided")
    ):
        outputs.validate_outputs({"x": 1, "leaf": 2})


# -- absorbing -------------------------------------------------------------------------------------


def make_source() -> PortNamespace:
    source = PortNamespace("inputs", validator=lambda values, ns: None)
    source.add_port(InputPort("a", valid_type=int))
    source.add_port(InputPort("b", default=2))
    sub = source.create_namespace("sub", validator=lambda values, ns: None, dynamic=True)
    sub.add_port(InputPort("x"))
    sub.add_port(InputPort("y", required=False))
    return source


def test_absorb_everything_copies_deeply() -> None:
    source = make_source()
    target = PortNamespace("inputs")
    assert target.absorb(source) == ["a", "b", "sub"]
    assert target["a"] == source["a"]
    assert target["sub"] is not source["sub"]
    copied_sub = target["sub"]
    assert isinstance(copied_sub, PortNamespace)
    assert copied_sub.dynamic
    assert copied_sub.validator is not None
    assert target.validator is None  # the target's own options are untouched
    source.create_namespace("sub").add_port(InputPort("later"))
    assert "later" not in copied_sub


def test_absorb_include_and_exclude() -> None:
    target = PortNamespace("inputs")
    assert target.absorb(make_source(), include=["a", "sub.x"]) == ["a", "sub"]
    sub = target["sub"]
    assert isinstance(sub, PortNamespace)
    assert list(sub) == ["x"]
    assert sub.validator is None  # partial copy: its validator would see the wrong values
    assert not sub.dynamic  # only declared ports were asked for

    target = PortNamespace("inputs")
    assert target.absorb(make_source(), exclude=["b", "sub.y"]) == ["a", "sub"]
    excluded = target["sub"]
    assert isinstance(excluded, PortNamespace)
    assert list(excluded) == ["x"]
    assert excluded.dynamic
    assert excluded.validator is None

    target = PortNamespace("inputs")
    assert target.absorb(make_source(), include=["sub"]) == ["sub"]
    whole = target["sub"]
    assert isinstance(whole, PortNamespace)
    assert list(whole) == ["x", "y"]
    assert whole.validator is not None
    assert whole.dynamic

    target = PortNamespace("inputs")
    assert target.absorb(make_source(), exclude=["sub"]) == ["a", "b"]


def test_absorb_rule_errors() -> None:
    target = PortNamespace("inputs")
    with pytest.raises(ValueError, match=exact("include and exclude are mutually exclusive")):
        target.absorb(make_source(), include=["a"], exclude=["b"])
    with pytest.raises(ValueError, match=exact("can't include 'c': no such port in 'inputs'")):
        target.absorb(make_source(), include=["a", "c"])
    with pytest.raises(ValueError, match=exact("can't exclude 'a.b': no such port in 'inputs'")):
        target.absorb(make_source(), exclude=["a.b"])
    with pytest.raises(
        TypeError, match=exact("include must be a list of port names, not the string 'a'")
    ):
        target.absorb(make_source(), include="a")
    assert list(target) == []


def test_absorb_clash_changes_nothing() -> None:
    target = PortNamespace("inputs")
    target.add_port(InputPort("zzz"))
    target.create_namespace("sub").add_port(InputPort("x", valid_type=str))
    with pytest.raises(ValueError, match=exact("can't absorb 'inputs.sub.x': port already exists")):
        target.absorb(make_source())
    assert list(target) == ["zzz", "sub"]
    assert list(target["sub"]) == ["x"]  # type: ignore[arg-type]


def test_absorb_merges_into_an_existing_namespace() -> None:
    target = PortNamespace("inputs")
    target.create_namespace("sub", required=False).add_port(InputPort("own"))
    target.absorb(make_source(), include=["sub"])
    sub = target["sub"]
    assert isinstance(sub, PortNamespace)
    assert list(sub) == ["own", "x", "y"]
    assert sub.required is False  # existing options kept


def test_absorb_leaf_onto_namespace_clashes() -> None:
    target = PortNamespace("inputs")
    target.create_namespace("a")
    with pytest.raises(ValueError, match=exact("can't absorb 'inputs.a': port already exists")):
        target.absorb(make_source())


# -- frozen mapping --------------------------------------------------------------------------------


def test_frozen_mapping_access() -> None:
    frozen = AttributesFrozenDict({"a": 1, "sub": {"x": [1, 2], "deeper": {"y": None}}})
    assert frozen["a"] == frozen.a == 1
    assert frozen.sub.x == [1, 2]
    assert frozen.sub.deeper.y is None
    assert isinstance(frozen.sub, AttributesFrozenDict)
    assert isinstance(frozen.sub.deeper, AttributesFrozenDict)
    assert dict(frozen.items())["a"] == 1
    assert frozen.get("missing", 5) == 5
    assert "a" in frozen
    assert "b" not in frozen
    assert len(frozen) == 2
    assert "sub" in dir(frozen)
    assert AttributesFrozenDict([("k", 1)]) == {"k": 1}
    assert AttributesFrozenDict() == {}


def test_frozen_mapping_missing_attribute() -> None:
    with pytest.raises(AttributeError, match=exact("no key 'nope'")):
        _ = AttributesFrozenDict({"a": 1}).nope
    with pytest.raises(KeyError):
        _ = AttributesFrozenDict({"a": 1})["nope"]


def test_frozen_mapping_methods_win_over_keys() -> None:
    frozen = AttributesFrozenDict({"items": 1, "to_dict": 2})
    assert callable(frozen.items)
    assert frozen["items"] == 1
    assert frozen.to_dict() == {"items": 1, "to_dict": 2}


def test_frozen_mapping_cannot_be_changed() -> None:
    frozen = AttributesFrozenDict({"a": 1, "sub": {"x": 1}})
    with pytest.raises(TypeError):
        frozen["a"] = 2
    with pytest.raises(TypeError):
        del frozen["a"]
    with pytest.raises(TypeError):
        frozen.sub["x"] = 2
    with pytest.raises(AttributeError, match=exact("can't set 'a': the mapping is immutable")):
        frozen.a = 2
    with pytest.raises(AttributeError, match=exact("can't set 'new': the mapping is immutable")):
        frozen.new = 2
    with pytest.raises(AttributeError, match=exact("can't delete 'a': the mapping is immutable")):
        del frozen.a
    with pytest.raises(AttributeError):
        frozen.update({"a": 3})
    assert frozen == {"a": 1, "sub": {"x": 1}}


def test_frozen_mapping_copies_its_argument() -> None:
    inner = {"x": 1}
    raw = {"sub": inner}
    frozen = AttributesFrozenDict(raw)
    raw["other"] = 2  # type: ignore[assignment]
    inner["x"] = 99
    assert frozen == {"sub": {"x": 1}}
    assert raw == {"sub": {"x": 99}, "other": 2}


def test_frozen_mapping_equality_and_hash() -> None:
    frozen = AttributesFrozenDict({"a": {"b": 1}})
    assert frozen == {"a": {"b": 1}}
    assert frozen == AttributesFrozenDict({"a": {"b": 1}})
    assert frozen != {"a": {"b": 2}}
    with pytest.raises(TypeError):
        hash(frozen)


def test_frozen_to_dict_is_a_deep_plain_copy() -> None:
    leaf = [1, 2]
    frozen = AttributesFrozenDict({"a": {"b": {"c": leaf}}, "d": 1})
    plain = frozen.to_dict()
    assert plain == {"a": {"b": {"c": [1, 2]}}, "d": 1}
    assert type(plain) is dict
    assert type(plain["a"]) is dict
    assert type(plain["a"]["b"]) is dict
    plain["a"]["b"]["new"] = 1
    assert "new" not in frozen.a.b
    assert plain["a"]["b"]["c"] is leaf  # leaves are shared, not copied


def test_frozen_mapping_pickles_and_copies() -> None:
    frozen = AttributesFrozenDict({"a": {"b": [1]}})
    for clone in (pickle.loads(pickle.dumps(frozen)), copy.copy(frozen), copy.deepcopy(frozen)):
        assert clone == frozen
        assert isinstance(clone, AttributesFrozenDict)
        assert isinstance(clone.a, AttributesFrozenDict)
    assert copy.deepcopy(frozen).a.b is not frozen.a.b


def test_frozen_mapping_repr() -> None:
    assert repr(AttributesFrozenDict({"a": {"b": 1}})) == (
        "AttributesFrozenDict({'a': AttributesFrozenDict({'b': 1})})"
    )


# -- property-based --------------------------------------------------------------------------------

keys = st.text(alphabet="abcdefgh_", min_size=1, max_size=6)
leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=5)
    | st.lists(st.integers(), max_size=3)
)
nested_dicts = st.recursive(
    st.dictionaries(keys, leaves, max_size=4),
    lambda children: st.dictionaries(keys, leaves | children, max_size=4),
    max_leaves=20,
)


@given(nested_dicts)
def test_dynamic_namespace_round_trip(raw: dict[str, Any]) -> None:
    snapshot = copy.deepcopy(raw)
    parsed = PortNamespace("inputs", dynamic=True).validate(raw)
    assert raw == snapshot  # never mutated
    assert parsed == raw
    assert parsed.to_dict() == raw
    assert AttributesFrozenDict(parsed.to_dict()) == parsed


@given(nested_dicts)
def test_frozen_mapping_never_shares_mapping_levels_with_its_source(raw: dict[str, Any]) -> None:
    frozen = AttributesFrozenDict(raw)

    def check(plain: dict[str, Any], frozen_level: AttributesFrozenDict) -> None:
        for key, value in plain.items():
            if isinstance(value, dict):
                assert isinstance(frozen_level[key], AttributesFrozenDict)
                check(value, frozen_level[key])
            else:
                assert frozen_level[key] is value

    check(raw, frozen)
