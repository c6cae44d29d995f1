"""WorkChain outlines: an immutable tree of instructions and a plain-data cursor into it.

Theory of operation
-------------------
An outline is a tree of frozen nodes: :class:`Step` (run a method), :class:`Block` (a
sequence), :class:`If` (branches guarded by conditions, optional else), :class:`While` (a
guarded loop) and :class:`Return` (end the WorkChain, optionally with an exit code). Steps and
conditions are referenced by method *name*, so the outline never holds live objects and a
position in it can be saved.

A position is a :data:`Cursor`: a tuple of ints, the path from the root block to the next
instruction to carry out. Each kind of node consumes path elements as follows:

- a :class:`Block` consumes one element, the index of a child;
- an :class:`If` consumes one element, the branch number ``b`` (``len(branches)`` is the else
  branch), then the index inside that branch's block. A path that *ends* at ``b`` means
  "condition ``b`` is to be evaluated next";
- a :class:`While` consumes one element, the index inside its body. A path that ends at the
  ``While`` means "its condition is to be evaluated next".

Two pure functions move through the tree, so the driver (``WorkChain``) only runs what they
name and the whole walk is unit-testable without an event loop:

- :func:`locate` says what the cursor points at: :class:`RunStep`, :class:`Evaluate` (a
  condition), :class:`Returned` or :data:`DONE`;
- :func:`advance` gives the cursor after that instruction was carried out (for a condition,
  given its truth value).

Every cursor :func:`start` and :func:`advance` return is *normalized*: it points at an
instruction, never past the end of a block.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, TypeAlias, final

import attrs

from ..process._exit_code import ExitCode

__all__ = [
    "Step",
    "Block",
    "If",
    "While",
    "Return",
    "Node",
    "Cursor",
    "RunStep",
    "Evaluate",
    "Returned",
    "DONE",
    "Instruction",
    "InvalidCursorError",
    "OutlineError",
    "if_",
    "while_",
    "return_",
    "to_node",
    "start",
    "locate",
    "advance",
    "describe",
    "step_names",
    "condition_names",
    "CompiledOutline",
]

Cursor: TypeAlias = tuple[int, ...]


class OutlineError(TypeError):
    """Raised when an outline is malformed (a step that is not a method name, a bad node)."""


class InvalidCursorError(ValueError):
    """Raised when a cursor does not point into the outline (e.g. a checkpoint of an older
    version of the WorkChain whose outline has changed since)."""


def _name_of(item: Any, what: str) -> str:
    if isinstance(item, str):
        if not item.isidentifier():
            raise OutlineError(f"{what} {item!r} is not a method name")
        return item
    name = getattr(item, "__name__", None)
    if callable(item) and isinstance(name, str) and name.isidentifier() and name != "<lambda>":
        return name
    raise OutlineError(f"{what} must be a method of the WorkChain or its name, got {item!r}")


# -- nodes -------------------------------------------------------------------------------------


@final
@attrs.frozen
class Step:
    """Run the WorkChain method ``name`` (it takes no argument but ``self``)."""

    name: str


@final
@attrs.frozen
class Block:
    """Carry out ``children`` in order."""

    children: tuple[Node, ...] = ()


@final
@attrs.frozen
class Return:
    """End the WorkChain, with ``exit_code`` (``None`` means plain success)."""

    exit_code: ExitCode | None = None

    def __call__(self, exit_code: ExitCode | int | None = None) -> Return:
        """``return_(code)``: a Return node with that exit code."""
        if exit_code is None or isinstance(exit_code, ExitCode):
            return Return(exit_code)
        if isinstance(exit_code, int) and not isinstance(exit_code, bool):
            return Return(ExitCode(exit_code))
        raise OutlineError(f"return_ takes an ExitCode or an int, got {exit_code!r}")


@final
@attrs.frozen
class If:
    """Run the block of the first branch whose condition holds, else ``orelse`` (if any).

    Build it with ``if_(cond)(...).elif_(cond)(...).else_(...)``.
    """

    branches: tuple[tuple[str, Block], ...]
    orelse: Block | None = None

    def elif_(self, condition: Any) -> Callable[..., If]:
        """Add a branch: ``.elif_(cond)(*instructions)``."""
        if self.orelse is not None:
            raise OutlineError("elif_ can't follow else_")
        name = _name_of(condition, "condition")

        def body(*instructions: Any) -> If:
            return If((*self.branches, (name, _block(instructions))), None)

        return body

    def else_(self, *instructions: Any) -> If:
        """Add the else branch: ``.else_(*instructions)``."""
        if self.orelse is not None:
            raise OutlineError("if_ already has an else_ branch")
        return If(self.branches, _block(instructions))

    def branch(self, b: int) -> Block:
        """The block of branch ``b`` (``len(branches)`` is the else branch)."""
        if b < len(self.branches):
            return self.branches[b][1]
        if b == len(self.branches) and self.orelse is not None:
            return self.orelse
        raise IndexError(b)


@final
@attrs.frozen
class While:
    """Carry out ``body`` again and again while ``condition`` holds."""

    condition: str
    body: Block


Node: TypeAlias = Step | Block | If | While | Return


def to_node(item: Any) -> Node:
    """Turn what a user writes in ``spec.outline(...)`` into a node.

    Methods (``cls.step``) and method names become :class:`Step`; nodes pass through; tuples
    and lists become blocks.
    """
    if isinstance(item, Step | Block | If | While | Return):
        return item
    if isinstance(item, tuple | list):
        return _block(item)
    return Step(_name_of(item, "outline step"))


def _block(items: Sequence[Any]) -> Block:
    return Block(tuple(to_node(i) for i in items))


def if_(condition: Any) -> Callable[..., If]:
    """``if_(cond)(*instructions)``: run the instructions when ``cond()`` is true."""
    name = _name_of(condition, "condition")

    def body(*instructions: Any) -> If:
        return If(((name, _block(instructions)),))

    return body


def while_(condition: Any) -> Callable[..., While]:
    """``while_(cond)(*instructions)``: repeat the instructions while ``cond()`` is true."""
    name = _name_of(condition, "condition")

    def body(*instructions: Any) -> While:
        return While(name, _block(instructions))

    return body


#: ``return_`` ends the WorkChain successfully; ``return_(code)`` with that exit code.
return_: Final = Return()


# -- instructions ------------------------------------------------------------------------------


@final
@attrs.frozen
class RunStep:
    """The cursor points at a step: run the method ``name``."""

    name: str


@final
@attrs.frozen
class Evaluate:
    """The cursor points at a condition: evaluate the method ``name``."""

    name: str


@final
@attrs.frozen
class Returned:
    """The cursor points at a ``return_``: end with ``exit_code``."""

    exit_code: ExitCode | None


@final
class _Done:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DONE"


#: The cursor is past the end of the outline: the WorkChain is done.
DONE: Final = _Done()

Instruction: TypeAlias = RunStep | Evaluate | Returned | _Done


# -- walking -----------------------------------------------------------------------------------


def _bad(cursor: Cursor, why: str) -> InvalidCursorError:
    return InvalidCursorError(f"cursor {list(cursor)} does not fit the outline: {why}")


def _frames(outline: Block, cursor: Cursor) -> list[tuple[Node, int]]:
    """The (container, element) pairs the cursor walks through, root first."""
    if not cursor:
        raise _bad(cursor, "the path is empty")
    frames: list[tuple[Node, int]] = []
    node: Node = outline
    i = 0
    n = len(cursor)
    while i < n:
        element = cursor[i]
        if element < 0:
            raise _bad(cursor, f"negative index {element}")
        frames.append((node, element))
        i += 1
        if isinstance(node, Block):
            if element > len(node.children):
                raise _bad(cursor, f"index {element} past a block of {len(node.children)}")
            if i == n:
                break
            if element == len(node.children):
                raise _bad(cursor, "path continues past the end of a block")
            node = node.children[element]
        elif isinstance(node, If):
            if element > len(node.branches) or (
                element == len(node.branches) and node.orelse is None
            ):
                raise _bad(cursor, f"if_ has no branch {element}")
            if i == n:
                break  # condition `element` is next
            node = node.branch(element)
        elif isinstance(node, While):
            if element > len(node.body.children):
                raise _bad(cursor, f"index {element} past a while_ body")
            if i == n:
                break
            if element == len(node.body.children):
                raise _bad(cursor, "path continues past the end of a while_ body")
            node = node.body.children[element]
        else:
            raise _bad(cursor, f"{type(node).__name__} has no positions inside it")
    return frames


def _target(frames: list[tuple[Node, int]]) -> tuple[Node, int]:
    return frames[-1]


def _normalize(outline: Block, cursor: Cursor) -> Cursor:
    """Move a cursor that points past the end of a block up to what comes next."""
    while True:
        frames = _frames(outline, cursor)
        container, element = frames[-1]
        if isinstance(container, Block) and element == len(container.children):
            if len(cursor) == 1:
                return cursor  # past the end of the outline: DONE
            # the block is a branch of an If (two elements deep) or the body of a While
            parent, _ = frames[-2]
            if isinstance(parent, If):
                cursor = _after_node(cursor[:-2])  # a branch ended: go past the if_
            else:
                cursor = _after_node(cursor[:-1])  # a nested plain block ended
            continue
        if isinstance(container, While) and element == len(container.body.children):
            cursor = cursor[:-1]  # end of the body: evaluate the condition again
            continue
        child = _child_at(container, element)
        if isinstance(child, Block):
            cursor = (*cursor, 0)  # step into a nested plain block
            continue
        if isinstance(child, If):
            return (*cursor, 0)  # evaluate the first condition next
        return cursor


def _child_at(container: Node, element: int) -> Node | None:
    if isinstance(container, Block) and element < len(container.children):
        return container.children[element]
    if isinstance(container, While) and element < len(container.body.children):
        return container.body.children[element]
    return None


def _after_node(cursor: Cursor) -> Cursor:
    return (*cursor[:-1], cursor[-1] + 1)


def start(outline: Block) -> Cursor:
    """The cursor of the first instruction of ``outline``."""
    return _normalize(outline, (0,))


def locate(outline: Block, cursor: Cursor) -> Instruction:
    """What the (normalized) cursor points at.

    Raises:
        InvalidCursorError: the cursor does not point at an instruction of this outline.
    """
    frames = _frames(outline, cursor)
    container, element = _target(frames)
    if isinstance(container, If):
        if element < len(container.branches):
            return Evaluate(container.branches[element][0])
        raise _bad(cursor, "points at an else branch, not at an instruction")
    if isinstance(container, Block):
        if element == len(container.children):
            if len(cursor) == 1:
                return DONE
            raise _bad(cursor, "points past the end of a block")
        node = container.children[element]
    elif isinstance(container, While):
        if element == len(container.body.children):
            raise _bad(cursor, "points past the end of a while_ body")
        node = container.body.children[element]
    else:  # pragma: no cover - _frames only yields containers
        raise _bad(cursor, "not a container")
    match node:
        case Step(name=name):
            return RunStep(name)
        case Return(exit_code=code):
            return Returned(code)
        case While(condition=condition):
            return Evaluate(condition)
        case _:
            raise _bad(cursor, f"points at a {type(node).__name__}, not at an instruction")


def advance(outline: Block, cursor: Cursor, answer: bool | None = None) -> Cursor:
    """The cursor after the instruction at ``cursor`` was carried out.

    Args:
        outline: the outline.
        cursor: a normalized cursor (from :func:`start` or :func:`advance`).
        answer: the truth value of the condition, when the cursor points at one.

    Raises:
        InvalidCursorError: the cursor does not fit, or points at ``DONE``/a ``return_``.
        ValueError: ``answer`` is missing for a condition, or given for a step.
    """
    instruction = locate(outline, cursor)
    if isinstance(instruction, RunStep):
        if answer is not None:
            raise ValueError(f"step {instruction.name!r} takes no answer")
        return _normalize(outline, _after_node(cursor))
    if isinstance(instruction, Evaluate):
        if answer is None:
            raise ValueError(f"condition {instruction.name!r} needs an answer")
        frames = _frames(outline, cursor)
        container, element = frames[-1]
        if isinstance(container, If):
            if answer:
                return _normalize(outline, (*cursor, 0))  # into branch `element`
            nxt = element + 1
            if nxt < len(container.branches) or container.orelse is not None:
                return _normalize(
                    outline,
                    (*cursor[:-1], nxt)
                    if nxt < len(container.branches)
                    else (*cursor[:-1], nxt, 0),
                )
            return _normalize(outline, _after_node(cursor[:-1]))  # no branch taken
        # a While's condition: the cursor points at the While node inside its container
        if answer:
            return _normalize(outline, (*cursor, 0))
        return _normalize(outline, _after_node(cursor))
    raise _bad(cursor, f"can't advance past {instruction!r}")


# -- introspection -----------------------------------------------------------------------------


def _walk(node: Node) -> Sequence[Node]:
    out: list[Node] = [node]
    match node:
        case Block(children=children):
            for child in children:
                out.extend(_walk(child))
        case If(branches=branches, orelse=orelse):
            for _, block in branches:
                out.extend(_walk(block))
            if orelse is not None:
                out.extend(_walk(orelse))
        case While(body=body):
            out.extend(_walk(body))
    return out


def step_names(outline: Block) -> frozenset[str]:
    """Every step method named in the outline."""
    return frozenset(n.name for n in _walk(outline) if isinstance(n, Step))


def condition_names(outline: Block) -> frozenset[str]:
    """Every condition method named in the outline."""
    names: set[str] = set()
    for node in _walk(outline):
        if isinstance(node, If):
            names.update(name for name, _ in node.branches)
        elif isinstance(node, While):
            names.add(node.condition)
    return frozenset(names)


def describe(outline: Block, cursor: Cursor) -> str:
    """A human-readable position, e.g. ``"while_(more)[1] > step 'work'"``."""
    parts: list[str] = []
    for container, element in _frames(outline, cursor):
        if isinstance(container, If):
            label = "else_" if element == len(container.branches) else f"if_ branch {element}"
            parts.append(label)
        elif isinstance(container, While):
            parts.append(f"while_({container.condition})[{element}]")
        else:
            parts.append(f"[{element}]")
    instruction = locate(outline, cursor)
    parts.append(repr(instruction))
    return " > ".join(parts)


@final
class CompiledOutline:
    """An outline with memoized :func:`locate` and :func:`advance`.

    The outline never changes, so each (cursor, answer) is worked out once; a WorkChain class
    shares one compiled outline between all its instances. Safe to share across threads (the
    caches only ever gain entries, and any two computations of an entry agree).
    """

    __slots__ = ("_advance", "_locate", "outline", "start")

    def __init__(self, outline: Block) -> None:
        self.outline = outline
        self.start: Cursor = start(outline)
        self._locate: dict[Cursor, Instruction] = {}
        self._advance: dict[tuple[Cursor, bool | None], Cursor] = {}

    def locate(self, cursor: Cursor) -> Instruction:
        """:func:`locate`, memoized."""
        try:
            return self._locate[cursor]
        except KeyError:
            instruction = self._locate[cursor] = locate(self.outline, cursor)
            return instruction

    def advance(self, cursor: Cursor, answer: bool | None = None) -> Cursor:
        """:func:`advance`, memoized."""
        key = (cursor, answer)
        try:
            return self._advance[key]
        except KeyError:
            nxt = self._advance[key] = advance(self.outline, cursor, answer)
            return nxt
