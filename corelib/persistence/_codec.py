"""The JSON codec that turns :class:`~corelib.Checkpoint` records into bytes and back.

Theory of operation
-------------------
:class:`CheckpointCodec` turns a checkpoint's dict (:meth:`~corelib.Checkpoint.to_dict`) into
JSON bytes and back. JSON has no tuples, sets, bytes, dates or user types, so the codec writes
each such value as a *tagged object* ``{"!type": name, "value": plain}``. The built-in tags are
``tuple``, ``set``, ``frozenset``, ``bytes`` (base64), ``uuid``, ``datetime``, ``date``,
``exit_code``, ``frozendict`` (:class:`~corelib.AttributesFrozenDict`), ``float`` (NaN and the
infinities, which JSON can't write; decoding refuses them untagged: ``NaN``, ``Infinity``, or a
number beyond a float) and ``dict``. A real ``dict`` whose keys are not all
strings, or that happens to contain the reserved key ``"!type"``, is written with the ``dict``
tag as a list of ``[key, value]`` pairs, so every JSON object carrying ``"!type"`` is a tag.
Users add their own types *explicitly* with :meth:`CheckpointCodec.register`; nothing is
registered by importing a module, and there is no pickle or YAML fallback. Types are matched
exactly (a subclass of a registered type, an ``IntEnum`` member, a ``dict`` subclass are all
refused unless registered themselves), so a value always comes back with the type it was saved
with.

The ``json`` module is the reference implementation. When orjson is installed (a dependency),
checkpoints holding only JSON data are written and read by it instead, several times faster;
the JSON is the same except for the spelling of floats below ``1e-4`` (see the orjson section
below), and anything orjson would write or read differently takes the ``json`` path.

:meth:`CheckpointCodec.copy` skips the JSON text altogether for plain data (see
:mod:`corelib.persistence._snapshot`). The errors raised here are those of
:mod:`corelib.persistence._checkpoint`: :class:`~corelib.CheckpointEncodeError` (the caller's
fault, naming the offending value's path), :class:`~corelib.CorruptCheckpointError` and
:class:`~corelib.CheckpointVersionError`.
"""

from __future__ import annotations

import base64
import datetime
import enum
import json
import json.encoder
import math
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar, final

try:
    import orjson
except ImportError:  # pragma: no cover - a dependency; the json paths below stand alone
    orjson = None  # type: ignore[assignment]

from ..process._exit_code import ExitCode
from ..process._frozen import AttributesFrozenDict
from ._checkpoint import (
    _SCALARS,
    _STR,
    TYPE_KEY,
    Checkpoint,
    CheckpointEncodeError,
    CorruptCheckpointError,
    _exit_code_problem,
    _shape_problem,
    _where,
)
from ._snapshot import _decode_frozendict, _take_snapshot

__all__ = ["CheckpointCodec"]

T = TypeVar("T")

_UNTAGGED_MARK: Final = '"!type"'

_Encoder = Callable[[Any], Any]
_Decoder = Callable[[Any], Any]

# Types written natively as JSON; they can't be registered.
_NATIVE_TYPES: Final = frozenset({type(None), bool, int, float, str, list, dict})


def _encode_float(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def _decode_float(value: Any) -> float:
    if value not in ("nan", "inf", "-inf"):
        raise ValueError(f"{value!r} is not 'nan', 'inf' or '-inf'")
    return float(value)


def _decode_bytes(value: Any) -> bytes:
    return base64.b64decode(value, validate=True)


def _decode_exit_code(value: Any) -> ExitCode:
    problem = _exit_code_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return ExitCode.from_dict(value)


def _decode_pairs(value: Any) -> dict[Any, Any]:
    if not isinstance(value, list) or not all(
        isinstance(pair, list) and len(pair) == 2 for pair in value
    ):
        raise ValueError("expected a list of [key, value] pairs")
    return dict(value)


def _decode_list(kind: Callable[[list[Any]], T]) -> Callable[[Any], T]:
    def decode(value: Any) -> T:
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {type(value).__name__}")
        return kind(value)

    return decode


def _path_item(path: str, key: Any) -> str:
    return f"{path}[{key!r}]"


@final
class CheckpointCodec:
    """Serializes :class:`Checkpoint` records to JSON bytes and back.

    See the module docstring for the encoding. Register your own types before the codec is
    first used; registration is not synchronised with concurrent encoding. The codec is
    otherwise stateless and may be shared between threads and event loops. ``bytes`` output is
    UTF-8 JSON; strings with lone surrogates are carried through unchanged.

    Example::

        codec = CheckpointCodec()
        codec.register(Point, "myapp.Point", encode=lambda p: [p.x, p.y],
                       decode=lambda v: Point(*v))
    """

    __slots__ = ("_decoders", "_encoders", "_fast_encode", "_plain_decoder", "_tag_decoder")

    def __init__(self) -> None:
        self._fast_encode = _fast_encoder(self._default)
        # NaN, Infinity and numbers beyond a float are refused: the codec writes non-finite
        # floats tagged, so an untagged one was written by something else.
        self._plain_decoder = json.JSONDecoder(
            parse_constant=_refuse_constant, parse_float=_finite_float
        )
        self._tag_decoder = json.JSONDecoder(
            object_hook=self._from_object,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
        )
        self._encoders: dict[type, tuple[str, _Encoder]] = {}
        self._decoders: dict[str, _Decoder] = {
            # Built-in tags whose values aren't produced through ``_encoders``.
            "dict": _decode_pairs,
            "float": _decode_float,
        }
        self._add(tuple, "tuple", list, _decode_list(tuple))
        self._add(set, "set", list, _decode_list(set))
        self._add(frozenset, "frozenset", list, _decode_list(frozenset))
        self._add(bytes, "bytes", lambda b: base64.b64encode(b).decode("ascii"), _decode_bytes)
        self._add(uuid.UUID, "uuid", str, uuid.UUID)
        self._add(
            datetime.datetime,
            "datetime",
            datetime.datetime.isoformat,
            datetime.datetime.fromisoformat,
        )
        self._add(datetime.date, "date", datetime.date.isoformat, datetime.date.fromisoformat)
        self._add(ExitCode, "exit_code", ExitCode.to_dict, _decode_exit_code)
        self._add(AttributesFrozenDict, "frozendict", dict, _decode_frozendict)

    def _add(self, type_: type[Any], name: str, encode: _Encoder, decode: _Decoder) -> None:
        self._encoders[type_] = (name, encode)
        self._decoders[name] = decode

    def register(
        self,
        type_: type[T],
        name: str,
        *,
        encode: Callable[[T], Any],
        decode: Callable[[Any], T],
    ) -> None:
        """Teach the codec to save values of exactly ``type_``.

        ``encode`` turns a value into something the codec can already write (JSON data, or
        other registered types: its result is encoded in turn); ``decode`` gets that back,
        already decoded, and rebuilds the value. ``name`` is stored in the checkpoint, so keep
        it stable across releases (``"myapp.Point"`` rather than the class path, which may
        move).

        Raises:
            ValueError: ``name`` or ``type_`` is already registered, or ``type_`` is one the
                codec writes natively (``dict``, ``list``, ``str``, ...).
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"type name must be a non-empty string, got {name!r}")
        if type_ in _NATIVE_TYPES:
            raise ValueError(f"can't register {type_.__name__}: it is written natively")
        if name in self._decoders:
            raise ValueError(f"type name {name!r} is already registered")
        if type_ in self._encoders:
            raise ValueError(
                f"type {type_.__qualname__} is already registered as {self._encoders[type_][0]!r}"
            )
        self._add(type_, name, encode, decode)

    def register_enum(self, enum_type: type[enum.Enum], name: str | None = None) -> None:
        """Register an enum so its members are saved by value.

        Args:
            enum_type: the enum class.
            name: the tag; defaults to ``"module:qualname"`` of the enum.
        """
        tag = f"{enum_type.__module__}:{enum_type.__qualname__}" if name is None else name
        self.register(enum_type, tag, encode=lambda member: member.value, decode=enum_type)

    def encode(self, checkpoint: Checkpoint) -> bytes:
        """Return ``checkpoint`` as JSON bytes.

        Raises:
            CheckpointEncodeError: a value is of an unregistered type (the message gives its
                path, e.g. ``inputs['x'][2]``), or the checkpoint's own fields are malformed.
        """
        data = checkpoint.to_dict()
        pid = checkpoint.pid
        if not isinstance(pid, str) or not pid:
            raise CheckpointEncodeError(
                f"can't encode checkpoint: pid must be a non-empty string, got {pid!r}"
            )
        problem = _shape_problem(data)
        if problem is not None:
            raise CheckpointEncodeError(f"can't encode {_where(checkpoint.pid, None)}: {problem}")
        for key, empty in _OMITTED_WHEN_EMPTY:
            # from_dict restores these defaults; leaving them out keeps checkpoints small
            if data[key] == empty and type(data[key]) is type(empty):
                del data[key]
        if _orjson_enabled[0]:
            try:
                if _orjson_ready(data):
                    return orjson.dumps(data, default=_orjson_default)
            except (TypeError, OverflowError, RecursionError):
                pass  # an int beyond 64 bits, a lone surrogate, deep nesting: see below
        text = self._encode_fast(data)
        if text is None:
            plain = {key: self._to_plain(value, key) for key, value in data.items()}
            try:
                text = _dumps(plain)
            except ValueError as exc:  # an int too long for str(): Python's digit limit
                where = _unwritable_int_path(plain, "") or "a value"
                raise CheckpointEncodeError(
                    f"can't encode {_where(pid, None)}: {where}: {exc}"
                ) from None
        return text.encode("utf-8", "surrogatepass")

    def _encode_fast(self, data: dict[str, Any]) -> str | None:
        """The JSON text of ``data`` in one C-level ``json`` call, or ``None`` to take the
        slow path (which gives the same text, or the error with its path).

        ``json`` writes tuples as lists and non-string keys as strings, where the codec must
        tag them, so this runs only when a pre-scan (:func:`_json_native`) proves the native
        containers hold neither (nor the reserved key, nor subclasses of native types).
        Values of other types reach the ``default`` hook, which builds their plain tree with
        the slow path's own :meth:`_plain`. Any problem (a NaN, an encoder failing, a cycle,
        deep nesting) gives up here; the slow path then tags the value or names the problem.
        """
        try:
            if not _json_native(data):
                return None
            return self._fast_encode(data)
        except (_NeedPath, ValueError, TypeError, RecursionError):
            return None

    def _default(self, value: Any) -> Any:
        # Only non-native types get here (see ``_json_native``); ``_NeedPath`` on a problem.
        if type(value) is AttributesFrozenDict:
            # The built-in tag (it can't be re-registered); its own dict is written by json
            # directly when it is native too.
            data = value._data
            if _json_native(data):
                return {TYPE_KEY: "frozendict", "value": data}
        return self._plain(value, None)

    def decode(self, data: bytes) -> Checkpoint:
        """Rebuild a checkpoint from :meth:`encode`'s output.

        Raises:
            CorruptCheckpointError: the bytes are not JSON, hold ``NaN``, ``Infinity`` or a
                number beyond a float (the codec writes non-finite floats tagged), use an
                unknown type tag, a registered decoder failed, or the checkpoint's shape is
                wrong.
            CheckpointVersionError: the checkpoint comes from a newer plumio.
        """
        if (
            _orjson_enabled[0]
            and type(data) is bytes
            and b'"!type"' not in data
            and b"\\u" not in data
            and _LONG_DIGITS not in data.translate(_DIGIT_MAP)
        ):
            # No tag can be in it (see below), and no integer orjson would read as a float.
            try:
                plain = orjson.loads(data)
            except orjson.JSONDecodeError:
                pass  # the general path below gives the same result, or the error
            else:
                return Checkpoint.from_dict(plain)
        try:
            text = data.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError as exc:
            raise CorruptCheckpointError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
        try:
            if _UNTAGGED_MARK not in text and "\\u" not in text:
                # No object can carry the reserved key (it could only be written literally,
                # or with a \u escape): nothing to untag, so no per-object hook.
                plain = self._plain_decoder.decode(text)
            else:
                plain = self._tag_decoder.decode(text)
        except _TagError as exc:
            raise CorruptCheckpointError(str(exc), pid=_peek_pid(text)) from None
        except _NonFiniteError:
            raise CorruptCheckpointError(_non_finite_problem(text), pid=_peek_pid(text)) from None
        except RecursionError:
            raise CorruptCheckpointError("nested too deeply", pid=_peek_pid(text)) from None
        except ValueError as exc:  # json.JSONDecodeError
            raise CorruptCheckpointError(f"invalid JSON ({exc})") from None
        return Checkpoint.from_dict(plain)

    def copy(self, checkpoint: Checkpoint) -> Checkpoint:
        """Return what ``self.decode(self.encode(checkpoint))`` returns, usually without JSON.

        The result shares no mutable object with ``checkpoint``: changing the original's
        mappings or lists afterwards (a live process's context growing) can't reach it, and
        the other way round. When every value in the checkpoint is plain JSON data (``dict``
        with string keys, ``list``, ``str``, ``int``, ``float``, ``bool``, ``None``), tuples
        or :class:`~corelib.AttributesFrozenDict` the copy is made
        directly, several times faster than writing and parsing the JSON text; otherwise it
        *is* ``decode(encode(checkpoint))``. Either way the result is the same, value for value
        and type for type, and so is any error.

        Raises:
            CheckpointEncodeError: as :meth:`encode`.
            CorruptCheckpointError: a registered decoder failed on what its encoder wrote.
        """
        snapshot = _take_snapshot(checkpoint)
        if snapshot is None:
            return self.decode(self.encode(checkpoint))
        return snapshot.checkpoint  # a private copy made just now: handing it out is safe

    # -- encoding: build a JSON-ready tree ------------------------------------------------------

    def _to_plain(self, value: Any, path: str) -> Any:
        try:
            try:
                # fast pass: no paths are built; only when something fails, a second pass
                # builds them, for the error message
                return self._plain(value, None)
            except _NeedPath:
                return self._plain(value, path)
        except RecursionError:
            raise CheckpointEncodeError(
                f"can't encode {path}: nested too deeply (or cyclic)"
            ) from None

    def _plain(self, value: Any, path: str | None) -> Any:
        kind = type(value)
        if kind is str or kind is int or kind is bool or value is None:
            return value
        if kind is float:
            if math.isfinite(value):
                return value
            return {TYPE_KEY: "float", "value": _encode_float(value)}
        if kind is list:
            if path is None:
                return [self._plain(item, None) for item in value]
            return [self._plain(item, f"{path}[{i}]") for i, item in enumerate(value)]
        if kind is dict:
            return self._plain_dict(value, path)
        try:
            name, encode = self._encoders[kind]
        except KeyError:
            if path is None:
                raise _NeedPath from None
            raise CheckpointEncodeError(
                f"can't encode {path}: object of type {kind.__name__} is not registered"
            ) from None
        if kind is tuple or kind is set or kind is frozenset:
            if path is None:
                items = [self._plain(item, None) for item in value]
            else:
                items = [self._plain(item, f"{path}[{i}]") for i, item in enumerate(value)]
            return {TYPE_KEY: name, "value": items}
        if kind is AttributesFrozenDict:
            return {TYPE_KEY: name, "value": self._plain_dict(value, path)}
        try:
            encoded = encode(value)
        except Exception as exc:
            if path is None:
                raise _NeedPath from None
            raise CheckpointEncodeError(
                f"can't encode {path}: encoder of {name!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if type(encoded) is kind:
            if path is None:
                raise _NeedPath
            raise CheckpointEncodeError(
                f"can't encode {path}: encoder of {name!r} returned a {kind.__qualname__} again"
            )
        inner = None if path is None else f"{path}<{name}>"
        return {TYPE_KEY: name, "value": self._plain(encoded, inner)}

    def _plain_dict(self, value: Mapping[Any, Any], path: str | None) -> Any:
        if all(type(key) is str for key in value) and TYPE_KEY not in value:
            if path is None:
                return {key: self._plain(item, None) for key, item in value.items()}
            return {key: self._plain(item, _path_item(path, key)) for key, item in value.items()}
        # Non-string keys, or the reserved key: write [key, value] pairs.
        if path is None:
            pairs = [[self._plain(k, None), self._plain(v, None)] for k, v in value.items()]
        else:
            pairs = [
                [self._plain(key, f"{path}.keys()[{i}]"), self._plain(item, _path_item(path, key))]
                for i, (key, item) in enumerate(value.items())
            ]
        return {TYPE_KEY: "dict", "value": pairs}

    # -- decoding: json's object_hook sees every object, innermost first -------------------------

    def _from_object(self, obj: dict[str, Any]) -> Any:
        if TYPE_KEY not in obj:
            return obj
        name = obj[TYPE_KEY]
        if len(obj) != 2 or "value" not in obj:
            raise _TagError(f"tagged object {name!r} must have exactly '!type' and 'value'")
        try:
            decode = self._decoders[name]
        except (KeyError, TypeError):
            raise _TagError(f"unknown type tag {name!r}") from None
        try:
            return decode(obj["value"])
        except Exception as exc:
            raise _TagError(f"can't decode {name!r} value: {type(exc).__name__}: {exc}") from None

    def __repr__(self) -> str:
        return f"CheckpointCodec(types={sorted(self._decoders)!r})"


def _fast_encoder(default: Callable[[Any], Any]) -> Callable[[Any], str]:
    """``json.dumps`` with the codec's options and ``default``, made once per codec.

    Uses the C encoder directly when there is one (what ``json.dumps`` does on every call).
    It has no cycle check: a cycle ends in ``RecursionError``, and the codec's slow path
    then reports it.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has it
        encoder = json.JSONEncoder(
            ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=default
        )
        return encoder.encode
    c_encode = make(
        None, default, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )

    def encode(value: Any) -> str:
        return "".join(c_encode(value, 0))

    return encode


def _unwritable_int_path(value: Any, path: str) -> str | None:
    """The path of the first int in ``value`` that ``str()`` refuses (too many digits)."""
    kind = type(value)
    if kind is int:
        try:
            str(value)
        except ValueError:
            return path
        return None
    if kind is dict:
        for key, item in value.items():
            found = _unwritable_int_path(item, f"{path}[{key!r}]" if path else str(key))
            if found is not None:
                return found
    elif kind is list:
        for i, item in enumerate(value):
            found = _unwritable_int_path(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def _dumps(plain: Any) -> str:
    return json.dumps(plain, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


# Instances of these (and their subclasses) are written natively by ``json``, which must not
# happen unless the type is exactly a native one the codec writes as such.
_JSON_NATIVE_BASES: Final = (str, int, float, list, tuple, dict)


def _json_native(value: Any) -> bool:
    """Whether ``json.dumps(value, default=...)`` writes ``value`` as the codec would.

    True when every ``dict`` reached through native containers (``dict`` and ``list``) has
    only ``str`` keys and not the reserved key, and no tuple or subclass of a native type is
    reached; values of any other type are left to the ``default`` hook, which is not scanned
    here. Per container, the types are checked with C-level ``set(map(type, ...))``.
    """
    kind = type(value)
    if kind is dict:
        if value:
            if TYPE_KEY in value or set(map(type, value)) != _STR:
                return False
            items: Any = value.values()
        else:
            return True
    elif kind is list:
        items = value
    elif kind in _SCALARS:
        return True
    else:
        return not isinstance(value, _JSON_NATIVE_BASES)
    types = set(map(type, items))
    if types <= _SCALARS:
        return True
    for item in items:  # noqa: SIM110 - a plain loop: no generator frame per container
        if type(item) not in _SCALARS and not _json_native(item):
            return False
    return True


# -- orjson: the same JSON, written and read in C ----------------------------------------------
#
# orjson writes the JSON the codec writes when the tree holds only what JSON holds: exact
# ``dict`` (``str`` keys, not the reserved one), ``list``, ``str``, ``int``, ``bool``, ``None``
# and *finite* ``float`` (orjson writes NaN as ``null``), plus ``AttributesFrozenDict``, which it
# hands to ``default`` (the built-in tag, as the ``json`` paths write it). It refuses any key
# that is not exactly a ``str`` (the codec's ``json`` path then tags that dict). Anything else it
# would write differently (a tuple as a list, a UUID or an enum member by value, a subclass as its
# base) or not at all, so :func:`_orjson_ready` must vouch for the whole tree first. What it
# can't check cheaply orjson refuses itself (an int beyond 64 bits, a lone surrogate, deep
# nesting), and the codec then takes its ``json`` path. The one difference in the output:
# floats with ``0 < abs(x) < 1e-4`` are spelled without an exponent or its leading zero
# (``0.00001``, ``1e-7`` where ``json`` writes ``1e-05``, ``1e-07``); they read back the same.
#
# Reading: orjson parses what ``json`` parses, to the same values, except that it refuses a few
# things ``json`` accepts (a lone surrogate, nesting past 1024 levels: the ``json`` path then
# reads them, or gives its error; ``NaN``, ``Infinity``, a number too large for a double: the
# ``json`` path refuses those too, naming where they are), and reads an integer beyond 64 bits
# as a float (never taken: no run of 19 digits).

#: Off only in tests, to compare with the ``json`` paths (and if orjson is missing).
_orjson_enabled: list[bool] = [orjson is not None]

_ORJSON_SCALARS: Final = frozenset({str, int, bool, type(None)})
_ORJSON_TYPES: Final = _ORJSON_SCALARS | {float, dict, list, AttributesFrozenDict}
_NUMBERS: Final = frozenset({int, float, bool})
_LONG_DIGITS: Final = b"0" * 19  # shorter integers fit in 64 bits
_DIGIT_MAP: Final = bytes(48 if 48 <= byte < 58 else 32 for byte in range(256))


def _orjson_ready(value: Any) -> bool:
    """Whether orjson, with :func:`_orjson_default`, writes ``value`` as the codec does (or
    refuses it).

    Per container, one C-level type census of its values; a container of numbers is checked
    for finiteness with one ``sum`` (an overflow to infinity only gives a false "no").
    """
    kind = type(value)
    if kind is dict:
        if TYPE_KEY in value:
            return False
        items: Any = value.values()  # (orjson refuses keys that are not exactly str)
    elif kind is list:
        items = value
    elif kind is float:
        return math.isfinite(value)
    elif kind is AttributesFrozenDict:
        return _orjson_ready(value._data)
    else:
        return kind in _ORJSON_SCALARS
    types = set(map(type, items))
    if types <= _ORJSON_SCALARS:
        return True
    if types <= _NUMBERS:
        return math.isfinite(sum(items))
    if not types <= _ORJSON_TYPES:
        return False
    for item in items:  # (a plain loop: no generator frame per container)
        # (an empty container and a zero float are fine: skipped at once)
        if item and type(item) not in _ORJSON_SCALARS and not _orjson_ready(item):
            return False
    return True


def _orjson_default(value: Any) -> Any:
    """orjson's hook: only frozen mappings get here (see :func:`_orjson_ready`)."""
    if type(value) is AttributesFrozenDict:
        return {TYPE_KEY: "frozendict", "value": value._data}
    raise TypeError(f"unexpected {type(value).__name__}")  # pragma: no cover


_OMITTED_WHEN_EMPTY: Final[tuple[tuple[str, Any], ...]] = (
    ("state_data", {}),
    ("paused", False),
    ("inputs", {}),
    ("outputs", {}),
    ("ctx", None),
    ("cursor", None),
    ("awaiting", []),
    ("exit_code", None),
    ("created_at", None),
    ("saved_at", None),
    ("meta", {}),
)


class _NeedPath(Exception):
    """Internal: the fast encoding pass hit a problem; redo it with paths for the message."""


class _TagError(ValueError):
    """Internal: a tagged object could not be decoded (raised out of ``json.loads``)."""


class _NonFiniteError(ValueError):
    """Internal: the JSON holds ``NaN``, an infinity, or a number beyond a float."""


def _refuse_constant(name: str) -> Any:
    raise _NonFiniteError(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not _isfinite(value):  # e.g. 1E400
        raise _NonFiniteError(text)
    return value


_isfinite: Final = math.isfinite


@final
class _NonFinite:
    """Stands for a non-finite number while :func:`_non_finite_problem` looks for it."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _as_marker(text: str) -> Any:
    value = float(text)
    return value if math.isfinite(value) else _NonFinite(text)


def _non_finite_problem(text: str) -> str:
    """Where the first non-finite number in the JSON ``text`` is, and what it is."""
    try:
        found = _find_non_finite(
            json.loads(text, parse_constant=_NonFinite, parse_float=_as_marker), ""
        )
    except (ValueError, RecursionError):  # invalid JSON after the number, or deep nesting
        found = None
    if found is None:
        return "a number is NaN or infinite, which a checkpoint can't hold untagged"
    path, marker = found
    return f"{path or 'the checkpoint'} is {marker.text}, which a checkpoint can't hold untagged"


def _find_non_finite(value: Any, path: str) -> tuple[str, _NonFinite] | None:
    kind = type(value)
    if kind is _NonFinite:
        return path, value
    if kind is dict:
        for key, item in value.items():
            found = _find_non_finite(item, f"{path}[{key!r}]" if path else key)
            if found is not None:
                return found
    elif kind is list:
        for i, item in enumerate(value):
            found = _find_non_finite(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def _peek_pid(text: str) -> str | None:
    """Best-effort: the pid of a checkpoint whose tags can't be decoded, for error messages."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    pid = data.get("pid") if isinstance(data, dict) else None
    return pid if isinstance(pid, str) and pid else None
