"""MQTT messaging: the :class:`Messager`, its transports, and an embedded broker."""

from argentic.messaging.messager import Messager, Subscription, Will
from argentic.messaging.transport import Transport

__all__ = ["Messager", "Subscription", "Transport", "Will"]
