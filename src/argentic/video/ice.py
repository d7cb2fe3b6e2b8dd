"""ICE settings: STUN/TURN servers from the config, and which local addresses are offered.

aioice offers every non-loopback address of the machine as a host candidate and has no option
to choose them. :func:`host_addresses` narrows that for the peer connections set up inside its
``with`` block (a context variable, so other connections in the process are unaffected), which
is how tests and benchmarks keep WebRTC on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

from argentic.config import VideoConfig

_host_addresses: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "argentic_ice_host_addresses", default=None
)
_original_get_host_addresses = aioice.ice.get_host_addresses


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    chosen = _host_addresses.get()
    if chosen is None:
        return list(_original_get_host_addresses(use_ipv4, use_ipv6))
    return [
        address for address in chosen if (":" in address and use_ipv6) or (":" not in address and use_ipv4)
    ]


def _install() -> None:
    if aioice.ice.get_host_addresses is not _get_host_addresses:
        aioice.ice.get_host_addresses = _get_host_addresses


@contextlib.contextmanager
def host_addresses(addresses: Sequence[str] | None) -> Iterator[None]:
    """Within this block, ICE gathers host candidates only on ``addresses`` (None: all, the default)."""
    if addresses is None:
        yield
        return
    _install()
    token = _host_addresses.set(tuple(addresses))
    try:
        yield
    finally:
        _host_addresses.reset(token)


def ice_servers(stun: Sequence[str] = (), turn: Sequence[RTCIceServer] = ()) -> list[RTCIceServer]:
    return [RTCIceServer(urls=url) for url in stun] + list(turn)


def rtc_configuration(servers: Sequence[RTCIceServer] | None) -> RTCConfiguration:
    """A configuration with exactly ``servers``: an empty list means none (aiortc's own default
    would reach out to a public STUN server)."""
    return RTCConfiguration(iceServers=list(servers or []))


def servers_from_config(config: VideoConfig) -> list[RTCIceServer]:
    turn = [
        RTCIceServer(
            urls=server.url,
            username=server.username,
            credential=server.password.get_secret_value() if server.password else None,
        )
        for server in config.turn_servers
    ]
    return ice_servers(config.stun_servers, turn)
