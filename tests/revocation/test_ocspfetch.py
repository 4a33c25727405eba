"""certsrv.revocation.ocspfetch: the OCSP fetcher over real TCP on 127.0.0.1."""

from __future__ import annotations

import datetime
import socket
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase
from twisted.web import resource, server

from certsrv.exceptions import OCSPError
from certsrv.pki.responder import OCSPResource
from certsrv.revocation.decision import Scope, Status
from certsrv.revocation.ocsp import CertStatus
from certsrv.revocation.ocspcheck import OCSPChecker, OCSPSettings
from certsrv.revocation.ocspfetch import HTTPFetcher
from tests._support import (
    serve_http,
    shared_pki,
)


class _Hang(resource.Resource):
    isLeaf = True

    def render_POST(self, request: server.Request) -> Any:
        return server.NOT_DONE_YET


class _Fixed(resource.Resource):
    isLeaf = True

    def __init__(self, code: int, body: bytes) -> None:
        super().__init__()
        self.code, self.body = code, body

    def render_POST(self, request: server.Request) -> bytes:
        request.setResponseCode(self.code)
        return self.body


class FetcherTests(TestCase):
    """The OCSP fetcher over real TCP on 127.0.0.1: down, slow, HTTP errors, size limit."""

    timeout = 30

    def setUp(self) -> None:
        self.pki = shared_pki()
        self.fetcher = HTTPFetcher(reactor, reactor, timeout=0.5, max_bytes=4096)
        self.addCleanup(self.fetcher.close)

    def serve(self, root: resource.Resource) -> str:
        return serve_http(self, root)

    @defer.inlineCallbacks
    def assertFetchFails(self, url: str, reason: str) -> Any:
        failure = yield self.assertFailure(self.fetcher(url, b"request"), OCSPError)
        self.assertEqual(failure.reason, reason)

    def test_down(self) -> Any:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        return self.assertFetchFails(f"http://127.0.0.1:{port}/", "responder_down")

    def test_slow(self) -> Any:
        return self.assertFetchFails(self.serve(_Hang()), "timeout")

    def test_http_500(self) -> Any:
        return self.assertFetchFails(self.serve(_Fixed(500, b"oops")), "http_status")

    def test_too_large(self) -> Any:
        return self.assertFetchFails(self.serve(_Fixed(200, b"x" * 10_000)), "too_large")

    @defer.inlineCallbacks
    def test_real_responder_resource(self) -> Any:
        """Our responder over TCP, the fetcher, and the checker agree: good, then revoked."""
        signer = self.pki.root.issue_ocsp_responder()
        victim = self.pki.root.issue_client("tcp-victim")
        statuses: dict[int, Any] = {}
        url = self.serve(OCSPResource(self.pki.root.certificate, signer.certificate,
                                      signer.private_key, statuses.get, reactor))
        checker = OCSPChecker(OCSPSettings(mode=Scope.LEAF, responder=url), reactor,
                              self.fetcher)
        pair = checker.pair(victim.certificate, self.pki.root.certificate)
        statuses[victim.serial_number] = (CertStatus.GOOD, None, None)
        verdict = yield checker.check(pair)
        self.assertEqual(verdict.status, Status.GOOD)
        statuses[victim.serial_number] = (CertStatus.REVOKED,
                                          datetime.datetime.now(datetime.UTC), None)
        fresh = OCSPChecker(checker.settings, reactor, self.fetcher)
        verdict = yield fresh.check(pair)
        self.assertEqual(verdict.status, Status.REVOKED)

