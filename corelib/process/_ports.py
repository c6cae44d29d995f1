"""Ports: the declared inputs and outputs of a process, one value each.

A port is an immutable record (:class:`InputPort`, :class:`OutputPort`) naming one value: its
type, validator, help text and, for inputs, a default. Ports are the leaves of a
:class:`~corelib.PortNamespace` tree (:mod:`._namespace`); parsing values against that tree is
:mod:`._parse`'s job. This module also holds what the three share: the errors
(:class:`PortValidationError`, :class:`SpecSealedError`), the :data:`UNSPECIFIED` sentinel, the
type aliases and the helpers that build paths and messages.

Nothing here does I/O or imports an event loop library.
"""

from __future__ import annotations

import enum
import reprlib
from collections.abc import Callable
from typing import Any, Final, Literal, TypeAlias, final

import attrs

__all__ = [
    "UNSPECIFIED",
    "PortValidationError",
    "SpecSealedError",
    "Port",
    "InputPort",
    "OutputPort",
    "PortValidator",
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
