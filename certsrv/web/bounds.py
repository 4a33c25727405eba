"""The limit values of a listener, and how a refused request is worded and logged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IAddress
from twisted.logger import Logger
from twisted.web import http

from certsrv.exceptions import LimitReason
from certsrv.tls.observer import NULL_OBSERVER, Observer

__all__ = ["SERVER_NAME", "Limits", "log_refusal", "response_text"]

SERVER_NAME = b"certsrv"
_log = Logger(namespace="certsrv.limits")


@dataclass(frozen=True)
class Limits:
    """What one peer may cost the server; the values of the limit options."""

    handshake_timeout: float = 10.0
    idle_timeout: float = 60.0
    header_timeout: float = 20.0
    body_timeout: float = 60.0
    max_connections: int = 10_000
    max_header_bytes: int = 16_384
    max_headers: int = 100
    max_body_bytes: int = 1_048_576
    max_streams: int = 100

    @property
    def hpack_bound(self) -> int:
        """The HTTP/2 header-list size (RFC 7541 counting) of the largest admissible request."""
        # HPACK counts 32 bytes per field besides name and value, and pseudo-headers add a few
        # fields. Larger blocks are refused while decoding (GOAWAY ENHANCE_YOUR_CALM); smaller
        # ones that still break the limits get 431 on their stream.
        return self.max_header_bytes + 32 * (self.max_headers + 8)


def response_text(status: int, message: str) -> bytes:
    """The plain-text body of a refusal."""
    return f"{http.RESPONSES.get(status, b'Error').decode()}: {message}\n".encode()


def log_refusal(channel: Any, peer: IAddress | None, status: int, reason: LimitReason,
                message: str) -> None:
    """Log a refused request, and report it to the observer of the channel's site."""
    host, port = getattr(peer, "host", None), getattr(peer, "port", None)
    _log.info("refused a request from {peer} with {status}: {message}",
              peer=f"{host}:{port}" if host is not None else str(peer), status=status,
              message=message, reason=reason.value)
    observer: Observer = getattr(getattr(channel, "site", None), "observer", NULL_OBSERVER)
    observer.request_refused(reason.value)
