"""Checkpoints as plain data, and the JSON codec that stores them.

Theory of operation
-------------------
A :class:`Checkpoint` is a frozen record of everything needed to rebuild a process: which class
it is (``"module:qualname"``), its state and that state's data, its inputs and outputs, and for a
WorkChain its context, outline cursor and what it is waiting for. It holds *values*, never live
objects (futures, loops, communicators): plumpy's habit of pickling those is what made its
checkpoints fragile (a WorkChain waiting on a child could not be saved at all).

:meth:`Checkpoint.to_dict` / :meth:`Checkpoint.from_dict` convert between the record and a dict
with a fixed set of keys; ``from_dict`` checks the shape and the schema ``version``.

:class:`CheckpointCodec` turns that dict into JSON bytes and back. JSON has no tuples, sets,
bytes, dates or user types, so the codec writes each such value as a *tagged object*
``{"!type": name, "value": plain}``. The built-in tags are ``tuple``, ``set``, ``frozenset``,
``bytes`` (base64), ``uuid``, ``datetime``, ``date``, ``exit_code``, ``frozendict``
(:class:`~corelib.AttributesFrozenDict`), ``float`` (NaN and the infinities, which JSON can't
write) and ``dict``. A real ``dict`` whose keys are not all strings, or that happens to contain
the reserved key ``"!type"``, is written with the ``dict`` tag as a list of ``[key, value]``
pairs, so every JSON object carrying ``"!type"`` is a tag. Users add their own types
*explicitly* with :meth:`CheckpointCodec.register`; nothing is registered by importing a module,
and there is no pickle or YAML fallback. Types are matched exactly (a subclass of a registered
type, an ``IntEnum`` member, a ``dict`` subclass are all refused unless registered themselves),
so a value always comes back with the type it was saved with.

The ``json`` module is the reference implementation. When orjson is installed (a dependency),
checkpoints holding only JSON data are written and read by it instead, several times faster;
the JSON is the same except for the spelling of floats below ``1e-4`` (see the orjson section
below), and anything orjson would write or read differently takes the ``json`` path.

Errors
------
Everything raised here derives from :class:`CheckpointError` (itself a
:class:`~corelib.ProcessError`). Encoding problems are the caller's fault and say where the
offending value sits (``"can't encode inputs['x'][2]: object of type Foo is not registered"``);
decoding problems mean the stored bytes are damaged or were written by something else, and
name the pid when it can be read.
"""

from __future__ import annotations

import base64
import datetime
import enum
import json
import json.encoder
import math
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeVar, final

import attrs

try:
    import orjson
except ImportError:  # pragma: no cover - a dependency; the json paths below stand alone
    orjson = None  # type: ignore[assignment]

from ..process._errors import ProcessError
from ..process._exit_code import ExitCode
from ..process._frozen import AttributesFrozenDict

__all__ = [
    "CHECKPOINT_VERSION",
    "CHECKPOINT_STATES",
    "Checkpoint",
    "CheckpointCodec",
    "CheckpointError",
    "CheckpointEncodeError",
    "CorruptCheckpointError",
    "CheckpointVersionError",
    "CheckpointNotFoundError",
    "ForbiddenClassError",
    "UnknownClassError",
    "PersisterClosedError",
]

T = TypeVar("T")

#: The schema version written into every new checkpoint. Bump it (and teach
#: :meth:`Checkpoint.from_dict` to upgrade older dicts) whenever the layout changes.
CHECKPOINT_VERSION: Final = 1

#: The state values a checkpoint may carry (plumpy's ``ProcessState`` values).
CHECKPOINT_STATES: Final = frozenset(
    {"created", "running", "waiting", "finished", "excepted", "killed"}
)

#: The key that marks a JSON object as a tagged value.
TYPE_KEY: Final = "!type"
_UNTAGGED_MARK: Final = '"!type"'


# --- errors -------------------------------------------------------------------------------------


def _where(pid: str | None, tag: str | None) -> str:
    """Describe a checkpoint's location for an error message."""
    if pid is None:
        return "checkpoint"
    return f"checkpoint of pid {pid!r}" + ("" if tag is None else f" tag {tag!r}")


class CheckpointError(ProcessError):
    """Base class of every error raised while saving, storing or loading checkpoints."""


@final
class CheckpointEncodeError(CheckpointError, TypeError):
    """Raised when a checkpoint holds a value that can't be saved.

    This is the caller's fault: the value's type is not registered with the codec (or is a
    class that could not be reloaded). Nothing was stored.

    Args:
        message: the whole message, e.g. ``"can't encode inputs['x'][2]: object of type Foo
            is not registered"``.
    """


@final
class CorruptCheckpointError(CheckpointError):
    """Raised when stored bytes are not a valid checkpoint.

    The data was damaged (a torn write, a disk error, someone editing it), or was written by
    something other than this codec (an unknown type tag, a missing field). Other checkpoints in
    the same persister are unaffected.

    Args:
        problem: what is wrong, e.g. ``"unknown type tag 'Foo'"``.
        pid: the checkpoint's pid, when known.
        tag: the checkpoint's tag, when known.
    """

    def __init__(self, problem: str, *, pid: str | None = None, tag: str | None = None) -> None:
        super().__init__(f"{_where(pid, tag)} is corrupt: {problem}")
        self.problem = problem
        self.pid = pid
        self.tag = tag


@final
class CheckpointVersionError(CheckpointError):
    """Raised when a checkpoint was written by a newer plumio, with a newer schema version.

    Upgrade this plumio to load it; the checkpoint is left as it is.

    Args:
        version: the checkpoint's schema version.
        pid: the checkpoint's pid, when known.
        tag: the checkpoint's tag, when known.
    """

    def __init__(self, version: int, *, pid: str | None = None, tag: str | None = None) -> None:
        super().__init__(
            f"{_where(pid, tag)} has schema version {version},"
            f" newer than this plumio ({CHECKPOINT_VERSION})"
        )
        self.version = version
        self.pid = pid
        self.tag = tag


@final
class CheckpointNotFoundError(CheckpointError, LookupError):
    """Raised when a persister has no checkpoint for the requested pid and tag.

    Args:
        pid: the requested pid.
        tag: the requested tag (``None`` for the untagged checkpoint).
    """

    def __init__(self, pid: str, tag: str | None = None) -> None:
        super().__init__(f"no {_where(pid, tag)}")
        self.pid = pid
        self.tag = tag


@final
class ForbiddenClassError(CheckpointError):
    """Raised when a checkpoint names a class outside the loader's allowed modules.

    Nothing was imported. Either the checkpoint is hostile, or the loader's
    ``allowed_prefixes`` must be extended to cover the module: the message names the allowed
    prefixes and the loader to pass (``loader=ClassLoader(allowed_prefixes=(...))``, to
    ``load_process``, ``continue_process``, ``Runner``, ``ProcessLauncher``, ``Worker`` or
    ``LocalCluster``). A new interpreter's default loader allows only ``corelib`` and the
    modules of classes it checkpointed or sent itself, not every module it imported. Also
    raised when the class is not a subclass of the required base (e.g. ``Process``).
    """


@final
class UnknownClassError(CheckpointError, LookupError):
    """Raised when a checkpoint's class identifier can't be resolved.

    The identifier is malformed, its module can't be imported, or the module has no such
    attribute (the class was renamed or moved since the checkpoint was saved).
    """


@final
class PersisterClosedError(CheckpointError):
    """Raised when a persister is used after its ``aclose()``. This is the caller's fault."""


# --- the record ---------------------------------------------------------------------------------


def _to_tuple(value: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(value)


def _to_optional_tuple(value: Sequence[int] | None) -> tuple[int, ...] | None:
    return None if value is None else tuple(value)


@final
@attrs.frozen(kw_only=True)
class Checkpoint:
    """The saved state of one process, as plain data.

    The record is shallowly frozen: its mappings are kept as given (an
    :class:`~corelib.AttributesFrozenDict` stays one, and comes back as one after a save and a
    load), so don't mutate them after building the checkpoint.

    Args:
        version: the schema version; leave the default (:data:`CHECKPOINT_VERSION`).
        pid: the process id.
        process_class: the process class as ``"module:qualname"`` (see
            :func:`~corelib.class_identifier`).
        state: one of :data:`CHECKPOINT_STATES` (``"created"``, ``"running"``, ...).
        state_data: plain data for that state, e.g. the next continuation's method name and
            arguments, the waiting reason, the result.
        paused: whether the process was paused; a reloaded process starts paused then.
        inputs: the process inputs (often an ``AttributesFrozenDict``).
        outputs: the outputs emitted so far.
        ctx: a WorkChain's context, ``None`` for other processes.
        cursor: a WorkChain's position in its outline (a path of indices), ``None`` for other
            processes. Any sequence is accepted and kept as a tuple.
        awaiting: descriptors of what a waiting process awaits, e.g. ``{"kind": "process",
            "pid": "...", "key": "child", "append": False}``. Kept as a tuple.
        exit_code: the exit code of a finished process.
        created_at: when the process was created (seconds since the epoch), if known.
        saved_at: when this checkpoint was taken (seconds since the epoch), set by whoever
            builds it (persisters store checkpoints exactly as given).
        meta: free-form extra data (e.g. for listeners or the application).
    """

    version: int = CHECKPOINT_VERSION
    pid: str
    process_class: str
    state: str
    state_data: Mapping[str, Any] = attrs.field(factory=dict)
    paused: bool = False
    inputs: Mapping[str, Any] = attrs.field(factory=dict)
    outputs: Mapping[str, Any] = attrs.field(factory=dict)
    ctx: Mapping[str, Any] | None = None
    cursor: tuple[int, ...] | None = attrs.field(default=None, converter=_to_optional_tuple)
    awaiting: tuple[Mapping[str, Any], ...] = attrs.field(default=(), converter=_to_tuple)
    exit_code: ExitCode | None = None
    created_at: float | None = None
    saved_at: float | None = None
    meta: Mapping[str, Any] = attrs.field(factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the checkpoint as a dict with a fixed set of keys.

        The mappings are the record's own objects (not copies); ``cursor`` and ``awaiting``
        become lists and ``exit_code`` its own dict. Values inside the mappings are left as
        they are: turning them into JSON is the codec's job.
        """
        return {
            "version": self.version,
            "pid": self.pid,
            "process_class": self.process_class,
            "state": self.state,
            "state_data": self.state_data,
            "paused": self.paused,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "ctx": self.ctx,
            "cursor": None if self.cursor is None else list(self.cursor),
            "awaiting": list(self.awaiting),
            "exit_code": None if self.exit_code is None else self.exit_code.to_dict(),
            "created_at": self.created_at,
            "saved_at": self.saved_at,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Checkpoint:
        """Build a checkpoint from :meth:`to_dict`'s output, checking its shape.

        ``version``, ``pid``, ``process_class`` and ``state`` are required; the other keys
        default as in the constructor. Unknown keys are refused: within one schema version the
        layout is fixed.

        Raises:
            CheckpointVersionError: ``version`` is newer than :data:`CHECKPOINT_VERSION`.
            CorruptCheckpointError: anything else is wrong; the message names the pid when it
                is readable, and the problem.
        """
        if type(data) is not dict and not isinstance(data, Mapping):
            raise CorruptCheckpointError(f"expected an object, got {type(data).__name__}")
        pid = data.get("pid")
        if not isinstance(pid, str) or not pid:
            raise CorruptCheckpointError(f"pid must be a non-empty string, got {_short(pid)}")
        # The version comes first: a newer schema may have fields this one doesn't know.
        version = data.get("version")
        if isinstance(version, int) and version > CHECKPOINT_VERSION:
            raise CheckpointVersionError(version, pid=pid)
        problem = _shape_problem(data)
        if problem is not None:
            raise CorruptCheckpointError(problem, pid=pid)
        exit_code = data.get("exit_code")
        if exit_code is None and type(data) is dict:
            # (what the codec reads) the shape is checked, so every key is a field; a missing
            # one takes the same default as below
            return cls(**data)
        return cls(
            version=data["version"],
            pid=pid,
            process_class=data["process_class"],
            state=data["state"],
            state_data=data.get("state_data", {}),
            paused=data.get("paused", False),
            inputs=data.get("inputs", {}),
            outputs=data.get("outputs", {}),
            ctx=data.get("ctx"),
            cursor=data.get("cursor"),
            awaiting=data.get("awaiting", ()),
            exit_code=None if exit_code is None else ExitCode.from_dict(exit_code),
            created_at=data.get("created_at"),
            saved_at=data.get("saved_at"),
            meta=data.get("meta", {}),
        )


_REQUIRED_KEYS: Final = ("version", "pid", "process_class", "state")
_KNOWN_KEYS: Final = frozenset(attrs.fields_dict(Checkpoint))


def _short(value: object) -> str:
    """``repr(value)``, cut short for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _exit_code_problem(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) - {"status", "message", "label"}:
        return f"exit_code must be an exit code dict or null, got {_short(value)}"
    if not _is_int(value.get("status")):
        return f"exit_code status must be an integer, got {_short(value.get('status'))}"
    for key in ("message", "label"):
        if not isinstance(value.get(key), str | None):
            return f"exit_code {key} must be a string or null, got {_short(value.get(key))}"
    return None


# Types accepted by the quick shape check; anything else gets the full (isinstance) check.
_QUICK_MAPPINGS: Final = frozenset({dict, AttributesFrozenDict})
_QUICK_CTX: Final = frozenset({dict, AttributesFrozenDict, type(None)})
_QUICK_SEQUENCES: Final = frozenset({list, tuple})
_QUICK_NUMBERS: Final = frozenset({int, float, type(None)})
_INT: Final = frozenset({int})
_EMPTY: Final[Mapping[str, Any]] = {}


def _shape_ok(data: Mapping[str, Any]) -> bool:
    """A quick sufficient check that :func:`_shape_problem` would find nothing.

    Exact type tests on the common types; ``False`` only means "look closer".
    """
    if not _KNOWN_KEYS.issuperset(data):
        return False
    try:
        version, process_class, state = data["version"], data["process_class"], data["state"]
        data["pid"]
    except KeyError:
        return False
    get = data.get
    cursor = get("cursor")
    awaiting = get("awaiting", ())
    return (
        type(version) is int
        and version >= 1
        and type(process_class) is str
        and process_class.count(":") == 1
        and type(state) is str
        and state in CHECKPOINT_STATES
        and type(get("state_data", _EMPTY)) in _QUICK_MAPPINGS
        and type(get("inputs", _EMPTY)) in _QUICK_MAPPINGS
        and type(get("outputs", _EMPTY)) in _QUICK_MAPPINGS
        and type(get("meta", _EMPTY)) in _QUICK_MAPPINGS
        and type(get("ctx")) in _QUICK_CTX
        and type(get("paused", False)) is bool
        and (
            cursor is None or (type(cursor) in _QUICK_SEQUENCES and set(map(type, cursor)) <= _INT)
        )
        and type(awaiting) in _QUICK_SEQUENCES
        and set(map(type, awaiting)) <= _QUICK_MAPPINGS
        and _exit_code_problem(get("exit_code")) is None
        and type(get("created_at")) in _QUICK_NUMBERS
        and type(get("saved_at")) in _QUICK_NUMBERS
    )


def _shape_problem(data: Mapping[str, Any]) -> str | None:
    """Return what is wrong with a checkpoint dict, or ``None`` if its shape is valid."""
    if _shape_ok(data):
        return None
    for key in _REQUIRED_KEYS:
        if key not in data:
            return f"missing field {key!r}"
    unknown = sorted(str(key) for key in data if key not in _KNOWN_KEYS)
    if unknown:
        return f"unknown field {_short(unknown[0])}"
    version = data["version"]
    if not _is_int(version) or version < 1:
        return f"version must be a positive integer, got {_short(version)}"
    process_class = data["process_class"]
    if not isinstance(process_class, str) or process_class.count(":") != 1:
        return f"process_class must be a 'module:qualname' string, got {_short(process_class)}"
    state = data["state"]
    if not isinstance(state, str) or state not in CHECKPOINT_STATES:
        return f"state {_short(state)} is not a process state"
    for key in ("state_data", "inputs", "outputs", "meta"):
        if key in data and not isinstance(data[key], Mapping):
            return f"{key} must be a mapping, got {type(data[key]).__name__}"
    if not isinstance(data.get("ctx"), Mapping | None):
        return f"ctx must be a mapping or null, got {type(data['ctx']).__name__}"
    if not isinstance(data.get("paused", False), bool):
        return f"paused must be a boolean, got {_short(data['paused'])}"
    cursor = data.get("cursor")
    if cursor is not None and (
        not isinstance(cursor, list | tuple) or not all(_is_int(i) for i in cursor)
    ):
        return f"cursor must be a list of integers or null, got {_short(cursor)}"
    awaiting = data.get("awaiting", ())
    if not isinstance(awaiting, list | tuple) or not all(
        isinstance(item, Mapping) for item in awaiting
    ):
        return f"awaiting must be a list of mappings, got {_short(awaiting)}"
    problem = _exit_code_problem(data.get("exit_code"))
    if problem is not None:
        return problem
    for key in ("created_at", "saved_at"):
        value = data.get(key)
        if value is not None and not _is_number(value):
            return f"{key} must be a number or null, got {_short(value)}"
    return None


# --- the codec ----------------------------------------------------------------------------------

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


def _decode_frozendict(value: Any) -> AttributesFrozenDict:
    if not isinstance(value, dict):
        raise ValueError(f"expected an object, got {type(value).__name__}")
    if type(value) is dict and dict not in set(map(type, value.values())):
        # ``value`` is a dict json just built, referenced nowhere else, with no plain dict
        # to freeze in it: adopt it instead of copying it item by item (same result).
        frozen = AttributesFrozenDict.__new__(AttributesFrozenDict)
        object.__setattr__(frozen, "_data", value)
        return frozen
    return AttributesFrozenDict(value)


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
        self._plain_decoder = json.JSONDecoder()
        self._tag_decoder = json.JSONDecoder(object_hook=self._from_object)
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
            CorruptCheckpointError: the bytes are not JSON, use an unknown type tag, a
                registered decoder failed, or the checkpoint's shape is wrong.
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


# Exactly these types are written by ``json`` as the codec writes them (floats: finite ones;
# ``json`` refuses the others with ``allow_nan=False``, and the slow path tags them).
_SCALARS: Final = frozenset({str, int, float, bool, type(None)})
_STR: Final = frozenset({str})
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
# things ``json`` accepts (``NaN``, ``Infinity``, a number too large for a double, a lone
# surrogate, nesting past 1024 levels: the ``json`` path then reads them, or gives its error),
# and reads an integer beyond 64 bits as a float (never taken: no run of 19 digits).

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


# -- copying without JSON ----------------------------------------------------------------------
#
# A *snapshot* is ``decode(encode(checkpoint))`` for the common case, taken as a deep copy, plus
# a plan of where its containers are, so that handing out a fresh copy later (``_restore``) is a
# few C-level ``dict.copy``/``list.copy`` calls instead of a walk over every value.
#
# Invariant: ``_take_snapshot`` returns a snapshot only when the JSON round trip is *certain* to
# succeed and to give exactly that result (same values, same types, same key order); on any
# doubt it returns ``None`` and the caller takes the JSON path, which gives the result or the
# specific error. So it accepts, below the checkpoint's own fields, only: ``dict`` with ``str``
# keys other than the reserved one, ``list``, ``tuple`` (written with the ``tuple`` tag, read
# back as a tuple), ``AttributesFrozenDict`` (read back through ``_decode_frozendict``, as
# decoding does), and the exact scalar types: floats of any value (the non-finite ones are
# tagged, and come back equal), ints only within ``json``'s digit limit
# (``sys.get_int_max_str_digits``), beyond which it can't write them.
#
# A plan is ``None`` for a container holding no container (copied whole; a tuple of scalars is
# shared, being immutable), else a tuple of ``(key or index, plan)`` for its containers.

_FLAT: Final = frozenset({str, float, bool, type(None)})  # immutable, always written as is
_STR_OR_NONE: Final = frozenset({str, type(None)})

_Plan = tuple[tuple[Any, "_Plan"], ...] | None
_SNAP_TYPES: Final = _SCALARS | {dict, list, tuple, AttributesFrozenDict}


class _NotNative(Exception):
    """Internal: the value needs the JSON path (see ``_take_snapshot``)."""


_int_bound: list[int] = [0, 0]  # [digit limit, 10**limit], cached
# The digit limit is 0 (none) or at least 640 (``sys.set_int_max_str_digits`` refuses less),
# so an int of at most 639 digits can always be written.
_SAFE_INT: Final = 10**639


def _int_ok(value: int) -> bool:
    """Whether ``json`` can write the int ``value`` (and read it back)."""
    if -_SAFE_INT < value < _SAFE_INT:
        return True
    limit = sys.get_int_max_str_digits()
    if not limit:
        return True
    if _int_bound[0] != limit:
        _int_bound[:] = [limit, 10**limit]
    return -_int_bound[1] < value < _int_bound[1]


def _ints_ok(values: Any, types: set[type]) -> bool:
    """Whether ``json`` can write every ``int`` in ``values``, whose types are ``types``."""
    if int not in types:
        return True
    ints = values if len(types) == 1 else [value for value in values if type(value) is int]
    high, low = max(ints), min(ints)
    return (high < _SAFE_INT and low > -_SAFE_INT) or (_int_ok(high) and _int_ok(low))


def _snap(value: Any) -> tuple[Any, _Plan]:
    """A deep copy of the container ``value`` equal to its JSON round trip, and its plan;
    ``_NotNative`` if that is not certain."""
    kind = type(value)
    if kind is dict:
        if not value:
            return {}, None
        if TYPE_KEY in value or set(map(type, value)) != _STR:
            raise _NotNative
        items: Any = value.values()
    elif kind is list or kind is tuple:
        items = value
    elif kind is AttributesFrozenDict:
        data, data_plan = _snap(value._data)
        # as decoding builds it (nested dicts frozen too: same keys, so the plan still fits)
        return _decode_frozendict(data), data_plan
    else:
        raise _NotNative
    types = set(map(type, items))
    if types <= _SCALARS:
        if int in types and not _ints_ok(items, types):
            raise _NotNative
        return (value if kind is tuple else value.copy()), None  # one C call: nothing to copy
    if not types <= _SNAP_TYPES:
        raise _NotNative
    copy: Any = value.copy() if kind is dict else list(value)  # then its containers replaced
    plan: list[tuple[Any, _Plan]] = []
    for key, item in value.items() if kind is dict else enumerate(value):
        item_kind = type(item)
        if item_kind in _FLAT:
            continue
        if item_kind is int:
            if not _int_ok(item):
                raise _NotNative
            continue
        if not item and (item_kind is dict or item_kind is list):
            copy[key], item_plan = item.copy(), None  # empty: its copy is its round trip
        else:
            copy[key], item_plan = _snap(item)
        plan.append((key, item_plan))
    return (tuple(copy) if kind is tuple else copy), tuple(plan)


def _thaw(value: Any, plan: _Plan) -> Any:
    """A fresh copy of the snapshot container ``value`` (nothing mutable shared with it)."""
    kind = type(value)
    if kind is AttributesFrozenDict:
        frozen = AttributesFrozenDict.__new__(AttributesFrozenDict)
        object.__setattr__(frozen, "_data", _thaw(value._data, plan))
        return frozen
    if kind is tuple:
        if plan is None:
            return value
        copy: Any = list(value)
    else:
        copy = value.copy()
    if plan is not None:
        for key, item_plan in plan:
            item = copy[key]
            item_kind = type(item)
            if item_plan is None and (item_kind is dict or item_kind is list):
                copy[key] = item.copy()  # holds no container
            else:
                copy[key] = _thaw(item, item_plan)
    return tuple(copy) if kind is tuple else copy


def _exit_code_ok(exit_code: ExitCode | None) -> bool:
    return exit_code is None or (
        type(exit_code) is ExitCode
        and type(exit_code.status) is int
        and _int_ok(exit_code.status)
        and type(exit_code.message) in _STR_OR_NONE
        and type(exit_code.label) in _STR_OR_NONE
    )


@final
@attrs.frozen
class _Snapshot:
    """A checkpoint's private deep copy (never handed out) and the plans of its mappings."""

    checkpoint: Checkpoint
    plans: tuple[_Plan, ...]  # state_data, inputs, outputs, ctx, meta, then each of awaiting


def _take_snapshot(checkpoint: Checkpoint) -> _Snapshot | None:
    """A snapshot of ``checkpoint`` equal to ``decode(encode(checkpoint))``, or ``None`` when
    only the JSON path can tell (an unusual type or shape, a problem to report)."""
    if type(checkpoint) is not Checkpoint:
        return None
    pid = checkpoint.pid
    if type(pid) is not str or not pid or checkpoint.version != CHECKPOINT_VERSION:
        return None  # (a version from the future fails when decoded: keep that)
    if not _shape_ok(checkpoint.to_dict()):
        return None
    cursor = checkpoint.cursor
    created_at, saved_at = checkpoint.created_at, checkpoint.saved_at
    if (
        (cursor and not _ints_ok(cursor, _INT_SET))
        or not _exit_code_ok(checkpoint.exit_code)
        or (type(created_at) is int and not _int_ok(created_at))
        or (type(saved_at) is int and not _int_ok(saved_at))
    ):
        return None
    ctx = checkpoint.ctx
    try:
        state_data, state_data_plan = _snap(checkpoint.state_data)
        inputs, inputs_plan = _snap(checkpoint.inputs)
        outputs, outputs_plan = _snap(checkpoint.outputs)
        ctx, ctx_plan = (None, None) if ctx is None else _snap(ctx)
        meta, meta_plan = _snap(checkpoint.meta)
        awaiting = [_snap(item) for item in checkpoint.awaiting]
    except (_NotNative, RecursionError):
        return None
    copy = Checkpoint(
        pid=pid,
        process_class=checkpoint.process_class,
        state=checkpoint.state,
        state_data=state_data,
        paused=checkpoint.paused,
        inputs=inputs,
        outputs=outputs,
        ctx=ctx,
        cursor=cursor,
        awaiting=tuple(item for item, _ in awaiting),
        exit_code=checkpoint.exit_code,
        created_at=created_at,
        saved_at=saved_at,
        meta=meta,
    )
    plans = (state_data_plan, inputs_plan, outputs_plan, ctx_plan, meta_plan)
    return _Snapshot(copy, plans + tuple(plan for _, plan in awaiting))


_INT_SET: Final[set[type]] = {int}


def _restore(snapshot: _Snapshot) -> Checkpoint:
    """A fresh checkpoint equal to the snapshot's; it shares nothing mutable with it."""
    checkpoint = snapshot.checkpoint
    state_data, inputs, outputs, ctx, meta, *awaiting = snapshot.plans
    return Checkpoint(
        pid=checkpoint.pid,
        process_class=checkpoint.process_class,
        state=checkpoint.state,
        state_data=_thaw(checkpoint.state_data, state_data),
        paused=checkpoint.paused,
        inputs=_thaw(checkpoint.inputs, inputs),
        outputs=_thaw(checkpoint.outputs, outputs),
        ctx=None if checkpoint.ctx is None else _thaw(checkpoint.ctx, ctx),
        cursor=checkpoint.cursor,
        awaiting=tuple(map(_thaw, checkpoint.awaiting, awaiting)),
        exit_code=checkpoint.exit_code,
        created_at=checkpoint.created_at,
        saved_at=checkpoint.saved_at,
        meta=_thaw(checkpoint.meta, meta),
    )


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


def _peek_pid(text: str) -> str | None:
    """Best-effort: the pid of a checkpoint whose tags can't be decoded, for error messages."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    pid = data.get("pid") if isinstance(data, dict) else None
    return pid if isinstance(pid, str) and pid else None
