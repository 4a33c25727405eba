"""Client certificates forwarded by a trusted TLS-terminating proxy: who may forward, how."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from twisted.logger import Logger
from twisted.web import server
from twisted.web.http_headers import Headers

from certsrv._compat import header_names
from certsrv.exceptions import ConfigurationError
from certsrv.forwarded.headers import (
    ALL_FORWARDED_HEADERS,
    ForwardedCertConfig,
    ForwardedChain,
    TrustedProxies,
)
from certsrv.tls.verify import parse_pin
from certsrv.x509.identity import ClientIdentity

__all__ = ["Forwarding", "forwarding", "strip_forwarded_headers"]

_log = Logger(namespace="certsrv.tls")


@dataclass(frozen=True)
class Forwarding:
    """The forwarded-certificate format and the proxies allowed to use it."""

    config: ForwardedCertConfig
    proxies: TrustedProxies
    proxy_certificates: frozenset[str] = frozenset()

    def trusts(self, request: server.Request, peer: ClientIdentity | None) -> bool:
        """Whether the request's peer is a trusted proxy: by address and, when
        ``--trusted-proxy-cert`` is given, by the certificate ``peer`` it authenticated with."""
        host = getattr(request.getClientAddress(), "host", None)
        if not isinstance(host, str) or not self.proxies.contains(host):
            return False
        if not self.proxy_certificates:
            return True
        if peer is not None and peer.sha256 in self.proxy_certificates:
            return True
        headers = request.requestHeaders
        if any(headers.hasHeader(name) for name in self.config.strip_headers):
            _log.warn("{peer} forwarded a client certificate but authenticated with {sha256}, "
                      "not a --trusted-proxy-cert; its own identity is used",
                      peer=str(request.getClientAddress()), reason="untrusted_proxy",
                      sha256=peer.sha256 if peer is not None else None)
        return False

    def certificate(self, request: server.Request) -> ForwardedChain | None:
        """The forwarded chain (None without one); ForwardedCertError when malformed."""
        return self.config.parse(request.requestHeaders)


def forwarding(format: str | None, header: str | None, proxies: Sequence[str],
               proxy_certificates: Sequence[str] = ()) -> Forwarding | None:
    """Check the forwarding options together; None when forwarding is off."""
    pins = frozenset(parse_pin(p, "--trusted-proxy-cert") for p in proxy_certificates)
    if format is None:
        if proxies:
            raise ConfigurationError("--trusted-proxy", "has no effect without --forwarded-cert")
        if pins:
            raise ConfigurationError("--trusted-proxy-cert",
                                     "has no effect without --forwarded-cert")
        if header is not None:
            raise ConfigurationError("--forwarded-cert-header",
                                     "has no effect without --forwarded-cert")
        return None
    if not proxies:
        raise ConfigurationError("--forwarded-cert", "needs at least one --trusted-proxy: "
                                 "accepting forwarded certificates from anyone would let any "
                                 "client claim any identity")
    return Forwarding(ForwardedCertConfig.create(format, header), TrustedProxies(proxies),
                      pins)


_stored_names: dict[frozenset[bytes], frozenset[bytes]] = {}


def _as_stored(names: frozenset[bytes]) -> frozenset[bytes]:
    """``names`` as twisted.web's Headers store them (its canonical case), computed once."""
    stored = _stored_names.get(names)
    if stored is None:
        headers = Headers({name: [b""] for name in names})
        stored = _stored_names[names] = frozenset(n for n, _ in headers.getAllRawHeaders())
    return stored


def strip_forwarded_headers(request: server.Request, forwarded: Forwarding | None) -> None:
    """Remove every forwarded-certificate header, so the app never sees a spoofed one."""
    names = forwarded.config.strip_headers if forwarded is not None else ALL_FORWARDED_HEADERS
    headers = request.requestHeaders
    stored = _stored_names.get(names) or _as_stored(names)
    if stored.isdisjoint(header_names(headers)):
        return  # the usual case: none of them (one set operation, no lookups)
    for name in names:
        headers.removeHeader(name)
