"""WebRTC on loopback with signaling over a real mosquitto: frames verified by the index drawn in them."""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiortc import RTCPeerConnection, VideoStreamTrack

from argentic.errors import VideoError
from argentic.messaging import Messager
from argentic.protocol import ErrorReply, Message, WebRTCAnswer, WebRTCOffer
from argentic.testing.mosquitto import MosquittoBroker
from argentic.video import TestPatternSource, WebRTCDriver, WebRTCSender, read_frame_code
from argentic.video.ice import host_addresses

LOOPBACK = ["127.0.0.1"]
REPO = Path(__file__).resolve().parents[2]
MessagerFactory = Callable[[], Awaitable[Messager]]


async def eventually(check: Callable[[], bool], limit_s: float = 30.0) -> None:
    """Wait until ``check()`` holds (polled: the checks read counters); the limit bounds a broken run."""
    async with asyncio.timeout(limit_s):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_frames_arrive_in_order_with_their_content(messagers: MessagerFactory) -> None:
    driver = WebRTCDriver(await messagers(), "cam", host_addresses=LOOPBACK, buffer_size=300)
    await driver.start()
    source = TestPatternSource(320, 240, fps=30)
    await source.start()
    sender = WebRTCSender(await messagers(), source, "cam", host_addresses=LOOPBACK)
    await sender.connect()
    await driver.wait_connected(20)
    await eventually(lambda: driver.frames_seen >= 45)
    track = sender.track
    assert track is not None
    await sender.close()
    await source.stop()
    sent = list(track.sent_indices)

    frames = driver.recent()
    codes = [read_frame_code(frame.to_rgb()) for frame in frames]
    assert codes == sorted(set(codes)), "frames arrive once each, in order"
    assert set(codes) <= set(sent), "every frame is one the sender sent"
    # over loopback nothing is lost: the frames sent in that span all arrived
    span = [index for index in sent if codes[0] <= index <= codes[-1]]
    assert len(span) - len(codes) <= 2
    assert frames[0].width == 320 and frames[0].height == 240
    assert all(a.timestamp <= b.timestamp for a, b in itertools.pairwise(frames))
    await driver.stop()


async def test_audio_frames_are_kept_too(messagers: MessagerFactory) -> None:
    driver = WebRTCDriver(await messagers(), "av", host_addresses=LOOPBACK, audio_buffer_size=20)
    await driver.start()
    source = TestPatternSource(160, 120, fps=15)
    await source.start()
    async with WebRTCSender(await messagers(), source, "av", host_addresses=LOOPBACK, audio=True):
        await eventually(lambda: driver.audio.pushed > 30 and driver.frames_seen > 5)
    await source.stop()
    await driver.stop()
    chunks = driver.audio.recent()
    assert len(chunks) == 20, "the audio buffer is bounded"
    assert all(chunk.sample_rate > 0 and chunk.samples > 0 for chunk in chunks)


async def test_a_slow_consumer_never_makes_the_driver_fall_behind(messagers: MessagerFactory) -> None:
    driver = WebRTCDriver(await messagers(), "slow", host_addresses=LOOPBACK, buffer_size=10)
    await driver.start()
    source = TestPatternSource(320, 240, fps=30)
    await source.start()
    async with WebRTCSender(await messagers(), source, "slow", host_addresses=LOOPBACK):
        await eventually(lambda: driver.frames_seen > 60)  # nobody reads the frames meanwhile
        assert len(driver.buffer) == 10
        newest = driver.latest()
        assert newest is not None
        drawn = read_frame_code(newest.to_rgb())
    await source.stop()
    await driver.stop()
    # the newest frame is one of the last drawn, not one queued seconds ago
    assert drawn >= source.frames_seen - 30


async def test_offers_use_the_documented_topic_and_one_answer(messagers: MessagerFactory) -> None:
    watcher = await messagers()
    seen: list[tuple[str, Message]] = []

    async def record(message: Message) -> None:
        seen.append((type(message).__name__, message))

    await watcher.subscribe(watcher.topics.video_offer("doc"), record)
    driver = WebRTCDriver(await messagers(), "doc", host_addresses=LOOPBACK)
    await driver.start()

    client = await messagers()
    pc = RTCPeerConnection()
    pc.addTrack(VideoStreamTrack())
    with host_addresses(LOOPBACK):
        await pc.setLocalDescription(await pc.createOffer())
    reply = await client.request(
        client.topics.video_offer("doc"), WebRTCOffer(sdp=pc.localDescription.sdp, stream="doc"), timeout=20
    )
    assert isinstance(reply, WebRTCAnswer)
    assert "m=video" in reply.sdp
    candidates = [line for line in reply.sdp.splitlines() if line.startswith("a=candidate:")]
    assert candidates and all(" 127.0.0.1 " in line for line in candidates), "ICE stays on loopback"
    await eventually(lambda: len(seen) == 1)
    assert seen[0][0] == "WebRTCOffer" and seen[0][1].reply_to == client.inbox
    await pc.close()
    await driver.stop()


async def test_garbage_offer_gets_an_error_reply_and_the_driver_keeps_serving(
    messagers: MessagerFactory,
) -> None:
    driver = WebRTCDriver(await messagers(), "bad", host_addresses=LOOPBACK)
    await driver.start()
    client = await messagers()
    reply = await client.request(
        client.topics.video_offer("bad"), WebRTCOffer(sdp="v=0\r\nnot an sdp"), timeout=20
    )
    assert isinstance(reply, ErrorReply)
    assert reply.error.code == "malformed_request"
    assert "cannot answer the WebRTC offer" in reply.error.message

    source = TestPatternSource(160, 120, fps=15)
    await source.start()
    async with WebRTCSender(client, source, "bad", host_addresses=LOOPBACK):
        frame = await driver.wait_for_frame(20)
        assert read_frame_code(frame.to_rgb()) <= source.frames_seen
    await source.stop()
    await driver.stop()


async def test_no_receiver_is_a_clear_sender_error(messagers: MessagerFactory) -> None:
    source = TestPatternSource(160, 120, fps=15)
    sender = WebRTCSender(await messagers(), source, "nobody", host_addresses=LOOPBACK, connect_timeout_s=1)
    with pytest.raises(VideoError, match="no answer to the WebRTC offer"):
        await sender.connect()


async def test_driver_takes_the_next_peer_after_one_goes_away(messagers: MessagerFactory) -> None:
    driver = WebRTCDriver(await messagers(), "re", host_addresses=LOOPBACK)
    await driver.start()
    first_source = TestPatternSource(160, 120, fps=30)
    await first_source.start()
    async with WebRTCSender(await messagers(), first_source, "re", host_addresses=LOOPBACK):
        await eventually(lambda: driver.frames_seen > 5)
    await first_source.stop()
    await eventually(lambda: driver.state == "waiting")
    assert driver.sessions == 1

    # a second peer whose pattern starts far from the first one's indices
    second_source = TestPatternSource(160, 120, fps=30)
    second_source.buffer.pushed = 500_000
    await second_source.start()
    async with WebRTCSender(await messagers(), second_source, "re", host_addresses=LOOPBACK):
        await eventually(
            lambda: (f := driver.latest()) is not None and read_frame_code(f.to_rgb()) >= 500_000
        )
    await second_source.stop()
    assert driver.sessions == 2
    await driver.stop()


async def test_sender_reconnects_when_the_receiver_restarts(messagers: MessagerFactory) -> None:
    source = TestPatternSource(160, 120, fps=30)
    await source.start()
    first = WebRTCDriver(await messagers(), "restart", host_addresses=LOOPBACK)
    await first.start()
    sender = WebRTCSender(await messagers(), source, "restart", host_addresses=LOOPBACK, reconnect=True)
    await sender.connect()
    await eventually(lambda: first.frames_seen > 5)
    await first.stop()  # the receiving process goes away

    second = WebRTCDriver(await messagers(), "restart", host_addresses=LOOPBACK)
    await second.start()
    frame = await second.wait_for_frame(30)
    assert read_frame_code(frame.to_rgb()) <= source.frames_seen
    assert sender.connections >= 2
    await sender.close()
    await source.stop()
    await second.stop()


async def test_a_killed_sender_process_is_replaced_by_the_next_one(
    messagers: MessagerFactory, mosquitto: MosquittoBroker, namespace: str
) -> None:
    """The example sender in its own process: killed without a goodbye, then a new one streams."""
    driver = WebRTCDriver(await messagers(), "proc", host_addresses=LOOPBACK)
    await driver.start()

    async def spawn() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            str(REPO / "examples" / "webrtc_sender.py"),
            *("--broker", "127.0.0.1", "--port", str(mosquitto.port), "--namespace", namespace),
            *("--stream", "proc", "--size", "160x120", "--fps", "15", "--loopback", "--duration", "60"),
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "ARGENTIC_CONFIG": os.devnull},
        )

    first = await spawn()
    try:
        await eventually(lambda: driver.frames_seen > 3, limit_s=60)
    finally:
        first.kill()
        await first.wait()
    second = await spawn()
    try:
        await eventually(lambda: driver.sessions == 2 and driver.state == "connected", limit_s=60)
        frame = await driver.wait_for_frame(30, newer_than=driver.frames_seen)
        assert read_frame_code(frame.to_rgb()) < 15 * 60, "a frame the second sender drew"
    finally:
        second.terminate()
        await second.wait()
    await driver.stop()


async def test_the_sender_connects_inside_async_with_and_closes_after(messagers: MessagerFactory) -> None:
    driver = WebRTCDriver(await messagers(), "with", host_addresses=LOOPBACK)
    source = TestPatternSource(160, 120, fps=30)
    async with driver, source:
        sender = WebRTCSender(await messagers(), source, "with", host_addresses=LOOPBACK, reconnect=True)
        async with sender as entered:
            assert entered is sender and sender.pc is not None
            assert sender.pc.connectionState == "connected"
            await eventually(lambda: driver.frames_seen > 5)
            await sender.start()  # connected already: nothing new
            assert sender.connections == 1
        assert sender.pc is None and sender.track is None and sender._watch_task is None
        await eventually(lambda: driver.state == "waiting")
        # The older names are the same lifecycle: connect() offers again, close() ends it.
        await sender.connect()
        assert sender.connections == 2 and sender.pc is not None
        await sender.close()
        assert sender.pc is None


async def test_a_sender_that_cannot_connect_fails_to_enter_and_leaves_nothing(
    messagers: MessagerFactory,
) -> None:
    source = TestPatternSource(160, 120, fps=15)
    sender = WebRTCSender(
        await messagers(), source, "nobody-with", host_addresses=LOOPBACK, reconnect=True, connect_timeout_s=1
    )
    with pytest.raises(VideoError, match="no answer to the WebRTC offer"):
        async with sender:
            pytest.fail("the block must not run")
    assert sender.pc is None and sender.track is None
    assert sender._watch_task is None, "no reconnecting left running after a failed start"
