"""Fetching OCSP responses: RFC 6960 appendix A.1 POSTs through the bounded HTTP fetcher."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from certsrv.revocation.http import BoundedFetcher

__all__ = ["HTTPFetcher"]

_HEADERS = {b"Content-Type": [b"application/ocsp-request"],
            b"Accept": [b"application/ocsp-response"]}


class HTTPFetcher(BoundedFetcher):
    """POSTs DER OCSP requests and returns the DER response body."""

    def __init__(self, reactor: Any, clock: IReactorTime, timeout: float,
                 max_bytes: int = 64 * 1024) -> None:
        super().__init__(reactor, clock, timeout, max_bytes, "OCSP response", per_host=4)

    def __call__(self, url: str, request: bytes) -> defer.Deferred[bytes]:
        """The response body, or an OCSPError failure saying why there is none."""
        return self.fetch(b"POST", url, dict(_HEADERS), request)
