"""Listening addresses: tcp:/tcp6: endpoint descriptions parsed, and whether a port is free."""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from twisted.python import usage

__all__ = [
    "PortInUse",
    "TCPAddress",
    "check_free",
    "loopback_by_default",
    "parse_tcp",
    "split_description",
]


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
        raise usage.UsageError(f"--workers needs tcp: or tcp6: listen descriptions, not "
                               f"{description!r}")
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
