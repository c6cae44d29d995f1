"""The broadcast routing index never changes who receives what; it only skips work."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from broker import BroadcastFilter
from broker._routing import BroadcastIndex


def sub(*_args: Any) -> None:
    return None


senders = st.one_of(
    st.none(), st.sampled_from(["alice", "bob", "alice.jones", "x"]), st.integers(0, 3)
)
subjects = st.one_of(
    st.none(),
    st.sampled_from(
        ["pause", "play", "kill", "state_changed.running.waiting", "state_changed.x.finished"]
    ),
    st.integers(0, 2),
)
sender_patterns = st.one_of(
    st.sampled_from(["alice", "bob", "*.jones", "a*", "x"]),
    st.integers(0, 3),
    st.just(re.compile(r"b.b")),
)
subject_patterns = st.one_of(
    st.sampled_from(
        ["pause", "play", "kill", "state_changed.*", "state_changed.*.finished", "*", "p*"]
    ),
    st.just(re.compile(r"state_changed\..*")),
    st.integers(0, 2),
)


@st.composite
def filters(draw: st.DrawFn) -> Any:
    if draw(st.booleans()) and draw(st.booleans()):
        return sub  # unfiltered
    flt = BroadcastFilter(sub)
    for pattern in draw(st.lists(sender_patterns, max_size=2)):
        flt.add_sender_filter(pattern)
    for pattern in draw(st.lists(subject_patterns, max_size=2)):
        flt.add_subject_filter(pattern)
    return flt


def naive(subscribers: dict[Any, Any], sender: Any, subject: Any) -> set[Any]:
    return {
        key
        for key, s in subscribers.items()
        if not isinstance(s, BroadcastFilter) or s.matches(sender, subject)
    }


@settings(max_examples=300, deadline=None)
@given(
    subs=st.lists(filters(), max_size=12),
    removals=st.lists(st.integers(0, 11), max_size=4),
    broadcasts=st.lists(st.tuples(senders, subjects), min_size=1, max_size=6),
)
def test_index_routes_exactly_like_trying_every_filter(
    subs: list[Any], removals: list[int], broadcasts: list[tuple[Any, Any]]
) -> None:
    index = BroadcastIndex()
    live: dict[Any, Any] = {}
    for i, s in enumerate(subs):
        key = ("endpoint", str(i))
        index.add(key, s)
        live[key] = s
    for i in removals:
        key = ("endpoint", str(i))
        if key in live:
            index.remove(key)
            del live[key]
    assert len(index) == len(live)
    for sender, subject in broadcasts:
        routes = index.candidates(sender, subject)
        assert [r.seq for r in routes] == sorted(r.seq for r in routes)  # subscription order
        assert len({id(r) for r in routes}) == len(routes)  # no duplicates
        matched = {
            key
            for key, (route, _, _) in index._routes.items()
            if route in routes and route.matches(sender, subject)
        }
        assert matched == naive(live, sender, subject)


def test_a_broadcast_looks_only_at_its_bucket() -> None:
    index = BroadcastIndex()
    for pid in range(10_000):
        # what each process holds: control by subject, a parent watching one child by sender
        control = BroadcastFilter(sub, subject="pause")
        control.add_subject_filter("play")
        control.add_subject_filter("kill")
        index.add(("worker", f"control-{pid}"), control)
        index.add(
            ("worker", f"watch-{pid}"),
            BroadcastFilter(sub, sender=pid, subject="state_changed.*.finished"),
        )
    # a state change of one process is looked up in its sender bucket only
    assert len(index.candidates(42, "state_changed.running.finished")) == 1
    assert len(index.candidates(42, "state_changed.running.waiting")) == 1  # then filtered
    # a pause_all (sender None) reaches all 10,000 control subscriptions: they all match
    pause_all = index.candidates(None, "pause")
    assert sum(1 for r in pause_all if r.matches(None, "pause")) == 10_000
    assert index.candidates("nobody", "unrelated") == []
