"""Checkpoints as plain data: the record, its shape, and the errors of the persistence layer.

Theory of operation
-------------------
A :class:`Checkpoint` is a frozen record of everything needed to rebuild a process: which class
it is (``"module:qualname"``), its state and that state's data, its inputs and outputs, and what
the process class saves of itself through the checkpoint protocol
(:meth:`~corelib.Process.save_instance_state`): for a WorkChain its context, outline cursor and
what it is waiting for, which have fields of their own (``ctx``, ``cursor``, ``awaiting``), and
anything else a subclass saves (``instance_state``). It holds *values*, never live objects
(futures, loops, communicators): plumpy's habit of pickling those is what made its checkpoints
fragile (a WorkChain waiting on a child could not be saved at all).

:meth:`Checkpoint.to_dict` / :meth:`Checkpoint.from_dict` convert between the record and a dict
with a fixed set of keys; ``from_dict`` checks the shape and the schema ``version``. Turning
that dict into bytes is the codec's job (:mod:`corelib.persistence._codec`).

Errors
------
Everything raised here derives from :class:`CheckpointError` (itself a
:class:`~corelib.ProcessError`). Encoding problems are the caller's fault and say where the
offending value sits (``"can't encode inputs['x'][2]: object of type Foo is not registered"``);
decoding problems mean the stored bytes are damaged or were written by something else, and
name the pid when it can be read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, final

import attrs

from ..process._errors import ProcessError
from ..process._exit_code import ExitCode
from ..process._frozen import AttributesFrozenDict

__all__ = [
    "CHECKPOINT_VERSION",
    "CHECKPOINT_STATES",
    "Checkpoint",
    "CheckpointError",
    "CheckpointEncodeError",
    "CorruptCheckpointError",
    "CheckpointVersionError",
    "CheckpointNotFoundError",
    "ForbiddenClassError",
    "UnknownClassError",
    "PersisterClosedError",
]

#: The schema version written into every new checkpoint. Bump it (and teach
#: :meth:`Checkpoint.from_dict` to upgrade older dicts) whenever the layout changes.
#: Version 1 gained one optional key, ``instance_state``, without a bump: it is written only
#: when not empty, so every checkpoint written before keeps loading as it did, and every
#: checkpoint of a process that saves no state of its own is written as before.
CHECKPOINT_VERSION: Final = 1

#: The state values a checkpoint may carry (plumpy's ``ProcessState`` values).
CHECKPOINT_STATES: Final = frozenset(
    {"created", "running", "waiting", "finished", "excepted", "killed"}
)

#: The key that marks a JSON object as a tagged value (see the codec).
TYPE_KEY: Final = "!type"


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
        instance_state: the rest of what the process class saved of itself (its
            ``save_instance_state`` less the ``ctx``, ``cursor`` and ``awaiting`` above, which
            have fields of their own); empty for most processes.
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
    instance_state: Mapping[str, Any] = attrs.field(factory=dict)
    exit_code: ExitCode | None = None
    created_at: float | None = None
    saved_at: float | None = None
    meta: Mapping[str, Any] = attrs.field(factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the checkpoint as a dict with a fixed set of keys, plus ``instance_state``
        when it is not empty.

        The mappings are the record's own objects (not copies); ``cursor`` and ``awaiting``
        become lists and ``exit_code`` its own dict. Values inside the mappings are left as
        they are: turning them into JSON is the codec's job. An empty ``instance_state`` is
        left out, so that the checkpoints of processes that save nothing beyond the other
        fields (every process and WorkChain class of plumio itself) keep the layout they had
        before the field existed, byte for byte once encoded.
        """
        data: dict[str, Any] = {
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
        if self.instance_state:
            data["instance_state"] = self.instance_state
        return data

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
            instance_state=data.get("instance_state", {}),
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
# Exactly these types are written by ``json`` as the codec writes them (floats: finite ones;
# ``json`` refuses the others with ``allow_nan=False``, and the codec tags them).
_SCALARS: Final = frozenset({str, int, float, bool, type(None)})
_STR: Final = frozenset({str})
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
        and type(get("instance_state", _EMPTY)) in _QUICK_MAPPINGS
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
    for key in ("state_data", "inputs", "outputs", "meta", "instance_state"):
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
