"""MQTT messaging: the :class:`Messager`, its transports, and an embedded broker."""

from argentic.messaging.messager import Messager, Subscription, Will, delivery_topic
from argentic.messaging.stream import Cleared, MessageStream
from argentic.messaging.transport import Transport

__all__ = ["Cleared", "MessageStream", "Messager", "Subscription", "Transport", "Will", "delivery_topic"]
