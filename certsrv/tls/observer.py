"""
What the server's components report as they decide: the seam the metrics are fed through.

The verifier (handshakes), the site and the gate (requests), the limits (refusals) and the
reloader call an ``Observer`` directly, each at the one place it decides; the server's
``Metrics`` implement it. Log events are written beside these calls, for people: no counter
depends on a log event or its field names. Reason arguments are codes of
``certsrv.exceptions`` (``Reason``, ``AccessReason``, ``ForwardedReason``, ``LimitReason``),
passed as their string values (see docs/reasons.rst).
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["NULL_OBSERVER", "NullObserver", "Observer"]


class Observer(Protocol):
    """Receives one call per decision; an implementation must neither block nor raise."""

    def accepted(self, reason: str | None = None) -> None:
        """A handshake accepted a client certificate: called once with no reason, then once
        more for each problem it was accepted despite, with that problem's reason code
        (``revocation_unknown`` under ``--revocation-fail open``)."""

    def anonymous(self) -> None:
        """A handshake completed without a client certificate (``--client-cert optional``)."""

    def rejected(self, reason: str) -> None:
        """A handshake was refused, or given up on: a ``Reason`` code, ``handshake_timeout``,
        or ``bad_proxy_header`` (a ``haproxy:`` listener's connection closed before it)."""

    def request_refused(self, reason: str) -> None:
        """A request was refused after the handshake for its certificate (a ``Reason`` or
        ``ForwardedReason`` code) or by a limit (a ``LimitReason`` code other than
        ``max_connections``); refusals by the access rules go to ``access_decided``."""

    def access_decided(self, reason: str) -> None:
        """The gate decided a request by the ``--policy`` rules or the request's view (an
        ``AccessReason`` code)."""

    def request_finished(self, status: int) -> None:
        """A response with ``status`` was sent."""

    def reloaded(self) -> None:
        """A reload put a new configuration in force."""

    def reload_refused(self) -> None:
        """A reload found an unusable file; the running configuration stays."""


class NullObserver:
    """An observer that ignores everything: the default where nobody is watching."""

    def accepted(self, reason: str | None = None) -> None:
        """Ignored."""

    def anonymous(self) -> None:
        """Ignored."""

    def rejected(self, reason: str) -> None:
        """Ignored."""

    def request_refused(self, reason: str) -> None:
        """Ignored."""

    def access_decided(self, reason: str) -> None:
        """Ignored."""

    def request_finished(self, status: int) -> None:
        """Ignored."""

    def reloaded(self) -> None:
        """Ignored."""

    def reload_refused(self) -> None:
        """Ignored."""


NULL_OBSERVER: Observer = NullObserver()
