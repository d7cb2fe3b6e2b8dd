"""Several servers behind one endpoint, against small fake OpenAI-compatible servers on loopback
that hang, answer HTML or die mid-answer (the fast tier; the real tier is test_llm_pool_vllm.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest

from argentic.errors import LLMUnavailableError
from argentic.llm import ChatRequest, SamplingSettings, StreamEnd, TextDelta, ToolCallDelta
from argentic.llm.openai_provider import OpenAICompatibleProvider, ShownSoFar
from argentic.llm.pool import affinity_key
from argentic.testing.fake_openai import FakeOpenAIServer, expected_text
from argentic.testing.waiting import wait_until

TOKENS = 12
SETTINGS = SamplingSettings(max_tokens=TOKENS, temperature=0)


@asynccontextmanager
async def servers(count: int, **settings: Any) -> AsyncIterator[list[FakeOpenAIServer]]:
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(FakeOpenAIServer(name=f"s{i}", **settings)) for i in range(count)
        ]


def provider(fakes: list[FakeOpenAIServer], **settings: Any) -> OpenAICompatibleProvider:
    options: dict[str, Any] = {
        "timeout_s": 1.0,
        "max_retries": 3,
        "retry_delay_s": 0.05,
        "health_interval_s": 0.1,
        "affinity_overflow": 4,
        **settings,
    }
    urls = [f.base_url for f in fakes]
    return OpenAICompatibleProvider(base_url=urls[0], base_urls=urls, model="fake-model", **options)


def ask(role: int, question: str = "hi") -> ChatRequest:
    return ChatRequest.user(question, system=f"You are role {role}.", settings=SETTINGS)


def roles_seen(fake: FakeOpenAIServer) -> set[str]:
    return {r["messages"][0]["content"] for r in fake.requests}


async def streamed(llm: OpenAICompatibleProvider, request: ChatRequest) -> tuple[str, str | None]:
    """The text the reader saw, and the StreamEnd reply's content."""
    text, end = "", None
    async for event in llm.stream(request):
        if isinstance(event, TextDelta):
            text += event.text
        elif isinstance(event, StreamEnd):
            end = event.response.content
    return text, end


async def test_requests_stick_to_a_server_by_their_prefix_and_spread_over_servers() -> None:
    async with servers(3) as fakes:
        async with provider(fakes) as llm:
            for _ in range(3):
                for role in range(10):
                    reply = await llm.chat(ask(role, f"question {_}"))
                    assert reply.content == expected_text(TOKENS)
        seen = [roles_seen(f) for f in fakes]
        assert sum(len(s) for s in seen) == 10  # each role's requests on one server only
        assert sum(1 for s in seen if s) >= 2  # and the roles spread


async def test_a_busy_server_overflows_to_the_least_loaded() -> None:
    async with servers(2, token_delay_s=0.02) as fakes, provider(fakes, affinity_overflow=1) as llm:
        replies = await asyncio.gather(*(llm.chat(ask(0, f"q{i}")) for i in range(8)))
    assert all(r.content == expected_text(TOKENS) for r in replies)
    assert all(f.requests for f in fakes)  # one role, both servers


@pytest.mark.parametrize("mode", ["down", "hang", "html", "error"])
async def test_a_failing_server_is_taken_out_named_and_taken_back(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with servers(2) as fakes:
        bad = fakes[0]
        if mode == "down":
            await bad.stop()
        else:
            bad.mode = mode  # type: ignore[assignment]
        caplog.set_level(logging.WARNING, logger="argentic.llm.pool")
        async with provider(fakes) as llm:
            for role in range(10):
                assert (await llm.chat(ask(role))).content == expected_text(TOKENS)
            streamed_text = await streamed(llm, ask(11))
            assert streamed_text == (expected_text(TOKENS), expected_text(TOKENS))
            state = {s["url"]: s for s in llm.pool.status()}
            assert not state[bad.base_url]["up"] and state[fakes[1].base_url]["up"]
            assert any(bad.base_url in r.message and "taken out" in r.message for r in caplog.records)
            # It answers again: the probes take it back and its share of the roles returns to it.
            if mode == "down":
                await bad.start()
            bad.mode = "ok"
            before = len(bad.requests)
            await wait_until(lambda: llm.pool.status()[0]["up"], 10, "the server back in the pool")
            for role in range(10):
                assert (await llm.chat(ask(role, "again"))).content == expected_text(TOKENS)
            assert len(bad.requests) > before
            assert any(bad.base_url in r.message and "back" in r.message for r in caplog.records)


async def test_a_server_that_dies_before_answering_is_replaced_and_the_answer_comes_once() -> None:
    async with servers(2) as fakes:
        fakes[0].mode = "die"
        async with provider(fakes) as llm:
            replies = [await llm.chat(ask(role)) for role in range(10)]
    assert [r.content for r in replies] == [expected_text(TOKENS)] * 10
    assert fakes[0].requests  # some were sent to the dying server first
    assert len(fakes[1].requests) == 10  # and each answered once


@pytest.mark.parametrize("vllm", [True, False])
async def test_a_stream_cut_off_goes_on_elsewhere_with_no_gap_and_no_repeat(vllm: bool) -> None:
    async with servers(2) as fakes:
        fakes[0].mode, fakes[0].die_after = "die", 5
        async with provider(fakes, vllm=vllm) as llm:
            results = await asyncio.gather(*(streamed(llm, ask(role)) for role in range(10)))
    assert results == [(expected_text(TOKENS), expected_text(TOKENS))] * 10
    assert fakes[0].requests
    continued = [r for r in fakes[1].requests if r.get("continue_final_message")]
    if vllm:  # carried on from the text already sent
        assert continued and all(r["add_generation_prompt"] is False for r in continued)
        assert all(r["messages"][-1] == {"role": "assistant", "content": expected_text(5)} for r in continued)
        assert all(r["max_tokens"] == TOKENS - 5 for r in continued)
    else:  # another server knows no continuation: started again, shown once
        assert not continued


async def test_a_cut_off_stream_fails_over_twice() -> None:
    async with servers(3) as fakes:
        fakes[0].mode, fakes[0].die_after = "die", 3
        fakes[1].mode, fakes[1].die_after = "die", 3
        async with provider(fakes) as llm:
            results = await asyncio.gather(*(streamed(llm, ask(role)) for role in range(6)))
    assert results == [(expected_text(TOKENS), expected_text(TOKENS))] * 6


async def test_when_every_server_fails_the_error_says_so() -> None:
    async with servers(2) as fakes:
        for fake in fakes:
            await fake.stop()
        async with provider(fakes, max_retries=1) as llm:
            with pytest.raises(LLMUnavailableError):
                await llm.chat(ask(0))


def test_a_restarted_answer_shows_only_what_the_reader_has_not_seen() -> None:
    shown = ShownSoFar()
    seen: list[Any] = []
    for event in (TextDelta("Hel"), TextDelta("lo "), ToolCallDelta(index=0, id="a", name="f"),
                  ToolCallDelta(index=0, arguments_delta='{"x"')):  # fmt: skip
        seen += shown.new(event)
    shown.restart()
    again = (TextDelta("Hello "), TextDelta("world"), ToolCallDelta(index=0, id="b", name="f"),
             ToolCallDelta(index=0, arguments_delta='{"x": 1}'))  # fmt: skip
    for event in again:
        seen += shown.new(event)
    text = "".join(e.text for e in seen if isinstance(e, TextDelta))
    arguments = "".join(e.arguments_delta for e in seen if isinstance(e, ToolCallDelta))
    assert text == "Hello world" and arguments == '{"x": 1}'
    assert [e.id for e in seen if isinstance(e, ToolCallDelta) and e.id] == ["a"]


async def test_a_stream_cut_off_behind_one_url_is_asked_again_and_goes_on() -> None:
    """One URL (a router in front): the cut-off stream continues through the same URL."""
    async with servers(1) as fakes:
        fakes[0].mode, fakes[0].die_after = "die", 5
        async with provider(fakes) as llm:
            assert await streamed(llm, ask(0)) == (expected_text(TOKENS), expected_text(TOKENS))
    assert len(fakes[0].requests) == 3  # 5 tokens, 5 more, the last 2


async def test_a_role_override_keeps_the_pool_or_gets_its_own() -> None:
    async with servers(2) as fakes, provider(fakes) as llm:
        same = llm.with_overrides(model="fake-model", temperature=0.5)
        assert isinstance(same, OpenAICompatibleProvider) and same.pool is llm.pool
        keyed = llm.with_overrides(api_key="k")
        assert isinstance(keyed, OpenAICompatibleProvider)
        assert keyed.base_urls == llm.base_urls and keyed.pool.rounds == llm.pool.rounds
        other = llm.with_overrides(base_url="http://127.0.0.1:9/v1")
        assert isinstance(other, OpenAICompatibleProvider)
        assert other.base_urls == ["http://127.0.0.1:9/v1"] and other.endpoint.max_retries == 3
        for copy in (keyed, other):
            await copy.close()


async def test_a_server_busy_with_other_clients_by_its_metrics_is_overflowed() -> None:
    async with servers(2) as fakes, provider(fakes, affinity_overflow=2) as llm:
        request = ask(0)
        key = affinity_key(request)
        preferred = llm.pool.choose(key)
        assert preferred is not None
        busy = next(f for f in fakes if f.base_url == preferred.url)
        busy.extra_running = 10
        await wait_until(lambda: preferred.running == 10, 10, "the busy server's /metrics read")
        assert (await llm.chat(request)).content == expected_text(TOKENS)
        assert not busy.requests  # it went to the other server
        busy.extra_running = 0
        await wait_until(lambda: preferred.running == 0, 10, "the server's /metrics read again")
        assert (await llm.chat(request)).content == expected_text(TOKENS)
        assert len(busy.requests) == 1  # and back once the load is gone


async def test_health_and_check_look_at_every_server(caplog: pytest.LogCaptureFixture) -> None:
    async with servers(3) as fakes, provider(fakes) as llm:
        status = await llm.check()
        assert status.healthy and status.models == ["fake-model"] and status.down == []
        assert [c.base_url for c in status.servers] == [f.base_url for f in fakes]
        assert all(c.healthy and c.models == ["fake-model"] for c in status.servers)
        # The first server (the one the endpoint's URL names) down: the endpoint still serves.
        await fakes[0].stop()
        fakes[2].mode = "error"
        caplog.set_level(logging.WARNING, logger="argentic.llm.openai_provider")
        assert await llm.health()
        assert any(
            fakes[0].base_url in r.message and fakes[2].base_url in r.message and "not healthy" in r.message
            for r in caplog.records
        )
        assert not any(fakes[1].base_url in r.message for r in caplog.records)
        status = await llm.check()
        assert status.healthy and status.models == ["fake-model"]
        assert status.down == [fakes[0].base_url, fakes[2].base_url]
        first, second, third = status.servers
        assert not first.healthy and first.models == [] and fakes[0].base_url in first.error
        assert second.healthy and second.models == ["fake-model"] and not second.error
        assert not third.healthy and third.error
        # None answers: health says so, and check names every URL.
        await fakes[1].stop()
        assert not await llm.health()
        with pytest.raises(LLMUnavailableError, match="no model server of this endpoint answers") as caught:
            await llm.check()
        assert all(f.base_url in str(caught.value) for f in fakes)


async def test_check_of_one_server_that_is_down_raises_its_own_error() -> None:
    async with servers(1) as [fake]:
        await fake.stop()
        async with provider([fake], max_retries=1) as llm:
            assert not await llm.health()
            with pytest.raises(LLMUnavailableError) as caught:
                await llm.check()
    assert fake.base_url in str(caught.value) and "no model server" not in str(caught.value)


async def test_metrics_are_read_from_every_server(caplog: pytest.LogCaptureFixture) -> None:
    async with servers(3) as fakes, provider(fakes, max_retries=1) as llm:
        fakes[1].extra_running = 7
        running = 'vllm:num_requests_running{model_name="fake-model"}'
        by_server = await llm.metrics()
        assert list(by_server) == [f.base_url for f in fakes]
        assert [samples[running] for samples in by_server.values()] == [0, 7, 0]
        # A server that cannot be read is left out and named; the others still count.
        await fakes[0].stop()
        caplog.set_level(logging.WARNING, logger="argentic.llm.openai_provider")
        by_server = await llm.metrics()
        assert list(by_server) == [fakes[1].base_url, fakes[2].base_url]
        named = [r.message for r in caplog.records if "/metrics not read" in r.message]
        assert named and fakes[0].base_url in named[0]
        # None can be read: the first one's error.
        await fakes[1].stop()
        await fakes[2].stop()
        with pytest.raises(LLMUnavailableError) as caught:
            await llm.metrics()
        assert fakes[0].base_url in str(caught.value)
