"""A visual agent built from the config with everything it runs on, in one ``async with``::

    async with open_visual_agent(load_config()) as agent:
        await agent.wait_for_feed(60)
        async for seen in agent.watch("What changed?", max_observations=3):
            print(seen.text)

What ``argentic watch`` and ``examples/visual_agent_vllm.py`` share: the backends, the agent's own
messager, the frame source ``video.source`` names, and for a WebRTC demo in one process a local
sender of the test pattern.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from argentic.agents.runtime import backends
from argentic.agents.visual_agent import VisualAgent
from argentic.config import ArgenticConfig
from argentic.messaging import Messager
from argentic.tools import ToolManager
from argentic.video.factory import source_from_config
from argentic.video.test_pattern import TestPatternSource
from argentic.video.webrtc_driver import WebRTCDriver
from argentic.video.webrtc_sender import WebRTCSender


@contextlib.asynccontextmanager
async def open_visual_agent(
    config: ArgenticConfig,
    *,
    start_llm: bool = False,
    tools: bool = False,
    send_test_pattern: bool = False,
    progress: Callable[[str], None] | None = None,
    **overrides: Any,
) -> AsyncIterator[VisualAgent]:
    """A :class:`VisualAgent` from ``config``, serving questions over MQTT, and what it runs on:

    - the broker and model (:func:`~argentic.agents.runtime.backends`: the embedded broker, and
      with ``start_llm`` a local vLLM server, started when none answers; ``progress`` gets what
      was started, default standard error);
    - a messager of its own, whose last will marks the agent offline if the process dies;
    - the frame source ``video.source`` names, started (``agent.source``);
    - with ``tools``, a :class:`~argentic.tools.ToolManager` for the announced tools;
    - with ``send_test_pattern`` and ``video.source: webrtc``, the test pattern streamed to that
      source from this process (with its tone when ``video.audio_s`` is set; ICE on loopback
      unless ``video.host_addresses`` says otherwise): a WebRTC demo needing no second process.

    ``overrides`` go to :meth:`VisualAgent.from_config` (``role=``, ``policy=``, ...). Everything
    is stopped on exit, the agent first. The first frame may not have come yet: see
    :meth:`VisualAgent.wait_for_feed`.
    """
    sending = send_test_pattern and config.video.source == "webrtc"
    if sending and config.video.host_addresses is None:
        video = config.video.model_copy(update={"host_addresses": ["127.0.0.1"]})  # both ends are here
        config = config.model_copy(update={"video": video})
    role = str(overrides.get("role", config.agent.role))
    async with contextlib.AsyncExitStack() as stack:
        backend = await stack.enter_async_context(backends(config, start_llm=start_llm, progress=progress))
        # The client status is its will (the default): the presence names this client, and an
        # announcement is believed only from a client whose status says online.
        messager = await stack.enter_async_context(Messager.from_config(config.messaging))
        source = await stack.enter_async_context(source_from_config(config.video, messager))
        if sending and isinstance(source, WebRTCDriver):
            pattern = await stack.enter_async_context(TestPatternSource(640, 480, fps=30, scene_every=150))
            sender = WebRTCSender.from_config(
                messager, pattern, config.video, reconnect=True, audio=config.video.audio_s is not None
            )
            await stack.enter_async_context(sender)
        manager = None
        if tools:
            manager = ToolManager(messager, default_timeout_s=config.agent.tool_timeout_s, caller=role)
            await stack.enter_async_context(manager)
        agent = VisualAgent.from_config(
            config,
            llm=backend.llm,
            messager=messager,
            tool_manager=manager,
            source=source,
            store=backend.conversations,
            **overrides,
        )
        yield await stack.enter_async_context(agent)
