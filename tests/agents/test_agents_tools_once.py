"""A tool call runs once across the replicas of its service when they share a store: a resent
call (same id, same caller) that reaches another replica gets the kept result, the tool does not
run again."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from argentic.messaging import Messager
from argentic.protocol import ToolCall, ToolResult
from argentic.storage import SQLiteStore, Store
from argentic.testing.messagers import MakeMessager
from argentic.tools import ToolManager, ToolService, tool


async def resend(client: Messager, call: ToolCall, copies: int = 6) -> list[ToolResult]:
    """Publish ``call`` ``copies`` times (the broker shares the copies among the replicas) and
    collect the result each copy gets. Each copy is read by a subscription of its own: one
    subscription drops a repeated message id, and a kept result is the same message again."""
    assert call.reply_to is not None
    results: list[ToolResult] = []
    for _ in range(copies):
        got: asyncio.Queue[ToolResult] = asyncio.Queue()
        subscription = await client.subscribe(call.reply_to, got.put, model=ToolResult)
        await client.publish(client.topics.tool_calls(call.tool), call)
        results.append(await asyncio.wait_for(got.get(), 15))
        await client.unsubscribe(subscription)
    return results


async def test_a_resent_call_runs_once_across_replicas(
    mqtt: MakeMessager, store_pair: tuple[Store, Store]
) -> None:
    runs: list[int] = []

    @tool
    def charge(amount: int) -> str:
        """Charge an amount (a side effect that must not happen twice)."""
        runs.append(amount)
        return f"charged {amount}"

    first, second = store_pair
    client = await mqtt()
    inbox = client.topics.client_inbox(f"listener-{uuid.uuid4().hex[:8]}")  # read here, not by requests
    async with (
        ToolService(await mqtt(), [charge], "billing", store=first) as one,
        ToolService(await mqtt(), [charge], "billing", store=second) as other,
        ToolManager(client) as manager,
    ):
        await manager.wait_for_tools("charge")
        call = ToolCall(tool="charge", arguments={"amount": 5}, reply_to=inbox, correlation_id="c1")
        results = await resend(client, call)
        assert one.calls_served + other.calls_served == 1
    assert runs == [5]  # ran once, though both replicas received copies
    assert all(r.ok and r.result == "charged 5" for r in results) and len(results) == 6


async def test_without_a_store_each_replica_runs_its_copy(mqtt: MakeMessager) -> None:
    # What the store is for: two replicas each keep only their own memory of answered calls.
    runs: list[int] = []

    @tool
    def charge(amount: int) -> str:
        """Charge an amount."""
        runs.append(amount)
        return "ok"

    client = await mqtt()
    inbox = client.topics.client_inbox(f"listener-{uuid.uuid4().hex[:8]}")
    async with (
        ToolService(await mqtt(), [charge], "billing"),
        ToolService(await mqtt(), [charge], "billing"),
        ToolManager(client) as manager,
    ):
        await manager.wait_for_tools("charge")
        call = ToolCall(tool="charge", arguments={"amount": 5}, reply_to=inbox, correlation_id="c1")
        results = await resend(client, call)
    assert all(r.ok for r in results) and len(results) == 6
    assert len(runs) == 2  # once per replica; each replays its own result to its later copies


async def test_a_store_that_fails_does_not_stop_the_calls(mqtt: MakeMessager, tmp_path: Path) -> None:
    @tool
    def ping() -> str:
        """Answer pong."""
        return "pong"

    store = SQLiteStore(f"sqlite:///{tmp_path / 'store.db'}")  # never opened: every step fails
    client = await mqtt()
    async with ToolService(await mqtt(), [ping], "svc", store=store), ToolManager(client) as manager:
        await manager.wait_for_tools("ping")
        result = await manager.call("ping", {})
    assert result.ok and result.result == "pong"
