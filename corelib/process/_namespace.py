"""Port namespaces: the trees of ports a process declares for its inputs and outputs.

A :class:`PortNamespace` is a tree whose leaves are :class:`~corelib.InputPort` or
:class:`~corelib.OutputPort` records and whose inner nodes are nested namespaces, mutable until
sealed. A :class:`~corelib.ProcessSpec` owns two roots, ``inputs`` and ``outputs``. Besides
declaring (options, ports, nested namespaces), a namespace copies ports from another one
(:meth:`PortNamespace.absorb`, behind ``expose_inputs``/``expose_outputs``); checking values
against it is the one-pass parse of :mod:`._parse`.

Nothing here does I/O or imports an event loop library.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, TypeAlias, final

from . import _parse
from ._frozen import AttributesFrozenDict
from ._ports import (
    NAMESPACE_SEPARATOR,
    UNSPECIFIED,
    Port,
    SpecSealedError,
    ValidType,
    _check_name,
    _check_valid_type,
    _join,
    _split,
)

__all__ = ["PortNamespace", "NamespaceValidator"]

NamespaceValidator: TypeAlias = Callable[[AttributesFrozenDict, "PortNamespace"], str | None]
"""``validator(values, namespace)``: return an error message, or ``None`` if the values are fine."""

_EMPTY: Final = AttributesFrozenDict()
"""The parsed inputs of a namespace with no ports given nothing (shared: it is immutable)."""


@final
class PortNamespace(Mapping[str, "Port | PortNamespace"]):
    """A nested group of ports; itself a (read-only) mapping from names to ports.

    Namespaces are identity objects: they compare equal only to themselves. They can be changed
    (ports added, options set) until :meth:`seal` is called, after which any change raises
    :class:`SpecSealedError`.

    **Required namespaces.** ``required`` says whether *omitting* the namespace is allowed:

    * omitted, with a ``default``: the default (called if callable) is parsed as if given;
    * omitted and required (the default): parsed as an empty mapping, so nested defaults are
      filled in and missing required ports are reported. A required namespace whose ports
      all have defaults or are optional therefore never fails when omitted; it is *effectively*
      optional (:attr:`requires_value` is ``False``). It appears in the result (possibly empty)
      if it declares any ports;
    * omitted and not required: only the nested defaults are filled in; nothing inside is
      reported missing, its validator does not run, and the namespace appears in the result
      only if some default was filled in. (plumpy reports missing required ports in this case
      once any nested default exists, which makes an optional namespace mandatory; we don't.)
    * given as an empty mapping and not required: as when omitted, except that it is always
      present in the result (as in plumpy).

    **Dynamic namespaces** accept undeclared keys. Setting ``valid_type`` makes the namespace
    dynamic (as in plumpy) and checks undeclared values: a value of that type is accepted as
    is; a mapping that is not of that type is checked key by key, recursively.

    Args:
        name: the namespace's key in its parent (the roots are ``inputs`` and ``outputs``).
        help: a human-readable description.
        required: see above.
        validator: ``validator(values, namespace) -> str | None``, run on the namespace's parsed
            (frozen) values after all its ports have been checked.
        valid_type: the type(s) of undeclared values; implies ``dynamic=True``.
        default: a mapping (or a callable returning one) used when the namespace is omitted.
        dynamic: whether undeclared keys are accepted.

    The class is a little over 400 lines: it is plumpy's namespace API (six options with
    checked setters, the mapping protocol, building, copying). Parsing values is
    :mod:`._parse`'s job, and absorbing is done by the functions below the class.
    """

    __slots__ = (
        "__weakref__",
        "_default",
        "_dynamic",
        "_help",
        "_name",
        "_ports",
        "_required",
        "_sealed",
        "_valid_type",
        "_validator",
    )

    def __init__(
        self,
        name: str = "",
        *,
        help: str | None = None,
        required: bool = True,
        validator: NamespaceValidator | None = None,
        valid_type: ValidType | None = None,
        default: Any = UNSPECIFIED,
        dynamic: bool = False,
    ) -> None:
        if name:
            _check_name(name)
        _check_valid_type(valid_type)
        self._name = name
        self._help = help
        self._required = required
        self._validator = validator
        self._valid_type = valid_type
        self._default = default
        self._dynamic = dynamic or valid_type is not None
        self._ports: dict[str, Port | PortNamespace] = {}
        self._sealed = False

    # -- identity and display ------------------------------------------------------------------

    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return (
            f"PortNamespace({self._name!r}, ports={list(self._ports)!r}, "
            f"required={self._required!r}, dynamic={self._dynamic!r}, "
            f"valid_type={self._valid_type!r}, sealed={self._sealed!r})"
        )

    # -- mapping -------------------------------------------------------------------------------

    def __getitem__(self, name: str) -> Port | PortNamespace:
        return self._ports[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._ports)

    def __len__(self) -> int:
        return len(self._ports)

    def __contains__(self, name: object) -> bool:
        return name in self._ports

    # -- options ---------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The namespace's key in its parent."""
        return self._name

    @property
    def help(self) -> str | None:
        """A human-readable description."""
        return self._help

    @help.setter
    def help(self, help: str | None) -> None:
        self._check_not_sealed("change help")
        self._help = help

    @property
    def required(self) -> bool:
        """Whether the namespace may be omitted (see the class docstring)."""
        return self._required

    @required.setter
    def required(self, required: bool) -> None:
        self._check_not_sealed("change required")
        self._required = required

    @property
    def validator(self) -> NamespaceValidator | None:
        """The namespace validator, if any."""
        return self._validator

    @validator.setter
    def validator(self, validator: NamespaceValidator | None) -> None:
        self._check_not_sealed("change validator")
        self._validator = validator

    @property
    def valid_type(self) -> ValidType | None:
        """The type(s) of undeclared values; setting a type also makes the namespace dynamic."""
        return self._valid_type

    @valid_type.setter
    def valid_type(self, valid_type: ValidType | None) -> None:
        self._check_not_sealed("change valid_type")
        _check_valid_type(valid_type)
        self._valid_type = valid_type
        if valid_type is not None:
            self._dynamic = True

    @property
    def default(self) -> Any:
        """The default mapping (or callable), or :data:`UNSPECIFIED`."""
        return self._default

    @default.setter
    def default(self, default: Any) -> None:
        self._check_not_sealed("change default")
        self._default = default

    @property
    def dynamic(self) -> bool:
        """Whether undeclared keys are accepted."""
        return self._dynamic

    @dynamic.setter
    def dynamic(self, dynamic: bool) -> None:
        self._check_not_sealed("change dynamic")
        self._dynamic = dynamic

    def has_default(self) -> bool:
        """Whether a default was declared."""
        return self._default is not UNSPECIFIED

    @property
    def requires_value(self) -> bool:
        """Whether omitting this namespace is an error.

        True only for a required namespace without a default that (recursively) contains a
        required port.
        """
        if not self._required or self.has_default():
            return False
        return any(_requires_value(port) for port in self._ports.values())

    # -- sealing ---------------------------------------------------------------------------------

    @property
    def sealed(self) -> bool:
        """Whether the namespace (and everything below it) is frozen."""
        return self._sealed

    def seal(self) -> None:
        """Forbid any further change to this namespace and its nested namespaces."""
        self._sealed = True
        for port in self._ports.values():
            if isinstance(port, PortNamespace):
                port.seal()

    def _check_not_sealed(self, action: str) -> None:
        if self._sealed:
            raise SpecSealedError(f"namespace {self._name!r} is sealed, can't {action}")

    # -- building --------------------------------------------------------------------------------

    def add_port(self, port: Port | PortNamespace) -> None:
        """Add ``port`` under its name, replacing a port of the same kind.

        The last declaration wins: a leaf port replaces a leaf port of the same name (keeping its
        position), and a namespace replaces a namespace. Replacing a leaf with a namespace or the
        other way round is refused, because it is almost always a mistake.

        Raises:
            SpecSealedError: if the namespace is sealed.
            ValueError: if the name is taken by a port of the other kind.
        """
        self._add_port(port, self._name)

    def _add_port(self, port: Port | PortNamespace, path: str) -> None:
        """:meth:`add_port`, with ``path`` the full path of this namespace (for messages)."""
        self._check_not_sealed(f"add port {port.name!r}")
        if not port.name:
            raise ValueError("a nested namespace needs a name")
        existing = self._ports.get(port.name)
        if existing is not None and isinstance(existing, PortNamespace) != isinstance(
            port, PortNamespace
        ):
            kind = "namespace" if isinstance(existing, PortNamespace) else "port"
            raise ValueError(f"{_join(path, port.name)!r} is already a {kind}")
        self._ports[port.name] = port

    def get_port(self, path: str) -> Port | PortNamespace:
        """Return the port at a dotted ``path`` below this namespace.

        Raises:
            KeyError: if there is no such port.
        """
        node: Port | PortNamespace = self
        for part in _split(path):
            if not isinstance(node, PortNamespace) or part not in node._ports:
                raise KeyError(path)
            node = node._ports[part]
        return node

    def create_namespace(
        self,
        path: str,
        *,
        help: str | None = None,
        required: bool = True,
        validator: NamespaceValidator | None = None,
        valid_type: ValidType | None = None,
        default: Any = UNSPECIFIED,
        dynamic: bool = False,
    ) -> PortNamespace:
        """Declare the namespace at dotted ``path`` and return it.

        Missing intermediate namespaces are created with default options. If the terminal
        namespace already exists, its options are *replaced* by the ones given here and its
        ports are kept; that is how a subclass re-declares an inherited namespace.

        Raises:
            SpecSealedError: if a namespace on the way is sealed.
            ValueError: if a port on the way (or at ``path``) is a leaf port.
        """
        *parents, last = _split(path)
        parent, parent_path = self._ensure_namespace(parents)
        _check_valid_type(valid_type)
        existing = parent._ports.get(last)
        if existing is None:
            namespace = PortNamespace(
                last,
                help=help,
                required=required,
                validator=validator,
                valid_type=valid_type,
                default=default,
                dynamic=dynamic,
            )
            parent._add_port(namespace, parent_path)
            return namespace
        if not isinstance(existing, PortNamespace):
            raise ValueError(f"{_join(parent_path, last)!r} is already a port")
        existing._check_not_sealed("change its options")
        existing._help = help
        existing._required = required
        existing._validator = validator
        existing._valid_type = valid_type
        existing._default = default
        existing._dynamic = dynamic or valid_type is not None
        return existing

    def _ensure_namespace(self, parts: Sequence[str]) -> tuple[PortNamespace, str]:
        """Walk (creating as needed) the namespaces named by ``parts``.

        Returns:
            The namespace reached and its full path from this namespace's name.
        """
        namespace = self
        path = self._name
        for part in parts:
            child = namespace._ports.get(part)
            if child is None:
                child = PortNamespace(part)
                namespace._add_port(child, path)
            elif not isinstance(child, PortNamespace):
                raise ValueError(f"{_join(path, part)!r} is a port, not a namespace")
            namespace = child
            path = _join(path, part)
        return namespace, path

    def copy(self) -> PortNamespace:
        """Return an unsealed deep copy (leaf ports are immutable and shared)."""
        ports, _ = _filtered(self, None, None)
        return self._copy_with(ports, keep_validator=True, keep_dynamic=True)

    def _copy_with(
        self,
        ports: Mapping[str, Port | PortNamespace],
        *,
        keep_validator: bool,
        keep_dynamic: bool,
    ) -> PortNamespace:
        clone = PortNamespace(
            self._name,
            help=self._help,
            required=self._required,
            validator=self._validator if keep_validator else None,
            valid_type=self._valid_type if keep_dynamic else None,
            default=self._default,
            dynamic=self._dynamic and keep_dynamic,
        )
        clone._ports.update(ports)
        return clone

    # -- absorbing -------------------------------------------------------------------------------

    def absorb(
        self,
        other: PortNamespace,
        include: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
    ) -> list[str]:
        """Copy the ports of ``other`` into this namespace.

        ``include`` and ``exclude`` are mutually exclusive lists of dotted port paths relative
        to ``other`` (``"sub"`` selects a whole nested namespace, ``"sub.x"`` one port in it);
        each must name an existing port. Nested namespaces are copied (later changes to
        ``other`` don't show here) with their options, except that a namespace copied only in
        part loses its validator (it would see values it was not written for), and one selected
        by an include rule (``"sub.x"``) is not dynamic (only declared ports were asked for).
        This namespace's own options are not changed.

        A copied leaf port must not already exist here; a copied namespace that already exists
        here as a namespace is merged into it, port by port. The check is done before anything
        is changed, so a failed absorb changes nothing.

        Returns:
            The names of the top-level ports copied.

        Raises:
            ValueError: if both ``include`` and ``exclude`` are given, a rule names no port, or
                a copied port clashes with an existing one.
            SpecSealedError: if this namespace is sealed.
        """
        selected, _ = select_ports(other, include, exclude)
        merge_ports(self, selected, action="absorb")
        return list(selected)

    # -- validation ------------------------------------------------------------------------------

    def validate(self, values: Mapping[str, Any] | None = None) -> AttributesFrozenDict:
        """Parse ``values`` as the inputs of this namespace (see :mod:`._parse`).

        Defaults are filled in, every check runs, and the result is a new, deeply frozen
        mapping; ``values`` is never changed. ``None`` means an empty mapping.

        Raises:
            PortValidationError: naming the full path of the first problem found.
        """
        if (
            not values
            and (values is None or isinstance(values, Mapping))
            and not self._ports
            and self._validator is None
        ):
            # Nothing declared and nothing given (a process without inputs): the result is the
            # empty mapping, which is immutable and so can be shared.
            return _EMPTY
        return _parse.parse_given(
            self, {} if values is None else values, self._name, _parse.FULL_INPUTS
        )

    def validate_outputs(self, values: Mapping[str, Any] | None = None) -> AttributesFrozenDict:
        """Like :meth:`validate`, but without defaults (output ports have none)."""
        return _parse.parse_given(
            self, {} if values is None else values, self._name, _parse.FULL_OUTPUTS
        )

    def validate_value(self, name: str, value: Any) -> None:
        """Check a single value for the (dotted) port ``name`` below this namespace.

        Used for outputs emitted one at a time: the value must fit the declared port (a leaf's
        type and validator; for a namespace, its declared and dynamic contents, without
        required-ness or namespace validators, since the whole is only known at the end). An
        undeclared name is accepted only below a dynamic namespace, and is then checked against
        that namespace's ``valid_type``. The spec is never changed.

        Raises:
            PortValidationError: naming the full path of the problem.
            ValueError: if ``name`` is not a valid dotted name.
        """
        _parse.validate_value(self, name, value)

    def missing_required(self, values: Mapping[str, Any], prefix: str = "") -> list[str]:
        """Return the dotted paths (``prefix`` + path below here) of required ports absent in
        ``values``, following the same required-namespace rules as :meth:`validate`.
        """
        if not self._ports:
            return []  # most processes declare no outputs: skip the walk (every finish asks)
        return _parse.missing_required(self, values, prefix)


# -- absorbing: copying ports from one namespace into another ------------------------------


def select_ports(
    namespace: PortNamespace, include: Iterable[str] | None, exclude: Iterable[str] | None
) -> tuple[dict[str, Port | PortNamespace], bool]:
    """Check include/exclude rules against ``namespace`` and return the ports they select
    (namespaces copied) and whether that is every port (see :meth:`PortNamespace.absorb`).

    Raises:
        ValueError: both ``include`` and ``exclude`` were given, or a rule names no port.
    """
    if include is not None and exclude is not None:
        raise ValueError("include and exclude are mutually exclusive")
    include_list = None if include is None else _as_rules(include, "include")
    exclude_list = None if exclude is None else _as_rules(exclude, "exclude")
    for kind, rules in (("include", include_list), ("exclude", exclude_list)):
        for rule in rules or ():
            try:
                namespace.get_port(rule)
            except (KeyError, ValueError):
                raise ValueError(
                    f"can't {kind} {rule!r}: no such port in {namespace._name!r}"
                ) from None
    return _filtered(namespace, include_list, exclude_list)


def _filtered(
    namespace: PortNamespace, include: list[str] | None, exclude: list[str] | None
) -> tuple[dict[str, Port | PortNamespace], bool]:
    """Return copies of the ports selected by (already checked) rules, and completeness.

    The flag is ``True`` if every port, recursively, was selected. An include list
    selects only declared ports, so it leaves out the undeclared values a dynamic namespace
    would take: such a selection is incomplete too (and its copy is not dynamic).
    """
    selected: dict[str, Port | PortNamespace] = {}
    complete = include is None or not namespace._dynamic
    for name, port in namespace._ports.items():
        if exclude is not None and name in exclude:
            complete = False
            continue
        sub_include: list[str] | None = None
        if include is not None and name not in include:
            sub_include = _strip(name, include)
            if not sub_include or not isinstance(port, PortNamespace):
                complete = False
                continue
        if isinstance(port, PortNamespace):
            sub_exclude = _strip(name, exclude) if exclude is not None else None
            ports, sub_complete = _filtered(port, sub_include, sub_exclude or None)
            selected[name] = port._copy_with(
                ports, keep_validator=sub_complete, keep_dynamic=sub_include is None
            )
            complete = complete and sub_complete
        else:
            selected[name] = port
    return selected, complete


def merge_ports(
    namespace: PortNamespace,
    ports: Mapping[str, Port | PortNamespace],
    *,
    action: str,
    path: str | None = None,
) -> None:
    """Add ``ports`` (fresh copies, from :func:`select_ports`) to ``namespace``, merging
    nested namespaces; all-or-nothing.

    ``action`` names the operation in messages (``"absorb"``); ``path`` is the full path of
    ``namespace``, for messages (default: its name).

    Raises:
        SpecSealedError: a namespace to change is sealed.
        ValueError: a port clashes with an existing one.
    """
    namespace._check_not_sealed(f"{action} ports")
    _check_merge(namespace, ports, namespace._name if path is None else path, action)
    _apply_merge(namespace, ports)


def _check_merge(
    namespace: PortNamespace, ports: Mapping[str, Port | PortNamespace], path: str, action: str
) -> None:
    for name, port in ports.items():
        existing = namespace._ports.get(name)
        if existing is None:
            continue
        sub = _join(path, name)
        if isinstance(existing, PortNamespace) and isinstance(port, PortNamespace):
            existing._check_not_sealed(f"{action} ports")
            _check_merge(existing, port._ports, sub, action)
            continue
        raise ValueError(f"can't {action} {sub!r}: port already exists")


def _apply_merge(namespace: PortNamespace, ports: Mapping[str, Port | PortNamespace]) -> None:
    for name, port in ports.items():
        existing = namespace._ports.get(name)
        if isinstance(existing, PortNamespace) and isinstance(port, PortNamespace):
            _apply_merge(existing, port._ports)
        else:
            namespace._ports[name] = port


def _requires_value(port: Port | PortNamespace) -> bool:
    if isinstance(port, PortNamespace):
        return port.requires_value
    return port.required


def _as_rules(rules: Iterable[str], kind: str) -> list[str]:
    if isinstance(rules, str):
        # A bare string is a common slip for a one-element list; refuse it rather than
        # treating each character as a rule.
        raise TypeError(f"{kind} must be a list of port names, not the string {rules!r}")
    result = list(rules)
    for rule in result:
        _split(rule)
    return result


def _strip(name: str, rules: list[str] | None) -> list[str]:
    """Return the rules below ``name``, with the ``name.`` prefix removed."""
    prefix = f"{name}{NAMESPACE_SEPARATOR}"
    return [rule[len(prefix) :] for rule in rules or () if rule.startswith(prefix)]
