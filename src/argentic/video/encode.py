"""Frames to JPEG data URLs for a multimodal model: scaled to fit, encoded off the event loop.

``to_ndarray`` + PIL is the fastest path measured (under 1 ms for 480p at quality 80);
``av.VideoFrame.to_image`` is several times slower.
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from argentic.errors import ArgumentError
from argentic.video.frames import Frame


@dataclass(frozen=True)
class EncodedFrame:
    """One frame ready to send: ``url`` is ``data:image/jpeg;base64,...``."""

    frame: Frame
    url: str
    width: int
    height: int
    jpeg_bytes: int


def fit_within(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The size that keeps the aspect ratio with the longer side at most ``max_side`` (even numbers)."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    scale = max_side / longest
    # even sizes: the scaler of YUV frames needs them, and models do not mind
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def encode_jpeg(frame: Frame, max_side: int = 768, quality: int = 80) -> tuple[bytes, int, int]:
    """JPEG bytes of ``frame`` scaled to fit ``max_side``, with the encoded width and height. Blocking."""
    width, height = fit_within(frame.width, frame.height, max_side)
    rgb = frame.to_rgb(width, height)
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="JPEG", quality=quality)
    return out.getvalue(), width, height


def encode_frame(frame: Frame, max_side: int = 768, quality: int = 80) -> EncodedFrame:
    """``frame`` as a JPEG data URL. Blocking: use :func:`encode_frames` on the loop."""
    data, width, height = encode_jpeg(frame, max_side, quality)
    url = "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")
    return EncodedFrame(frame=frame, url=url, width=width, height=height, jpeg_bytes=len(data))


async def encode_frames(
    frames: Sequence[Frame], max_side: int = 768, quality: int = 80
) -> list[EncodedFrame]:
    """Encode ``frames`` in a worker thread, keeping the event loop free."""
    if not frames:
        return []
    return await asyncio.to_thread(lambda: [encode_frame(frame, max_side, quality) for frame in frames])


def decode_data_url(url: str) -> bytes:
    """The bytes inside a ``data:...;base64,`` URL (for checking what was sent)."""
    header, _, payload = url.partition(",")
    if not header.startswith("data:") or not header.endswith(";base64"):
        raise ArgumentError(f"not a base64 data URL: {url[:40]!r}")
    return base64.b64decode(payload, validate=True)
