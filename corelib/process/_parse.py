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
    """Check an undeclared ``value`` at ``path`` in the dynamic namespace ``tree``; freeze it."""
    valid_type = tree._valid_type
    if valid_type is None or isinstance(value, valid_type):
        return freeze(value)
    if isinstance(value, Mapping):
        return AttributesFrozenDict(
            {key: parse_dynamic(tree, item, _join(path, str(key))) for key, item in value.items()}
        )
    raise PortValidationError(path, _type_error(valid_type, value))


def check_leaf(port: Port, value: Any, path: str) -> None:
    """Check a present ``value`` against the leaf ``port`` at ``path``.

    Raises:
        PortValidationError: naming ``path``.
    """
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
