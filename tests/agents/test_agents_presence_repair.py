"""A role's retained presence repairs itself: a card written there by anyone else (naming a client
that is gone, or one that never said it is online) is rewritten by a serving replica, and the
directory believes a card only from a client that is online, so the team still delegates."""

from __future__ import annotations

import pytest
from team_support import answers, ask_following, asks, config, model, team

from argentic.agents.client import AgentClient
from argentic.agents.delegation import Directory
from argentic.messaging import Messager
from argentic.protocol import Answer, ClientStatus, Presence
from argentic.testing.messagers import MakeMessager
from argentic.testing.waiting import wait_until


async def forge(forger: Messager, role: str, client_id: str, *, gone: bool) -> None:
    """Retain ``online: true`` for ``role`` naming ``client_id`` (reported gone if ``gone``)."""
    if gone:
        status = ClientStatus(client_id=client_id, online=False)
        await forger.publish(forger.topics.client_status(client_id), status, retain=True)
    forged = Presence(role=role, online=True, client_id=client_id)
    await forger.publish(forger.topics.agent_status(role), forged, retain=True)


@pytest.mark.parametrize("gone", [True, False], ids=["gone-client", "unknown-client"])
async def test_a_forged_presence_is_rewritten_and_the_team_still_delegates(
    mqtt: MakeMessager, namespace: str, gone: bool
) -> None:
    cfg = config(namespace, {"architect": {"delegates": ["developer"]}, "developer": {}})
    models = {
        "architect": model(asks("ask_developer", "add", then="plan")),
        "developer": model(answers("code")),
    }
    developer_bus = await mqtt()
    async with (
        team(cfg, await mqtt(), models, roles=["architect"]),
        team(cfg, developer_bus, models, roles=["developer"]),
    ):
        client = AgentClient(await mqtt(), "architect")
        assert (await client.ask("first", timeout=30)) == 'plan: "code: add"'
        await forge(await mqtt(), "developer", "ghost", gone=gone)
        # The developer rewrites its card: a newcomer reads the real one.
        watcher = await mqtt()
        seen: list[Presence] = []

        async def on_presence(presence: Presence) -> None:
            seen.append(presence)

        await watcher.subscribe(watcher.topics.agent_status("developer"), on_presence, model=Presence)
        await wait_until(
            lambda: bool(seen) and seen[-1].client_id == developer_bus.client_id,
            what="the developer to rewrite its presence",
        )
        assert await AgentClient(watcher, "developer").online(timeout=5)
        assert await watcher.shared(Directory).online("developer", timeout=5)
        assert "developer" in await watcher.shared(Directory).discover(timeout=1)
        answer, _statuses, error = await ask_following(client, "again", timeout=30)
    assert error is None and isinstance(answer, Answer) and answer.text == 'plan: "code: add"'


async def test_the_directory_does_not_believe_a_card_from_a_gone_client(
    mqtt: MakeMessager, namespace: str
) -> None:
    # No replica serves to repair it: the forged card alone says online.
    await forge(await mqtt(), "nobody", "ghost", gone=True)
    reader = await mqtt()
    directory = reader.shared(Directory)
    assert not await directory.online("nobody", timeout=1)
    assert "nobody" not in await directory.discover(timeout=1)
    assert not await AgentClient(reader, "nobody").online(timeout=1)
