"""Listening addresses: tcp:/tcp6: endpoint descriptions parsed, whether a port is free, and
the PROXY protocol header of ``haproxy:`` listeners."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IAddress, IProtocolFactory
from twisted.logger import Logger
from twisted.python import usage

from certsrv._compat import ProxyProtocolWrapper, ProxyWrappingFactory, proxy_header_read
from certsrv.exceptions import ConfigurationError, LimitReason
from certsrv.forwarded.headers import TrustedProxies
from certsrv.tls.observer import Observer
from certsrv.tls.verify import peer_text

__all__ = [
    "PortInUse",
    "ProxyHeaderFactory",
    "TCPAddress",
    "check_free",
    "loopback_by_default",
    "parse_tcp",
    "proxy_senders",
    "split_description",
    "split_proxy",
]

_log = Logger(namespace="certsrv.limits")


@dataclass(frozen=True)
class TCPAddress:
    """Where a worker listens: a tcp: or tcp6: endpoint description, parsed."""

    family: socket.AddressFamily
    interface: str
    port: int
    backlog: int = 128

    def socket(self, listen: bool, share: bool = True) -> socket.socket:
        """A socket bound to the address, listening or only reserving it; SO_REUSEPORT if shared."""
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if share:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if self.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((self.interface, self.port))
            if listen:
                sock.listen(self.backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock


class PortInUse(Exception):
    """Another socket already listens on (or holds) an address a server is to listen on."""


def check_free(address: TCPAddress) -> None:
    """Raise PortInUse when another socket listens on ``address`` (port 0 is always free)."""
    # Without SO_REUSEPORT, the bind fails if anything listens there, including workers of
    # another (or an orphaned) supervisor; SO_REUSEADDR keeps TIME_WAIT leftovers harmless.
    probe = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if address.family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        probe.bind((address.interface, address.port))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise PortInUse(f"port {address.port} on {address.interface} is already in use "
                            "by another process (another certsrv, or workers left by one)"
                            ) from None
        raise
    finally:
        probe.close()


def split_description(description: str) -> list[str]:
    """The colon-separated parts of an endpoint description, backslash escapes resolved."""
    parts, current, escaped = [], "", False
    for char in description:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def parse_tcp(description: str) -> TCPAddress:
    """Parse ``tcp:PORT[:interface=X][:backlog=N]`` (or ``tcp6:``); other kinds are refused."""
    parts = split_description(description)
    kind = parts[0].lower()
    if kind not in ("tcp", "tcp6") or len(parts) < 2:
        raise usage.UsageError(f"--workers needs tcp: or tcp6: listen descriptions (under "
                               f"haproxy: too), not {description!r}")
    family = socket.AF_INET6 if kind == "tcp6" else socket.AF_INET
    options = {"interface": "::" if kind == "tcp6" else "0.0.0.0", "backlog": "128"}
    positional = []
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if sep:
            if key not in options:
                raise usage.UsageError(f"--listen {description}: unknown parameter {key!r}")
            options[key] = value
        else:
            positional.append(part)
    try:
        port = int(positional[0])
        backlog = int(options["backlog"])
    except (IndexError, ValueError):
        raise usage.UsageError(f"--listen {description}: needs a numeric port") from None
    if len(positional) > 1 or not 0 <= port <= 65535:
        raise usage.UsageError(f"--listen {description}: bad port")
    return TCPAddress(family, options["interface"], port, backlog)


def loopback_by_default(description: str) -> str:
    """A tcp:/tcp6: endpoint description that names no interface, bound to loopback."""
    parts = split_description(description)
    kind = parts[0].lower()
    if kind not in ("tcp", "tcp6") or any(p.startswith("interface=") for p in parts[1:]):
        return description
    return description + (":interface=127.0.0.1" if kind == "tcp" else ":interface=\\:\\:1")


def split_proxy(description: str) -> tuple[bool, str]:
    """Whether ``description`` is ``haproxy:...`` (connections begin with a PROXY protocol
    header), and the endpoint description under it."""
    kind, colon, rest = description.partition(":")
    if colon and kind.lower() == "haproxy":
        return True, rest
    return False, description


class _ProxyHeaderProtocol(ProxyProtocolWrapper):  # type: ignore[misc]
    """Twisted's PROXY header reader, reporting a connection it closes for a bad header."""

    factory: ProxyHeaderFactory

    def dataReceived(self, data: bytes) -> None:
        if proxy_header_read(self):
            self.wrappedProtocol.dataReceived(data)
            return
        super().dataReceived(data)
        if self.disconnecting and not proxy_header_read(self):
            self.factory.refused(self.getPeer(), data)  # no header: the TCP peer


def proxy_senders(cidrs: Sequence[str]) -> TrustedProxies | None:
    """The ``--proxy-protocol-from`` networks (None: any peer may send a PROXY header)."""
    if not cidrs:
        return None
    try:
        return TrustedProxies(cidrs)
    except ConfigurationError as e:
        raise usage.UsageError(f"--proxy-protocol-from: {e.problem}") from None


class ProxyHeaderFactory(ProxyWrappingFactory):  # type: ignore[misc]
    """A ``haproxy:`` listener's factory: each connection begins with a PROXY header (v1 or
    v2) naming the client, whose address certsrv then sees; one without is closed and logged,
    and so is one from a TCP peer outside ``senders`` (the balancers), when given."""

    protocol = _ProxyHeaderProtocol  # type: ignore[assignment]

    def __init__(self, wrapped: IProtocolFactory, listener: str,
                 observer: Callable[[], Observer], senders: TrustedProxies | None = None
                 ) -> None:
        super().__init__(wrapped)
        self.listener = listener
        self.observer = observer
        self.senders = senders

    def buildProtocol(self, addr: IAddress | None) -> Any:
        """A new connection, unless its peer may not send a PROXY header (it could claim any
        address) or the wrapped factory refuses it (its --max-connections)."""
        host = getattr(addr, "host", None)
        if self.senders is not None and not (isinstance(host, str)
                                             and self.senders.contains(host)):
            _log.warn("closed a connection from {peer} on --listen {listener}: only "
                      "--proxy-protocol-from addresses may send a PROXY protocol header",
                      peer=peer_text(addr), listener=self.listener,
                      reason=LimitReason.BAD_PROXY_HEADER.value)
            self.observer().rejected(LimitReason.BAD_PROXY_HEADER.value)
            return None
        wrapped = self.wrappedFactory.buildProtocol(addr)
        return None if wrapped is None else _ProxyHeaderProtocol(self, wrapped)  # type: ignore[arg-type]

    def refused(self, peer: IAddress, began: bytes) -> None:
        """Log and count a connection closed because it began without a PROXY header."""
        hint = ("a TLS ClientHello: the client reached this listener directly, or the "
                "balancer does not send the header (HAProxy: send-proxy-v2)"
                if began[:1] == b"\x16" else f"{began[:16]!r}")
        _log.warn("closed a connection from {peer} on --listen {listener}: it did not begin "
                  "with a PROXY protocol header (it began with {hint})",
                  peer=peer_text(peer), listener=self.listener, hint=hint,
                  reason=LimitReason.BAD_PROXY_HEADER.value)
        self.observer().rejected(LimitReason.BAD_PROXY_HEADER.value)
