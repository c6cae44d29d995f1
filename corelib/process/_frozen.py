"""An immutable, attribute-accessible mapping for parsed process inputs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final, NoReturn, final

__all__ = ["AttributesFrozenDict", "freeze", "thaw"]


def freeze(value: Any) -> Any:
    """Return ``value`` with every ``dict`` in it replaced by an :class:`AttributesFrozenDict`.

    Only ``dict`` instances (and existing frozen mappings) are converted, recursively; any other
    value, including lists and other mapping types, is returned as it is. The argument is never
    mutated.
    """
    if isinstance(value, AttributesFrozenDict):
        return value
    if isinstance(value, dict):
        return AttributesFrozenDict(value)
    return value


# Exact types that are never a mapping (nor hold one at this level): a level of only these
# needs no conversion below it.
_NOT_MAPPINGS: Final = frozenset({str, int, float, bool, type(None), list, tuple})


def thaw(value: Any) -> Any:
    """Return ``value`` with every frozen mapping (and ``dict``) in it copied to a plain ``dict``.

    Leaf values are not copied.
    """
    if isinstance(value, AttributesFrozenDict):
        return value.to_dict()
    if isinstance(value, dict):
        return {key: thaw(item) for key, item in value.items()}
    return value


@final
class AttributesFrozenDict(Mapping[str, Any]):
    """An immutable mapping whose keys can also be read as attributes.

    Parsed process inputs are handed out as this type: ``inputs["sub"]["x"]`` and
    ``inputs.sub.x`` are the same value. Nested ``dict`` values are frozen recursively when the
    mapping is built, so no level can be changed afterwards; item assignment raises
    ``TypeError`` and attribute assignment raises ``AttributeError``. The mapping passed in is
    copied, never kept or changed.

    Attribute access only reaches keys that don't clash with a method name: ``inputs.items`` is
    the method, so a port called ``items`` has to be read as ``inputs["items"]``.

    Equality is mapping equality, so a frozen mapping compares equal to a plain ``dict`` with
    the same items. The mapping is not hashable (its values need not be).

    Args:
        data: the mapping (or iterable of key/value pairs) to copy.
    """

    __slots__ = ("_data",)
    _data: dict[str, Any]

    def __init__(self, data: Mapping[str, Any] | Iterable[tuple[str, Any]] = (), /) -> None:
        items = data.items() if isinstance(data, Mapping) else data
        object.__setattr__(self, "_data", {key: freeze(value) for key, value in items})

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails, so methods and the ``_data`` slot win.
        if name == "_data":
            # Not initialised yet (e.g. during unpickling): don't recurse.
            raise AttributeError(name)
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(f"no key {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError(f"can't set {name!r}: the mapping is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"can't delete {name!r}: the mapping is immutable")

    def __dir__(self) -> Iterable[str]:
        return [*super().__dir__(), *(key for key in self._data if isinstance(key, str))]

    def __reduce__(self) -> tuple[type[AttributesFrozenDict], tuple[dict[str, Any]]]:
        return (AttributesFrozenDict, (dict(self._data),))

    def __repr__(self) -> str:
        return f"AttributesFrozenDict({self._data!r})"

    def to_dict(self) -> dict[str, Any]:
        """Return a deep copy as plain ``dict`` objects (frozen levels become ``dict`` again).

        Only the mapping levels are copied; the leaf values are the same objects.
        """
        data = self._data
        types = set(map(type, data.values()))
        if types <= _NOT_MAPPINGS:  # the usual leaf level: one C-level copy
            return data.copy()
        if types <= _NOT_MAPPINGS_OR_FROZEN:
            return {
                key: value.to_dict() if type(value) is AttributesFrozenDict else value
                for key, value in data.items()
            }
        return {key: thaw(value) for key, value in data.items()}


_NOT_MAPPINGS_OR_FROZEN: Final = _NOT_MAPPINGS | {AttributesFrozenDict}
