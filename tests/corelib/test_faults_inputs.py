"""Fault containment of inputs (#12 point 10): a value nested too deeply, or one that contains
itself, is a :class:`~corelib.PortValidationError` naming its port, not a bare
``RecursionError``.

A port's value may nest at most :data:`~corelib.process._parse.MAX_VALUE_DEPTH` (100)
containers, the broker codec's ``max_depth``: deeper, it could never be sent.
"""

from __future__ import annotations

import re
import timeit
from typing import Any

import anyio
import pytest

from corelib import PortValidationError, Process, Runner
from corelib.process._parse import MAX_VALUE_DEPTH, nesting_problem

TIMEOUT = 10


class Takes(Process):
    """Takes one value at the top, one inside a namespace, any inside a dynamic namespace."""

    @classmethod
    def define(cls, spec: Any) -> None:
        super().define(spec)
        spec.input("x", required=False)
        spec.input("ns.y", required=False)
        spec.input_namespace("dyn", dynamic=True, required=False)
        spec.output("depth", valid_type=int)

    def run(self) -> None:
        self.out("depth", 0)


def deep(levels: int, kind: str) -> Any:
    """``levels`` containers of ``kind`` nested inside each other, ``1`` in the middle."""
    value: Any = 1
    for _ in range(levels):
        value = {"d": value} if kind == "dict" else [value]
    return value


def cyclic(kind: str) -> Any:
    if kind == "dict":
        loop: dict[str, Any] = {"a": 1}
        loop["self"] = {"again": loop}
        return loop
    items: list[Any] = [1]
    items.append((2, items))  # through a tuple
    return items


PLACES = {
    "top": (lambda value: {"x": value}, "inputs.x"),
    "namespace": (lambda value: {"ns": {"y": value}}, "inputs.ns.y"),
    "dynamic": (lambda value: {"dyn": {"z": value}}, "inputs.dyn.z"),
}


@pytest.mark.parametrize("place", list(PLACES))
@pytest.mark.parametrize("kind", ["dict", "list"])
@pytest.mark.parametrize("levels", [MAX_VALUE_DEPTH + 1, 150, 5000])
def test_too_deep_a_value_names_its_port(place: str, kind: str, levels: int) -> None:
    make, port = PLACES[place]
    with pytest.raises(
        PortValidationError,
        match=rf"^{re.escape(port)}: nested deeper than {MAX_VALUE_DEPTH} levels$",
    ) as info:
        Takes(make(deep(levels, kind)))
    assert info.value.port_path == port


@pytest.mark.parametrize("place", list(PLACES))
@pytest.mark.parametrize("kind", ["dict", "list"])
def test_a_cyclic_value_names_its_port(place: str, kind: str) -> None:
    make, port = PLACES[place]
    with pytest.raises(
        PortValidationError, match=rf"^{re.escape(port)}: cyclic: it contains itself$"
    ) as info:
        Takes(make(cyclic(kind)))
    assert info.value.port_path == port


@pytest.mark.parametrize("place", list(PLACES))
@pytest.mark.parametrize("kind", ["dict", "list"])
def test_a_value_just_deep_enough_is_accepted(place: str, kind: str) -> None:
    make, _ = PLACES[place]
    value = deep(MAX_VALUE_DEPTH, kind)
    given = make(value)
    inputs = Takes(given).inputs.to_dict()
    assert {key: inputs[key] for key in given} == given


def test_a_dynamic_namespace_of_nested_mappings_counts_from_the_port() -> None:
    # an undeclared key's value is one port's value however the dynamic namespace freezes it
    with pytest.raises(
        PortValidationError, match=r"^inputs\.dyn\.z: nested deeper than 100 levels$"
    ):
        Takes({"dyn": {"z": deep(101, "dict")}})
    assert Takes({"dyn": {"z": deep(100, "dict")}}).inputs["dyn"]["z"] == deep(100, "dict")


def test_a_shared_value_is_not_a_cycle() -> None:
    shared = {"k": [1, 2]}
    value = {"a": shared, "b": [shared, shared], "c": (shared,)}
    assert Takes({"x": value}).inputs["x"]["b"][0] == shared
    # sharing many times over is checked in linear time (2**60 paths, 60 containers)
    fan: Any = 1
    for _ in range(60):
        fan = [fan, fan]
    assert nesting_problem(fan) is None
    for _ in range(MAX_VALUE_DEPTH - 60 + 1):
        fan = [fan, fan]
    assert nesting_problem(fan) == "nested deeper than 100 levels"


def test_an_output_too_deep_names_its_port() -> None:
    spec = Takes.spec()
    with pytest.raises(
        PortValidationError, match=r"^outputs\.depth: nested deeper than 100 levels$"
    ):
        spec.validate_output("depth", deep(101, "list"))
    with pytest.raises(PortValidationError, match=r"^outputs\.depth: cyclic: it contains"):
        spec.validate_output("depth", cyclic("list"))


def test_the_check_costs_little_for_shallow_values() -> None:
    shallow = {"x": [1, 2, {"y": 3}], "b": {"c": 1}, "s": "text"}
    flat = list(range(1000))
    per_call = min(timeit.repeat(lambda: nesting_problem(shallow), number=2000, repeat=3)) / 2000
    assert per_call < 50e-6  # a few hundred nanoseconds in practice; the bound is for slow CI
    assert nesting_problem(flat) is None
    assert nesting_problem("text") is None
    assert nesting_problem(shallow) is None


async def test_a_runner_refuses_it_before_anything_runs() -> None:
    with anyio.fail_after(TIMEOUT):
        async with Runner() as runner:
            with pytest.raises(PortValidationError, match=r"^inputs\.x: cyclic"):
                runner.submit(Takes, {"x": cyclic("dict")})
            with pytest.raises(PortValidationError, match=r"^inputs\.ns\.y: nested deeper"):
                runner.submit(Takes, {"ns": {"y": deep(5000, "list")}})
            fine = runner.submit(Takes, {"x": deep(MAX_VALUE_DEPTH, "list")})
            await fine.wait()
            assert runner.processes == {}
    assert fine.outputs.to_dict() == {"depth": 0}
