"""Tools: models from functions, the tool service and the tool manager over real mosquitto."""

from __future__ import annotations

import asyncio

import pytest
from agents_support import SUPPORT, Echo, add, all_tools, explode, service_process

from argentic.errors import ToolArgumentsError
from argentic.testing.messagers import MakeMessager
from argentic.testing.mosquitto import MosquittoBroker
from argentic.testing.waiting import wait_until
from argentic.tools import ToolManager, ToolService, tool, tool_id
from argentic.tools.loader import import_module, tools_in


def test_function_tool_schema_and_direct_call() -> None:
    schema = add.parameters()
    assert schema["properties"].keys() == {"a", "b"}
    assert schema["required"] == ["a", "b"]
    assert schema["additionalProperties"] is False
    assert add.tool_description == "Add two integers."
    assert add(2, 3) == 5  # still a plain function


async def test_tool_validates_and_serialises() -> None:
    assert await add.invoke({"a": 2, "b": 40}) == 42
    assert await Echo().invoke({"text": "hi", "times": 2}) == "hi hi"
    with pytest.raises(ToolArgumentsError, match="times"):
        await Echo().invoke({"text": "hi", "times": 99})
    with pytest.raises(ToolArgumentsError, match="unexpected"):
        await add.invoke({"a": 1, "b": 2, "unexpected": 3})


def test_tool_ids_are_stable() -> None:
    assert tool_id("svc", "add") == tool_id("svc", "add") == add.spec("svc").id
    assert tool_id("svc", "add") != tool_id("other", "add")


def test_tool_decorator_rejects_untyped_parameters() -> None:
    def untyped(x):  # type: ignore[no-untyped-def]
        return x

    with pytest.raises(TypeError, match="annotation"):
        tool(untyped)


def test_loader_finds_the_example_tools() -> None:
    names = {t.tool_name for t in tools_in(import_module("examples.tools"))}
    assert names == {"calculate", "utc_now"}


async def test_calls_round_trip_with_typed_errors(mqtt: MakeMessager) -> None:
    service_bus, caller_bus = await mqtt(), await mqtt()
    service = ToolService(service_bus, all_tools(), "svc", call_timeout_s=5)
    await service.start()
    manager = ToolManager(caller_bus)
    await manager.async_init()
    await manager.wait_for_tools("add", "echo", "explode", "hang")
    assert {d.name for d in manager.definitions()} == {"add", "echo", "explode", "hang", "slow"}

    ok, bad_args, raised, hung, unknown = await asyncio.gather(
        manager.call("add", {"a": 1, "b": 2}),
        manager.call("add", {"a": "x"}),
        manager.call("explode", {"reason": "kaput"}),
        manager.call("hang", {}),
        manager.call("nope", {}),
    )
    assert ok.ok and ok.result == 3 and ok.service_id == "svc"
    assert not bad_args.ok and bad_args.error and bad_args.error.code == "invalid_arguments"
    assert raised.error and raised.error.code == "tool_failed" and "kaput" in raised.error.message
    assert hung.error and hung.error.code == "timeout"
    assert unknown.error and unknown.error.code == "unknown_tool"
    # The messager removed every pending request, answered or not.
    assert caller_bus.pending_requests == 0
    await service.stop()


async def test_restart_replaces_the_announcement(mqtt: MakeMessager) -> None:
    watcher = await mqtt()
    manager = ToolManager(watcher)
    await manager.async_init()
    first = ToolService(await mqtt(), [add], "svc")
    await first.start()
    await manager.wait_for_tools("add")
    ids = {t.id for t in manager.tools.values()}
    await first.stop()
    second = ToolService(await mqtt(), [add, Echo()], "svc")
    await second.start()
    await manager.wait_for_tools("echo")
    assert list(manager.services) == ["svc"]
    assert manager.tools["add"].id in ids
    await second.stop()


async def test_service_that_dies_mid_call(
    mqtt: MakeMessager, mosquitto: MosquittoBroker, namespace: str
) -> None:
    """SIGKILL a tool service process during a call: its will withdraws it and the call fails fast."""
    watcher = await mqtt()
    manager = ToolManager(watcher)
    await manager.async_init()
    process = service_process(mosquitto.port, namespace, SUPPORT, "doomed")
    try:
        await manager.wait_for_tools("slow", timeout=60)
        call = asyncio.ensure_future(manager.call("slow", {"seconds": 100}))
        await asyncio.sleep(0.5)  # the call is on its way or running
        process.kill()
        result = await asyncio.wait_for(call, 30)  # well before the tool's 100 s
    finally:
        process.kill()
        process.wait(10)
    assert not result.ok and result.error and result.error.code == "tool_failed"
    assert "slow" not in manager.tools
    again = await manager.call("slow", {"seconds": 0})
    assert again.error and again.error.code == "unknown_tool"


async def test_replicas_share_calls(mqtt: MakeMessager) -> None:
    one = ToolService(await mqtt(), [add], "shared")
    two = ToolService(await mqtt(), [add], "shared")
    await one.start()
    await two.start()
    caller = await mqtt()
    manager = ToolManager(caller)
    await manager.async_init()
    await manager.wait_for_tools("add")
    results = await asyncio.gather(*(manager.call("add", {"a": i, "b": 1}) for i in range(30)))
    assert [r.result for r in results] == [i + 1 for i in range(30)]
    if caller.protocol_version == "5":
        assert one.calls_served > 0 and two.calls_served > 0
        assert one.calls_served + two.calls_served == 30
    await one.stop()
    # The other replica announces again after the first withdrew the shared announcement.
    await manager.wait_for_tools("add")
    assert (await manager.call("add", {"a": 1, "b": 1})).result == 2
    await two.stop()


async def test_explode_tool_message() -> None:
    with pytest.raises(RuntimeError):
        await explode.invoke({})


async def test_leaving_without_stop_withdraws_the_tools(mqtt: MakeMessager) -> None:
    """A program that disconnects without stopping its tool service leaves no stale tools behind."""
    manager = ToolManager(await mqtt())
    await manager.async_init()
    bus = await mqtt()  # no will: only the service's own withdrawal can clear the announcement
    await ToolService(bus, [add], "forgetful").start()
    await manager.wait_for_tools("add")
    await bus.disconnect()
    await wait_until(lambda: "add" not in manager.tools, what="the tools to be withdrawn")
    assert "forgetful" not in manager.services
    late = ToolManager(await mqtt())  # a newcomer finds no retained announcement either
    await late.async_init()
    assert late.tools == {}
