"""pytest fixtures for testing processes under control: a broker, a communicator, a runner on
it, a controller, and a local cluster of worker threads.

Registered as a pytest plugin through the entry point
``[project.entry-points.pytest11] plumio = "corelib.testing.pytest_plugin"``. The async
fixtures run on
the test's own event loop through anyio's pytest plugin, so they work on asyncio and trio
alike::

    async def test_pause(runner, controller):
        process = runner.submit(MyProcess, {"x": 1})
        await process_control(runner).subscribed(process)
        assert (await controller.pause(process.pid)).done

No configuration is needed: an ``async def`` test that uses one of these fixtures is handed
to anyio's plugin as if it were marked ``@pytest.mark.anyio``, so it runs once per backend of
the ``anyio_backend`` fixture (anyio's default: asyncio, plus trio when it is installed;
override that fixture to choose). A test that names none of them itself but gets one through
another fixture (or ``usefixtures``) is marked after collection, and anyio then runs it on its
default backends whatever ``anyio_backend`` says: mark it ``anyio`` yourself, or set
``anyio_mode = "auto"``, for an override to apply. Tests that anyio already handles
(``anyio_mode = "auto"``, an ``anyio`` marker) and tests marked for another async plugin
(``asyncio``, ``trio``) are left alone, and nothing is marked while pytest-asyncio or
pytest-trio runs in auto mode.

Fixtures:

- ``memory_broker``: a strict (JSON) :class:`~broker.MemoryBroker`;
- ``communicator``: a :class:`~broker.LoopCommunicator` on it, opened on the test's loop;
- ``runner``: a :class:`~corelib.Runner` bound to ``communicator`` by a
  :class:`~corelib.ProcessControl` (every process it runs answers control RPCs); processes
  still running when the test ends are killed;
- ``controller``: a :class:`~corelib.ProcessController` on its own communicator;
- ``cluster``: a started :class:`~corelib.LocalCluster` of two workers (an asyncio and a trio
  thread) on ``memory_broker``, stopped after the test.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any, Final

import pytest

from broker import LoopCommunicator, MemoryBroker

from ..cluster._worker import LocalCluster
from ..control._binding import ProcessControl, control_of
from ..control._controller import ProcessController
from ..runner._runner import Runner

__all__ = [
    "memory_broker",
    "communicator",
    "runner",
    "controller",
    "cluster",
    "process_control",
]


# The fixtures defined here: an async test using any of them is run by anyio's plugin.
_FIXTURES: Final = frozenset({"memory_broker", "communicator", "runner", "controller", "cluster"})

# Markers with which another plugin (or anyio itself) already claims a coroutine test.
_ASYNC_MARKERS: Final = frozenset({"anyio", "asyncio", "trio"})


def _auto_mode(config: pytest.Config, name: str) -> bool:
    """Whether the async plugin owning option/ini ``name`` runs in auto mode."""
    try:
        return bool(config.getoption(name, default=None) == "auto" or config.getini(name) == "auto")
    except ValueError:  # the plugin that registers ``name`` is not loaded
        return False


def _marks_tests(config: pytest.Config) -> bool:
    """Whether this plugin should mark coroutine tests ``anyio``: anyio's plugin runs and
    neither it nor another async plugin claims every coroutine test already."""
    manager = config.pluginmanager
    if not manager.has_plugin("anyio") or _auto_mode(config, "anyio_mode"):
        return False
    if manager.has_plugin("asyncio") and _auto_mode(config, "asyncio_mode"):
        return False
    try:  # pytest-trio's is a boolean ini option
        trio_mode = manager.has_plugin("trio") and bool(config.getini("trio_mode"))
    except ValueError:
        trio_mode = False
    return not trio_mode


def _parameter_names(obj: Any) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(obj).parameters)
    except (TypeError, ValueError):  # not introspectable: leave it to pytest
        return frozenset()


def _claimed(marks: Any) -> bool:
    return any(getattr(mark, "name", None) in _ASYNC_MARKERS for mark in marks)


@pytest.hookimpl(wrapper=True)
def pytest_pycollect_makeitem(
    collector: pytest.Module | pytest.Class, name: str, obj: object
) -> Generator[None, Any, Any]:
    # Runs before anyio's own hook (a wrapper comes before every plain implementation), which
    # then sees the marker and requests ``anyio_backend``: the test is parametrized by that
    # fixture as usual, so a project's override of it applies.
    if callable(obj) and _marks_tests(collector.config) and collector.istestfunction(obj, name):
        inner = getattr(getattr(obj, "hypothesis", None), "inner_test", obj)
        if (
            inspect.iscoroutinefunction(inner)
            and not _claimed(getattr(obj, "pytestmark", ()))
            and not _claimed(collector.iter_markers())  # the class's, the module's
            and not _FIXTURES.isdisjoint(_parameter_names(obj))
        ):
            pytest.mark.anyio(obj)
    return (yield)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The tests that use a fixture of this plugin only through another fixture (or
    # ``usefixtures``): marked now, anyio's ``pytest_collection_finish`` makes one item per
    # available backend of them.
    if not _marks_tests(config):
        return
    for item in items:
        if (
            isinstance(item, pytest.Function)
            and inspect.iscoroutinefunction(item.function)
            and "anyio_backend" not in item.fixturenames
            and not _FIXTURES.isdisjoint(item.fixturenames)
            and not _claimed(item.iter_markers())
        ):
            item.add_marker(pytest.mark.anyio)


def process_control(runner: Runner) -> ProcessControl:
    """The :class:`~corelib.ProcessControl` of a runner from the ``runner`` fixture."""
    control = control_of(runner)
    if control is None:
        raise LookupError("this runner is not bound to a communicator")
    return control


@pytest.fixture
def memory_broker() -> MemoryBroker:
    """A strict in-memory broker: every message round-trips through JSON."""
    return MemoryBroker(strict=True)


@pytest.fixture
async def communicator(memory_broker: MemoryBroker) -> AsyncIterator[LoopCommunicator]:
    """A communicator on ``memory_broker``, bound to the test's loop."""
    async with LoopCommunicator(memory_broker, name="test") as comm:
        yield comm


@pytest.fixture
async def runner(communicator: LoopCommunicator) -> AsyncIterator[Runner]:
    """A runner whose processes answer control messages through ``communicator``."""
    async with Runner() as the_runner, ProcessControl(the_runner, communicator):
        yield the_runner
        the_runner.kill_all("test finished", force=True)


@pytest.fixture
async def controller(memory_broker: MemoryBroker) -> AsyncIterator[ProcessController]:
    """A process controller on its own communicator (on the test's loop)."""
    async with LoopCommunicator(memory_broker, name="test-controller") as comm:
        yield ProcessController(comm)


@pytest.fixture
def cluster(memory_broker: MemoryBroker) -> Iterator[LocalCluster]:
    """Two worker threads (asyncio and trio) consuming launch tasks from ``memory_broker``."""
    with LocalCluster(2, backends=("asyncio", "trio"), broker=memory_broker) as the_cluster:
        yield the_cluster
