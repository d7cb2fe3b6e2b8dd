"""Former home of the MQTT transport, kept so that older imports keep working.

The transport is :class:`argentic.messaging.mqtt_transport.MqttTransport`; it no longer goes
through aiomqtt but drives paho-mqtt (which aiomqtt wraps) through paho's public API.
``AiomqttTransport`` is the same class under its old name.
"""

from argentic.messaging.mqtt_transport import NODELAY, MqttTransport

AiomqttTransport = MqttTransport

__all__ = ["NODELAY", "AiomqttTransport"]
