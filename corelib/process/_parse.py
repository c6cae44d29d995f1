"""Parsing values against a tree of ports: the one pass behind every input and output check.

Theory of operation
-------------------
A :class:`~corelib.PortNamespace` is a tree. Its leaves are :class:`~corelib.InputPort` or
:class:`~corelib.OutputPort` records (immutable) and its inner nodes are nested namespaces. A
:class:`~corelib.ProcessSpec` owns two roots, named ``inputs`` and ``outputs``, so every error
path starts with one of those names.

Parsing a value mapping against a namespace (:func:`parse_given`, behind
:meth:`PortNamespace.validate <corelib.PortNamespace.validate>`) is one pass that never mutates
its argument and builds a new :class:`~corelib.AttributesFrozenDict`:

1. The value must be a mapping.
2. Each declared port, in declaration order:

   * given: a leaf is type-checked and then its validator runs; a namespace recurses;
   * absent leaf: its default is used if it has one (a callable default is called, once per
     parse, and its result checked like a given value); otherwise a required leaf is an error;
   * absent namespace: see :class:`~corelib.PortNamespace` for the cases (default, required,
     optional).

3. Each undeclared key is an error unless the namespace is dynamic; in a dynamic namespace with
   a ``valid_type``, a value that is not of that type but is a mapping is checked key by key,
   recursively, so nested plain dicts are allowed.
4. Last, the namespace validator runs on the finished (frozen) mapping.

The first problem found raises :class:`~corelib.PortValidationError`; nothing is collected.

Every value given for a leaf port, and every undeclared value of a dynamic namespace, is
checked for depth first (:func:`nesting_problem`): at most :data:`MAX_VALUE_DEPTH` lists,
tuples, sets and mappings may nest inside each other, and none may contain itself. A deeper
value could never be sent (the broker's codec carries 100 levels) nor reliably checkpointed,
and freezing a cyclic or very deep one would end in a bare ``RecursionError`` naming no port.

The functions here read a namespace through :class:`PortTree`, the fields ``PortNamespace``
keeps (this module sits below it). Nothing here does I/O or imports an event loop library.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol, final

import attrs

from ._frozen import AttributesFrozenDict, freeze
from ._ports import (
    InputPort,
    Port,
    PortValidationError,
    ValidType,
    _join,
    _short_repr,
    _split,
    _type_error,
    _validator_result,
)

__all__: list[str] = []  # nothing public: PortNamespace's methods are the way in

#: How many containers (lists, tuples, sets, mappings) a port's value may nest inside each
#: other (``[[1]]`` nests 2): the broker codec's ``max_depth``, so an input deeper than a
#: message can carry is refused when the process is created, naming its port.
MAX_VALUE_DEPTH: Final = 100

# Exact types never walked by the depth check: no container below them.
_ATOMS: Final = frozenset({str, int, float, bool, type(None), bytes, complex})
_SEQUENCES: Final = (list, tuple, set, frozenset)


class PortTree(Protocol):
    """A port namespace as the parser reads it: :class:`~corelib.PortNamespace`'s fields."""

    @property
    def _name(self) -> str: ...

    @property
    def _ports(self) -> Mapping[str, Port | PortTree]: ...

    @property
    def _required(self) -> bool: ...

    @property
    def _dynamic(self) -> bool: ...

    @property
    def _valid_type(self) -> ValidType | None: ...

    @property
    def _validator(self) -> Callable[[AttributesFrozenDict, Any], str | None] | None: ...

    @property
    def _default(self) -> Any: ...

    def has_default(self) -> bool: ...


@final
@attrs.frozen
class Mode:
    """How a namespace parse treats absent values.

    Attributes:
        fill_defaults: apply port and namespace defaults (inputs).
        check_required: report absent required values.
        run_namespace_validators: call namespace validators (not on partial values).
    """

    fill_defaults: bool
    check_required: bool
    run_namespace_validators: bool


FULL_INPUTS: Final = Mode(fill_defaults=True, check_required=True, run_namespace_validators=True)
FULL_OUTPUTS: Final = Mode(fill_defaults=False, check_required=True, run_namespace_validators=True)
PARTIAL: Final = Mode(fill_defaults=False, check_required=False, run_namespace_validators=False)


def parse_given(tree: PortTree, values: Any, path: str, mode: Mode) -> AttributesFrozenDict:
    """Parse ``values``, given for the namespace ``tree`` at ``path`` (see the module docstring).

    Raises:
        PortValidationError: naming the full path of the first problem found.
    """
    if not isinstance(values, Mapping):
        raise PortValidationError(path, f"expected a mapping, got {_short_repr(values)}")
    if not values and not tree._required:
        # An optional namespace given empty counts as not given (plumpy): nothing inside
        # is missing and its validator does not run, but it stays present.
        lenient = attrs.evolve(mode, check_required=False)
        return _parse(tree, values, path, lenient, run_validator=False)
    return _parse(tree, values, path, mode)


def _parse_absent(tree: PortTree, path: str, mode: Mode) -> AttributesFrozenDict | None:
    if mode.fill_defaults and tree.has_default():
        default = tree._default() if callable(tree._default) else tree._default
        return parse_given(tree, default, path, mode)
    if tree._required and mode.check_required:
        return _parse(tree, {}, path, mode) if tree._ports else None
    if not mode.fill_defaults:
        return None
    # Omitted and optional (or inside an omitted optional namespace): fill in nested
    # defaults, report nothing missing, and leave the namespace out if no default applied.
    lenient = attrs.evolve(mode, check_required=False)
    parsed = _parse(tree, {}, path, lenient, run_validator=False)
    return parsed if parsed else None


def _parse(
    tree: PortTree,
    values: Mapping[str, Any],
    path: str,
    mode: Mode,
    *,
    run_validator: bool = True,
) -> AttributesFrozenDict:
    result: dict[str, Any] = {}
    ports = tree._ports
    for name, port in ports.items():
        sub = _join(path, name)
        if name in values:
            value = values[name]
            if isinstance(port, Port):
                check_leaf(port, value, sub)
                result[name] = freeze(value)
            else:
                result[name] = parse_given(port, value, sub, mode)
        elif not isinstance(port, Port):
            parsed = _parse_absent(port, sub, mode)
            if parsed is not None:
                result[name] = parsed
        elif mode.fill_defaults and isinstance(port, InputPort) and port.has_default():
            value = port.default_value()
            check_leaf(port, value, sub)
            result[name] = freeze(value)
        elif port.required and mode.check_required:
            raise PortValidationError(sub, "required value was not provided")
    for key, value in values.items():
        if key in ports:
            continue
        sub = _join(path, str(key))
        if not tree._dynamic:
            raise PortValidationError(sub, "undeclared port in non-dynamic namespace")
        result[key] = parse_dynamic(tree, value, sub)
    frozen = AttributesFrozenDict(result)
    validator = tree._validator
    if run_validator and mode.run_namespace_validators and validator is not None:
        reason = _validator_result(validator(frozen, tree), path)
        if reason is not None:
            raise PortValidationError(path, reason)
    return frozen


def parse_dynamic(tree: PortTree, value: Any, path: str) -> Any:
    """Check an undeclared ``value`` at ``path`` in the dynamic namespace ``tree``; freeze it.

    Raises:
        PortValidationError: naming ``path``, or the path of the first nested value that
            doesn't fit ``tree``'s ``valid_type``.
    """
    reason = None if type(value) in _ATOMS else nesting_problem(value)
    if reason is not None:
        raise PortValidationError(path, reason)
    return _parse_dynamic(tree, value, path)


def _parse_dynamic(tree: PortTree, value: Any, path: str) -> Any:
    # (below parse_dynamic, whose depth check bounds this recursion)
    valid_type = tree._valid_type
    if valid_type is None or isinstance(value, valid_type):
        return freeze(value)
    if isinstance(value, Mapping):
        return AttributesFrozenDict(
            {key: _parse_dynamic(tree, item, _join(path, str(key))) for key, item in value.items()}
        )
    raise PortValidationError(path, _type_error(valid_type, value))


def check_leaf(port: Port, value: Any, path: str) -> None:
    """Check a present ``value`` against the leaf ``port`` at ``path``: its depth (see
    :func:`nesting_problem`), then its type and validator.

    Raises:
        PortValidationError: naming ``path``.
    """
    reason = None if type(value) in _ATOMS else nesting_problem(value)
    if reason is None:
        reason = port._reason(value, path)
    if reason is not None:
        raise PortValidationError(path, reason)


def validate_value(tree: PortTree, name: str, value: Any) -> None:
    """Check a single value for the (dotted) port ``name`` below ``tree``.

    See :meth:`PortNamespace.validate_value <corelib.PortNamespace.validate_value>`.

    Raises:
        PortValidationError: naming the full path of the problem.
        ValueError: if ``name`` is not a valid dotted name.
    """
    parts = _split(name)
    namespace = tree
    path = tree._name
    for index, part in enumerate(parts):
        sub = _join(path, part)
        port = namespace._ports.get(part)
        rest = parts[index + 1 :]
        if port is None:
            if not namespace._dynamic:
                raise PortValidationError(sub, "undeclared port in non-dynamic namespace")
            nested = value
            for key in reversed(rest):
                nested = {key: nested}
            parse_dynamic(namespace, nested, sub)
            return
        if not rest:
            if isinstance(port, Port):
                check_leaf(port, value, sub)
            else:
                parse_given(port, value, sub, PARTIAL)
            return
        if isinstance(port, Port):
            raise PortValidationError(_join(sub, rest[0]), f"{sub!r} is not a namespace")
        namespace = port
        path = sub


def missing_required(tree: PortTree, values: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The dotted paths (``prefix`` + path below ``tree``) of required ports absent in
    ``values``, following the same required-namespace rules as :func:`parse_given`."""
    missing: list[str] = []
    for name, port in tree._ports.items():
        sub = f"{prefix}{name}"
        if isinstance(port, Port):
            if port.required and name not in values:
                missing.append(sub)
        elif name in values:
            value = values[name]
            if isinstance(value, Mapping):
                missing.extend(missing_required(port, value, f"{sub}."))
        elif port._required and not port.has_default():
            missing.extend(missing_required(port, {}, f"{sub}."))
    return missing


def _items(value: Any) -> Any:
    """The items of ``value`` if the depth check walks into it, else ``None``."""
    kind = type(value)
    if kind in _ATOMS:
        return None
    if kind is dict or kind is AttributesFrozenDict:
        return value.values()
    if isinstance(value, _SEQUENCES):
        return value
    if isinstance(value, Mapping):
        return value.values()
    return None


#: How many containers the quick check (:func:`_fits`) visits before it hands over to the
#: exact walk, which visits a container shared by several parents only once.
_QUICK_BUDGET: Final = 1 << 17
#: Containers longer than this get a C-level type census before their items are visited.
_CENSUS_FROM: Final = 16


def nesting_problem(value: Any, limit: int = MAX_VALUE_DEPTH) -> str | None:
    """Why ``value`` can't be a port's value, by its shape: ``"cyclic: ..."`` when a
    container in it contains itself, ``"nested deeper than N levels"`` when more than
    ``limit`` containers (lists, tuples, sets, mappings) nest inside each other; else ``None``.

    Nothing is copied. A small value costs well under a microsecond (:func:`_fits`, a
    recursion at most ``limit`` deep); a problem, or a value of thousands of containers, is
    then walked exactly, without recursion (:func:`_walk`).
    """
    kind = type(value)
    if kind is list or kind is tuple:
        top: Any = value
    elif kind is dict:
        top = value.values()
    else:
        top = _items(value)
        if top is None:
            return None
    if len(top) > _CENSUS_FROM:
        if set(map(type, top)) <= _ATOMS:
            return None
    else:
        for item in top:  # (for a few items, cheaper than the census)
            if type(item) not in _ATOMS:
                break
        else:
            return None
    if _fits(top, limit - 1, [_QUICK_BUDGET]):
        return None
    return _walk(value, top, limit)


def _fits(items: Any, levels: int, budget: list[int]) -> bool:
    """Whether no container in ``items`` nests more than ``levels`` levels of containers.

    ``False`` also when ``budget`` (containers left to visit) runs out: a value that large, or
    one sharing containers many times over, is left to :func:`_walk`.
    """
    if len(items) > _CENSUS_FROM and set(map(type, items)) <= _ATOMS:
        return True
    for item in items:
        kind = type(item)
        if kind in _ATOMS:
            continue
        if kind is dict:
            children = item.values()
        elif kind is list or kind is tuple:
            children = item
        else:
            children = _items(item)
            if children is None:
                continue
        if levels == 0 or budget[0] == 0:
            return False
        budget[0] -= 1
        if children and not _fits(children, levels - 1, budget):
            return False
    return True


def _walk(value: Any, top: Any, limit: int) -> str | None:
    """:func:`nesting_problem`, exactly: depth first with an explicit stack, each container
    walked once, stopping at the first container that contains itself or lies past ``limit``.
    """
    # ``heights``: how many levels each container walked to its end spans; ``on_path``: the
    # ids of the containers being walked (all of them are kept alive by ``value``).
    heights: dict[int, int] = {}
    on_path = {id(value)}
    stack: list[tuple[Any, int, list[int]]] = [(iter(top), id(value), [0])]
    while stack:
        items, _, below = stack[-1]
        for item in items:
            children = _items(item)
            if children is None:
                continue
            depth = len(stack) + 1  # of ``item``
            if not children or set(map(type, children)) <= _ATOMS:
                if depth > limit:  # (a container of atoms spans one level)
                    return f"nested deeper than {limit} levels"
                below[0] = max(below[0], 1)
                continue
            key = id(item)
            if key in on_path:
                return "cyclic: it contains itself"
            height = heights.get(key)
            if height is not None:  # walked before, elsewhere in the value
                if depth + height - 1 > limit:
                    return f"nested deeper than {limit} levels"
                below[0] = max(below[0], height)
                continue
            if depth > limit:
                return f"nested deeper than {limit} levels"
            on_path.add(key)
            stack.append((iter(children), key, [0]))
            break
        else:
            _, key, below = stack.pop()
            on_path.discard(key)
            heights[key] = below[0] + 1
            if stack:
                parent = stack[-1][2]
                parent[0] = max(parent[0], below[0] + 1)
    return None
