"""The spawner: native child tasks with an owner, on asyncio and trio."""

from __future__ import annotations

import anyio
import pytest

from broker._spawn import open_spawner


class Boom(Exception):
    pass


def _leaves(group: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    if isinstance(group, BaseExceptionGroup):
        return [leaf for inner in group.exceptions for leaf in _leaves(inner)]
    return [group]


async def test_the_block_waits_for_its_children() -> None:
    done: list[int] = []
    gates = [anyio.Event() for _ in range(3)]

    async def child(i: int) -> None:
        await gates[i].wait()
        done.append(i)

    async def open_gates() -> None:
        for gate in reversed(gates):
            gate.set()
            await anyio.lowlevel.checkpoint()  # one child finishes per step, in this order

    async with open_spawner() as spawner:
        for i in range(3):
            spawner.start_soon(child, i)
        spawner.start_soon(open_gates)
        assert spawner.running == 4
    assert sorted(done) == [0, 1, 2]
    assert spawner.running == 0


async def test_children_may_start_children_while_the_block_ends() -> None:
    done: list[str] = []

    async with open_spawner() as spawner:

        async def grandchild() -> None:
            done.append("grandchild")

        async def child() -> None:
            await anyio.lowlevel.checkpoint()  # the block has ended by now
            spawner.start_soon(grandchild)
            done.append("child")

        spawner.start_soon(child)
    assert done == ["child", "grandchild"]
    with pytest.raises(RuntimeError, match="spawner has finished"):
        spawner.start_soon(grandchild)


async def test_a_failing_child_cancels_the_block_and_its_siblings() -> None:
    cancelled: list[str] = []
    sibling_started = anyio.Event()

    async def sibling() -> None:
        try:
            sibling_started.set()
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.append("sibling")
            raise

    async def failing() -> None:
        await sibling_started.wait()
        raise Boom("child failed")

    async def run() -> None:
        async with open_spawner() as spawner:
            spawner.start_soon(sibling)
            spawner.start_soon(failing)
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                cancelled.append("block")
                raise

    with pytest.raises(BaseExceptionGroup) as info:
        await run()
    assert [type(leaf) for leaf in _leaves(info.value)] == [Boom]
    assert sorted(cancelled) == ["block", "sibling"]


async def test_when_the_block_raises_children_are_cancelled_but_shields_hold() -> None:
    events: list[str] = []
    in_shield = anyio.Event()

    async def shielded_cleanup() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                in_shield.set()
                await anyio.lowlevel.checkpoint()  # a real suspension inside the shield
                events.append("cleanup finished")

    async def run() -> None:
        async with open_spawner() as spawner:
            spawner.start_soon(shielded_cleanup)
            await anyio.lowlevel.checkpoint()  # let the child start
            raise Boom("block failed")

    with pytest.raises(BaseExceptionGroup) as info:
        await run()
    assert [type(leaf) for leaf in _leaves(info.value)] == [Boom]
    assert in_shield.is_set()
    assert events == ["cleanup finished"]


async def test_outer_cancellation_cancels_and_waits_for_children() -> None:
    finished: list[str] = []
    started = anyio.Event()

    async def child() -> None:
        try:
            started.set()
            await anyio.sleep_forever()
        finally:
            finished.append("child")

    with anyio.CancelScope() as outer:
        async with open_spawner() as spawner:
            spawner.start_soon(child)
            await started.wait()
            outer.cancel()
            await anyio.sleep_forever()
    assert outer.cancelled_caught
    assert finished == ["child"]
    assert spawner.running == 0


async def test_one_child_can_be_cancelled_through_its_scope() -> None:
    outcome: list[str] = []
    started = anyio.Event()

    async def victim() -> None:
        started.set()
        await anyio.sleep_forever()

    async def survivor() -> None:
        await started.wait()
        outcome.append("survivor done")

    async with open_spawner() as spawner:
        scope = spawner.start_soon(victim)
        spawner.start_soon(survivor)
        await started.wait()
        scope.cancel()
    assert outcome == ["survivor done"]


async def test_a_scope_cancelled_before_its_child_runs() -> None:
    ran: list[str] = []

    async def child() -> None:
        ran.append("started")
        await anyio.lowlevel.checkpoint()
        ran.append("not reached")

    async with open_spawner() as spawner:
        spawner.start_soon(child).cancel()
    assert ran == ["started"]


async def test_children_started_while_cancelling_start_cancelled() -> None:
    """The block may still run between a cancellation and its next checkpoint."""
    ran: list[str] = []

    async def child() -> None:
        ran.append("started")
        await anyio.lowlevel.checkpoint()
        ran.append("not reached")

    with anyio.CancelScope() as outer:
        async with open_spawner() as spawner:
            outer.cancel()
            await anyio.lowlevel.cancel_shielded_checkpoint()  # let the cancellation spread
            spawner.start_soon(child)  # no checkpoint between the cancel and this start
            await anyio.lowlevel.checkpoint()
    assert outer.cancelled_caught
    assert ran == ["started"]


async def test_a_cancellation_while_the_block_waits_for_children_cancels_them() -> None:
    """The block ends normally after an outer cancel (no checkpoint in between)."""
    finished: list[str] = []
    started = anyio.Event()

    async def child() -> None:
        try:
            started.set()
            await anyio.sleep_forever()
        finally:
            finished.append("child")

    with anyio.CancelScope() as outer:
        async with open_spawner() as spawner:
            spawner.start_soon(child)
            await started.wait()
            outer.cancel()  # and the block ends here, without a checkpoint
    assert outer.cancelled_caught
    assert finished == ["child"]


async def test_a_child_failing_after_the_block_ended() -> None:
    gate = anyio.Event()
    cancelled: list[str] = []

    async def failing() -> None:
        await gate.wait()
        raise Boom("late")

    async def sibling() -> None:
        try:
            gate.set()
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.append("sibling")
            raise

    async def run() -> None:
        async with open_spawner() as spawner:
            spawner.start_soon(failing)
            spawner.start_soon(sibling)

    with pytest.raises(BaseExceptionGroup) as info:
        await run()
    assert [type(leaf) for leaf in _leaves(info.value)] == [Boom]
    assert cancelled == ["sibling"]
