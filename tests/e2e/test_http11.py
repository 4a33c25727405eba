"""HTTP/1.1 request heads as real clients send them: bare LF line ends, and bare CR refused."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from tests._servers import Listener as _Listener
from tests._servers import run


class LineEndingTests(_Listener):
    """RFC 9112 2.2 through ``openssl s_client``: a bare LF ends a line, a bare CR is refused."""

    @defer.inlineCallbacks
    def send(self, request: bytes) -> Any:
        """``request`` sent as is by s_client with a valid client certificate; its output."""
        port = self.listen()
        path, key = self.files(self.pki.client, "client")
        out, err, _ = yield run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                                 "-servername", "localhost", "-CAfile", self.ca,
                                 "-verify_return_error", "-ign_eof", "-quiet",
                                 "-cert", path, "-key", key], request)
        return out

    @defer.inlineCallbacks
    def test_http10_with_bare_lf(self) -> Any:
        """What TLS test suites send: answered, not left waiting for the idle timeout."""
        out = yield self.send(b"GET /secure HTTP/1.0\n\n")
        self.assertTrue(out.startswith(b"HTTP/1.0 200 OK\r\n"), out)
        self.assertIn(b"subject: CN=alice", out)

    @defer.inlineCallbacks
    def test_headers_with_bare_lf_and_mixed_endings(self) -> Any:
        out = yield self.send(b"GET /secure HTTP/1.1\nHost: localhost\r\n"
                              b"Accept: text/plain\nConnection: close\n\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 200 OK\r\n"), out)

    @defer.inlineCallbacks
    def test_pipelined_with_bare_lf(self) -> Any:
        out = yield self.send(b"GET /secure HTTP/1.1\nHost: localhost\n\n"
                              b"GET /nothing HTTP/1.1\nHost: localhost\nConnection: close\n\n")
        self.assertEqual(out.count(b"HTTP/1.1 200 OK"), 1, out)
        self.assertEqual(out.count(b"HTTP/1.1 404 Not Found"), 1, out)

    @defer.inlineCallbacks
    def test_body_after_bare_lf_head(self) -> Any:
        """The head ends at the empty line; the body is read by Content-Length, as sent."""
        out = yield self.send(b"POST /secure HTTP/1.1\nHost: localhost\nContent-Length: 6\n"
                              b"Connection: close\n\nab\ncd\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 405 "), out)

    @defer.inlineCallbacks
    def test_bare_cr_is_400(self) -> Any:
        for head in (b"GET /secure HTTP/1.1\r\nHost: localhost\rX-Injected: 1\r\n\r\n",
                     b"GET /secure\rHTTP/1.1\r\nHost: localhost\r\n\r\n"):
            out = yield self.send(head)
            self.assertTrue(out.startswith(b"HTTP/1.1 400 Bad Request\r\n"), out)
            self.assertIn(b"bare CR", out)
            self.assertNotIn(b"200 OK", out)
