"""TLS settings from the config turned into the ssl context the MQTT client uses."""

from __future__ import annotations

import ssl

from argentic.config import TLSConfig


def build_ssl_context(tls: TLSConfig) -> ssl.SSLContext:
    """A client context: the given CA (else the system's), an optional client certificate.

    ``insecure`` skips the hostname check only; the certificate chain is still verified.
    This reads files: call it off the event loop.
    """
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_certs) if tls.ca_certs else None
    )
    if tls.certfile is not None:
        context.load_cert_chain(str(tls.certfile), str(tls.keyfile) if tls.keyfile else None)
    if tls.insecure:
        context.check_hostname = False
    return context
