"""Sync tests for ProcessSpec: declaring, inheriting, exposing, sealing and validating."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corelib import (
    AttributesFrozenDict,
    ExitCode,
    InputPort,
    OutputPort,
    PortNamespace,
    PortValidationError,
    ProcessSpec,
    SpecSealedError,
)


def exact(message: str) -> str:
    """A ``match=`` pattern for exactly ``message``."""
    return f"^{re.escape(message)}$"


def namespace_at(root: PortNamespace, path: str) -> PortNamespace:
    namespace = root.get_port(path)
    assert isinstance(namespace, PortNamespace)
    return namespace


class FakeProcess:
    """Builds its spec the way the real ``Process.spec()`` does: once per class, via ``define``."""

    _spec: ClassVar[ProcessSpec]

    @classmethod
    def spec(cls) -> ProcessSpec:
        if "_spec" not in cls.__dict__:
            spec = ProcessSpec()
            cls.define(spec)
            spec.seal()
            cls._spec = spec
        return cls._spec

    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        """Subclasses call ``super().define(spec)`` first, then extend."""


# -- declaring -------------------------------------------------------------------------------------


def test_new_spec_is_empty_with_named_roots() -> None:
    spec = ProcessSpec()
    assert spec.inputs.name == "inputs"
    assert spec.outputs.name == "outputs"
    assert list(spec.inputs) == []
    assert list(spec.outputs) == []
    assert dict(spec.exit_codes) == {}
    assert not spec.sealed
    assert spec.validate_inputs(None) == {}
    assert spec.validate_inputs({}) == {}


def test_input_declares_an_input_port() -> None:
    spec = ProcessSpec()

    def check(value: Any, port: Any) -> str | None:
        return None

    spec.input("x", valid_type=int, default=1, required=True, validator=check, help="an x")
    assert spec.inputs["x"] == InputPort(
        "x", valid_type=int, default=1, validator=check, help="an x"
    )
    spec.input("y", int)  # positional valid_type, as in the contract
    assert spec.inputs["y"] == InputPort("y", valid_type=int)


def test_output_declares_an_output_port() -> None:
    spec = ProcessSpec()
    spec.output("result", valid_type=float, required=False, help="the result")
    assert spec.outputs["result"] == OutputPort(
        "result", valid_type=float, required=False, help="the result"
    )


def test_dotted_names_create_namespaces() -> None:
    spec = ProcessSpec()
    spec.input("a.b.c", valid_type=int)
    spec.output("o.p")
    assert spec.has_input("a.b.c")
    assert spec.has_input("a.b")
    assert spec.has_input("a")
    assert not spec.has_input("a.b.d")
    assert spec.has_output("o.p")
    assert not spec.has_output("p")
    with pytest.raises(
        PortValidationError, match=exact("inputs.a.b.c: required value was not provided")
    ):
        spec.validate_inputs({})


def test_bad_names() -> None:
    spec = ProcessSpec()
    for name in ["", "a..b", ".a", "a."]:
        with pytest.raises(ValueError, match=exact(f"invalid port name {name!r}")):
            spec.input(name)
    spec.input("leaf")
    with pytest.raises(ValueError, match=exact("'inputs.leaf' is a port, not a namespace")):
        spec.input("leaf.x")
    with pytest.raises(ValueError, match=exact("'inputs.leaf' is already a port")):
        spec.input_namespace("leaf")
    spec.input_namespace("ns")
    with pytest.raises(ValueError, match=exact("'inputs.ns' is already a namespace")):
        spec.input("ns")


def test_errors_name_the_full_path_of_deep_ports() -> None:
    spec = ProcessSpec()
    spec.input("a.b.leaf")
    spec.input_namespace("a.b.ns")
    with pytest.raises(ValueError, match=exact("'inputs.a.b.leaf' is a port, not a namespace")):
        spec.input("a.b.leaf.x")
    with pytest.raises(ValueError, match=exact("'inputs.a.b.leaf' is already a port")):
        spec.input_namespace("a.b.leaf")
    with pytest.raises(ValueError, match=exact("'inputs.a.b.ns' is already a namespace")):
        spec.input("a.b.ns")
    spec.output("o.p.q")
    with pytest.raises(ValueError, match=exact("'outputs.o.p' is already a namespace")):
        spec.output("o.p")


def test_input_namespace_returns_the_namespace() -> None:
    spec = ProcessSpec()

    def check(values: AttributesFrozenDict, namespace: PortNamespace) -> str | None:
        return None

    namespace = spec.input_namespace(
        "sub", dynamic=True, validator=check, default={"k": 1}, required=False, help="h"
    )
    assert spec.inputs["sub"] is namespace
    assert (namespace.dynamic, namespace.validator, namespace.default) == (True, check, {"k": 1})
    assert (namespace.required, namespace.help) == (False, "h")
    typed = spec.input_namespace("typed", valid_type=int)
    assert typed.dynamic
    assert typed.valid_type is int
    outputs = spec.output_namespace("out", dynamic=True, required=False)
    assert spec.outputs["out"] is outputs
    assert outputs.dynamic
    assert not outputs.required


def test_redeclaring_a_port_replaces_it() -> None:
    spec = ProcessSpec()
    spec.input("x", valid_type=int)
    spec.input("y")
    spec.input("x", valid_type=str, default="s")
    assert list(spec.inputs) == ["x", "y"]
    assert spec.validate_inputs({"y": 1}) == {"x": "s", "y": 1}


def test_redeclaring_a_namespace_replaces_its_options_and_keeps_its_ports() -> None:
    spec = ProcessSpec()
    spec.input_namespace("sub", dynamic=True)
    spec.input("sub.x")
    spec.input_namespace("sub", required=False)
    namespace = spec.inputs["sub"]
    assert isinstance(namespace, PortNamespace)
    assert list(namespace) == ["x"]
    assert not namespace.dynamic
    assert not namespace.required
    assert spec.validate_inputs({}) == {}


def test_invalid_default_fails_at_declaration() -> None:
    with pytest.raises(
        ValueError, match=exact("invalid default for port 'x': expected int, got None")
    ):
        ProcessSpec().input("x", valid_type=int, default=None)


def test_root_namespace_options_can_be_set_before_sealing() -> None:
    spec = ProcessSpec()
    spec.inputs.dynamic = True
    spec.inputs.validator = lambda values, ns: None if "a" in values else "a is needed"
    assert spec.validate_inputs({"a": 1, "b": 2}) == {"a": 1, "b": 2}
    with pytest.raises(PortValidationError, match=exact("inputs: a is needed")):
        spec.validate_inputs({"b": 2})


# -- exit codes ------------------------------------------------------------------------------------


def test_exit_codes() -> None:
    spec = ProcessSpec()
    spec.exit_code(300, "ERROR_MISSING", "input {name} is missing")
    spec.exit_code(400, "ERROR_OTHER", "something else")
    codes = spec.exit_codes
    assert list(codes) == ["ERROR_MISSING", "ERROR_OTHER"]
    assert codes["ERROR_MISSING"] == ExitCode(300, "input {name} is missing", "ERROR_MISSING")
    assert codes.ERROR_OTHER.label == "ERROR_OTHER"
    assert codes.ERROR_OTHER.status == 400
    assert not codes.ERROR_OTHER.successful
    assert codes.ERROR_MISSING.format(name="x").message == "input x is missing"


def test_exit_codes_are_read_only() -> None:
    spec = ProcessSpec()
    spec.exit_code(1, "E", "e")
    with pytest.raises(TypeError):
        spec.exit_codes["F"] = ExitCode(2)
    with pytest.raises(AttributeError):
        spec.exit_codes.F = ExitCode(2)
    with pytest.raises(AttributeError):
        spec.exit_codes = {}  # type: ignore[misc,assignment]
    assert list(spec.exit_codes) == ["E"]


def test_exit_code_duplicates() -> None:
    spec = ProcessSpec()
    spec.exit_code(300, "ERROR_A", "a")
    with pytest.raises(
        ValueError, match=exact("exit code status 300 is already declared as 'ERROR_A'")
    ):
        spec.exit_code(300, "ERROR_B", "b")
    with pytest.raises(ValueError, match=exact("exit code label 'ERROR_A' is already declared")):
        spec.exit_code(301, "ERROR_A", "a again")
    assert list(spec.exit_codes) == ["ERROR_A"]


def test_exit_code_argument_checks() -> None:
    spec = ProcessSpec()
    with pytest.raises(ValueError, match=exact("exit code status must be >= 0, got -1")):
        spec.exit_code(-1, "E", "e")
    with pytest.raises(
        ValueError, match=exact("exit code label must be an identifier, got 'not valid'")
    ):
        spec.exit_code(1, "not valid", "e")
    with pytest.raises(TypeError, match=exact("exit code status must be an int, got True")):
        spec.exit_code(True, "E", "e")
    with pytest.raises(TypeError, match=exact("exit code status must be an int, got '1'")):
        spec.exit_code("1", "E", "e")  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=exact("exit code label and message must be str, got 'E', None")
    ):
        spec.exit_code(1, "E", None)  # type: ignore[arg-type]
    assert dict(spec.exit_codes) == {}


# -- sealing ---------------------------------------------------------------------------------------


def test_sealed_spec_refuses_every_change() -> None:
    spec = ProcessSpec()
    spec.input("x")
    spec.seal()
    spec.seal()  # idempotent
    assert spec.sealed
    assert spec.inputs.sealed
    assert spec.outputs.sealed
    attempts: list[tuple[Callable[[], object], str]] = [
        (lambda: spec.input("y"), "spec is sealed, can't add input 'y'"),
        (lambda: spec.output("y"), "spec is sealed, can't add output 'y'"),
        (lambda: spec.input_namespace("n"), "spec is sealed, can't add input namespace 'n'"),
        (lambda: spec.output_namespace("n"), "spec is sealed, can't add output namespace 'n'"),
        (lambda: spec.exit_code(1, "E", "e"), "spec is sealed, can't add exit code 'E'"),
        (lambda: spec.expose_inputs(Child), "spec is sealed, can't expose inputs of Child"),
        (lambda: spec.expose_outputs(Child), "spec is sealed, can't expose outputs of Child"),
        (
            lambda: spec.inputs.add_port(InputPort("z")),
            "namespace 'inputs' is sealed, can't add port 'z'",
        ),
    ]
    for attempt, message in attempts:
        with pytest.raises(SpecSealedError, match=exact(message)):
            attempt()
    assert list(spec.inputs) == ["x"]
    assert spec.validate_inputs({"x": 1}) == {"x": 1}  # a sealed spec still validates


# -- inheritance through define/super --------------------------------------------------------------


class Base(FakeProcess):
    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.input("x", valid_type=int)
        spec.input("opt", valid_type=str, required=False)
        spec.input_namespace("sub", dynamic=True)
        spec.input("sub.a", default=1)
        spec.output("result", valid_type=int)
        spec.exit_code(300, "ERROR_BASE", "base failed")


class Derived(Base):
    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.input("x", valid_type=int, default=5)  # override: now has a default
        spec.input("extra", valid_type=float)
        spec.input_namespace("sub", required=False)  # override options, keep ports
        spec.output("result", valid_type=int, required=False)
        spec.exit_code(400, "ERROR_DERIVED", "derived failed")


class DerivedAgain(Derived):
    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.input("extra", valid_type=(float, int))


class Clashing(Base):
    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.exit_code(300, "ERROR_AGAIN", "clash")


def test_specs_are_built_once_per_class() -> None:
    assert Base.spec() is Base.spec()
    assert Derived.spec() is not Base.spec()
    assert Base.spec().sealed
    assert Derived.spec().sealed


def test_derived_spec_inherits_and_overrides() -> None:
    spec = Derived.spec()
    assert list(spec.inputs) == ["x", "opt", "sub", "extra"]
    assert spec.validate_inputs({"extra": 1.5}) == {"x": 5, "extra": 1.5, "sub": {"a": 1}}
    namespace = spec.inputs["sub"]
    assert isinstance(namespace, PortNamespace)
    assert not namespace.required
    assert not namespace.dynamic
    assert list(spec.exit_codes) == ["ERROR_BASE", "ERROR_DERIVED"]
    assert spec.missing_required_outputs({}) == []


def test_base_spec_is_unaffected_by_subclasses() -> None:
    Derived.spec()
    DerivedAgain.spec()
    spec = Base.spec()
    assert list(spec.inputs) == ["x", "opt", "sub"]
    with pytest.raises(
        PortValidationError, match=exact("inputs.x: required value was not provided")
    ):
        spec.validate_inputs({})
    namespace = spec.inputs["sub"]
    assert isinstance(namespace, PortNamespace)
    assert namespace.dynamic
    assert spec.missing_required_outputs({}) == ["result"]
    assert list(spec.exit_codes) == ["ERROR_BASE"]


def test_grandchild_overrides_again() -> None:
    spec = DerivedAgain.spec()
    assert spec.validate_inputs({"extra": 2}) == {"x": 5, "extra": 2, "sub": {"a": 1}}
    with pytest.raises(
        PortValidationError, match=exact("inputs.extra: expected float or int, got 'no'")
    ):
        spec.validate_inputs({"extra": "no"})


def test_subclass_redeclaring_an_exit_code_fails() -> None:
    with pytest.raises(
        ValueError, match=exact("exit code status 300 is already declared as 'ERROR_BASE'")
    ):
        Clashing.spec()


# -- exposing --------------------------------------------------------------------------------------


class Child(FakeProcess):
    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.input("a", valid_type=int)
        spec.input("b", valid_type=int, default=2)
        spec.input_namespace("nested")
        spec.input("nested.c", valid_type=str, required=False)
        spec.input("nested.d", valid_type=str, default="d")
        spec.output("out", valid_type=int)
        spec.output("extra", required=False)
        spec.exit_code(500, "ERROR_CHILD", "child failed")


class OptionalChild(FakeProcess):
    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.input("p", required=False)
        spec.input("q", default=list)


class DynamicChild(FakeProcess):
    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.inputs.valid_type = int
        spec.inputs.validator = lambda values, ns: "too many" if len(values) > 3 else None
        spec.input("known", valid_type=int, required=False)


def test_expose_inputs_at_top_level() -> None:
    spec = ProcessSpec()
    spec.input("own")
    spec.expose_inputs(Child)
    assert list(spec.inputs) == ["own", "a", "b", "nested"]
    assert spec.inputs["a"] is Child.spec().inputs["a"]  # leaf ports are immutable and shared
    assert spec.inputs["nested"] is not Child.spec().inputs["nested"]
    assert not spec.inputs.sealed
    assert not namespace_at(spec.inputs, "nested").sealed
    assert dict(spec.exit_codes) == {}  # exit codes are not exposed
    parsed = spec.validate_inputs({"own": 0, "a": 1})
    assert parsed == {"own": 0, "a": 1, "b": 2, "nested": {"d": "d"}}
    assert spec.exposed_inputs(parsed, Child) == {"a": 1, "b": 2, "nested": {"d": "d"}}


def test_expose_inputs_under_a_namespace() -> None:
    spec = ProcessSpec()
    spec.expose_inputs(Child, namespace="child")
    namespace = spec.inputs["child"]
    assert isinstance(namespace, PortNamespace)
    assert namespace.required  # 'a' is required
    with pytest.raises(
        PortValidationError, match=exact("inputs.child.a: required value was not provided")
    ):
        spec.validate_inputs({})
    parsed = spec.validate_inputs({"child": {"a": 1, "nested": {"c": "c"}}})
    exposed = spec.exposed_inputs(parsed, Child, namespace="child")
    assert exposed == {"a": 1, "b": 2, "nested": {"c": "c", "d": "d"}}
    assert type(exposed) is dict
    assert type(exposed["nested"]) is dict
    # The result is ready to be passed to the child class.
    assert Child.spec().validate_inputs(exposed) == exposed


def test_expose_inputs_under_a_dotted_namespace() -> None:
    spec = ProcessSpec()
    spec.expose_inputs(Child, namespace="deep.child", include=["a"])
    assert spec.has_input("deep.child.a")
    parsed = spec.validate_inputs({"deep": {"child": {"a": 3}}})
    assert spec.exposed_inputs(parsed, Child, namespace="deep.child") == {"a": 3}


def test_exposed_namespace_is_optional_when_no_exposed_port_is_required() -> None:
    spec = ProcessSpec()
    spec.expose_inputs(OptionalChild, namespace="opt")
    namespace = spec.inputs["opt"]
    assert isinstance(namespace, PortNamespace)
    assert not namespace.required
    parsed = spec.validate_inputs({})
    assert parsed == {"opt": {"q": []}}  # nested defaults are still filled in
    assert spec.exposed_inputs(parsed, OptionalChild, namespace="opt") == {"q": []}

    spec = ProcessSpec()
    spec.expose_inputs(Child, namespace="child", exclude=["a"])
    assert not namespace_at(spec.inputs, "child").required


def test_expose_include_and_exclude() -> None:
    spec = ProcessSpec()
    spec.expose_inputs(Child, namespace="child", include=["a", "nested.c"])
    assert spec.inputs.get_port("child") is not None
    assert list(spec.inputs["child"]) == ["a", "nested"]  # type: ignore[arg-type]
    assert list(spec.inputs.get_port("child.nested")) == ["c"]  # type: ignore[arg-type]
    with pytest.raises(
        PortValidationError, match=exact("inputs.child.b: undeclared port in non-dynamic namespace")
    ):
        spec.validate_inputs({"child": {"a": 1, "b": 2}})
    parsed = spec.validate_inputs({"child": {"a": 1}})
    assert spec.exposed_inputs(parsed, Child, namespace="child") == {"a": 1, "nested": {}}

    spec = ProcessSpec()
    spec.expose_inputs(Child, exclude=["b", "nested"])
    assert list(spec.inputs) == ["a"]


def test_expose_rule_errors_change_nothing() -> None:
    spec = ProcessSpec()
    with pytest.raises(ValueError, match=exact("include and exclude are mutually exclusive")):
        spec.expose_inputs(Child, include=["a"], exclude=["b"])
    with pytest.raises(ValueError, match=exact("can't include 'zz': no such port in 'inputs'")):
        spec.expose_inputs(Child, namespace="child", include=["zz"])
    with pytest.raises(
        ValueError, match=exact("can't exclude 'nested.zz': no such port in 'outputs'")
    ):
        spec.expose_outputs(Child, exclude=["nested.zz"])
    assert list(spec.inputs) == []
    assert list(spec.outputs) == []


def test_expose_clash_is_an_error_and_changes_nothing() -> None:
    spec = ProcessSpec()
    spec.input("zz")
    spec.input("b")
    with pytest.raises(
        ValueError, match=exact("can't expose Child's 'inputs.b': port already exists")
    ):
        spec.expose_inputs(Child)
    assert list(spec.inputs) == ["zz", "b"]

    spec = ProcessSpec()
    spec.input("child.nested.d")
    with pytest.raises(
        ValueError, match=exact("can't expose Child's 'inputs.child.nested.d': port already exists")
    ):
        spec.expose_inputs(Child, namespace="child")
    assert list(spec.inputs.get_port("child")) == ["nested"]  # type: ignore[arg-type]

    spec = ProcessSpec()
    spec.input("child")
    with pytest.raises(ValueError, match=exact("'inputs.child' is a port, not a namespace")):
        spec.expose_inputs(Child, namespace="child.deeper")


def test_expose_into_an_existing_namespace_keeps_its_options() -> None:
    spec = ProcessSpec()
    spec.input_namespace("child", required=False, help="mine")
    spec.input("child.own", default=0)
    spec.expose_inputs(Child, namespace="child")
    namespace = spec.inputs["child"]
    assert isinstance(namespace, PortNamespace)
    assert list(namespace) == ["own", "a", "b", "nested"]
    assert (namespace.required, namespace.help) == (False, "mine")
    parsed = spec.validate_inputs({"child": {"a": 1}})
    # Ports the parent declared itself are not part of the exposed inputs.
    assert spec.exposed_inputs(parsed, Child, namespace="child") == {
        "a": 1,
        "b": 2,
        "nested": {"d": "d"},
    }


def test_expose_two_classes_and_twice() -> None:
    spec = ProcessSpec()
    spec.expose_inputs(Child, namespace="both", include=["a"])
    spec.expose_inputs(OptionalChild, namespace="both")
    spec.expose_inputs(Child, namespace="both", include=["b"])
    parsed = spec.validate_inputs({"both": {"a": 1, "p": "p"}})
    assert spec.exposed_inputs(parsed, Child, namespace="both") == {"a": 1, "b": 2}
    assert spec.exposed_inputs(parsed, OptionalChild, namespace="both") == {"p": "p", "q": []}


def test_expose_dynamic_source_keeps_it_dynamic() -> None:
    spec = ProcessSpec()
    spec.expose_inputs(DynamicChild, namespace="dyn")
    namespace = spec.inputs["dyn"]
    assert isinstance(namespace, PortNamespace)
    assert namespace.dynamic
    assert namespace.valid_type is int
    assert namespace.validator is DynamicChild.spec().inputs.validator  # nothing left out
    assert not namespace.required
    parsed = spec.validate_inputs({"dyn": {"known": 1, "k": 2, "n": {"m": 3}}})
    exposed = spec.exposed_inputs(parsed, DynamicChild, namespace="dyn")
    assert exposed == {"known": 1, "k": 2, "n": {"m": 3}}
    assert type(exposed["n"]) is dict
    with pytest.raises(PortValidationError, match=exact("inputs.dyn.k: expected int, got 'x'")):
        spec.validate_inputs({"dyn": {"k": "x"}})
    with pytest.raises(PortValidationError, match=exact("inputs.dyn: too many")):
        spec.validate_inputs({"dyn": {"a": 1, "b": 2, "c": 3, "d": 4}})


def test_expose_dynamic_source_at_top_level_makes_the_root_dynamic() -> None:
    spec = ProcessSpec()
    spec.input("own", valid_type=str)
    spec.expose_inputs(DynamicChild)
    assert spec.inputs.dynamic
    assert spec.inputs.valid_type is int
    assert spec.inputs.validator is None  # the destination's own options are kept
    parsed = spec.validate_inputs({"own": "o", "z": 1})
    assert spec.exposed_inputs(parsed, DynamicChild) == {"z": 1}


def test_expose_dynamic_source_with_include_is_not_dynamic() -> None:
    spec = ProcessSpec()
    spec.expose_inputs(DynamicChild, namespace="dyn", include=["known"])
    namespace = spec.inputs["dyn"]
    assert isinstance(namespace, PortNamespace)
    assert namespace.validator is None  # a port was left out
    parsed = spec.validate_inputs({"dyn": {"known": 1}})
    assert spec.exposed_inputs(parsed, DynamicChild, namespace="dyn") == {"known": 1}


def test_expose_is_a_snapshot() -> None:
    class Source(FakeProcess):
        @classmethod
        def define(cls, spec: ProcessSpec) -> None:
            super().define(spec)
            spec.input_namespace("n")
            spec.input("n.x")

    source = ProcessSpec()
    Source.define(source)  # an unsealed spec works too

    class Holder:
        @classmethod
        def spec(cls) -> ProcessSpec:
            return source

    spec = ProcessSpec()
    spec.expose_inputs(Holder, namespace="s")
    source.input("n.y")
    source.input("late")
    assert list(spec.inputs.get_port("s.n")) == ["x"]  # type: ignore[arg-type]
    assert list(spec.inputs["s"]) == ["n"]  # type: ignore[arg-type]


def test_exposed_inputs_of_an_omitted_optional_namespace_is_empty() -> None:
    spec = ProcessSpec()
    spec.input_namespace("child", required=False)
    spec.expose_inputs(Child, namespace="child", include=["a"])
    parsed = spec.validate_inputs({})
    assert "child" not in parsed
    assert spec.exposed_inputs(parsed, Child, namespace="child") == {}


def test_exposed_inputs_of_a_class_that_was_not_exposed() -> None:
    spec = ProcessSpec()
    spec.expose_inputs(Child, namespace="child")
    with pytest.raises(
        ValueError, match=exact("no inputs of OptionalChild were exposed in namespace 'child'")
    ):
        spec.exposed_inputs({}, OptionalChild, namespace="child")
    with pytest.raises(ValueError, match=exact("no inputs of Child were exposed at the top level")):
        spec.exposed_inputs({}, Child)
    with pytest.raises(
        ValueError, match=exact("no outputs of Child were exposed in namespace 'child'")
    ):
        spec.exposed_outputs({}, Child, namespace="child")


def test_exposed_inputs_accepts_raw_mappings() -> None:
    spec = ProcessSpec()
    spec.expose_inputs(Child, namespace="child")
    raw = {"child": {"a": 1, "nested": {"c": "c"}}, "other": 1}
    exposed = spec.exposed_inputs(raw, Child, namespace="child")
    assert exposed == {"a": 1, "nested": {"c": "c"}}
    exposed["nested"]["c"] = "changed"
    assert raw == {"child": {"a": 1, "nested": {"c": "c"}}, "other": 1}


def test_expose_outputs() -> None:
    spec = ProcessSpec()
    spec.output("mine", valid_type=str)
    spec.expose_outputs(Child, namespace="child")
    spec.expose_outputs(Child, include=["extra"])
    assert list(spec.outputs) == ["mine", "child", "extra"]
    assert namespace_at(spec.outputs, "child").required
    spec.validate_output("child.out", 1)
    with pytest.raises(
        PortValidationError, match=exact("outputs.child.out: expected int, got 'x'")
    ):
        spec.validate_output("child.out", "x")
    assert spec.missing_required_outputs({"mine": "m"}) == ["child.out"]
    child_outputs = {"out": 1, "extra": "e"}
    outputs = {"mine": "m", "child": child_outputs, "extra": 5}
    assert spec.exposed_outputs(outputs, Child, namespace="child") == child_outputs
    assert spec.exposed_outputs(outputs, Child) == {"extra": 5}


# -- validating inputs -----------------------------------------------------------------------------


def make_spec() -> ProcessSpec:
    spec = ProcessSpec()
    spec.input("a", valid_type=int)
    spec.input("stamp", default=lambda: object())
    spec.input_namespace("sub")
    spec.input("sub.x", valid_type=(int, str), default=0)
    spec.input("sub.params", valid_type=dict, required=False)
    spec.input_namespace("dyn", dynamic=True, required=False)
    return spec


def test_validate_inputs_returns_a_frozen_nested_mapping() -> None:
    parsed = make_spec().validate_inputs({"a": 1, "sub": {"params": {"k": [1]}}, "dyn": {"q": {}}})
    assert isinstance(parsed, AttributesFrozenDict)
    assert parsed.a == 1
    assert parsed.sub.x == 0
    assert parsed.sub.params.k == [1]
    assert parsed.dyn.q == {}
    assert isinstance(parsed.sub, AttributesFrozenDict)
    assert isinstance(parsed.sub.params, AttributesFrozenDict)


def test_validate_inputs_callable_defaults_are_called_per_call() -> None:
    spec = make_spec()
    first = spec.validate_inputs({"a": 1})
    second = spec.validate_inputs({"a": 1})
    assert first.stamp is not second.stamp


def test_parsed_inputs_are_immutable() -> None:
    parsed = make_spec().validate_inputs({"a": 1, "sub": {"params": {"k": 1}}})
    with pytest.raises(TypeError):
        parsed["a"] = 2
    with pytest.raises(AttributeError):
        parsed.a = 2
    with pytest.raises(TypeError):
        parsed.sub["x"] = 2
    with pytest.raises(AttributeError):
        parsed.sub.x = 2
    with pytest.raises(TypeError):
        parsed.sub.params["k"] = 2
    assert parsed.to_dict()["sub"] == {"x": 0, "params": {"k": 1}}


def test_validate_inputs_never_mutates_the_callers_dict() -> None:
    params = {"k": {"deep": 1}}
    sub = {"params": params}
    dyn = {"q": {"r": 1}}
    raw = {"a": 1, "sub": sub, "dyn": dyn}
    snapshot = copy.deepcopy(raw)
    parsed = make_spec().validate_inputs(raw)
    assert raw == snapshot
    assert raw["sub"] is sub
    assert sub["params"] is params
    assert raw["dyn"] is dyn
    assert "x" not in sub  # the default went into the parsed copy only
    assert parsed.sub.x == 0
    # Changing the caller's dicts afterwards does not reach the parsed inputs either.
    params["k"]["deep"] = 2
    dyn["new"] = 1  # type: ignore[assignment]
    assert parsed.sub.params.k.deep == 1
    assert "new" not in parsed.dyn


def test_validate_inputs_does_not_mutate_even_on_failure() -> None:
    raw: dict[str, Any] = {"a": 1, "sub": {"x": 1.5}}
    snapshot = copy.deepcopy(raw)
    with pytest.raises(
        PortValidationError, match=exact("inputs.sub.x: expected int or str, got 1.5")
    ):
        make_spec().validate_inputs(raw)
    assert raw == snapshot


def test_validate_inputs_accepts_frozen_inputs() -> None:
    spec = make_spec()
    parsed = spec.validate_inputs({"a": 1, "dyn": {"q": {"r": 1}}})
    again = spec.validate_inputs(parsed)
    assert again.to_dict() == {**parsed.to_dict(), "stamp": again.stamp}


# -- validating outputs ----------------------------------------------------------------------------


def make_output_spec() -> ProcessSpec:
    spec = ProcessSpec()
    spec.output("x", valid_type=int)
    spec.output("sub.y", valid_type=str)
    spec.output("sub.z", required=False)
    spec.output_namespace("dyn", valid_type=int, required=False)
    spec.output_namespace("opt", required=False)
    spec.output("opt.w")
    return spec


def test_validate_output() -> None:
    spec = make_output_spec()
    spec.validate_output("x", 1)
    spec.validate_output("sub.y", "s")
    spec.validate_output("dyn.anything", 3)
    spec.validate_output("dyn.deep.er", 3)
    with pytest.raises(PortValidationError, match=exact("outputs.x: expected int, got 'a'")):
        spec.validate_output("x", "a")
    with pytest.raises(
        PortValidationError, match=exact("outputs.q: undeclared port in non-dynamic namespace")
    ):
        spec.validate_output("q", 1)
    with pytest.raises(
        PortValidationError, match=exact("outputs.dyn.deep.er: expected int, got None")
    ):
        spec.validate_output("dyn.deep.er", None)
    assert list(spec.outputs["dyn"]) == []  # type: ignore[arg-type]


def test_missing_required_outputs() -> None:
    spec = make_output_spec()
    assert spec.missing_required_outputs({}) == ["x", "sub.y"]
    assert spec.missing_required_outputs({"x": 1, "sub": {"y": "s"}}) == []
    assert spec.missing_required_outputs({"x": 1, "sub": {"y": "s"}, "opt": {}}) == ["opt.w"]


def test_validate_outputs() -> None:
    spec = make_output_spec()
    assert spec.validate_outputs({"x": 1, "sub": {"y": "s"}, "dyn": {"a": 1}}) == {
        "x": 1,
        "sub": {"y": "s"},
        "dyn": {"a": 1},
    }
    with pytest.raises(
        PortValidationError, match=exact("outputs.sub.y: required value was not provided")
    ):
        spec.validate_outputs({"x": 1})


# -- repr and property-based -----------------------------------------------------------------------


def test_spec_repr() -> None:
    spec = ProcessSpec()
    spec.input("a")
    spec.output("b")
    spec.exit_code(1, "E", "e")
    assert repr(spec) == "ProcessSpec(inputs=['a'], outputs=['b'], exit_codes=['E'], sealed=False)"
    repr(Derived.spec())  # smoke test


keys = st.text(alphabet="abcxyz", min_size=1, max_size=4)
values = st.recursive(
    st.integers() | st.text(max_size=3) | st.none(),
    lambda children: st.dictionaries(keys, children, max_size=3),
    max_leaves=15,
)


@given(st.dictionaries(keys, values, max_size=4), st.integers())
def test_dynamic_spec_inputs_round_trip(dyn: dict[str, Any], a: int) -> None:
    spec = ProcessSpec()
    spec.input("a", valid_type=int)
    spec.input("d", default=7)
    spec.input_namespace("dyn", dynamic=True)
    raw = {"a": a, "dyn": dyn}
    snapshot = copy.deepcopy(raw)
    parsed = spec.validate_inputs(raw)
    assert raw == snapshot
    assert parsed == {"a": a, "d": 7, "dyn": dyn}
    assert parsed.to_dict() == {"a": a, "d": 7, "dyn": dyn}
