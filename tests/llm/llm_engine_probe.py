"""Run by test_llm_engine.py with the CPU build's interpreter: the embedded engine, results as JSON."""

from __future__ import annotations

import asyncio
import io
import json
import math
import struct
import wave
from typing import Any, Literal

from pydantic import BaseModel, Field

from argentic.errors import LLMRequestError
from argentic.llm import (
    AudioPart,
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


def tone_wav() -> bytes:
    """One second of 440 Hz at 16 kHz, mono 16-bit (the CPU build's environment has no PyAV)."""
    samples = [round(8000 * math.sin(2 * math.pi * 440 * i / 16_000)) for i in range(16_000)]
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16_000)
        wav.writeframes(struct.pack(f"<{len(samples)}h", *samples))
    return out.getvalue()


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

        # a sound clip: the text-only model refuses it with a clear error, and the engine goes on
        listen = ChatMessage.user("What do you hear?", audio=[AudioPart.from_bytes(tone_wav())])
        try:
            await llm.chat(ChatRequest(messages=[listen], settings=few))
            out["audio_refusal"] = None
        except LLMRequestError as exc:
            out["audio_refusal"] = str(exc)
        after = await llm.chat(ChatRequest.user("Name a colour.", settings=SamplingSettings(max_tokens=4)))
        out["after_audio_tokens"] = after.usage.completion_tokens
    finally:
        await llm.close()
    return out


if __name__ == "__main__":
    print("RESULT " + json.dumps(asyncio.run(main())), flush=True)
