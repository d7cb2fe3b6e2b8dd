"""Stream a frame source to a :class:`~argentic.video.webrtc_driver.WebRTCDriver` over WebRTC.

The sending peer of the signaling exchange: it sends one ``webrtc_offer`` request to
``{ns}/video/{stream}/offer`` and applies the ``webrtc_answer`` reply. With ``reconnect`` it
offers again whenever the connection fails or the receiver goes away. ``async with sender:``
connects and closes (``connect()`` / ``close()`` are the older names of ``start()`` / ``stop()``).
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
from aiortc import MediaStreamTrack, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError

from argentic.config import VideoConfig
from argentic.errors import MessagingError, VideoError
from argentic.lifecycle import Running
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
OPUS_RATE = 48_000
OPUS_FRAME_SAMPLES = 960  # 20 ms


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
    """An audio track that sends the sound of an :class:`AudioBuffer` once, in order (chunks that
    fell out of the buffer before they were sent are skipped).

    The sound goes out as 20 ms frames of 48 kHz 16-bit mono: aiortc's Opus encoder stamps every
    packet of one input frame with the same time, so longer frames would reach the peer garbled.
    """

    kind = "audio"

    def __init__(self, buffer: AudioBuffer, chunk_timeout_s: float = 10.0) -> None:
        super().__init__()
        self.buffer = buffer
        self.chunk_timeout_s = chunk_timeout_s
        self.last_index: int | None = None
        self.chunks_sent = 0
        self._pending: deque[Any] = deque()
        self._resampler: Any = None
        self._pts = 0

    def _next(self) -> AudioChunk | None:
        chunks = self.buffer.recent()
        if self.last_index is None:
            return chunks[-1] if chunks else None
        return next((c for c in chunks if c.index > self.last_index), None)

    async def _next_chunk(self) -> AudioChunk:
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
        return chunk

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        while not self._pending:
            chunk = await self._next_chunk()
            if self._resampler is None:
                self._resampler = av.AudioResampler(
                    format="s16", layout="mono", rate=OPUS_RATE, frame_size=OPUS_FRAME_SAMPLES
                )
            try:
                self._pending.extend(self._resampler.resample(chunk.frame))
            except ValueError:  # the source changed format: start a new resampler with the next chunk
                self._resampler = None
        frame = self._pending.popleft()
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, OPUS_RATE)
        self._pts += frame.samples
        return frame


class WebRTCSender(Running):
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
        self.audio_track: SourceAudioTrack | None = None
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

    async def start(self) -> None:
        """Offer, apply the answer and wait until connected; raises :class:`VideoError` on failure
        (leaving no connection behind). Connected already: nothing."""
        if self.pc is not None and self.pc.connectionState == "connected":
            return
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
            self.audio_track = SourceAudioTrack(sound) if sound is not None else None
            pc.addTrack(self.audio_track or AudioStreamTrack())
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
        if self.audio_track is not None:
            self.audio_track.stop()
        if track is not None:
            self.frames_sent_before += track.frames_sent
            track.stop()
        if pc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pc.close(), 10.0)

    async def connect(self) -> None:
        """The older name of :meth:`start`."""
        await self.start()

    async def stop(self) -> None:
        """Stop reconnecting and close the connection (idempotent)."""
        self._closing = True
        task, self._watch_task = self._watch_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._drop_connection()

    async def close(self) -> None:
        """The older name of :meth:`stop`."""
        await self.stop()
