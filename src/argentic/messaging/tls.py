"""TLS settings from the config turned into the ssl context the MQTT client uses."""

from __future__ import annotations

import ssl

from argentic.config import TLSConfig
from argentic.errors import ConfigError


def build_ssl_context(tls: TLSConfig) -> ssl.SSLContext:
    """A client context: the given CA (else the system's), an optional client certificate.

    ``insecure`` skips the hostname check only; the certificate chain is still verified.
    This reads files: call it off the event loop. A file that cannot be read or used raises
    :class:`ConfigError` naming the key.
    """
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_certs) if tls.ca_certs else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"messaging.tls.ca_certs = {str(tls.ca_certs)!r}: cannot load the CA certificates ({exc})"
        ) from None
    if tls.certfile is not None:
        try:
            context.load_cert_chain(str(tls.certfile), str(tls.keyfile) if tls.keyfile else None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"messaging.tls.certfile / keyfile = {str(tls.certfile)!r}: cannot load the client "
                f"certificate ({exc})"
            ) from None
    if tls.insecure:
        context.check_hostname = False
    return context
