"""``run`` returns the outputs, as AiiDA's ``run`` does; ``run_get_process`` returns the process,
however it ended (asyncio and trio; the sync twins on both)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from corelib import (
    AttributesFrozenDict,
    ExitCode,
    LoopRunningError,
    Process,
    ProcessExceptedError,
    ProcessKilledError,
    ProcessSpec,
    ProcessState,
    Runner,
    ToContext,
    WorkChain,
    WorkChainSpec,
    run,
    run_get_process,
    run_get_process_sync,
    run_sync,
)

S = ProcessState


class Deploy(Process):
    """Outputs ``started``; more than 10 replicas is an unsuccessful exit code, after an
    output that says why."""

    @classmethod
    def define(cls, spec: ProcessSpec) -> None:
        super().define(spec)
        spec.input("replicas", valid_type=int, default=1)
        spec.output("started", valid_type=int, required=False)
        spec.output("refused", valid_type=str, required=False)
        spec.exit_code(400, "ERROR_TOO_MANY", "at most 10 replicas")

    async def run(self) -> Any:
        await anyio.lowlevel.checkpoint()
        if self.inputs.replicas > 10:
            self.out("refused", f"{self.inputs.replicas} replicas")
            return self.exit_codes.ERROR_TOO_MANY
        self.out("started", self.inputs.replicas)
        return "a result beside the outputs"


class Crashes(Process):
    def run(self) -> Any:
        raise OSError("disk full")


class Stops(Process):
    def run(self) -> None:
        self.kill("enough")  # at the end of this step


class Twice(WorkChain):
    @classmethod
    def define(cls, spec: WorkChainSpec) -> None:  # type: ignore[override]
        super().define(spec)
        spec.input("replicas", valid_type=int)
        spec.output("total", valid_type=int)
        spec.outline(cls.launch, cls.total)

    def launch(self) -> ToContext:
        replicas = self.inputs.replicas
        return ToContext(
            a=self.submit(Deploy, {"replicas": replicas}),
            b=self.submit(Deploy, {"replicas": replicas}),
        )

    def total(self) -> None:
        self.out("total", self.ctx.a["started"] + self.ctx.b["started"])


TOO_MANY = ExitCode(400, "at most 10 replicas", "ERROR_TOO_MANY")


# -- corelib.run / Runner.run: the outputs ------------------------------------------------------


async def test_run_returns_the_outputs() -> None:
    outputs = await run(Deploy, {"replicas": 3})
    assert isinstance(outputs, AttributesFrozenDict)
    assert outputs == {"started": 3}
    assert outputs.started == 3


async def test_run_of_a_workchain_returns_its_outputs() -> None:
    assert await run(Twice, {"replicas": 2}) == {"total": 4}


async def test_run_returns_the_outputs_of_an_unsuccessful_finish() -> None:
    # a non-zero exit code is a way to finish, not an error (AiiDA's run returns the outputs)
    assert await run(Deploy, {"replicas": 20}) == {"refused": "20 replicas"}


async def test_run_raises_for_an_excepted_or_killed_process() -> None:
    with pytest.raises(ProcessExceptedError, match=r"excepted: OSError: disk full$") as caught:
        await run(Crashes)
    assert isinstance(caught.value.__cause__, OSError)
    with pytest.raises(ProcessKilledError, match=r"was killed: enough$"):
        await run(Stops)


async def test_runner_run_is_the_same() -> None:
    async with Runner() as runner:
        assert await runner.run(Deploy, {"replicas": 3}) == {"started": 3}
        assert await runner.run(Deploy, {"replicas": 20}) == {"refused": "20 replicas"}
        with pytest.raises(ProcessExceptedError):
            await runner.run(Crashes)
        with pytest.raises(ProcessKilledError):
            await runner.run(Stops)


# -- run_get_process: the process, however it ended ---------------------------------------------


async def test_run_get_process_returns_the_finished_process() -> None:
    proc = await run_get_process(Deploy, {"replicas": 3}, pid="deploy-1")
    assert isinstance(proc, Deploy)
    assert (proc.pid, proc.state, proc.exit_code) == ("deploy-1", S.FINISHED, ExitCode(0))
    assert proc.outputs == {"started": 3}
    assert proc.result() == "a result beside the outputs"


async def test_run_get_process_shows_an_unsuccessful_exit_code() -> None:
    proc = await run_get_process(Deploy, {"replicas": 20})
    assert proc.exit_code == TOO_MANY
    assert not proc.successful()
    assert proc.outputs == {"refused": "20 replicas"}


async def test_run_get_process_does_not_raise_for_how_the_process_ended() -> None:
    crashed = await run_get_process(Crashes)
    assert crashed.state is S.EXCEPTED
    assert isinstance(crashed.exception, OSError)
    with pytest.raises(ProcessExceptedError):
        crashed.result()
    stopped = await run_get_process(Stops)
    assert stopped.state is S.KILLED
    with pytest.raises(ProcessKilledError, match=r"was killed: enough$"):
        stopped.result()


async def test_runner_run_get_process_is_the_same() -> None:
    async with Runner() as runner:
        proc = await runner.run_get_process(Deploy, {"replicas": 20})
        crashed = await runner.run_get_process(Crashes)
        assert not runner.processes
    assert proc.exit_code == TOO_MANY
    assert crashed.state is S.EXCEPTED


# -- the sync twins --------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_run_sync_returns_the_outputs(backend: str) -> None:
    assert run_sync(Deploy, {"replicas": 3}, backend=backend) == {"started": 3}
    assert run_sync(Twice, {"replicas": 1}, backend=backend) == {"total": 2}
    with pytest.raises(ProcessExceptedError):
        run_sync(Crashes, backend=backend)
    with pytest.raises(ProcessKilledError):
        run_sync(Stops, backend=backend)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_run_get_process_sync_returns_the_process(backend: str) -> None:
    proc = run_get_process_sync(Deploy, {"replicas": 20}, pid="sync-1", backend=backend)
    assert (proc.pid, proc.exit_code) == ("sync-1", TOO_MANY)
    assert run_get_process_sync(Stops, backend=backend).state is S.KILLED


async def test_the_sync_twins_refuse_a_running_loop(anyio_backend_name: str) -> None:
    with pytest.raises(LoopRunningError, match=rf"\({anyio_backend_name}\)"):
        run_get_process_sync(Deploy)
    with pytest.raises(LoopRunningError):
        run_sync(Deploy)
