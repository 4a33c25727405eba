"""Fetching revocation data over plain http: one deadline, bounded body, no redirects or decoding.

A bare Agent rather than treq's client: treq follows redirects and inflates gzip bodies, which
would let a responder or distribution point send us elsewhere or past the size limit.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from certsrv.exceptions import (
    ConfigurationError,
    OCSPError,
    RevocationError,
    RevocationProblem,
)
from certsrv.revocation.ocspcheck import check_responder_url

__all__ = ["BoundedFetcher", "usable_url"]


def usable_url(url: str) -> bool:
    """Whether ``url`` is a plain printable-ASCII http:// URL with a host."""
    if not all(0x20 < ord(c) < 0x7F for c in url):
        return False
    try:
        check_responder_url(url, "URL")
    except ConfigurationError:
        return False
    return True


class BoundedFetcher:
    """Makes one HTTP request and returns the body, or fails with ``error(reason, detail)``."""

    def __init__(self, reactor: Any, clock: IReactorTime, timeout: float, max_bytes: int,
                 what: str, error: type[RevocationError] = OCSPError, per_host: int = 2) -> None:
        self.clock = clock
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.what = what
        self.error = error
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = per_host
        pool.cachedConnectionTimeout = 30
        self.pool = pool
        self._agent = Agent(reactor, connectTimeout=timeout, pool=pool)

    def fetch(self, method: bytes, url: str, headers: dict[bytes, list[bytes]],
              body: bytes | None = None) -> defer.Deferred[bytes]:
        """The response body of a 200 answer, or a failure with a stable reason code."""
        if not usable_url(url):
            return defer.fail(self.error(RevocationProblem.BAD_URL,
                                         f"{url!r} is not a plain http:// URL"))
        producer = FileBodyProducer(BytesIO(body)) if body is not None else None
        d: defer.Deferred[Any] = self._agent.request(method, url.encode("ascii"),
                                                     Headers(headers), producer)
        d.addCallback(self._read, url)
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

    def _read(self, response: IResponse, url: str) -> defer.Deferred[bytes]:
        if response.code != 200:
            _drop(response)
            raise self.error(RevocationProblem.HTTP_STATUS, f"{url} answered HTTP {response.code}")
        length = response.length
        if isinstance(length, int) and length > self.max_bytes:
            _drop(response)
            raise self.error(RevocationProblem.TOO_LARGE,
                             f"{url}: {self.what} of {length} bytes exceeds "
                             f"{self.max_bytes}")
        body = _Body(self.max_bytes, lambda: self.error(
            RevocationProblem.TOO_LARGE, f"{url}: {self.what} exceeds {self.max_bytes} bytes"))
        response.deliverBody(body)
        return body.done

    def _translate(self, failure: Failure, url: str, expired: list[bool]) -> Failure:
        if failure.check(RevocationError):
            return failure
        if expired:
            return Failure(self.error(RevocationProblem.TIMEOUT,
                                      f"no {self.what} from {url} within "
                                      f"{self.timeout:g} s"))
        return Failure(self.error(RevocationProblem.RESPONDER_DOWN,
                                  f"{url}: {failure.getErrorMessage()}"))

    def close(self) -> defer.Deferred[None]:
        """Drop idle persistent connections."""
        return self.pool.closeCachedConnections()


class _Body(Protocol):
    """Collects a response body up to ``limit`` bytes, dropping the connection beyond it."""

    def __init__(self, limit: int, too_large: Any) -> None:
        self.limit = limit
        self.too_large = too_large
        self.parts: list[bytes] = []
        self.size = 0
        self.done: defer.Deferred[bytes] = defer.Deferred(lambda _: self._abort())

    def dataReceived(self, data: bytes) -> None:
        """Keep ``data`` while under the limit."""
        if self.done.called:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.done.errback(self.too_large())
            self._abort()
            return
        self.parts.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Deliver the body, or why it is incomplete."""
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(reason)

    def _abort(self) -> None:
        self.parts = []
        if self.transport is not None:
            self.transport.loseConnection()


def _drop(response: IResponse) -> None:
    """Close the connection of a response whose body is not wanted."""
    body = _Body(0, lambda: OCSPError(RevocationProblem.TOO_LARGE))
    body.done.addErrback(lambda _: None)
    response.deliverBody(body)
