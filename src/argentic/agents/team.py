"""A team: the roles of ``config.yaml`` run as agents on one shared messager.

::

    async with Team(config, messager=messager, llm=backend.llm, tool_manager=tools) as team:
        ...  # every role of `roles:` (or the `agent:` section, a team of one) answers on MQTT

Each role gets its own agent (``replicas`` of them), with its own prompt, model endpoint
(``llm.endpoints``), sampling, tools, delegates and limits, and its own presence carrying an
agent card (what it does, its tools and delegates). Agents of the same endpoint share one
provider and so one connection pool; replicas of a role share one provider object. Questions to
a role are shared among its replicas through the broker, in this process and in others.

Like every agent's, a team agent's questions are tasks (:mod:`argentic.agents.tasks`): refused
when they close a cycle or are too deep, bounded by the first asker's deadline, stopped by their
owner's ``cancel``, their A2A states published. Its delegates are tools
(:mod:`argentic.agents.delegation`); a task whose delegates all failed fails with their errors.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

from argentic.agents.agent import Agent
from argentic.config import ArgenticConfig, RoleConfig, team_problems, team_roles
from argentic.errors import ConfigError
from argentic.lifecycle import Running
from argentic.llm import LLMProvider
from argentic.llm.factory import LLMFactory, endpoint_config
from argentic.messaging import Messager
from argentic.storage import ConversationRecords, Store
from argentic.tools import ToolManager

log = logging.getLogger(__name__)

#: Agents started at once (each start is a few broker round trips).
START_BATCH = 100


class TeamAgent(Agent):
    """A team role's agent: an :class:`Agent` built from a :class:`~argentic.config.RoleConfig`.

    Delegation and ask-back are agent options (``delegates``, ``supervise``, ``ask_back``,
    ``delegate_timeout_s``, ``description``), so this class adds only :meth:`from_role`; its
    constructor is :class:`Agent`'s (``delegates`` may map each role to its description)."""

    @classmethod
    def from_role(
        cls,
        name: str,
        role: RoleConfig,
        *,
        llm: LLMProvider,
        messager: Messager | None = None,
        tool_manager: ToolManager | None = None,
        descriptions: Mapping[str, str] | None = None,
        store: Store | ConversationRecords | None = None,
    ) -> TeamAgent:
        """The agent of role ``name``; ``descriptions`` of the other roles describe its delegates."""
        delegates = role.delegate_descriptions(descriptions)
        return cls(llm, messager, tool_manager, name, options=role, delegates=delegates, store=store)


def role_llm(role: RoleConfig, endpoint: LLMProvider) -> LLMProvider:
    """The provider of a role: its endpoint's, with the role's model and sampling."""
    if role.model is None and role.sampling is None:
        return endpoint
    try:
        return endpoint.with_overrides(model=role.model, sampling=role.sampling)
    except NotImplementedError:
        log.warning("%s takes no per-role settings; the role uses the endpoint's", type(endpoint).__name__)
        return endpoint


class Team(Running):
    """The roles of a config as agents on one messager (``roles``: some of them; default all)."""

    def __init__(
        self,
        config: ArgenticConfig,
        *,
        messager: Messager,
        llm: LLMProvider,
        tool_manager: ToolManager | None = None,
        roles: Sequence[str] | None = None,
        endpoints: Mapping[str, LLMProvider] | None = None,
        replicas: int | None = None,
        store: Store | ConversationRecords | None = None,
    ) -> None:
        problems = team_problems(config)
        self.roles = team_roles(config)
        if roles is not None:
            unknown = [r for r in roles if r not in self.roles]
            if unknown:
                problems.append(f"unknown role(s) {', '.join(unknown)} (roles: {', '.join(self.roles)})")
        if problems:
            raise ConfigError("invalid team:\n" + "\n".join(f"  {p}" for p in problems))
        self.config = config
        self.messager = messager
        self.llm = llm
        self.tool_manager = tool_manager
        self.selected = list(roles) if roles is not None else list(self.roles)
        self.replicas = replicas
        #: Where the roles' conversations live: with a shared store, replicas share them.
        self.store = store
        self._endpoints: dict[str, LLMProvider] = dict(endpoints or {})
        self._owned: list[LLMProvider] = []
        self.agents: list[TeamAgent] = []

    def endpoint(self, name: str | None) -> LLMProvider:
        """The provider of endpoint ``name`` (None: the team's default), built once."""
        if name is None:
            return self.llm
        provider = self._endpoints.get(name)
        if provider is None:
            provider = LLMFactory.create(endpoint_config(self.config.llm, name))
            self._endpoints[name] = provider
            self._owned.append(provider)
        return provider

    def build(self) -> list[TeamAgent]:
        """The agents of the selected roles (not started)."""
        descriptions = {name: role.description for name, role in self.roles.items()}
        agents: list[TeamAgent] = []
        for name in self.selected:
            role = self.roles[name]
            llm = role_llm(role, self.endpoint(role.llm))  # one provider for all replicas of the role
            for _ in range(self.replicas or role.replicas):
                agents.append(
                    TeamAgent.from_role(
                        name,
                        role,
                        llm=llm,
                        messager=self.messager,
                        tool_manager=self.tool_manager,
                        descriptions=descriptions,
                        store=self.store,
                    )
                )
        return agents

    async def start(self) -> None:
        """Start every agent (and make the endpoints built for the team ready); if one fails, stop
        those started and raise its error."""
        if self.agents:
            return
        try:
            self.agents = self.build()
            for provider in self._owned:
                await provider.start()
            for first in range(0, len(self.agents), START_BATCH):
                batch = self.agents[first : first + START_BATCH]
                # Each start runs to its end, so none is left half-started when another fails.
                outcomes = await asyncio.gather(*(a.start() for a in batch), return_exceptions=True)
                failed = next((o for o in outcomes if isinstance(o, BaseException)), None)
                if failed is not None:
                    raise failed
        except BaseException:
            await self.stop()
            raise
        log.info("team of %d agents (%s) serving", len(self.agents), ", ".join(self.selected))

    async def stop(self) -> None:
        """Stop every agent and close the endpoints built for the team (errors are logged)."""
        agents, self.agents = self.agents, []
        for first in range(0, len(agents), START_BATCH):
            outcomes = await asyncio.gather(
                *(agent.stop() for agent in agents[first : first + START_BATCH]), return_exceptions=True
            )
            for outcome in outcomes:
                if isinstance(outcome, Exception):
                    log.warning("an agent of the team did not stop cleanly: %s", outcome)
        owned, self._owned = self._owned, []
        self._endpoints = {k: v for k, v in self._endpoints.items() if v not in owned}
        for provider in owned:
            try:
                await provider.close()
            except Exception:
                log.warning("closing %r failed", provider, exc_info=True)
