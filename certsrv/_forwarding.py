"""Client certificates forwarded by a trusted TLS-terminating proxy: who may forward, how."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from twisted.web import server

from certsrv._forwarded import (
    ALL_FORWARDED_HEADERS,
    ForwardedCertConfig,
    ForwardedChain,
    TrustedProxies,
)
from certsrv.exceptions import ConfigurationError

__all__ = ["Forwarding", "forwarding", "strip_forwarded_headers"]


@dataclass(frozen=True)
class Forwarding:
    """The forwarded-certificate format and the proxies allowed to use it."""

    config: ForwardedCertConfig
    proxies: TrustedProxies

    def trusts(self, request: server.Request) -> bool:
        """Whether the request's TCP peer is one of the trusted proxies."""
        host = getattr(request.getClientAddress(), "host", None)
        return isinstance(host, str) and self.proxies.contains(host)

    def certificate(self, request: server.Request) -> ForwardedChain | None:
        """The forwarded chain (None without one); ForwardedCertError when malformed."""
        return self.config.parse(request.requestHeaders)


def forwarding(format: str | None, header: str | None, proxies: Sequence[str]
               ) -> Forwarding | None:
    """Check the forwarding options together; None when forwarding is off."""
    if format is None:
        if proxies:
            raise ConfigurationError("--trusted-proxy", "has no effect without --forwarded-cert")
        if header is not None:
            raise ConfigurationError("--forwarded-cert-header",
                                     "has no effect without --forwarded-cert")
        return None
    if not proxies:
        raise ConfigurationError("--forwarded-cert", "needs at least one --trusted-proxy: "
                                 "accepting forwarded certificates from anyone would let any "
                                 "client claim any identity")
    return Forwarding(ForwardedCertConfig.create(format, header), TrustedProxies(proxies))


def strip_forwarded_headers(request: server.Request, forwarded: Forwarding | None) -> None:
    """Remove every forwarded-certificate header, so the app never sees a spoofed one."""
    names = forwarded.config.strip_headers if forwarded is not None else ALL_FORWARDED_HEADERS
    headers = request.requestHeaders
    for name in names:
        if headers.hasHeader(name):
            headers.removeHeader(name)
