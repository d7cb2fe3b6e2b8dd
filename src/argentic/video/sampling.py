"""Which frames go to the model: the latest, N over the last T seconds, or scene changes.

A policy returns frames oldest first and never more than the limit it is given (the model's
per-prompt image limit).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from argentic.video.frames import Frame
from argentic.video.source import FrameSource


class SamplingPolicy(Protocol):
    async def sample(self, source: FrameSource, limit: int) -> list[Frame]: ...


def scene_difference(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    """Mean absolute difference of two grayscale thumbnails, 0 (same) to 1."""
    return float(np.abs(a - b).mean())


def evenly_spaced(frames: Sequence[Frame], n: int) -> list[Frame]:
    """``n`` frames spread over ``frames``, always including the newest."""
    if n <= 0 or not frames:
        return []
    if n >= len(frames):
        return list(frames)
    if n == 1:
        return [frames[-1]]
    positions = np.linspace(0, len(frames) - 1, n).round().astype(int)
    return [frames[i] for i in positions]


@dataclass(frozen=True)
class LatestFrame:
    """The newest frame only: what a turn-based model needs to answer "what do you see now"."""

    async def sample(self, source: FrameSource, limit: int) -> list[Frame]:
        frame = source.latest()
        return [frame] if frame is not None and limit > 0 else []


@dataclass(frozen=True)
class FramesOverWindow:
    """``frames`` frames evenly spread over the last ``window_s`` seconds (the newest included)."""

    frames: int = 4
    window_s: float = 2.0

    async def sample(self, source: FrameSource, limit: int) -> list[Frame]:
        recent = source.recent(within_s=self.window_s)
        if not recent:
            latest = source.latest()
            recent = [latest] if latest is not None else []
        return evenly_spaced(recent, min(self.frames, limit))


def scene_starts(frames: Sequence[Frame], threshold: float) -> list[Frame]:
    """The first frame of each scene in ``frames``. Blocking (thumbnails): call off the loop."""
    starts: list[Frame] = []
    reference: npt.NDArray[np.float32] | None = None
    for frame in frames:
        thumb = frame.to_gray_thumbnail()
        if reference is None or scene_difference(thumb, reference) > threshold:
            starts.append(frame)
            reference = thumb
    return starts


@dataclass(frozen=True)
class SceneChanges:
    """One frame per scene seen in the last ``window_s`` seconds: the newest frame of the current
    scene and the first frame of each earlier one, at most ``frames`` of them."""

    frames: int = 4
    window_s: float = 5.0
    threshold: float = 0.12

    async def sample(self, source: FrameSource, limit: int) -> list[Frame]:
        recent = source.recent(within_s=self.window_s)
        if not recent:
            latest = source.latest()
            return [latest] if latest is not None and limit > 0 else []
        starts = await asyncio.to_thread(scene_starts, recent, self.threshold)
        starts[-1] = recent[-1]  # the current scene as it looks now
        return starts[-min(self.frames, limit) :] if limit > 0 else []


class SceneChangeDetector:
    """Tells whether a frame shows a different scene from the last one it reported."""

    def __init__(self, threshold: float = 0.12) -> None:
        self.threshold = threshold
        self._reference: npt.NDArray[np.float32] | None = None

    def changed(self, frame: Frame) -> bool:
        """True for the first frame and whenever the scene differs by more than the threshold. Blocking."""
        thumb = frame.to_gray_thumbnail()
        if self._reference is not None and scene_difference(thumb, self._reference) <= self.threshold:
            return False
        self._reference = thumb
        return True


def make_policy(
    kind: Literal["latest", "window", "scene_change"],
    *,
    frames: int = 1,
    window_s: float = 2.0,
    threshold: float = 0.12,
) -> SamplingPolicy:
    """The policy named in ``video.sampling``."""
    if kind == "latest":
        return LatestFrame()
    if kind == "window":
        return FramesOverWindow(frames=frames, window_s=window_s)
    return SceneChanges(frames=frames, window_s=window_s, threshold=threshold)
