"""Delays between reconnection attempts: exponential backoff with full jitter."""

from __future__ import annotations

import random
from collections.abc import Iterator


def backoff_delays(initial_s: float, max_s: float, *, rng: random.Random | None = None) -> Iterator[float]:
    """Endless delays: each drawn uniformly from [initial/2, ceiling], the ceiling doubling up to ``max_s``.

    Jitter keeps a fleet of clients from reconnecting to a restarted broker in lockstep.
    """
    draw = (rng or random).uniform
    ceiling = initial_s
    while True:
        yield draw(min(initial_s, ceiling) / 2, ceiling)
        ceiling = min(max_s, ceiling * 2)
