"""What a model needs from the agents that use it, in one place keyed by the model's name.

A small base model rarely calls a tool unless told to, so its agents demand a tool call first and
an answer after it; a multimodal model on vLLM takes a limited number of images per prompt. Agents
look their model up here (``profile_for(await llm.resolve_model())``) and apply what the user did
not set, so user code never checks a model's name. Add a profile with :func:`register_profile`.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from argentic.llm.local import CPU_MODEL_NAME
from argentic.llm.types import ToolChoice


@dataclass(frozen=True)
class ModelProfile:
    """Defaults for agents on one model; None leaves the agent's own default."""

    #: The tool policy until the model made a round of tool calls ("required" suits base models).
    tool_choice: ToolChoice | None = None
    #: The tool policy after that ("none": answer now).
    followup_tool_choice: ToolChoice | None = None
    #: The most images one prompt may carry (vLLM's ``--limit-mm-per-prompt``).
    max_images_per_prompt: int | None = None
    #: Repeat tool results in the last user turn when asking for the answer: a model that
    #: overlooks results in tool turns copies them from there.
    restate_tool_results: bool | None = None
    #: False: one tool call per reply (a small model asked for several repeats one to the end).
    parallel_tool_calls: bool | None = None
    #: Ask for free-text answers under a schema (``{"answer": ...}``), unwrapped for the user: a
    #: small base model's free text runs on into tool markup or repeats the prompt.
    json_answer: bool | None = None
    #: Ask for a structured answer as a free answer first, then shape it under the schema (a
    #: small model fills a bare number field with a number from the question).
    answer_then_shape: bool | None = None
    #: With ``json_answer``, the answer must quote the tool results (numbers and short words),
    #: in the order they came: a small model otherwise writes a number from the question.
    quote_tool_results: bool | None = None
    #: A demanded first tool call takes its string and number arguments from the question's
    #: words (see :mod:`argentic.agents.grounding`): a small model's arguments otherwise drift.
    ground_arguments: bool | None = None
    #: The tags the model's chat template writes around a tool call (Hermes: ``<tool_call>`` and
    #: ``</tool_call>``): a guided call on vLLM is then written the way the model learned to write one.
    tool_call_tags: tuple[str, str] | None = None
    #: vLLM's ``--tool-call-parser`` for the model's way of writing calls (``argentic serve``).
    tool_call_parser: str | None = None


#: Glob patterns (case-insensitive) and their profiles; the first that matches wins.
_SMALL_BASE_MODEL = ModelProfile(
    tool_choice="required",
    followup_tool_choice="none",
    restate_tool_results=True,
    parallel_tool_calls=False,
    json_answer=True,
    answer_then_shape=True,
    quote_tool_results=True,
    ground_arguments=True,
    tool_call_tags=("<tool_call>", "</tool_call>"),  # the Hermes template argentic serves it with
    tool_call_parser="hermes",
)

_PROFILES: list[tuple[str, ModelProfile]] = [
    # Gemma 3 270M, the CPU model: a base model that calls tools only when required to, reads a
    # tool's result only when it is repeated right before the answer, and writes a clean answer
    # only under a schema.
    (CPU_MODEL_NAME, _SMALL_BASE_MODEL),
    ("*gemma-3-270m*", _SMALL_BASE_MODEL),
    # Gemma 3n on vLLM: one image per prompt unless the server raises --limit-mm-per-prompt.
    ("*gemma-3n*", ModelProfile(max_images_per_prompt=1)),
    # How each family writes tool calls, for the server's parser.
    ("*gpt-oss*", ModelProfile(tool_call_parser="openai")),
    ("*qwen*", ModelProfile(tool_call_parser="hermes")),
    ("*llama-3*", ModelProfile(tool_call_parser="llama3_json")),
    ("*llama3*", ModelProfile(tool_call_parser="llama3_json")),
]

#: The parser for a model whose profile names none (Hermes-style calls are the commonest).
DEFAULT_TOOL_CALL_PARSER = "hermes"

DEFAULT_PROFILE = ModelProfile()


def register_profile(pattern: str, profile: ModelProfile) -> None:
    """Use ``profile`` for models whose name matches ``pattern`` (a glob); newest first."""
    _PROFILES.insert(0, (pattern.lower(), profile))


def tool_call_parser_for(model: str) -> str:
    """vLLM's ``--tool-call-parser`` for ``model``: its profile's, else Hermes."""
    return profile_for(model).tool_call_parser or DEFAULT_TOOL_CALL_PARSER


def profile_for(model: str) -> ModelProfile:
    """The profile of ``model`` (served name, path or LoRA adapter name)."""
    name = model.lower()
    for pattern, profile in _PROFILES:
        if fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name.rsplit("/", 1)[-1], pattern):
            return profile
    return DEFAULT_PROFILE
