"""Tools that hog the CPU or memory cannot stop a tool service: each isolated call runs in a worker
process its timeout kills, and the service keeps answering and keeps its broker connection."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest
from agents_support import add, service_process
from pydantic import BaseModel

from argentic.errors import ToolExecutionError
from argentic.testing.messagers import MakeMessager
from argentic.testing.mosquitto import MosquittoBroker
from argentic.testing.processes import process_alive
from argentic.testing.waiting import wait_until
from argentic.tools import ToolManager, ToolService, tool
from argentic.tools.isolation import WorkerPool

HOG = "(((9**999)**999)**999)"


@tool
def allocate(megabytes: int) -> int:
    """Allocate a buffer and tell its size."""
    return len(bytearray(megabytes * 1024 * 1024))


@tool
def huge() -> int:
    """An integer of 5,000 digits."""
    return 10**5000


@tool
def divide(a: int, b: int) -> float:
    """Divide."""
    return a / b


async def test_a_cpu_hog_is_cut_off_and_the_service_keeps_answering(
    mqtt: MakeMessager, mosquitto: MosquittoBroker, namespace: str
) -> None:
    """``argentic tools`` serving the example calculator, in a process of its own."""
    process = service_process(mosquitto.port, namespace, "examples.tools", "calc")
    try:
        async with ToolManager(await mqtt()) as manager:
            await manager.wait_for_tools("calculate", "utc_now", timeout=60)
            hog = asyncio.ensure_future(manager.call("calculate", {"expression": HOG}, timeout=3))
            await asyncio.sleep(0.3)  # the hog runs
            for _ in range(3):
                now = await manager.call("utc_now", {}, timeout=10)
                assert now.ok, now.error
                product = await manager.call("calculate", {"expression": "1234 * 5678"}, timeout=10)
                assert product.ok and product.result["value"] == 1234 * 5678
            result = await asyncio.wait_for(hog, 30)
            assert not result.ok and result.error is not None and result.error.code == "timeout"
            after = await manager.call("calculate", {"expression": "2 ** 10"}, timeout=10)
            assert after.ok and after.result["value"] == 1024
        assert process.poll() is None
    finally:
        process.kill()
        process.wait(10)


async def test_a_memory_hog_fails_alone(mqtt: MakeMessager) -> None:
    service = ToolService(
        await mqtt(), [allocate, add], "memory", isolate_sync_tools=True, max_memory_mb=100, call_timeout_s=20
    )
    async with service, ToolManager(await mqtt()) as manager:
        await manager.wait_for_tools("allocate", "add")
        small = await manager.call("allocate", {"megabytes": 10})
        assert small.ok and small.result == 10 * 1024 * 1024
        big = await manager.call("allocate", {"megabytes": 2000})
        assert not big.ok and big.error is not None and big.error.code == "tool_failed"
        assert "MemoryError" in big.error.message
        assert (await manager.call("add", {"a": 1, "b": 2})).result == 3
        # The limit is per call: calls after one another on warm workers each get all of it.
        for _ in range(4):
            again = await manager.call("allocate", {"megabytes": 60})
            assert again.ok and again.result == 60 * 1024 * 1024


async def test_an_isolated_tool_error_names_its_cause(mqtt: MakeMessager) -> None:
    async with (
        ToolService(await mqtt(), [divide], "div", isolate_sync_tools=True),
        ToolManager(await mqtt()) as manager,
    ):
        await manager.wait_for_tools("divide")
        assert (await manager.call("divide", {"a": 6, "b": 3})).result == 2
        failed = await manager.call("divide", {"a": 1, "b": 0})
        assert failed.error is not None and failed.error.code == "tool_failed"
        assert "ZeroDivisionError" in failed.error.message


async def test_a_huge_integer_result_is_a_clear_error(mqtt: MakeMessager) -> None:
    for isolate in (False, True):
        async with (
            ToolService(await mqtt(), [huge], f"huge{int(isolate)}", isolate_sync_tools=isolate),
            ToolManager(await mqtt()) as manager,
        ):
            await manager.wait_for_tools("huge")
            result = await manager.call("huge", {}, timeout=10)
            assert not result.ok and result.error is not None and result.error.code == "tool_failed"
            assert "digits" in result.error.message


# --- the worker pool ---------------------------------------------------------------------------


def worker_pid(arguments: dict[str, Any]) -> int:
    time.sleep(arguments.get("seconds", 0))
    return os.getpid()


def spin(arguments: dict[str, Any]) -> int:
    while True:
        pass


def die(arguments: dict[str, Any]) -> None:
    os._exit(3)


async def test_a_worker_killed_by_an_overrun_is_replaced() -> None:
    async with WorkerPool(1) as pool:
        first = await pool.call(worker_pid, {})
        assert await pool.call(worker_pid, {}) == first  # warm: the same worker again
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pool.call(spin, {}), 0.5)
        await wait_until(lambda: not process_alive(first), what="the runaway worker killed")
        second = await pool.call(worker_pid, {})
        assert second != first and pool.workers == 1


async def test_a_worker_that_dies_fails_its_call_and_is_replaced() -> None:
    async with WorkerPool(1) as pool:
        first = await pool.call(worker_pid, {})
        with pytest.raises(ToolExecutionError, match="exit code 3"):
            await pool.call(die, {})
        assert await pool.call(worker_pid, {}) != first


async def test_workers_are_bounded_and_reused() -> None:
    async with WorkerPool(2) as pool:
        pids = await asyncio.gather(*(pool.call(worker_pid, {"seconds": 0.1}) for _ in range(6)))
        assert len(set(pids)) <= 2 and pool.workers <= 2
    assert pool.workers == 0
    await wait_until(lambda: all(not process_alive(pid) for pid in pids), what="the workers stopped")


async def test_a_call_in_flight_when_the_pool_stops_ends_first() -> None:
    pool = WorkerPool(2)
    await pool.start()
    running = asyncio.ensure_future(pool.call(worker_pid, {"seconds": 0.3}))
    await wait_until(lambda: pool.workers == 1, what="the call running")
    await pool.stop()
    pid = await running
    assert pool.workers == 0
    await wait_until(lambda: not process_alive(pid), what="its worker stopped")


async def test_what_is_registered_after_a_worker_was_forked_gets_a_newer_worker() -> None:
    async with WorkerPool(2) as pool:
        assert await pool.call(add.call_here, {"a": 1, "b": 2}) == 3
        offset = 40

        def shifted(arguments: dict[str, Any]) -> int:
            return int(arguments["x"]) + offset

        assert await pool.call(shifted, {"x": 2}) == 42
        assert await pool.call(add.call_here, {"a": 2, "b": 2}) == 4


class Point(BaseModel):
    x: int
    y: int


Point.__qualname__ = "made.<locals>.Point"  # as if made in a function: pickle cannot find it


async def test_closures_and_local_models_run_isolated(mqtt: MakeMessager) -> None:
    factor = 7

    @tool(isolate=True)
    def scale(x: int) -> int:
        """Scale by a captured factor."""
        return x * factor

    @tool(isolate=True)
    def taxicab(point: Point) -> int:
        """Distance from the origin, a locally defined model as the argument."""
        return abs(point.x) + abs(point.y)

    service = ToolService(await mqtt(), [scale, taxicab], "local")
    async with service, ToolManager(await mqtt()) as manager:
        await manager.wait_for_tools("scale", "taxicab")
        assert (await manager.call("scale", {"x": 6})).result == 42
        assert (await manager.call("taxicab", {"x": -3, "y": 4})).result == 7
        invalid = await manager.call("scale", {"x": "many"})
        assert invalid.error is not None and invalid.error.code == "invalid_arguments"
        assert service._workers.workers >= 1
    assert service._workers.workers == 0

    @tool(isolate=True)
    def shifted(point: Point, by: int) -> int:
        """A locally defined model beside another argument."""
        return point.x + point.y + by

    # Called directly with a model object (no JSON on the way): it crosses all the same.
    assert await shifted.invoke({"point": Point(x=1, y=2), "by": 3}) == 6
