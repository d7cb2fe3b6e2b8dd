"""Sampling settings: the one object for how a model samples, wherever it is set (a request, a
provider's defaults, an agent, a role in the config)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class SamplingSettings(BaseModel):
    """How a model samples; None leaves the level below's (request over agent over provider over
    server). Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    stop: list[str] | None = None
    extra_body: dict[str, Any] | None = None

    def merged(self, other: SamplingSettings | None) -> SamplingSettings:
        """These settings with every field ``other`` sets taken from ``other``."""
        if other is None:
            return self
        data = self.model_dump(exclude_none=True)
        update = other.model_dump(exclude_none=True)
        if "extra_body" in data and "extra_body" in update:
            update["extra_body"] = {**data["extra_body"], **update["extra_body"]}
        data.update(update)
        return SamplingSettings(**data)
