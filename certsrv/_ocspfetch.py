"""Fetching OCSP responses over HTTP with treq: one timeout, a bounded body, errors as data."""

from __future__ import annotations

from typing import Any

import treq
from treq.client import HTTPClient
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTCP, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from certsrv.exceptions import OCSPError

__all__ = ["HTTPFetcher"]


class HTTPFetcher:
    """POSTs DER OCSP requests (RFC 6960 appendix A.1) and returns the DER response body."""

    def __init__(self, reactor: Any, clock: IReactorTime, timeout: float,
                 max_bytes: int = 64 * 1024) -> None:
        self.clock = clock
        self.timeout = timeout
        self.max_bytes = max_bytes
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 4
        pool.cachedConnectionTimeout = 30
        self.pool = pool
        self._client = HTTPClient(Agent(reactor, connectTimeout=timeout, pool=pool))
        assert IReactorTCP.providedBy(reactor)

    def __call__(self, url: str, request: bytes) -> defer.Deferred[bytes]:
        """The response body, or an OCSPError failure saying why there is none."""
        d: defer.Deferred[Any] = self._client.post(
            url, data=request,
            headers=Headers({b"Content-Type": [b"application/ocsp-request"],
                             b"Accept": [b"application/ocsp-response"]}))
        d.addCallback(self._read)
        # One deadline for connect, request and body. (Deferred.addTimeout cannot tell a
        # timeout apart here: Agent reports its cancellation as ResponseNeverReceived.)
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            d.cancel()

        deadline = self.clock.callLater(self.timeout, expire)

        def settle(result: Any) -> Any:
            if deadline.active():
                deadline.cancel()
            return result

        d.addBoth(settle)
        d.addErrback(self._translate, url, expired)
        return d

    def _read(self, response: IResponse) -> defer.Deferred[bytes]:
        if response.code != 200:
            response.deliverBody(_Discard())
            raise OCSPError("http_status", f"the responder answered HTTP {response.code}")
        length = response.length
        if isinstance(length, int) and length > self.max_bytes:
            response.deliverBody(_Discard())
            raise OCSPError("too_large", f"response of {length} bytes exceeds {self.max_bytes}")
        parts: list[bytes] = []
        size = 0

        def collect(data: bytes) -> None:
            nonlocal size
            size += len(data)
            if size > self.max_bytes:
                raise OCSPError("too_large", f"response exceeds {self.max_bytes} bytes")
            parts.append(data)

        collected: defer.Deferred[None] = treq.collect(response, collect)
        return collected.addCallback(lambda _: b"".join(parts))

    def _translate(self, failure: Failure, url: str, expired: list[bool]) -> Failure:
        if failure.check(OCSPError):
            return failure
        if expired:
            return Failure(OCSPError("timeout", f"no answer from {url} within "
                                                f"{self.timeout:g} s"))
        return Failure(OCSPError("responder_down", f"{url}: {failure.getErrorMessage()}"))

    def close(self) -> defer.Deferred[None]:
        """Drop idle persistent connections to responders."""
        return self.pool.closeCachedConnections()


class _Discard(Protocol):
    """Reads and drops a response body we will not use."""

    def dataReceived(self, data: bytes) -> None:
        """Drop the data."""
