"""Receive a peer's video (and audio) over WebRTC, with signaling over MQTT.

Signaling is one request and one reply: the sending peer publishes a ``webrtc_offer`` request to
``{ns}/video/{stream}/offer``; the driver replies to its ``reply_to`` with a ``webrtc_answer``
(or an ``error`` reply naming what is wrong with the offer). aiortc gathers every ICE candidate
before it answers, so no trickle messages follow.

aiortc queues received frames without bound. A drain task per track reads them as they come and
keeps only the newest in a bounded buffer, so a slow consumer (a model taking seconds per
question) never makes the driver fall behind or grow its memory.

When the peer closes or its connection fails, the driver drops the session and waits for the
next offer; a new offer while a session is live replaces it (a peer that restarted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from aiortc import RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from argentic.config import VideoConfig
from argentic.errors import MalformedMessageError, VideoError
from argentic.errors_wire import error_info
from argentic.protocol import ErrorReply, WebRTCAnswer, WebRTCOffer
from argentic.video.frames import AudioBuffer, AudioChunk, Frame
from argentic.video.ice import host_addresses, rtc_configuration, servers_from_config
from argentic.video.source import BufferedSource

if TYPE_CHECKING:
    from argentic.messaging import Messager

log = logging.getLogger(__name__)

DriverState = Literal["stopped", "waiting", "connecting", "connected"]


class _Session:
    """One peer connection and the tasks draining its tracks."""

    def __init__(self, number: int, pc: RTCPeerConnection) -> None:
        self.number = number
        self.pc = pc
        self.tasks: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pc.close(), 10.0)


class WebRTCDriver(BufferedSource):
    """A :class:`~argentic.video.source.FrameSource` fed by a WebRTC peer.

    ``ice_servers`` are STUN/TURN servers (none by default: peers on one network need none);
    ``host_addresses`` restricts the local addresses offered to the peer (``["127.0.0.1"]`` keeps
    everything on loopback). The peer's sound is kept in ``audio``: ``audio_buffer_size`` decoded
    Opus frames of 20 ms (1500: half a minute).
    """

    def __init__(
        self,
        messager: Messager,
        stream: str = "default",
        *,
        ice_servers: Sequence[RTCIceServer] | None = None,
        host_addresses: Sequence[str] | None = None,
        buffer_size: int = 90,
        audio_buffer_size: int = 1500,
    ) -> None:
        super().__init__(buffer_size)
        self.messager = messager
        self.stream = stream
        self.offer_topic = messager.topics.video_offer(stream)
        self.ice_servers = list(ice_servers or [])
        self.host_addresses = list(host_addresses) if host_addresses is not None else None
        self.audio = AudioBuffer(audio_buffer_size)
        self.state: DriverState = "stopped"
        self.sessions = 0
        self.last_error: str | None = None
        self._session: _Session | None = None
        self._subscription: Any = None
        self._lock = asyncio.Lock()
        self._connected = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()

    @classmethod
    def from_config(cls, messager: Messager, config: VideoConfig) -> WebRTCDriver:
        return cls(
            messager,
            config.stream,
            ice_servers=servers_from_config(config),
            host_addresses=config.host_addresses,
            buffer_size=config.buffer_size,
        )

    async def start(self) -> None:
        """Listen for offers on ``{ns}/video/{stream}/offer``."""
        if self._subscription is not None:
            return
        self.buffer.reopen()
        self._subscription = await self.messager.subscribe(
            self.offer_topic, self._on_offer, model=WebRTCOffer
        )
        self.state = "waiting"
        log.info("waiting for a WebRTC offer on %s", self.offer_topic)

    async def stop(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(Exception):
                await self.messager.unsubscribe(subscription)
        async with self._lock:
            await self._end_session()
        self.state = "stopped"
        self.buffer.close("the WebRTC driver was stopped")

    async def wait_connected(self, timeout: float) -> None:  # noqa: ASYNC109 (the API takes plain timeouts)
        """Wait until a peer's media flows; raises :class:`VideoError` after ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            raise VideoError(
                f"no WebRTC peer connected on {self.offer_topic} within {timeout:g} s"
                + (f" (last error: {self.last_error})" if self.last_error else "")
            ) from None

    async def _on_offer(self, offer: WebRTCOffer) -> None:
        try:
            sdp = await self.answer(offer.sdp)
        except VideoError as exc:
            # An offer that cannot be answered is the peer's bad request (malformed_request), not
            # a want of frames (VideoError's code): reported as the protocol's class.
            error = error_info(MalformedMessageError(str(exc)))
            await self.messager.reply(offer, ErrorReply(request_id=offer.id, error=error))
            return
        await self.messager.reply(offer, WebRTCAnswer(sdp=sdp))

    async def answer(self, offer_sdp: str) -> str:
        """Start a session for ``offer_sdp`` (replacing any live one) and return the answer SDP."""
        async with self._lock:
            await self._end_session()
            self.sessions += 1
            pc = RTCPeerConnection(rtc_configuration(self.ice_servers))
            session = _Session(self.sessions, pc)
            self._session = session
            self.state = "connecting"

            @pc.on("track")
            def on_track(track: Any) -> None:
                drain = self._drain_video if track.kind == "video" else self._drain_audio
                task = asyncio.create_task(drain(track), name=f"webrtc-drain-{track.kind}-{session.number}")
                session.tasks.add(task)
                task.add_done_callback(session.tasks.discard)

            @pc.on("connectionstatechange")
            async def on_state() -> None:
                state = pc.connectionState
                log.debug("session %d: connection %s", session.number, state)
                if state == "connected" and self._session is session:
                    self.state = "connected"
                    self._connected.set()
                elif state in ("failed", "closed") and self._session is session:
                    # a task of its own: ending the session closes pc, which emits this event again
                    task = asyncio.create_task(self._peer_gone(session, state), name="webrtc-peer-gone")
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)

            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
                if not any(t.kind in ("video", "audio") for t in pc.getTransceivers()):
                    raise ValueError("the offer has no audio or video section (m=video / m=audio)")
                with host_addresses(self.host_addresses):
                    await pc.setLocalDescription(await pc.createAnswer())
            except Exception as exc:  # aiortc raises ValueError, KeyError, ... for bad SDP
                self.last_error = f"cannot answer the WebRTC offer: {type(exc).__name__}: {exc}"
                log.warning("%s", self.last_error)
                await self._end_session()
                raise VideoError(self.last_error) from exc
            log.info("answered WebRTC offer (session %d)", session.number)
            return str(pc.localDescription.sdp)

    async def _peer_gone(self, session: _Session, state: str) -> None:
        async with self._lock:
            if self._session is not session:
                return
            log.info("WebRTC peer of session %d %s; waiting for a new offer", session.number, state)
            await self._end_session()

    async def _end_session(self) -> None:
        session, self._session = self._session, None
        self._connected.clear()
        if self.state != "stopped":
            self.state = "waiting"
        if session is not None:
            await session.close()

    async def _drain_video(self, track: Any) -> None:
        while True:
            try:
                av_frame = await track.recv()
            except MediaStreamError:
                return
            media_time = float(av_frame.time) if av_frame.time is not None else None
            self.buffer.push(
                Frame(index=self.buffer.pushed, timestamp=time.time(), image=av_frame, media_time=media_time)
            )

    async def _drain_audio(self, track: Any) -> None:
        while True:
            try:
                av_frame = await track.recv()
            except MediaStreamError:
                return
            self.audio.push(AudioChunk(index=self.audio.pushed, timestamp=time.time(), frame=av_frame))
