"""The outline walker is pure: test it exhaustively against a reference interpreter."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corelib import ExitCode
from corelib.workchain._outline import (
    DONE,
    Block,
    Evaluate,
    If,
    InvalidCursorError,
    OutlineError,
    Return,
    Returned,
    RunStep,
    Step,
    While,
    advance,
    condition_names,
    describe,
    if_,
    locate,
    return_,
    start,
    step_names,
    to_node,
    while_,
)


def outline(*items: Any) -> Block:
    return Block(tuple(to_node(i) for i in items))


def walk(o: Block, answers: dict[str, list[bool]]) -> list[Any]:
    """Run the cursor walker; conditions take their answers from ``answers`` in order."""
    trace: list[Any] = []
    cursor = start(o)
    for _ in range(1000):
        instruction = locate(o, cursor)
        if instruction is DONE or isinstance(instruction, Returned):
            trace.append(instruction)
            return trace
        if isinstance(instruction, Evaluate):
            answer = answers[instruction.name].pop(0)
            trace.append((instruction.name, answer))
            cursor = advance(o, cursor, answer)
        else:
            assert isinstance(instruction, RunStep)
            trace.append(instruction.name)
            cursor = advance(o, cursor)
    raise AssertionError("outline did not end")


def reference(node: Any, answers: dict[str, list[bool]]) -> Iterator[Any]:
    """A straightforward recursive interpreter of the same semantics."""
    match node:
        case Step(name=name):
            yield name
        case Return(exit_code=code):
            yield Returned(code)
        case Block(children=children):
            for child in children:
                for item in reference(child, answers):
                    yield item
                    if isinstance(item, Returned):
                        return
        case If(branches=branches, orelse=orelse):
            for name, block in branches:
                answer = answers[name].pop(0)
                yield (name, answer)
                if answer:
                    yield from reference(block, answers)
                    return
            if orelse is not None:
                yield from reference(orelse, answers)
        case While(condition=condition, body=body):
            while True:
                answer = answers[condition].pop(0)
                yield (condition, answer)
                if not answer:
                    return
                for item in reference(body, answers):
                    yield item
                    if isinstance(item, Returned):
                        return


def run_reference(o: Block, answers: dict[str, list[bool]]) -> list[Any]:
    trace = list(reference(o, answers))
    if not trace or not isinstance(trace[-1], Returned):
        trace.append(DONE)
    return trace


# -- hand-written cases ------------------------------------------------------------------------


def test_sequence() -> None:
    assert walk(outline("a", "b", "c"), {}) == ["a", "b", "c", DONE]


def test_empty_outline_is_done_at_once() -> None:
    o = outline()
    assert start(o) == (0,)
    assert locate(o, start(o)) is DONE


@pytest.mark.parametrize(
    ("c1", "c2", "expected"),
    [
        (True, None, [("c1", True), "a", "b", "end"]),
        (False, True, [("c1", False), ("c2", True), "x", "end"]),
        (False, False, [("c1", False), ("c2", False), "e", "end"]),
    ],
)
def test_if_elif_else(c1: bool, c2: bool | None, expected: list[Any]) -> None:
    o = outline(if_("c1")("a", "b").elif_("c2")("x").else_("e"), "end")
    answers = {"c1": [c1], "c2": [] if c2 is None else [c2]}
    assert walk(o, answers) == [*expected, DONE]


def test_if_without_else_and_no_branch_taken() -> None:
    o = outline(if_("c")("a"), "b")
    assert walk(o, {"c": [False]}) == [("c", False), "b", DONE]


def test_while_loop() -> None:
    o = outline("init", while_("more")("work", "check"), "done")
    trace = walk(o, {"more": [True, True, False]})
    assert trace == [
        "init",
        ("more", True),
        "work",
        "check",
        ("more", True),
        "work",
        "check",
        ("more", False),
        "done",
        DONE,
    ]


def test_return_with_and_without_exit_code() -> None:
    assert walk(outline("a", return_, "never"), {}) == ["a", Returned(None)]
    code = ExitCode(400, "too big", "ERROR_TOO_BIG")
    o = outline(while_("w")(if_("c")(return_(code)), "step"))
    assert walk(o, {"w": [True, True], "c": [False, True]}) == [
        ("w", True),
        ("c", False),
        "step",
        ("w", True),
        ("c", True),
        Returned(code),
    ]
    assert return_(3) == Return(ExitCode(3))
    with pytest.raises(OutlineError, match=r"^return_ takes an ExitCode or an int, got 'x'$"):
        return_("x")  # type: ignore[arg-type]


def test_nested_plain_blocks_and_empty_bodies() -> None:
    o = outline(("a", ("b",)), while_("w")(), if_("c")(), "z")
    assert walk(o, {"w": [True, False], "c": [True]}) == [
        "a",
        "b",
        ("w", True),
        ("w", False),
        ("c", True),
        "z",
        DONE,
    ]


def test_cursor_is_plain_data_and_resumable() -> None:
    o = outline("s", while_("w")(if_("c")("a").else_("b")))
    cursor = start(o)
    cursor = advance(o, cursor)  # after s
    cursor = advance(o, cursor, True)  # w
    cursor = advance(o, cursor, False)  # c -> else
    assert locate(o, cursor) == RunStep("b")
    assert isinstance(cursor, tuple)
    assert all(type(i) is int for i in cursor)
    # a cursor saved as a list (JSON) and restored gives the same position
    restored = tuple(json.loads(json.dumps(cursor)))
    assert locate(o, restored) == RunStep("b")
    assert describe(o, restored).endswith("else_ > [0] > RunStep(name='b')")


def test_names() -> None:
    o = outline("s", while_("w")(if_("c")("a").elif_("d")("x")), return_)
    assert step_names(o) == {"s", "a", "x"}
    assert condition_names(o) == {"w", "c", "d"}


# -- malformed outlines and cursors ------------------------------------------------------------


def test_malformed_outline_items() -> None:
    with pytest.raises(OutlineError, match=r"^outline step must be a method"):
        to_node(5)
    with pytest.raises(OutlineError, match=r"^outline step 'not a name' is not a method name$"):
        to_node("not a name")
    with pytest.raises(OutlineError, match=r"^condition must be a method"):
        if_(lambda self: True)
    with pytest.raises(OutlineError, match=r"^elif_ can't follow else_$"):
        if_("c")("a").else_("b").elif_("d")
    with pytest.raises(OutlineError, match=r"^if_ already has an else_ branch$"):
        if_("c")("a").else_("b").else_("e")


def test_methods_become_steps() -> None:
    class Chain:
        def step(self) -> None:
            pass

        def cond(self) -> bool:
            return True

    assert to_node(Chain.step) == Step("step")
    assert while_(Chain.cond)(Chain.step) == While("cond", Block((Step("step"),)))


@pytest.mark.parametrize(
    "cursor",
    [(), (5,), (-1,), (0, 0), (1, 3), (1, 0, 7), (2, 0, 0, 0)],
)
def test_invalid_cursors_are_refused(cursor: tuple[int, ...]) -> None:
    o = outline("a", if_("c")("b"), while_("w")("x"))
    with pytest.raises((InvalidCursorError, IndexError)):
        locate(o, cursor)


def test_advance_checks_answers() -> None:
    o = outline(if_("c")("b"))
    with pytest.raises(ValueError, match=r"^condition 'c' needs an answer$"):
        advance(o, start(o))
    o2 = outline("a")
    with pytest.raises(ValueError, match=r"^step 'a' takes no answer$"):
        advance(o2, start(o2), True)
    with pytest.raises(InvalidCursorError, match=r"can't advance past DONE"):
        advance(o2, (1,))


# -- property: the walker agrees with the reference interpreter --------------------------------

names = st.sampled_from(["s1", "s2", "s3"])
conds = st.sampled_from(["c1", "c2", "c3"])

nodes = st.recursive(
    st.one_of(names.map(Step), st.just(Return()), st.just(Return(ExitCode(7)))),
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(lambda c: Block(tuple(c))),
        st.tuples(
            st.lists(st.tuples(conds, st.lists(children, max_size=3)), min_size=1, max_size=3),
            st.one_of(st.none(), st.lists(children, max_size=3)),
        ).map(
            lambda t: If(
                tuple((c, Block(tuple(b))) for c, b in t[0]),
                None if t[1] is None else Block(tuple(t[1])),
            )
        ),
        st.tuples(conds, st.lists(children, max_size=3)).map(
            lambda t: While(t[0], Block(tuple(t[1])))
        ),
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    tree=st.lists(nodes, max_size=4),
    answers=st.fixed_dictionaries(
        {c: st.lists(st.booleans(), min_size=60, max_size=60) for c in ("c1", "c2", "c3")}
    ),
)
def test_walker_matches_reference_interpreter(
    tree: list[Any], answers: dict[str, list[bool]]
) -> None:
    o = Block(tuple(tree))
    # every while loop ends: after 60 answers we force False
    padded = {k: [*v, *([False] * 2000)] for k, v in answers.items()}
    ref = run_reference(o, {k: list(v) for k, v in padded.items()})
    assert walk(o, {k: list(v) for k, v in padded.items()}) == ref
