"""Copying a checkpoint without JSON: what :class:`~corelib.InMemoryPersister` stores, and what
:meth:`~corelib.CheckpointCodec.copy` returns for plain data.

Theory of operation
-------------------
A *snapshot* is ``decode(encode(checkpoint))`` for the common case, taken as a deep copy, plus
a plan of where its containers are, so that handing out a fresh copy later (``_restore``) is a
few C-level ``dict.copy``/``list.copy`` calls instead of a walk over every value.

Invariant: ``_take_snapshot`` returns a snapshot only when the JSON round trip is *certain* to
succeed and to give exactly that result (same values, same types, same key order); on any
doubt it returns ``None`` and the caller takes the JSON path, which gives the result or the
specific error. So it accepts, below the checkpoint's own fields, only: ``dict`` with ``str``
keys other than the reserved one, ``list``, ``tuple`` (written with the ``tuple`` tag, read
back as a tuple), ``AttributesFrozenDict`` (read back through ``_decode_frozendict``, as
decoding does), and the exact scalar types: floats of any value (the non-finite ones are
tagged, and come back equal), ints only within ``json``'s digit limit
(``sys.get_int_max_str_digits``), beyond which it can't write them.

A plan is ``None`` for a container holding no container (copied whole; a tuple of scalars is
shared, being immutable), else a tuple of ``(key or index, plan)`` for its containers.

It sits below the codec (:mod:`corelib.persistence._codec`), which uses it for ``copy`` and
decodes the ``frozendict`` tag with its :func:`_decode_frozendict`.
"""

from __future__ import annotations

import sys
from typing import Any, Final, final

import attrs

from ..process._exit_code import ExitCode
from ..process._frozen import AttributesFrozenDict
from ._checkpoint import (
    _SCALARS,
    _STR,
    CHECKPOINT_VERSION,
    TYPE_KEY,
    Checkpoint,
    _shape_ok,
)

__all__: list[str] = []  # internal: the persisters and the codec import what they use


def _decode_frozendict(value: Any) -> AttributesFrozenDict:
    """An :class:`~corelib.AttributesFrozenDict` of the decoded dict ``value``, as the codec
    reads the ``frozendict`` tag."""
    if not isinstance(value, dict):
        raise ValueError(f"expected an object, got {type(value).__name__}")
    if type(value) is dict and dict not in set(map(type, value.values())):
        # ``value`` is a dict json just built, referenced nowhere else, with no plain dict
        # to freeze in it: adopt it instead of copying it item by item (same result).
        frozen = AttributesFrozenDict.__new__(AttributesFrozenDict)
        object.__setattr__(frozen, "_data", value)
        return frozen
    return AttributesFrozenDict(value)


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
    # state_data, inputs, outputs, ctx, meta, instance_state, then each of awaiting
    plans: tuple[_Plan, ...]


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
        instance_state, instance_state_plan = (
            _snap(checkpoint.instance_state) if checkpoint.instance_state else ({}, None)
        )
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
        instance_state=instance_state,
    )
    plans = (state_data_plan, inputs_plan, outputs_plan, ctx_plan, meta_plan, instance_state_plan)
    return _Snapshot(copy, plans + tuple(plan for _, plan in awaiting))


_INT_SET: Final[set[type]] = {int}


def _restore(snapshot: _Snapshot) -> Checkpoint:
    """A fresh checkpoint equal to the snapshot's; it shares nothing mutable with it."""
    checkpoint = snapshot.checkpoint
    state_data, inputs, outputs, ctx, meta, instance_state, *awaiting = snapshot.plans
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
        instance_state=(
            _thaw(checkpoint.instance_state, instance_state) if checkpoint.instance_state else {}
        ),
    )
