"""Frames (and sound) from a video file or stream URL, decoded with PyAV in a thread of their own.

Decoding goes straight through the file and keeps the newest frames: sampling by seeking is
slower than decoding every frame (keyframes are far apart), and a thread keeps the loop free.
A file's first audio track is decoded in the same pass into the ``audio`` buffer, paced by the
same clock; :class:`AudioFileSource` reads a file that has sound only (a WAV file).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

import av

from argentic.errors import VideoError
from argentic.video.frames import AudioBuffer, AudioChunk, Frame
from argentic.video.source import BufferedSource

log = logging.getLogger(__name__)


class FileSource(BufferedSource):
    """A video file (or anything ``av.open`` reads, such as an RTSP URL) as a frame source.

    ``realtime`` paces frames at the file's own rate (a live feed); otherwise frames come as fast
    as they decode. ``loop`` starts over at the end. A missing or unreadable file raises
    :class:`VideoError` from :meth:`start`; a file that breaks part way ends the source, and
    waiters get a :class:`VideoError` that names the file and the decoder's complaint.
    ``audio_buffer_size`` is how many decoded audio frames the ``audio`` buffer keeps (about 20 ms
    each for AAC and Opus: 1500 is half a minute).
    """

    #: Which streams the file must have.
    needs_video = True

    def __init__(
        self,
        path: str | Path,
        *,
        realtime: bool = True,
        loop: bool = False,
        buffer_size: int = 90,
        options: dict[str, str] | None = None,
        container_format: str | None = None,
        audio_buffer_size: int = 1500,
    ) -> None:
        super().__init__(buffer_size)
        self.audio = AudioBuffer(audio_buffer_size)
        self.path = str(path)
        self.container_format = container_format
        self.realtime = realtime
        self.loop = loop
        self.options = options or {}
        self.error: str | None = None
        self.finished = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.width = 0
        self.height = 0
        self.frame_rate: float | None = None
        #: Whether the file has an audio track (known once started).
        self.has_audio: bool | None = None

    def _open(self) -> Any:
        is_url = "://" in self.path
        if self.container_format is not None:  # a device (camera) or a named demuxer
            if not is_url and self.path.startswith("/") and not Path(self.path).exists():
                raise VideoError(f"video device {self.path} does not exist")
        elif not is_url and not Path(self.path).is_file():
            raise VideoError(f"video file {self.path} does not exist")
        try:
            container = av.open(self.path, format=self.container_format, options=self.options, timeout=10.0)
        except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
            raise VideoError(f"cannot open video {self.path}: {exc}") from exc
        if self.needs_video and not container.streams.video:
            container.close()
            raise VideoError(f"{self.path} has no video stream")
        if not self.needs_video and not container.streams.audio:
            container.close()
            raise VideoError(f"{self.path} has no audio stream")
        return container

    async def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        container = await asyncio.to_thread(self._open)
        self.has_audio = bool(container.streams.audio)
        if self.needs_video:
            stream = container.streams.video[0]
            self.width, self.height = stream.codec_context.width, stream.codec_context.height
            rate = stream.average_rate or stream.guessed_rate
            self.frame_rate = float(rate) if rate else None
        self._stop.clear()
        self.finished = False
        self.error = None
        self.buffer.reopen()
        self.audio.reopen()
        self._thread = threading.Thread(
            target=self._decode,
            args=(container, asyncio.get_running_loop()),
            name="video-decode",
            daemon=True,
        )
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join, 10.0)
        if self.buffer.closed_reason is None:
            self.buffer.close(f"the video {self.path} was stopped")
        if self.audio.closed_reason is None:
            self.audio.close(f"the video {self.path} was stopped")

    def _decode(self, container: Any, loop: asyncio.AbstractEventLoop) -> None:
        index = self.buffer.pushed
        audio_index = self.audio.pushed
        reason = f"the video {self.path} ended"
        try:
            video = container.streams.video[0] if container.streams.video else None
            audio = container.streams.audio[0] if container.streams.audio else None
            if video is not None:
                video.thread_type = "AUTO"
            streams = [s for s in (video, audio) if s is not None]
            fallback_step = 1.0 / self.frame_rate if self.frame_rate else 1.0 / 30.0
            while not self._stop.is_set():
                started = time.monotonic()
                first_time: float | None = None
                decoded = 0
                heard = 0.0
                for packet in container.demux(*streams):
                    is_video = packet.stream.type == "video"
                    for av_frame in packet.decode():
                        if is_video:
                            decoded += 1
                            fallback = decoded * fallback_step
                        else:
                            fallback = heard
                            heard += av_frame.samples / av_frame.sample_rate
                        media_time = float(av_frame.time) if av_frame.time is not None else fallback
                        if first_time is None:
                            first_time = media_time
                        if self.realtime:
                            delay = started + (media_time - first_time) - time.monotonic()
                            if delay > 0 and self._stop.wait(delay):
                                return
                        if self._stop.is_set():
                            return
                        if is_video:
                            image = av_frame.to_ndarray(format="rgb24")
                            item: Any = Frame(
                                index=index, timestamp=time.time(), image=image, media_time=media_time
                            )
                            target: Any = self.buffer
                            index += 1
                        else:
                            item = AudioChunk(index=audio_index, timestamp=time.time(), frame=av_frame)
                            target = self.audio
                            audio_index += 1
                        if not _call_soon(loop, target.push, item):
                            return
                if not self.loop or decoded + heard == 0:
                    break
                container.seek(0)
        except (av.FFmpegError, OSError, ValueError) as exc:
            self.error = f"cannot decode {self.path}: {exc}"
            reason = self.error
            log.warning("%s", self.error)
        finally:
            container.close()
            self.finished = True
            _call_soon(loop, self.buffer.close, reason)
            _call_soon(loop, self.audio.close, reason)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Any, *args: Any) -> bool:
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:  # the loop is closed: nobody is listening any more
        return False
    return True


class AudioFileSource(FileSource):
    """A sound file (WAV, or any file ``av.open`` reads with an audio track) as an audio source:
    its ``audio`` buffer fills at the file's own pace (``realtime``), starting over at the end
    with ``loop``. It has no frames; pair it with a frame source in a visual agent."""

    needs_video = False

    def __init__(
        self, path: str | Path, *, realtime: bool = True, loop: bool = True, audio_buffer_size: int = 1500
    ) -> None:
        super().__init__(path, realtime=realtime, loop=loop, audio_buffer_size=audio_buffer_size)


class CameraSource(FileSource):
    """A camera through FFmpeg's capture devices: ``/dev/video0`` with ``v4l2`` on Linux,
    ``"0"`` with ``avfoundation`` on macOS. The device paces the frames."""

    def __init__(
        self,
        device: str = "/dev/video0",
        *,
        width: int = 640,
        height: int = 480,
        fps: int = 30,
        container_format: str = "v4l2",
        buffer_size: int = 90,
    ) -> None:
        super().__init__(
            device,
            realtime=False,
            buffer_size=buffer_size,
            options={"video_size": f"{width}x{height}", "framerate": str(fps)},
            container_format=container_format,
        )
