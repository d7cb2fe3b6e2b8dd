"""Stream a frame source to a :class:`~argentic.video.webrtc_driver.WebRTCDriver` over WebRTC.

The sending peer of the signaling exchange: it sends one ``webrtc_offer`` request to
``{ns}/video/{stream}/offer`` and applies the ``webrtc_answer`` reply. With ``reconnect`` it
offers again whenever the connection fails or the receiver goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError

from argentic.config import VideoConfig
from argentic.errors import MessagingError, VideoError
from argentic.protocol import ErrorReply, WebRTCAnswer, WebRTCOffer
from argentic.video.audio import audio_of
from argentic.video.frames import AudioBuffer, AudioChunk, Frame
from argentic.video.ice import host_addresses, rtc_configuration, servers_from_config
from argentic.video.source import FrameSource

if TYPE_CHECKING:
    from argentic.messaging import Messager

log = logging.getLogger(__name__)

VIDEO_CLOCK_RATE = 90_000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)


class SourceTrack(MediaStreamTrack):
    """A video track that sends each new frame of a :class:`FrameSource` once, as it comes."""

    kind = "video"

    def __init__(
        self, source: FrameSource, frame_timeout_s: float = 10.0, log: deque[tuple[int, float]] | None = None
    ) -> None:
        super().__init__()
        self.source = source
        self.log = log
        self.frame_timeout_s = frame_timeout_s
        self.frames_sent = 0
        self.last_index: int | None = None
        #: Indices of the latest frames sent (the source may produce faster than the encoder takes).
        self.sent_indices: deque[int] = deque(maxlen=1000)
        self._first_timestamp: float | None = None

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        try:
            frame = await self.source.wait_for_frame(self.frame_timeout_s, newer_than=self.last_index)
        except VideoError as exc:
            log.info("video track ends: %s", exc)
            self.stop()
            raise MediaStreamError from exc
        self.last_index = frame.index
        self.frames_sent += 1
        self.sent_indices.append(frame.index)
        if self.log is not None:
            self.log.append((frame.index, frame.timestamp))
        return self._to_av(frame)

    def _to_av(self, frame: Frame) -> Any:
        if self._first_timestamp is None:
            self._first_timestamp = frame.timestamp
        av_frame = (
            frame.image if isinstance(frame.image, av.VideoFrame) else av.VideoFrame.from_ndarray(frame.image)
        )
        av_frame.pts = int((frame.timestamp - self._first_timestamp) * VIDEO_CLOCK_RATE)
        av_frame.time_base = VIDEO_TIME_BASE
        return av_frame


class SourceAudioTrack(MediaStreamTrack):
    """An audio track that sends each new chunk of an :class:`AudioBuffer` once, in order (chunks
    that fell out of the buffer before they were sent are skipped)."""

    kind = "audio"

    def __init__(self, buffer: AudioBuffer, chunk_timeout_s: float = 10.0) -> None:
        super().__init__()
        self.buffer = buffer
        self.chunk_timeout_s = chunk_timeout_s
        self.last_index: int | None = None
        self.chunks_sent = 0
        self._pts = 0

    def _next(self) -> AudioChunk | None:
        chunks = self.buffer.recent()
        if self.last_index is None:
            return chunks[-1] if chunks else None
        return next((c for c in chunks if c.index > self.last_index), None)

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.chunk_timeout_s
        while (chunk := self._next()) is None:
            remaining = deadline - loop.time()
            if self.buffer.closed_reason is not None or remaining <= 0:
                log.info("audio track ends: %s", self.buffer.closed_reason or "no sound came")
                self.stop()
                raise MediaStreamError
            with contextlib.suppress(TimeoutError):
                await self.buffer.wait(remaining)
        self.last_index = chunk.index
        self.chunks_sent += 1
        return self._to_s16(chunk.frame)

    def _to_s16(self, frame: Any) -> Any:
        """A copy of ``frame`` as the Opus encoder takes it (s16, mono or stereo), with this track's
        own timeline (the buffer's frames are shared with other readers)."""
        if frame.format.name == "s16" and frame.layout.name in ("mono", "stereo"):
            data, layout = frame.to_ndarray(), frame.layout.name
        else:
            converted = av.AudioResampler(format="s16", layout="mono", rate=frame.sample_rate).resample(frame)
            data, layout = np.concatenate([f.to_ndarray() for f in converted], axis=1), "mono"
        out = av.AudioFrame.from_ndarray(data, format="s16", layout=layout)
        out.sample_rate = frame.sample_rate
        out.pts = self._pts
        out.time_base = fractions.Fraction(1, frame.sample_rate)
        self._pts += out.samples
        return out


class WebRTCSender:
    """Offers a connection to the driver listening on ``stream`` and sends ``source``'s frames.

    With ``audio`` it sends sound too: the source's own (its ``audio`` buffer: the test pattern's
    tone, a file's audio track) or, for a source without sound, silence (for receivers that expect
    an audio track). Frames are sent as the source produces them; the source paces the stream.
    """

    def __init__(
        self,
        messager: Messager,
        source: FrameSource,
        stream: str = "default",
        *,
        ice_servers: Sequence[RTCIceServer] | None = None,
        host_addresses: Sequence[str] | None = None,
        audio: bool = False,
        reconnect: bool = False,
        connect_timeout_s: float = 20.0,
    ) -> None:
        self.messager = messager
        self.source = source
        self.stream = stream
        self.offer_topic = messager.topics.video_offer(stream)
        self.ice_servers = list(ice_servers or [])
        self.host_addresses = list(host_addresses) if host_addresses is not None else None
        self.audio = audio
        self.reconnect = reconnect
        self.connect_timeout_s = connect_timeout_s
        self.connections = 0
        self.frames_sent_before = 0
        #: (index, capture time) of the latest frames sent, over all connections.
        self.sent_log: deque[tuple[int, float]] = deque(maxlen=10_000)
        self.pc: RTCPeerConnection | None = None
        self.track: SourceTrack | None = None
        self._closing = False
        self._watch_task: asyncio.Task[None] | None = None

    @classmethod
    def from_config(
        cls, messager: Messager, source: FrameSource, config: VideoConfig, **kwargs: Any
    ) -> WebRTCSender:
        return cls(
            messager,
            source,
            config.stream,
            ice_servers=servers_from_config(config),
            host_addresses=config.host_addresses,
            **kwargs,
        )

    @property
    def frames_sent(self) -> int:
        """Frames handed to the encoder over all connections."""
        return self.frames_sent_before + (self.track.frames_sent if self.track else 0)

    async def connect(self) -> None:
        """Offer, apply the answer and wait until connected; raises :class:`VideoError` on failure."""
        self._closing = False
        await self._connect_once()
        if self.reconnect and self._watch_task is None:
            self._watch_task = asyncio.create_task(self._keep_connected(), name="webrtc-sender-reconnect")

    async def _connect_once(self) -> None:
        await self._drop_connection()
        pc = RTCPeerConnection(rtc_configuration(self.ice_servers))
        track = SourceTrack(self.source, log=self.sent_log)
        pc.addTrack(track)
        if self.audio:
            sound = audio_of(self.source)
            pc.addTrack(SourceAudioTrack(sound) if sound is not None else AudioStreamTrack())
        self.pc, self.track = pc, track
        connected = asyncio.Event()
        failed = asyncio.Event()

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected":
                connected.set()
            elif pc.connectionState in ("failed", "closed"):
                failed.set()

        with host_addresses(self.host_addresses):
            await pc.setLocalDescription(await pc.createOffer())
        try:
            reply = await self.messager.request(
                self.offer_topic,
                WebRTCOffer(sdp=pc.localDescription.sdp, stream=self.stream),
                response_model=WebRTCAnswer,
                timeout=self.connect_timeout_s,
            )
        except MessagingError as exc:
            await self._drop_connection()
            raise VideoError(f"no answer to the WebRTC offer on {self.offer_topic}: {exc}") from exc
        if isinstance(reply, ErrorReply):
            await self._drop_connection()
            raise VideoError(f"the receiver refused the WebRTC offer: {reply.error.message}")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=reply.sdp, type="answer"))
        waiters = [asyncio.ensure_future(connected.wait()), asyncio.ensure_future(failed.wait())]
        try:
            await asyncio.wait(waiters, timeout=self.connect_timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if not connected.is_set():
            await self._drop_connection()
            raise VideoError(
                f"the WebRTC connection on {self.offer_topic} did not come up ({pc.connectionState})"
            )
        self.connections += 1
        log.info("streaming to %s", self.offer_topic)

    async def _keep_connected(self) -> None:
        delay = 0.2
        while not self._closing:
            await asyncio.sleep(0.2)
            pc = self.pc
            if pc is not None and pc.connectionState not in ("failed", "closed"):
                delay = 0.2
                continue
            try:
                await self._connect_once()
                delay = 0.2
            except VideoError as exc:
                log.info("reconnecting to %s in %.1f s: %s", self.offer_topic, delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _drop_connection(self) -> None:
        pc, track, self.pc, self.track = self.pc, self.track, None, None
        if track is not None:
            self.frames_sent_before += track.frames_sent
            track.stop()
        if pc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pc.close(), 10.0)

    async def close(self) -> None:
        self._closing = True
        task, self._watch_task = self._watch_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._drop_connection()

    async def __aenter__(self) -> WebRTCSender:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
