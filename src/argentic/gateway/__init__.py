"""The A2A gateway: each role online on the broker as an A2A agent over HTTP, and a live web view
of the team (``argentic gateway``)."""

from argentic.gateway.server import Gateway

__all__ = ["Gateway"]
