"""Broadcast routing: find the subscribers a broadcast may match without trying them all.

Theory of operation
-------------------
With thousands of processes each holding a filtered broadcast subscription, trying every
filter on every broadcast makes a broadcast cost in proportion to the number of processes. The
index keeps each subscription in one bucket, chosen from its filter:

- by **sender**, when its sender filters are exact values (a pid): a broadcast from sender
  ``s`` only looks in bucket ``s``;
- else by **subject head** (the first dotted word), when every subject filter starts with a
  literal word (``"pause"``, ``"state_changed.*.finished"``): a broadcast about
  ``"state_changed.running.waiting"`` only looks in bucket ``"state_changed"``;
- else in the **always** list (no filter, or one the index can't reason about).

A ``None`` sender or subject passes every filter of that kind (kiwipy's rule), so such a
broadcast looks in every bucket of that kind. The candidates are then checked with the filter
itself, so the index only ever saves work: it never changes who receives what. This module is
sans-IO and not thread-safe on its own; the broker calls it under its lock.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, final

from ._filters import BroadcastFilter

__all__ = ["BroadcastIndex", "Route"]


@final
class Route:
    """One broadcast subscription: where it lives and what to call."""

    __slots__ = ("endpoint", "filter", "seq", "target")

    def __init__(self, endpoint: Any, subscriber: Callable[..., Any], seq: int) -> None:
        self.endpoint = endpoint
        self.seq = seq
        if isinstance(subscriber, BroadcastFilter):
            self.filter: BroadcastFilter | None = subscriber
            self.target: Callable[..., Any] = subscriber.subscriber
        else:
            self.filter = None
            self.target = subscriber

    def matches(self, sender: Any, subject: Any) -> bool:
        return self.filter is None or self.filter.matches(sender, subject)


Key = tuple[Any, str]  # (endpoint, identifier)


@final
class BroadcastIndex:
    """Broadcast subscriptions, bucketed by sender or subject head (see the module doc)."""

    __slots__ = ("_always", "_by_head", "_by_sender", "_routes", "_seq")

    def __init__(self) -> None:
        self._routes: dict[Key, tuple[Route, str, frozenset[Any]]] = {}
        self._by_sender: dict[Any, dict[Key, Route]] = {}
        self._by_head: dict[str, dict[Key, Route]] = {}
        self._always: dict[Key, Route] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._routes)

    def add(self, key: Key, subscriber: Callable[..., Any]) -> None:
        route = Route(key[0], subscriber, next(self._seq))
        flt = route.filter
        senders = flt.literal_senders() if flt is not None else None
        if senders is not None:
            for sender in senders:
                self._by_sender.setdefault(sender, {})[key] = route
            self._routes[key] = (route, "sender", senders)
            return
        heads = flt.subject_heads() if flt is not None else None
        if heads is not None:
            for head in heads:
                self._by_head.setdefault(head, {})[key] = route
            self._routes[key] = (route, "head", heads)
            return
        self._always[key] = route
        self._routes[key] = (route, "always", frozenset())

    def remove(self, key: Key) -> None:
        _, kind, values = self._routes.pop(key)
        if kind == "always":
            del self._always[key]
            return
        buckets = self._by_sender if kind == "sender" else self._by_head
        for value in values:
            bucket = buckets[value]
            del bucket[key]
            if not bucket:
                del buckets[value]

    def candidates(self, sender: Any, subject: Any) -> list[Route]:
        """Every route that may match, in subscription order (check each with ``matches``)."""
        sources: list[dict[Key, Route]] = []
        if self._always:
            sources.append(self._always)
        if self._by_sender:
            bucket = None
            if sender is not None:
                try:
                    bucket = self._by_sender.get(sender)
                except TypeError:  # unhashable sender: it may still equal a literal
                    sender = None
            if sender is None:
                sources.extend(self._by_sender.values())
            elif bucket:
                sources.append(bucket)
        if self._by_head:
            if subject is None:
                sources.extend(self._by_head.values())
            elif isinstance(subject, str):
                bucket = self._by_head.get(subject.split(".", 1)[0])
                if bucket:
                    sources.append(bucket)
        if not sources:
            return []
        if len(sources) == 1:
            return list(sources[0].values())
        # one route can sit in several buckets (several senders or heads): dedupe, reorder
        unique = {id(r): r for source in sources for r in source.values()}
        return sorted(unique.values(), key=_seq)


def _seq(route: Route) -> int:
    return route.seq
