"""Broadcast filters: deliver a broadcast only when its subject and sender match.

Differences from kiwipy's ``BroadcastFilter`` (deliberate, documented in the README):

- String patterns match the **whole** value. kiwipy used ``re.match``, which only anchors at
  the start, so ``sender='alice'`` also passed ``'alice.jones'``. Here it does not.
- In string patterns only ``*`` is special (any run of characters, dots included); every other
  character, ``.`` and regex metacharacters included, is literal. A compiled ``re.Pattern`` is
  used as given, with ``fullmatch``.
- A string pattern applied to a non-string value does not match (kiwipy raised ``TypeError``
  inside the subscriber call).

Kept from kiwipy: several filters of one kind are OR-ed, subject and sender are AND-ed, a
``None`` subject or sender passes its half, non-string filter values compare by equality
(aiida filters on integer pks), and a filtered call returns ``None`` without calling.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, final

__all__ = ["BroadcastFilter"]

Matcher = Callable[[Any], bool]


def _compile(value: Any) -> Matcher:
    if isinstance(value, re.Pattern):
        pattern: re.Pattern[str] = value
        return lambda v: isinstance(v, str) and pattern.fullmatch(v) is not None
    if isinstance(value, str):
        if "*" not in value:
            return lambda v: v == value
        regex = re.compile(".*".join(re.escape(part) for part in value.split("*")), re.DOTALL)
        return lambda v: isinstance(v, str) and regex.fullmatch(v) is not None
    return lambda v: bool(v == value)


def _passes(filters: list[Matcher], value: Any) -> bool:
    return value is None or not filters or any(f(value) for f in filters)


@final
class BroadcastFilter:
    """Wrap a broadcast subscriber so it only sees matching broadcasts.

    Args:
        subscriber: called as ``subscriber(comm, body, sender, subject, correlation_id)``.
        subject: a pattern the subject must match (see the module docstring), or ``None``.
        sender: a pattern or value the sender must match, or ``None``.

    The broker evaluates :meth:`matches` in the *sender's* thread, so a subscriber whose
    filter does not match is never woken.
    """

    __slots__ = (
        "_sender_filters",
        "_sender_patterns",
        "_subject_filters",
        "_subject_patterns",
        "_subscriber",
    )

    def __init__(
        self, subscriber: Callable[..., Any], subject: Any = None, sender: Any = None
    ) -> None:
        self._subscriber = subscriber
        self._subject_filters: list[Matcher] = []
        self._sender_filters: list[Matcher] = []
        self._subject_patterns: list[Any] = []
        self._sender_patterns: list[Any] = []
        if subject is not None:
            self.add_subject_filter(subject)
        if sender is not None:
            self.add_sender_filter(sender)

    @property
    def subscriber(self) -> Callable[..., Any]:
        """The wrapped subscriber."""
        return self._subscriber

    @property
    def __name__(self) -> str:
        return "BroadcastFilter"

    def add_subject_filter(self, subject: Any) -> None:
        """Also accept subjects matching ``subject`` (OR with the existing subject filters)."""
        self._subject_filters.append(_compile(subject))
        self._subject_patterns.append(subject)

    def add_sender_filter(self, sender: Any) -> None:
        """Also accept senders matching ``sender`` (OR with the existing sender filters)."""
        self._sender_filters.append(_compile(sender))
        self._sender_patterns.append(sender)

    def matches(self, sender: Any, subject: Any) -> bool:
        """Whether a broadcast with this sender and subject passes the filter."""
        return _passes(self._subject_filters, subject) and _passes(self._sender_filters, sender)

    def literal_senders(self) -> frozenset[Any] | None:
        """The exact sender values this filter accepts, if its sender filters are all exact
        (no ``*``, no regular expression, hashable); else ``None``. Used to index routing."""
        if not self._sender_patterns:
            return None
        values = []
        for pattern in self._sender_patterns:
            if isinstance(pattern, re.Pattern) or (isinstance(pattern, str) and "*" in pattern):
                return None
            try:
                hash(pattern)
            except TypeError:
                return None
            values.append(pattern)
        return frozenset(values)

    def subject_heads(self) -> frozenset[str] | None:
        """The first dotted word of every subject this filter accepts, if each subject filter
        is a string pattern whose first word has no ``*``; else ``None``. Used to index
        routing: ``"state_changed.*.finished"`` has the head ``"state_changed"``."""
        if not self._subject_patterns:
            return None
        heads = []
        for pattern in self._subject_patterns:
            if not isinstance(pattern, str):
                return None
            head = pattern.split(".", 1)[0]
            if "*" in head:
                return None
            heads.append(head)
        return frozenset(heads)

    def is_filtered(self, sender: Any, subject: Any) -> bool:
        """Whether a broadcast with this sender and subject is filtered out (kiwipy's name)."""
        return not self.matches(sender, subject)

    def __call__(
        self,
        communicator: Any,
        body: Any,
        sender: Any = None,
        subject: Any = None,
        correlation_id: Any = None,
    ) -> Any:
        if not self.matches(sender, subject):
            return None
        return self._subscriber(communicator, body, sender, subject, correlation_id)

    def __repr__(self) -> str:
        return f"BroadcastFilter({self._subscriber!r})"
