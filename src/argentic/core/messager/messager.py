"""``from argentic.core.messager.messager import Messager`` (earlier import path)."""

from argentic.messaging import Messager

__all__ = ["Messager"]
