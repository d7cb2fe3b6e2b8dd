"""Tools that hog the CPU or memory cannot stop a tool service: each isolated call runs in a process
its timeout kills, and the service keeps answering and keeps its broker connection."""

from __future__ import annotations

import asyncio

from agents_support import add, service_process

from argentic.testing.messagers import MakeMessager
from argentic.testing.mosquitto import MosquittoBroker
from argentic.tools import ToolManager, ToolService, tool

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
