"""Ports and port namespaces: the declared inputs and outputs of a process.

Theory of operation
-------------------
A :class:`PortNamespace` is a tree. Its leaves are :class:`InputPort` or :class:`OutputPort`
records (immutable) and its inner nodes are nested namespaces (mutable until sealed). A
:class:`~corelib.ProcessSpec` owns two roots, named ``inputs`` and ``outputs``, so every error
path starts with one of those names.

Parsing a value mapping against a namespace (:meth:`PortNamespace.validate`) is one pass that
never mutates its argument and builds a new :class:`AttributesFrozenDict`:

1. The value must be a mapping.
2. Each declared port, in declaration order:

   * given: a leaf is type-checked and then its validator runs; a namespace recurses;
   * absent leaf: its default is used if it has one (a callable default is called, once per
     parse, and its result checked like a given value); otherwise a required leaf is an error;
   * absent namespace: see :class:`PortNamespace` for the cases (default, required,
     optional).

3. Each undeclared key is an error unless the namespace is dynamic; in a dynamic namespace with
   a ``valid_type``, a value that is not of that type but is a mapping is checked key by key,
   recursively, so nested plain dicts are allowed.
4. Last, the namespace validator runs on the finished (frozen) mapping.

The first problem found raises :class:`PortValidationError`; nothing is collected.

Nothing here does I/O or imports an event loop library.
"""

from __future__ import annotations

import enum
import reprlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, Literal, TypeAlias, final

import attrs

from ._frozen import AttributesFrozenDict, freeze

__all__ = [
    "UNSPECIFIED",
    "PortValidationError",
    "SpecSealedError",
    "Port",
    "InputPort",
    "OutputPort",
    "PortNamespace",
    "PortValidator",
    "NamespaceValidator",
    "ValidType",
]

NAMESPACE_SEPARATOR: Final = "."


class _Unspecified(enum.Enum):
    UNSPECIFIED = "UNSPECIFIED"

    def __repr__(self) -> str:
        return "UNSPECIFIED"


UNSPECIFIED: Final = _Unspecified.UNSPECIFIED
"""Sentinel meaning "no default was given" (distinct from a default of ``None``)."""

Unspecified: TypeAlias = Literal[_Unspecified.UNSPECIFIED]

ValidType: TypeAlias = type[Any] | tuple[type[Any], ...]
"""What ``valid_type`` accepts: a type or a tuple of types, as for :func:`isinstance`."""

PortValidator: TypeAlias = Callable[[Any, "Port"], str | None]
"""``validator(value, port)``: return an error message, or ``None`` if the value is fine."""

NamespaceValidator: TypeAlias = Callable[[AttributesFrozenDict, "PortNamespace"], str | None]
"""``validator(values, namespace)``: return an error message, or ``None`` if the values are fine."""

_EMPTY: Final = AttributesFrozenDict()
"""The parsed inputs of a namespace with no ports given nothing (shared: it is immutable)."""


_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60


def _short_repr(value: Any) -> str:
    return _repr.repr(value)


def _type_names(valid_type: ValidType) -> str:
    types = valid_type if isinstance(valid_type, tuple) else (valid_type,)
    names = [t.__name__ for t in types]
    if len(names) <= 1:
        return "".join(names)
    return f"{', '.join(names[:-1])} or {names[-1]}"


def _type_error(valid_type: ValidType, value: Any) -> str:
    return f"expected {_type_names(valid_type)}, got {_short_repr(value)}"


def _join(path: str, name: str) -> str:
    return f"{path}{NAMESPACE_SEPARATOR}{name}" if path else name


def _split(path: str) -> list[str]:
    parts = path.split(NAMESPACE_SEPARATOR)
    if not all(parts):
        raise ValueError(f"invalid port name {path!r}")
    return parts


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or NAMESPACE_SEPARATOR in name:
        raise ValueError(f"invalid port name {name!r}")


def _check_valid_type(valid_type: object) -> None:
    if valid_type is None or isinstance(valid_type, type):
        return
    if (
        isinstance(valid_type, tuple)
        and valid_type
        and all(isinstance(t, type) for t in valid_type)
    ):
        return
    raise TypeError(f"valid_type must be a type or a tuple of types, got {valid_type!r}")


def _validator_result(result: object, where: str) -> str | None:
    if result is None or isinstance(result, str):
        return result
    raise TypeError(f"validator of {where!r} returned {result!r}, expected a str or None")


@final
class PortValidationError(ValueError):
    """Raised when a value does not satisfy the port it was given for.

    ``str(err)`` is ``"<port_path>: <reason>"``, for example
    ``"inputs.sub.x: expected int, got 'a'"``. It is the caller's fault (wrong inputs or
    outputs), never the spec's.

    Args:
        port_path: the dotted path of the offending port, starting with its root namespace
            (``inputs`` or ``outputs``).
        reason: what is wrong, in a few lower-case words.
    """

    def __init__(self, port_path: str, reason: str) -> None:
        super().__init__(port_path, reason)
        self.port_path = port_path
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.port_path}: {self.reason}" if self.port_path else self.reason


@final
class SpecSealedError(RuntimeError):
    """Raised when a sealed spec or port namespace is changed.

    A process class seals its spec once it is defined; adding or changing ports or exit codes
    after that is a programming error in the code that tried.
    """


@attrs.frozen
class Port:
    """An immutable declaration of one value a process takes or produces.

    Use :class:`InputPort` or :class:`OutputPort`; this base holds what they share.

    Args:
        name: the port's key in its namespace (no dots).
        valid_type: a type or tuple of types the value must be an instance of; ``None`` accepts
            anything. ``None`` as a *value* is an ordinary value: it passes only if
            ``valid_type`` is ``None`` or includes ``type(None)``.
        help: a human-readable description.
        required: whether a value must be present.
        validator: ``validator(value, port) -> str | None``, run after the type check and only
            when a value is present; a returned string is the error message.
    """

    name: str = attrs.field()
    valid_type: ValidType | None = attrs.field(default=None, kw_only=True)
    help: str | None = attrs.field(default=None, kw_only=True)
    required: bool = attrs.field(default=True, kw_only=True)
    validator: PortValidator | None = attrs.field(default=None, kw_only=True)

    @name.validator
    def _check_port_name(self, _attribute: attrs.Attribute[str], name: str) -> None:
        _check_name(name)

    @valid_type.validator
    def _check_port_valid_type(self, _attribute: attrs.Attribute[Any], valid_type: Any) -> None:
        _check_valid_type(valid_type)

    def validate(self, value: Any) -> str | None:
        """Check a present value against this port.

        Returns:
            The reason the value is invalid (without the port's path), or ``None``.

        Raises:
            TypeError: if the validator returns something other than a string or ``None``.
        """
        return self._reason(value, self.name)

    def _reason(self, value: Any, where: str) -> str | None:
        if self.valid_type is not None and not isinstance(value, self.valid_type):
            return _type_error(self.valid_type, value)
        if self.validator is not None:
            return _validator_result(self.validator(value, self), where)
        return None


@final
@attrs.frozen
class InputPort(Port):
    """A declared process input, optionally with a default.

    A port with a default is never *required*: ``required`` is forced to ``False``, because an
    absent value is always filled in from the default (as in plumpy).

    A non-callable default is checked against the port when the port is declared, so a bad
    default fails at definition time. A callable default (including a class such as ``list``)
    is called each time inputs are parsed and the result is checked then; use one for mutable
    defaults, since a plain default value is shared by every process.

    Args:
        default: the value used when none is given, or :data:`UNSPECIFIED` for none.

    Raises:
        ValueError: if a non-callable default does not pass the port's own checks.
    """

    default: Any = attrs.field(default=UNSPECIFIED, kw_only=True)

    def __attrs_post_init__(self) -> None:
        if self.default is UNSPECIFIED:
            return
        # Frozen class: normalise ``required`` once, at construction.
        object.__setattr__(self, "required", False)
        if not callable(self.default):
            reason = self.validate(self.default)
            if reason is not None:
                raise ValueError(f"invalid default for port {self.name!r}: {reason}")

    def has_default(self) -> bool:
        """Whether a default was declared."""
        return self.default is not UNSPECIFIED

    def default_value(self) -> Any:
        """The value to use when none is given: the default, called if it is callable.

        Raises:
            LookupError: if the port has no default.
        """
        if self.default is UNSPECIFIED:
            raise LookupError(f"port {self.name!r} has no default")
        return self.default() if callable(self.default) else self.default


@final
@attrs.frozen
class OutputPort(Port):
    """A declared process output."""


@final
@attrs.frozen
class _Mode:
    """How a namespace parse treats absent values.

    Attributes:
        fill_defaults: apply port and namespace defaults (inputs).
        check_required: report absent required values.
        run_namespace_validators: call namespace validators (not on partial values).
    """

    fill_defaults: bool
    check_required: bool
    run_namespace_validators: bool


_FULL_INPUTS: Final = _Mode(fill_defaults=True, check_required=True, run_namespace_validators=True)
_FULL_OUTPUTS: Final = _Mode(
    fill_defaults=False, check_required=True, run_namespace_validators=True
)
_PARTIAL: Final = _Mode(fill_defaults=False, check_required=False, run_namespace_validators=False)


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
        ports, _ = self._filtered(None, None)
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
        selected, _ = other._select(include, exclude)
        self._merge(selected, action="absorb")
        return list(selected)

    def _select(
        self, include: Iterable[str] | None, exclude: Iterable[str] | None
    ) -> tuple[dict[str, Port | PortNamespace], bool]:
        """Check include/exclude rules and return the selected ports (copied) and completeness."""
        if include is not None and exclude is not None:
            raise ValueError("include and exclude are mutually exclusive")
        include_list = None if include is None else _as_rules(include, "include")
        exclude_list = None if exclude is None else _as_rules(exclude, "exclude")
        for kind, rules in (("include", include_list), ("exclude", exclude_list)):
            for rule in rules or ():
                try:
                    self.get_port(rule)
                except (KeyError, ValueError):
                    raise ValueError(
                        f"can't {kind} {rule!r}: no such port in {self._name!r}"
                    ) from None
        return self._filtered(include_list, exclude_list)

    def _filtered(
        self, include: list[str] | None, exclude: list[str] | None
    ) -> tuple[dict[str, Port | PortNamespace], bool]:
        """Return copies of the ports selected by (already checked) rules, and completeness.

        The flag is ``True`` if every port, recursively, was selected. An include list
        selects only declared ports, so it leaves out the undeclared values a dynamic namespace
        would take: such a selection is incomplete too (and its copy is not dynamic).
        """
        selected: dict[str, Port | PortNamespace] = {}
        complete = include is None or not self._dynamic
        for name, port in self._ports.items():
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
                ports, sub_complete = port._filtered(sub_include, sub_exclude or None)
                selected[name] = port._copy_with(
                    ports, keep_validator=sub_complete, keep_dynamic=sub_include is None
                )
                complete = complete and sub_complete
            else:
                selected[name] = port
        return selected, complete

    def _merge(
        self, ports: Mapping[str, Port | PortNamespace], *, action: str, path: str | None = None
    ) -> None:
        """Add ``ports`` (fresh copies), merging namespaces; all-or-nothing.

        ``path`` is the full path of this namespace, for messages (default: its name).
        """
        self._check_not_sealed(f"{action} ports")
        self._check_merge(ports, self._name if path is None else path, action)
        self._apply_merge(ports)

    def _check_merge(
        self, ports: Mapping[str, Port | PortNamespace], path: str, action: str
    ) -> None:
        for name, port in ports.items():
            existing = self._ports.get(name)
            if existing is None:
                continue
            sub = _join(path, name)
            if isinstance(existing, PortNamespace) and isinstance(port, PortNamespace):
                existing._check_not_sealed(f"{action} ports")
                existing._check_merge(port._ports, sub, action)
                continue
            raise ValueError(f"can't {action} {sub!r}: port already exists")

    def _apply_merge(self, ports: Mapping[str, Port | PortNamespace]) -> None:
        for name, port in ports.items():
            existing = self._ports.get(name)
            if isinstance(existing, PortNamespace) and isinstance(port, PortNamespace):
                existing._apply_merge(port._ports)
            else:
                self._ports[name] = port

    # -- validation ------------------------------------------------------------------------------

    def validate(self, values: Mapping[str, Any] | None = None) -> AttributesFrozenDict:
        """Parse ``values`` as the inputs of this namespace (see the module docstring).

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
        return self._parse_given({} if values is None else values, self._name, _FULL_INPUTS)

    def validate_outputs(self, values: Mapping[str, Any] | None = None) -> AttributesFrozenDict:
        """Like :meth:`validate`, but without defaults (output ports have none)."""
        return self._parse_given({} if values is None else values, self._name, _FULL_OUTPUTS)

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
        parts = _split(name)
        namespace: PortNamespace = self
        path = self._name
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
                namespace._parse_dynamic(nested, sub)
                return
            if not rest:
                if isinstance(port, PortNamespace):
                    port._parse_given(value, sub, _PARTIAL)
                else:
                    _check_leaf(port, value, sub)
                return
            if not isinstance(port, PortNamespace):
                raise PortValidationError(_join(sub, rest[0]), f"{sub!r} is not a namespace")
            namespace = port
            path = sub

    def missing_required(self, values: Mapping[str, Any], prefix: str = "") -> list[str]:
        """Return the dotted paths (``prefix`` + path below here) of required ports absent in
        ``values``, following the same required-namespace rules as :meth:`validate`.
        """
        missing: list[str] = []
        for name, port in self._ports.items():
            sub = f"{prefix}{name}"
            if isinstance(port, PortNamespace):
                if name in values:
                    value = values[name]
                    if isinstance(value, Mapping):
                        missing.extend(port.missing_required(value, f"{sub}."))
                elif port._required and not port.has_default():
                    missing.extend(port.missing_required({}, f"{sub}."))
            elif port.required and name not in values:
                missing.append(sub)
        return missing

    def _parse_given(self, values: Any, path: str, mode: _Mode) -> AttributesFrozenDict:
        if not isinstance(values, Mapping):
            raise PortValidationError(path, f"expected a mapping, got {_short_repr(values)}")
        if not values and not self._required:
            # An optional namespace given empty counts as not given (plumpy): nothing inside
            # is missing and its validator does not run, but it stays present.
            lenient = attrs.evolve(mode, check_required=False)
            return self._parse(values, path, lenient, run_validator=False)
        return self._parse(values, path, mode)

    def _parse_absent(self, path: str, mode: _Mode) -> AttributesFrozenDict | None:
        if mode.fill_defaults and self.has_default():
            default = self._default() if callable(self._default) else self._default
            return self._parse_given(default, path, mode)
        if self._required and mode.check_required:
            return self._parse({}, path, mode) if self._ports else None
        if not mode.fill_defaults:
            return None
        # Omitted and optional (or inside an omitted optional namespace): fill in nested
        # defaults, report nothing missing, and leave the namespace out if no default applied.
        lenient = attrs.evolve(mode, check_required=False)
        parsed = self._parse({}, path, lenient, run_validator=False)
        return parsed if parsed else None

    def _parse(
        self, values: Mapping[str, Any], path: str, mode: _Mode, *, run_validator: bool = True
    ) -> AttributesFrozenDict:
        result: dict[str, Any] = {}
        for name, port in self._ports.items():
            sub = _join(path, name)
            if name in values:
                value = values[name]
                if isinstance(port, PortNamespace):
                    result[name] = port._parse_given(value, sub, mode)
                else:
                    _check_leaf(port, value, sub)
                    result[name] = freeze(value)
            elif isinstance(port, PortNamespace):
                parsed = port._parse_absent(sub, mode)
                if parsed is not None:
                    result[name] = parsed
            elif mode.fill_defaults and isinstance(port, InputPort) and port.has_default():
                value = port.default_value()
                _check_leaf(port, value, sub)
                result[name] = freeze(value)
            elif port.required and mode.check_required:
                raise PortValidationError(sub, "required value was not provided")
        for key, value in values.items():
            if key in self._ports:
                continue
            sub = _join(path, str(key))
            if not self._dynamic:
                raise PortValidationError(sub, "undeclared port in non-dynamic namespace")
            result[key] = self._parse_dynamic(value, sub)
        frozen = AttributesFrozenDict(result)
        if run_validator and mode.run_namespace_validators and self._validator is not None:
            reason = _validator_result(self._validator(frozen, self), path)
            if reason is not None:
                raise PortValidationError(path, reason)
        return frozen

    def _parse_dynamic(self, value: Any, path: str) -> Any:
        valid_type = self._valid_type
        if valid_type is None or isinstance(value, valid_type):
            return freeze(value)
        if isinstance(value, Mapping):
            return AttributesFrozenDict(
                {
                    key: self._parse_dynamic(item, _join(path, str(key)))
                    for key, item in value.items()
                }
            )
        raise PortValidationError(path, _type_error(valid_type, value))


def _check_leaf(port: Port, value: Any, path: str) -> None:
    reason = port._reason(value, path)
    if reason is not None:
        raise PortValidationError(path, reason)


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
