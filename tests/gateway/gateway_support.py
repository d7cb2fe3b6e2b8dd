"""The a2a-sdk's own client against the gateway: ask a role, collect what streams back."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from a2a.client import A2ACardResolver, Client, ClientConfig, create_client
from a2a.types import AgentCard, Message, Part, Role, SendMessageRequest, StreamResponse

from argentic.gateway import Gateway


@asynccontextmanager
async def a2a_client(gateway: Gateway, role: str, *, streaming: bool = True) -> AsyncIterator[Client]:
    client = await create_client(gateway.role_url(role), client_config=ClientConfig(streaming=streaming))
    try:
        yield client
    finally:
        await client.close()


def request(text: str, task_id: str | None = None, context_id: str | None = None) -> SendMessageRequest:
    message = Message(message_id=uuid.uuid4().hex, role=Role.ROLE_USER, parts=[Part(text=text)])
    if task_id:
        message.task_id = task_id
    if context_id:
        message.context_id = context_id
    return SendMessageRequest(message=message)


def task_id_of(response: StreamResponse) -> str:
    if response.HasField("task"):
        return response.task.id
    if response.HasField("status_update"):
        return response.status_update.task_id
    if response.HasField("artifact_update"):
        return response.artifact_update.task_id
    return response.message.task_id


async def card_of(gateway: Gateway, role: str) -> AgentCard:
    async with httpx.AsyncClient() as http:
        return await A2ACardResolver(http, gateway.role_url(role)).get_agent_card()
