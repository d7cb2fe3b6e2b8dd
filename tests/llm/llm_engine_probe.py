"""Run by test_llm_engine.py with the CPU build's interpreter: the embedded engine, results as JSON."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

from pydantic import BaseModel, Field

from argentic.llm import (
    ChatMessage,
    ChatRequest,
    LLMFactory,
    SamplingSettings,
    StreamEnd,
    TextDelta,
    ToolCallDelta,
    ToolDefinition,
)


class Weather(BaseModel):
    city: str = Field(min_length=1, max_length=20)
    unit: Literal["celsius", "fahrenheit"]


class Verdict(BaseModel):
    label: Literal["yes", "no"]
    score: int = Field(ge=0, le=9)


async def main() -> dict[str, Any]:
    llm = LLMFactory.create({"provider": "vllm_engine", "timeout_s": 240})
    tool = ToolDefinition.from_model("get_weather", Weather)
    few = SamplingSettings(max_tokens=48, temperature=0)
    out: dict[str, Any] = {"model": llm.model_name, "type": type(llm).__name__}
    try:
        text, required, structured = await asyncio.gather(
            llm.chat(ChatRequest.user("Name a fruit.", settings=SamplingSettings(max_tokens=8))),
            llm.chat(
                ChatRequest.user("Weather in Paris?", tools=[tool], tool_choice="required", settings=few)
            ),
            llm.chat(ChatRequest.user("Is the sky blue?", output=Verdict, settings=few)),
        )
        out["text"] = {"content": text.content, "completion_tokens": text.usage.completion_tokens}
        out["required"] = [c.model_dump() for c in required.tool_calls]
        out["structured"] = structured.parsed.model_dump() if structured.parsed else None

        question = [ChatMessage.user("Weather in Rome?")]
        events = [
            e
            async for e in llm.stream(
                ChatRequest(messages=question, tools=[tool], tool_choice="get_weather", settings=few)
            )
        ]
        end = events[-1]
        assert isinstance(end, StreamEnd)
        out["stream"] = {
            "deltas": [
                [e.index, e.id, e.name, e.arguments_delta] for e in events if isinstance(e, ToolCallDelta)
            ],
            "calls": [c.model_dump() for c in end.response.tool_calls],
        }
        pieces = [
            e
            async for e in llm.stream(ChatRequest.user("One, two,", settings=SamplingSettings(max_tokens=8)))
        ]
        last = pieces[-1]
        assert isinstance(last, StreamEnd)
        texts = [e.text for e in pieces if isinstance(e, TextDelta)]
        out["text_stream"] = {"pieces": len(texts), "joined_matches": "".join(texts) == last.response.content}
    finally:
        await llm.close()
    return out


if __name__ == "__main__":
    print("RESULT " + json.dumps(asyncio.run(main())), flush=True)
