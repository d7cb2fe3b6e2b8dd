"""One MQTT connection: a paho-mqtt client whose socket the running asyncio loop serves.

paho's documented external-loop API does the work: its socket callbacks (open, close, register
and unregister write) hand the socket to the loop, which calls ``loop_read``/``loop_write`` when
it is ready and ``loop_misc`` once a second for the keepalive. Only paho's blocking ``connect()``
(DNS, TCP, the TLS handshake) runs in a thread. Owning the reader lets the link stop reading
(:meth:`PahoLink.pause_reading`) so that a flood waits in the broker, and owning the waiters of
SUBACK and UNSUBACK lets one whose caller gave up be ignored quietly.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties

from argentic.errors import BrokerUnavailableError, ConnectionLostError

logger = logging.getLogger("argentic.messaging")

# Without it every QoS 1 round trip waits on Nagle against delayed ACK (tens of milliseconds).
NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
MISC_INTERVAL_S = 1.0  # how often paho checks the keepalive (sends PINGREQ, notices a silent broker)


@dataclass(frozen=True, slots=True)
class Connack:
    """The broker's answer to CONNECT: ``code`` is its reason code (3.1.1: return code), 0 accepted."""

    code: int
    reason: str
    session_present: bool = False

    @property
    def accepted(self) -> bool:
        return self.code == 0


def reason_value(reason: object) -> int | None:
    value = getattr(reason, "value", reason)
    return value if isinstance(value, int) else None


def new_client(
    client_id: str, *, v5: bool, clean_session: bool | None = None, max_inflight: int | None = None
) -> paho.Client:
    """A paho client for a link: no reconnection of its own, no limit on its outgoing queue."""
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
        clean_session=None if v5 else clean_session,
        reconnect_on_failure=False,
    )
    client.enable_logger(logging.getLogger("argentic.messaging.paho"))
    if max_inflight is not None:
        client.max_inflight_messages_set(max_inflight)
    client.max_queued_messages_set(0)  # the Messager bounds what it queues itself
    return client


class PahoLink:
    """``client`` (a paho ``Client``, callbacks for PUBLISH and PUBACK left to the owner) on the loop.

    ``lost`` fails with ConnectionLostError once the connection ends, whatever ended it; ``on_lost``
    is then called once with the reason.
    """

    def __init__(self, client: paho.Client, *, on_lost: Callable[[str], None] | None = None) -> None:
        self.client = client
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.on_lost = on_lost  # called once, with the reason, when the connection ends
        self.lost: asyncio.Future[None] = self._loop.create_future()
        self._connack: asyncio.Future[Connack] | None = None
        self._waiters: dict[int, asyncio.Future[Any]] = {}  # SUBACK / UNSUBACK by message id
        self._sock: Any = None
        self._fd = -1
        self._closed = False
        self._reading = False
        self._misc: asyncio.TimerHandle | None = None
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_ack
        client.on_unsubscribe = self._on_ack
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write

    @property
    def socket(self) -> socket.socket | None:
        """The connected socket, while there is one (for diagnostics: options, addresses)."""
        return self._sock if not self._closed else None

    @property
    def is_open(self) -> bool:
        return not self._closed and not self.lost.done()

    # --- opening and closing ------------------------------------------------------------------

    async def open(
        self,
        host: str,
        port: int,
        *,
        keepalive: int,
        clean_start: Any,
        properties: Properties | None,
        timeout: float,  # noqa: ASYNC109 (one bound for TCP, TLS and CONNACK together)
    ) -> Connack:
        """Connect and wait for the CONNACK.

        Raises BrokerUnavailableError (closed before answering), OSError (TCP, TLS) or TimeoutError.
        On any failure, and on a refusal, the socket is closed at once.
        """
        self._connack = self._loop.create_future()
        self.client.connect_timeout = timeout
        try:
            async with asyncio.timeout(timeout):
                # paho's connect blocks on DNS, TCP and the TLS handshake; a thread that outlives
                # the timeout finds the link closed and closes its socket (see _attach).
                await self._loop.run_in_executor(
                    None, self.client.connect, host, port, keepalive, "", 0, clean_start, properties
                )
                connack = await self._connack
        except BaseException:
            self.close()
            raise
        if not connack.accepted:
            self.close()
            return connack
        self._misc = self._loop.call_later(MISC_INTERVAL_S, self._keepalive)
        return connack

    async def disconnect(self, properties: Properties | None = None, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Send DISCONNECT (so the broker keeps the will to itself), wait for it to go, then close."""
        if self.is_open and self.client.disconnect(properties=properties) == paho.MQTT_ERR_SUCCESS:
            # paho closes the socket once the DISCONNECT is written, and reports it to _on_disconnect.
            await asyncio.wait((self.lost,), timeout=timeout)
        self.close()

    def close(self) -> None:
        """Close the socket now (no DISCONNECT): a failed attempt or a connection given up on."""
        if self._closed:
            return
        self._closed = True
        self._lose("closed")
        self._detach()
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _lose(self, reason: str) -> None:
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None
        error = ConnectionLostError(f"connection to the broker lost: {reason}")
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(
                BrokerUnavailableError(f"the broker closed the connection before accepting it ({reason})")
            )
            self._connack.exception()  # retrieved: nobody awaits it once the attempt was given up
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters.values():
            if not waiter.done():
                waiter.set_exception(error)
        if self.lost.done():
            return
        self.lost.set_exception(error)
        self.lost.exception()  # retrieved: it is only a flag
        if self.on_lost is not None:
            self.on_lost(reason)

    # --- paho's socket callbacks (from connect()'s thread until the CONNECT is written) --------

    def _in_loop(self, function: Callable[..., None], *args: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            function(*args)
        else:
            self._loop.call_soon_threadsafe(function, *args)

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if isinstance(sock, socket.socket):
            sock.setsockopt(*NODELAY)  # before the CONNECT leaves
        self._in_loop(self._attach, sock)

    def _attach(self, sock: Any) -> None:
        if self._closed:  # an attempt given up on while its thread was still connecting
            sock.close()
            return
        self._sock, self._fd = sock, sock.fileno()
        self.resume_reading()

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._released)  # paho closes the socket right after

    def _released(self) -> None:
        self._detach()
        self._sock = None

    def _detach(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        self._reading = False
        self._fd = -1

    def _on_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._want_write)

    def _want_write(self) -> None:
        if not self._closed and self._fd >= 0:
            self._loop.add_writer(self._fd, self._writable)

    def _on_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._done_writing)

    def _done_writing(self) -> None:
        if self._fd >= 0:
            self._loop.remove_writer(self._fd)

    # --- serving the socket -------------------------------------------------------------------

    def pause_reading(self) -> None:
        """Stop reading the socket: what the broker sends waits there (and in the broker)."""
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False

    def resume_reading(self) -> None:
        if self._reading or self._closed or self._fd < 0:
            return
        self._loop.add_reader(self._fd, self._readable)
        self._reading = True
        if isinstance(self._sock, ssl.SSLSocket) and self._sock.pending():
            self._loop.call_soon(self._readable)  # decrypted bytes the selector cannot see

    def _readable(self) -> None:
        try:
            while self._reading:
                if self.client.loop_read() != paho.MQTT_ERR_SUCCESS:
                    break  # paho closed the socket and told _on_disconnect why
                # paho reads one packet a call; TLS may hold decrypted bytes no selector reports.
                if not isinstance(self._sock, ssl.SSLSocket) or self._sock.pending() <= 0:
                    break
        except Exception as exc:  # a broken socket surfaces here (BrokenPipe, SSL errors)
            self._fail(exc)

    def _writable(self) -> None:
        try:
            self.client.loop_write()
        except Exception as exc:
            self._fail(exc)

    def _keepalive(self) -> None:
        self._misc = None
        try:
            ok = self.client.loop_misc() == paho.MQTT_ERR_SUCCESS
        except Exception as exc:
            self._fail(exc)
            return
        if ok and not self._closed:
            self._misc = self._loop.call_later(MISC_INTERVAL_S, self._keepalive)

    def _fail(self, exc: BaseException) -> None:
        self._lose(f"{type(exc).__name__}: {exc}")
        self.close()

    # --- paho's protocol callbacks (on the loop) -----------------------------------------------

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any = None
    ) -> None:
        connack = self._connack
        if connack is None or connack.done():
            return
        code = reason_value(reason)
        if code is None:
            code = 128 if getattr(reason, "is_failure", False) else 0
        connack.set_result(Connack(code, str(reason), bool(getattr(flags, "session_present", False))))

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any = None
    ) -> None:
        self._in_loop(self._lose, str(reason))  # paho has closed the socket itself

    def _on_ack(self, client: paho.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        waiter = self._waiters.pop(mid, None)
        if waiter is None or waiter.done():
            # Its caller gave up (cancelled, timed out) before the broker answered.
            logger.debug("the broker acknowledged (un)subscription %d after its caller left", mid)
            return
        waiter.set_result(list(reasons))

    # --- subscribing --------------------------------------------------------------------------

    async def subscribe(self, topic_filter: str, qos: int) -> list[Any]:
        """Subscribe and return the broker's reason codes (MQTT 5) or granted QoS (3.1.1)."""
        if not self.is_open:
            raise ConnectionLostError("not connected to the broker")
        rc, mid = self.client.subscribe(topic_filter, qos)
        return await self._acknowledged(rc, mid, "subscribe")

    async def unsubscribe(self, topic_filter: str) -> None:
        if not self.is_open:
            raise ConnectionLostError("not connected to the broker")
        rc, mid = self.client.unsubscribe(topic_filter)
        await self._acknowledged(rc, mid, "unsubscribe")

    async def _acknowledged(self, rc: int, mid: int | None, what: str) -> list[Any]:
        if rc != paho.MQTT_ERR_SUCCESS or mid is None:
            raise ConnectionLostError(f"{what} failed: {paho.error_string(rc)}")
        waiter: asyncio.Future[list[Any]] = self._loop.create_future()
        self._waiters[mid] = waiter  # the answer is read on a later turn of the loop, never before
        try:
            return await waiter
        finally:
            if self._waiters.get(mid) is waiter:
                del self._waiters[mid]
