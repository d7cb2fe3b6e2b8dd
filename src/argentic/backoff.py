"""Delays between retries (reconnecting to a broker, calling a model server): exponential backoff
with jitter, so a fleet of clients never retries a restarted server in lockstep."""

from __future__ import annotations

import random
from collections.abc import Iterator


def backoff_delay(attempt: int, initial_s: float, max_s: float, *, rng: random.Random | None = None) -> float:
    """The delay before retry ``attempt`` (0-based): drawn from [initial/2, ceiling], the ceiling
    doubling from ``initial_s`` up to ``max_s``."""
    ceiling = min(max_s, initial_s * 2 ** min(attempt, 60))
    return (rng or random).uniform(min(initial_s, ceiling) / 2, ceiling)


def backoff_delays(initial_s: float, max_s: float, *, rng: random.Random | None = None) -> Iterator[float]:
    """Endless :func:`backoff_delay` values for attempts 0, 1, 2, ..."""
    attempt = 0
    while True:
        yield backoff_delay(attempt, initial_s, max_s, rng=rng)
        attempt += 1
