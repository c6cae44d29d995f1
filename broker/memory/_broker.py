"""The in-memory broker: thread-safe routing, task queues and acknowledgements, with no I/O.

Theory of operation
-------------------
:class:`MemoryBroker` is a plain object guarded by one ``threading.Lock``; it imports no event
loop library. Endpoints (:class:`~broker.LoopCommunicator`) attach to it and receive *items*
through ``endpoint._deliver(item)``, which never blocks and raises ``EndpointGone`` when the
endpoint can no longer take anything. The broker never calls user code and never calls an
endpoint while holding its lock.

Task queues follow AMQP's ack model:

- a task is *pending* (in the queue), *parked* (every current consumer rejected it), *in
  flight* (delivered to one consumer, unacknowledged), *done* or *dead* (dead-lettered);
- each delivery is an :class:`Attempt`; a consumer's prefetch counts its live attempts;
- completing an attempt acks the task and resolves the sender's reply once, whatever happened
  to other attempts in the meantime (at-least-once delivery, exactly one reply);
- when a consumer goes away, its live attempts are requeued at the front, marked redelivered;
  a task delivered ``1 + max_redeliveries`` times and requeued again is dead-lettered and its
  sender gets :class:`~broker.DeadLetteredError`;
- a rejection parks the task away from the consumer that rejected it; parked tasks return to
  the queue when a new consumer subscribes, so a rejecting consumer is never spun on.
"""

from __future__ import annotations

import itertools
import logging
import threading
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Protocol, final

import attrs

from .._codec import Codec, JsonCodec
from .._delivery import DEFAULT_QUEUE, ReplySink, resolve
from .._errors import (
    CodecError,
    DeadLetteredError,
    DuplicateSubscriberError,
    RemoteError,
    UnknownSubscriberError,
    UnroutableError,
)
from .._routing import BroadcastIndex

__all__ = [
    "MemoryBroker",
    "BrokerStatistics",
    "QueueStatistics",
    "ConsumerStatistics",
    "DeadLetter",
]

logger = logging.getLogger("broker")


class EndpointGone(Exception):
    """Internal: the endpoint is closed or its loop has finished."""


class Endpoint(Protocol):
    """What the broker needs of a communicator."""

    def _deliver(self, item: Any) -> None: ...


# -- items delivered to endpoints --------------------------------------------------------------


@final
class RpcCall:
    """An RPC for one subscriber; the endpoint runs it and resolves ``sink``."""

    __slots__ = ("payload", "sink", "subscriber")

    def __init__(self, subscriber: Callable[..., Any], payload: Any, sink: ReplySink) -> None:
        self.subscriber = subscriber
        self.payload = payload
        self.sink = sink


@final
class BroadcastDelivery:
    """A broadcast for the matching subscribers of one endpoint."""

    __slots__ = ("correlation_id", "payload", "sender", "subject", "subscribers")

    def __init__(
        self,
        subscribers: tuple[Callable[..., Any], ...],
        payload: Any,
        sender: Any,
        subject: Any,
        correlation_id: Any,
    ) -> None:
        self.subscribers = subscribers
        self.payload = payload
        self.sender = sender
        self.subject = subject
        self.correlation_id = correlation_id


@final
class Attempt:
    """One delivery of a task to one consumer. The endpoint reports how it ended."""

    __slots__ = ("consumer", "live", "task")

    def __init__(self, task: _Task, consumer: _Consumer) -> None:
        self.task = task
        self.consumer = consumer
        self.live = True  # counts against the consumer's prefetch

    @property
    def payload(self) -> Any:
        return self.task.payload

    @property
    def subscriber(self) -> Callable[..., Any]:
        return self.consumer.subscriber

    @property
    def redelivered(self) -> bool:
        return self.task.deliveries > 1


# -- queue bookkeeping -------------------------------------------------------------------------

_PENDING, _PARKED, _IN_FLIGHT, _DONE, _DEAD = "pending", "parked", "in flight", "done", "dead"


@attrs.define(eq=False)
class _Task:
    queue: _Queue
    payload: Any
    sink: ReplySink | None
    state: str = _PENDING
    deliveries: int = 0
    attempt: Attempt | None = None
    rejected_by: set[int] | None = None  # consumer serials; created on the first reject


@attrs.define(eq=False)
class _Consumer:
    serial: int
    identifier: str
    endpoint: Endpoint
    subscriber: Callable[..., Any]
    queue: _Queue
    prefetch: int
    # a dict as an ordered set: requeued tasks go back in the order they were delivered
    attempts: dict[Attempt, None] = attrs.field(factory=dict)

    def has_room(self) -> bool:
        return self.prefetch == 0 or len(self.attempts) < self.prefetch


@attrs.define(eq=False)
class _Queue:
    name: str
    pending: deque[_Task] = attrs.field(factory=deque)
    parked: list[_Task] = attrs.field(factory=list)
    consumers: list[_Consumer] = attrs.field(factory=list)
    next_consumer: int = 0
    dead: list[DeadLetter] = attrs.field(factory=list)
    redeliveries: int = 0

    def in_flight(self) -> int:
        return sum(len(c.attempts) for c in self.consumers)


@attrs.define(eq=False)
class _EndpointState:
    rpc: set[str] = attrs.field(factory=set)
    tasks: dict[str, _Consumer] = attrs.field(factory=dict)
    broadcast: dict[str, Callable[..., Any]] = attrs.field(factory=dict)


# -- public records ----------------------------------------------------------------------------


@final
@attrs.frozen
class DeadLetter:
    """A task that was given up on, kept for inspection.

    Attributes:
        queue: the queue it was sent to.
        body: the task as the sender sent it (decoded, in strict mode).
        deliveries: how many times it was delivered.
        reason: why it was dead-lettered.
    """

    queue: str
    body: Any
    deliveries: int
    reason: str


@final
@attrs.frozen
class QueueStatistics:
    """The state of one task queue at one instant.

    Attributes:
        name: the queue's name.
        pending: tasks waiting for a consumer.
        parked: tasks every current consumer rejected; they wait for a new consumer.
        in_flight: tasks delivered and not yet acknowledged.
        consumers: task subscribers on the queue.
        dead_letters: tasks given up on (see :meth:`MemoryBroker.dead_letters`).
        redeliveries: how many times a task was put back because its consumer went away.
    """

    name: str
    pending: int
    parked: int
    in_flight: int
    consumers: int
    dead_letters: int
    redeliveries: int


@final
@attrs.frozen
class ConsumerStatistics:
    """One task subscriber: where it consumes and how many tasks it holds unacknowledged."""

    identifier: str
    queue: str
    prefetch: int
    in_flight: int


@final
@attrs.frozen
class BrokerStatistics:
    """A consistent snapshot of a :class:`MemoryBroker`, taken under its lock."""

    communicators: int
    rpc_subscribers: int
    broadcast_subscribers: int
    task_subscribers: int
    queues: Mapping[str, QueueStatistics]
    consumers: tuple[ConsumerStatistics, ...]

    @property
    def pending(self) -> int:
        """Tasks waiting in all queues (parked ones included)."""
        return sum(q.pending + q.parked for q in self.queues.values())

    @property
    def in_flight(self) -> int:
        """Tasks delivered and not yet acknowledged, in all queues."""
        return sum(q.in_flight for q in self.queues.values())

    @property
    def dead_letters(self) -> int:
        return sum(q.dead_letters for q in self.queues.values())


# -- the broker --------------------------------------------------------------------------------


@final
class MemoryBroker:
    """An in-process message broker shared by communicators on any threads and loops.

    Args:
        codec: if given, every message, task, broadcast and reply is encoded when sent and
            decoded for each receiver (strict mode), so tests catch payloads a real broker
            could not carry.
        strict: shorthand for ``codec=JsonCodec()``.
        max_redeliveries: how many times a task may be redelivered after its consumer went
            away before it is dead-lettered.
        default_queue: the queue used when ``queue=None``.

    Open endpoints on it with ``async with LoopCommunicator(broker) as comm``.

    (Why this class is over 400 lines: it is the one place that holds the broker's shared
    state under its lock (RPC routes, broadcast index, task queues, consumers, in-flight and
    dead-lettered tasks) and every operation on that state must take the lock itself; split
    up, each piece would need the lock and the others' state, so the split would only add
    indirection on the delivery path.)
    """

    def __init__(
        self,
        *,
        codec: Codec | None = None,
        strict: bool = False,
        max_redeliveries: int = 10,
        default_queue: str = DEFAULT_QUEUE,
    ) -> None:
        if max_redeliveries < 0:
            raise ValueError(f"max_redeliveries must be >= 0, got {max_redeliveries!r}")
        if codec is None and strict:
            codec = JsonCodec()
        self.codec: Codec | None = codec
        self.max_redeliveries = max_redeliveries
        self.default_queue = default_queue
        self._lock = threading.Lock()
        self._endpoints: dict[Endpoint, _EndpointState] = {}
        self._rpc: dict[str, tuple[Endpoint, Callable[..., Any]]] = {}
        self._broadcast = BroadcastIndex()
        self._queues: dict[str, _Queue] = {}
        self._serials = itertools.count(1)

    def __repr__(self) -> str:
        strict = f", codec={self.codec!r}" if self.codec is not None else ""
        return f"<MemoryBroker endpoints={len(self._endpoints)}{strict}>"

    # -- endpoints ------------------------------------------------------------------------

    def attach(self, endpoint: Endpoint) -> None:
        with self._lock:
            self._endpoints.setdefault(endpoint, _EndpointState())

    def detach(self, endpoint: Endpoint) -> None:
        """Remove everything ``endpoint`` subscribed; requeue the tasks it held."""
        with self._lock:
            state = self._endpoints.pop(endpoint, None)
            if state is None:
                return
            for key in state.rpc:
                self._rpc.pop(key, None)
            for key in state.broadcast:
                self._broadcast.remove((endpoint, key))
            sends, resolutions = [], []
            for consumer in state.tasks.values():
                s, r = self._remove_consumer_locked(consumer)
                sends += s
                resolutions += r
        self._finish(sends, resolutions)

    def _state_locked(self, endpoint: Endpoint) -> _EndpointState:
        state = self._endpoints.get(endpoint)
        if state is None:
            raise EndpointGone
        return state

    # -- RPC ------------------------------------------------------------------------------

    def add_rpc(self, endpoint: Endpoint, subscriber: Callable[..., Any], identifier: Any) -> str:
        key = _new_identifier() if identifier is None else str(identifier)
        with self._lock:
            state = self._state_locked(endpoint)
            if key in self._rpc:
                raise DuplicateSubscriberError(f"rpc subscriber {key!r} already exists")
            self._rpc[key] = (endpoint, subscriber)
            state.rpc.add(key)
        return key

    def remove_rpc(self, endpoint: Endpoint, identifier: Any) -> None:
        key = str(identifier)
        with self._lock:
            state = self._state_locked(endpoint)
            if key not in state.rpc:
                raise UnknownSubscriberError(f"no rpc subscriber {key!r} on this communicator")
            state.rpc.discard(key)
            del self._rpc[key]

    def rpc(self, recipient_id: Any, payload: Any, sink: ReplySink) -> None:
        """Deliver an RPC; raise :class:`UnroutableError` at once for an unknown recipient."""
        key = recipient_id if type(recipient_id) is str else str(recipient_id)
        entry = self._rpc.get(key)  # a dict read is atomic; writers hold the lock
        if entry is None:
            raise UnroutableError(f"unknown rpc recipient {key!r}")
        endpoint, subscriber = entry
        try:
            endpoint._deliver(RpcCall(subscriber, payload, sink))
        except EndpointGone:
            self.detach(endpoint)
            raise UnroutableError(f"rpc recipient {key!r} has closed") from None

    # -- broadcast ------------------------------------------------------------------------

    def add_broadcast(
        self, endpoint: Endpoint, subscriber: Callable[..., Any], identifier: Any
    ) -> str:
        key = _new_identifier() if identifier is None else str(identifier)
        with self._lock:
            state = self._state_locked(endpoint)
            if key in state.broadcast:
                raise DuplicateSubscriberError(f"broadcast subscriber {key!r} already exists")
            state.broadcast[key] = subscriber
            self._broadcast.add((endpoint, key), subscriber)
        return key

    def remove_broadcast(self, endpoint: Endpoint, identifier: Any) -> None:
        key = str(identifier)
        with self._lock:
            state = self._state_locked(endpoint)
            if key not in state.broadcast:
                raise UnknownSubscriberError(
                    f"no broadcast subscriber {key!r} on this communicator"
                )
            del state.broadcast[key]
            self._broadcast.remove((endpoint, key))

    def broadcast(self, payload: Any, sender: Any, subject: Any, correlation_id: Any) -> None:
        """Deliver to every matching broadcast subscriber.

        The routing index narrows the candidates under the lock; filters then run here, in
        the sender's thread, so a subscriber whose filter does not match is never woken.
        """
        with self._lock:
            candidates = self._broadcast.candidates(sender, subject)
        per_endpoint: dict[Endpoint, list[Callable[..., Any]]] = {}
        for route in candidates:
            if route.filter is None or route.filter.matches(sender, subject):
                targets = per_endpoint.get(route.endpoint)
                if targets is None:
                    per_endpoint[route.endpoint] = [route.target]
                else:
                    targets.append(route.target)
        gone = []
        for endpoint, targets in per_endpoint.items():
            try:
                endpoint._deliver(
                    BroadcastDelivery(tuple(targets), payload, sender, subject, correlation_id)
                )
            except EndpointGone:
                gone.append(endpoint)
        for endpoint in gone:
            self.detach(endpoint)

    # -- task queues ----------------------------------------------------------------------

    def _queue_locked(self, name: str | None) -> _Queue:
        name = self.default_queue if name is None else name
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = _Queue(name)
        return queue

    def add_consumer(
        self,
        endpoint: Endpoint,
        subscriber: Callable[..., Any],
        identifier: Any,
        queue: str | None,
        prefetch: int,
    ) -> str:
        if not isinstance(prefetch, int) or prefetch < 0:
            raise ValueError(f"prefetch must be an int >= 0, got {prefetch!r}")
        key = _new_identifier() if identifier is None else str(identifier)
        with self._lock:
            state = self._state_locked(endpoint)
            if key in state.tasks:
                raise DuplicateSubscriberError(f"task subscriber {key!r} already exists")
            q = self._queue_locked(queue)
            consumer = _Consumer(next(self._serials), key, endpoint, subscriber, q, prefetch)
            state.tasks[key] = consumer
            q.consumers.append(consumer)
            if q.parked:  # a newcomer may accept what everyone else rejected
                for task in q.parked:
                    task.state = _PENDING
                q.pending.extendleft(reversed(q.parked))
                q.parked.clear()
            sends = self._dispatch_locked(q)
        self._finish(sends, [])
        return key

    def set_prefetch(self, endpoint: Endpoint, identifier: Any, prefetch: int) -> None:
        """Change how many live attempts consumer ``identifier`` may hold (0 = no limit).

        Raising it dispatches at once; lowering it never takes back what the consumer holds,
        it only delays the next delivery until its live attempts are below the new limit.
        """
        if not isinstance(prefetch, int) or isinstance(prefetch, bool) or prefetch < 0:
            raise ValueError(f"prefetch must be an int >= 0, got {prefetch!r}")
        key = str(identifier)
        with self._lock:
            consumer = self._state_locked(endpoint).tasks.get(key)
            if consumer is None:
                raise UnknownSubscriberError(f"no task subscriber {key!r} on this communicator")
            consumer.prefetch = prefetch
            q = consumer.queue
            sends = self._dispatch_locked(q) if q.pending else []
        self._finish(sends, [])

    def remove_consumer(self, endpoint: Endpoint, identifier: Any) -> None:
        key = str(identifier)
        with self._lock:
            state = self._state_locked(endpoint)
            consumer = state.tasks.pop(key, None)
            if consumer is None:
                raise UnknownSubscriberError(f"no task subscriber {key!r} on this communicator")
            sends, resolutions = self._remove_consumer_locked(consumer)
        self._finish(sends, resolutions)

    def _remove_consumer_locked(
        self, consumer: _Consumer
    ) -> tuple[list[tuple[Endpoint, Attempt]], list[tuple[ReplySink | None, bool, Any]]]:
        q = consumer.queue
        q.consumers.remove(consumer)
        resolutions: list[tuple[ReplySink | None, bool, Any]] = []
        requeue = []
        for attempt in consumer.attempts:
            attempt.live = False
            task = attempt.task
            if task.attempt is not attempt:
                continue
            task.attempt = None
            if task.deliveries > self.max_redeliveries:
                task.state = _DEAD
                reason = (
                    f"delivered {task.deliveries} times; its consumers went away each time "
                    f"(max_redeliveries={self.max_redeliveries})"
                )
                try:
                    body = self._decode(task.payload)
                except CodecError:  # kept as it was sent: it still must not be lost
                    body = task.payload
                q.dead.append(DeadLetter(q.name, body, task.deliveries, reason))
                logger.warning("task dead-lettered in queue %r: %s", q.name, reason)
                error = DeadLetteredError(f"task in queue {q.name!r} {reason}")
                resolutions.append((task.sink, False, error))
            else:
                task.state = _PENDING
                requeue.append(task)
                q.redeliveries += 1
        consumer.attempts.clear()
        q.pending.extendleft(reversed(requeue))
        return self._dispatch_locked(q), resolutions

    def send_task(self, payload: Any, sink: ReplySink | None, queue: str | None) -> None:
        """Queue a task; it waits until a consumer takes it."""
        with self._lock:
            q = self._queue_locked(queue)
            q.pending.append(_Task(q, payload, sink))
            sends = self._dispatch_locked(q) if q.consumers else []
        self._finish(sends, [])

    def _dispatch_locked(self, q: _Queue) -> list[tuple[Endpoint, Attempt]]:
        sends: list[tuple[Endpoint, Attempt]] = []
        consumers = q.consumers
        pending = q.pending
        while pending and consumers:
            task = pending[0]
            rejected = task.rejected_by
            n = len(consumers)
            chosen = None
            acceptable = False
            start = q.next_consumer % n
            for i in range(n):
                c = consumers[(start + i) % n]
                if rejected is not None and c.serial in rejected:
                    continue
                acceptable = True
                if c.has_room():
                    chosen = c
                    q.next_consumer = (start + i + 1) % n
                    break
            if chosen is None:
                if acceptable:
                    break  # everyone who might take it is full: wait for an ack
                pending.popleft()
                task.state = _PARKED
                q.parked.append(task)
                continue
            pending.popleft()
            attempt = Attempt(task, chosen)
            task.state = _IN_FLIGHT
            task.attempt = attempt
            task.deliveries += 1
            chosen.attempts[attempt] = None
            sends.append((chosen.endpoint, attempt))
        return sends

    def _finish(
        self,
        sends: list[tuple[Endpoint, Attempt]],
        resolutions: list[tuple[ReplySink | None, bool, Any]],
    ) -> None:
        """Outside the lock: hand attempts to endpoints and resolve replies."""
        if not sends and not resolutions:
            return
        for sink, ok, value in resolutions:
            resolve(sink, ok, value)
        for endpoint, attempt in sends:
            try:
                endpoint._deliver(attempt)
            except EndpointGone:
                self.detach(endpoint)  # requeues the attempt and redispatches

    def complete(self, attempt: Attempt, ok: bool, value: Any) -> None:
        """The consumer finished ``attempt``: ack the task and reply, unless already done.

        ``value`` is the reply (already round-tripped through the codec) or, when ``ok`` is
        false, an :class:`ErrorInfo`.
        """
        with self._lock:
            task = attempt.task
            q = task.queue
            if attempt.live:
                attempt.live = False
                attempt.consumer.attempts.pop(attempt, None)
            if task.state in (_DONE, _DEAD):
                sends = self._dispatch_locked(q) if q.pending else []
                sink = None
            else:
                if task.state == _PENDING:
                    q.pending.remove(task)
                elif task.state == _PARKED:
                    q.parked.remove(task)
                # else in flight: if on another attempt (this one went stale when its consumer
                # went away), that attempt keeps its prefetch slot until it ends, and its
                # result is ignored.
                task.state = _DONE
                task.attempt = None
                sink = task.sink
                sends = self._dispatch_locked(q) if q.pending else []
        if sink is not None:
            resolve(sink, True, value) if ok else resolve(sink, False, RemoteError(value))
        self._finish(sends, [])

    def reject(self, attempt: Attempt) -> None:
        """The consumer raised :class:`TaskRejected`: offer the task to someone else."""
        with self._lock:
            task = attempt.task
            q = task.queue
            if attempt.live:
                attempt.live = False
                attempt.consumer.attempts.pop(attempt, None)
            if task.attempt is attempt:
                task.attempt = None
                if task.rejected_by is None:
                    task.rejected_by = set()
                task.rejected_by.add(attempt.consumer.serial)
                task.deliveries -= 1  # a refusal is not a delivery that failed
                task.state = _PENDING
                q.pending.appendleft(task)
            sends = self._dispatch_locked(q)
        self._finish(sends, [])

    # -- codec ----------------------------------------------------------------------------

    # Whatever a codec raises becomes a CodecError here (JsonCodec raises nothing else; a
    # codec of the user's might), so the endpoints see one typed error per boundary.

    def encode(self, value: Any, what: str) -> Any:
        """``value`` as the codec sends it (itself, without a codec); raises CodecError."""
        codec = self.codec
        if codec is None:
            return value
        try:
            return codec.encode(value, what=what)
        except CodecError:
            raise
        except Exception as exc:
            raise _codec_failed("encode", what, exc) from exc

    def _decode(self, payload: Any) -> Any:
        codec = self.codec
        if codec is None:
            return payload
        try:
            return codec.decode(payload)
        except CodecError:
            raise
        except Exception as exc:
            raise _codec_failed("decode", "payload", exc) from exc

    def round_trip(self, value: Any, what: str) -> Any:
        """What a receiver gets for ``value``; raises CodecError."""
        if self.codec is None:
            return value
        return self._decode(self.encode(value, what))

    # -- introspection --------------------------------------------------------------------

    def dead_letters(self, queue: str | None = None) -> tuple[DeadLetter, ...]:
        """The dead-lettered tasks of ``queue`` (all queues when ``None``), oldest first."""
        with self._lock:
            if queue is not None:
                q = self._queues.get(queue)
                return tuple(q.dead) if q else ()
            return tuple(d for q in self._queues.values() for d in q.dead)

    def statistics(self) -> BrokerStatistics:
        """A consistent snapshot of subscriptions, queue depths and in-flight tasks."""
        with self._lock:
            queues = {
                name: QueueStatistics(
                    name=name,
                    pending=len(q.pending),
                    parked=len(q.parked),
                    in_flight=q.in_flight(),
                    consumers=len(q.consumers),
                    dead_letters=len(q.dead),
                    redeliveries=q.redeliveries,
                )
                for name, q in self._queues.items()
            }
            consumers = tuple(
                ConsumerStatistics(c.identifier, q.name, c.prefetch, len(c.attempts))
                for q in self._queues.values()
                for c in q.consumers
            )
            return BrokerStatistics(
                communicators=len(self._endpoints),
                rpc_subscribers=len(self._rpc),
                broadcast_subscribers=sum(len(s.broadcast) for s in self._endpoints.values()),
                task_subscribers=len(consumers),
                queues=MappingProxyType(queues),
                consumers=consumers,
            )


def _codec_failed(action: str, what: str, exc: Exception) -> CodecError:
    return CodecError(f"can't {action} {what}: the codec raised {type(exc).__name__}: {exc}")


def _new_identifier() -> str:
    return uuid.uuid4().hex
