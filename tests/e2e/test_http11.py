"""HTTP/1.1 as real clients send it: line ends, uploads, keep-alive, HEAD, HTTP/1.0, pipelining."""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any

from twisted.internet import defer
from twisted.web import resource, server

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


class _BodyEcho(resource.Resource):
    """Every path: method, path, body length and SHA-256 of the body, as received."""

    isLeaf = True

    def render(self, request: server.Request) -> bytes:
        assert request.content is not None and request.method is not None
        body = request.content.read()
        request.setHeader(b"content-type", b"text/plain")
        return b"%s %s %d %s\n" % (request.method, request.path, len(body),
                                   hashlib.sha256(body).hexdigest().encode())


class WireTests(_Listener):
    """What clients rely on in HTTP/1.1, through curl and ``openssl s_client``."""

    def setUp(self) -> None:
        super().setUp()
        self.port = self.listen(app=_BodyEcho())
        self.cert, self.key = self.files(self.pki.client, "client")

    def curl(self, *args: str) -> defer.Deferred[tuple[bytes, bytes, int]]:  # type: ignore[override]
        return run(["curl", "-sS", "--max-time", "20", "--cacert", self.ca, "--cert", self.cert,
                    "--key", self.key, "--resolve", f"localhost:{self.port}:127.0.0.1", *args])

    def url(self, path: str) -> str:
        return f"https://localhost:{self.port}{path}"

    @defer.inlineCallbacks
    def test_uploads(self) -> Any:
        """A body by Content-Length after 100 Continue, and a chunked one, arrive whole."""
        body = os.urandom(200_000)
        path = os.path.join(self.dir, "body")
        with open(path, "wb") as f:
            f.write(body)
        digest = hashlib.sha256(body).hexdigest().encode()
        out, err, code = yield self.curl("--http1.1", "-v", "--data-binary", f"@{path}",
                                         "-H", "Expect: 100-continue", self.url("/up"))
        self.assertEqual(out, b"POST /up 200000 %s\n" % digest, err)
        self.assertIn(b"HTTP/1.1 100 Continue", err)
        out, err, code = yield self.curl("--http1.1", "--data-binary", f"@{path}", "-H",
                                         "Transfer-Encoding: chunked", self.url("/chunked"))
        self.assertEqual(out, b"POST /chunked 200000 %s\n" % digest, err)

    @defer.inlineCallbacks
    def test_keepalive_head_and_http10(self) -> Any:
        out, err, _ = yield self.curl("--http1.1", "-w", "%{num_connects}\n", self.url("/a"),
                                      self.url("/b"), self.url("/c"))
        lines = out.splitlines()
        self.assertEqual([line.split()[1] for line in lines[0::2]], [b"/a", b"/b", b"/c"])
        self.assertEqual(lines[1::2], [b"1", b"0", b"0"], err)  # one connection, reused
        out, err, _ = yield self.curl("--http1.1", "-I", self.url("/head"))
        self.assertTrue(out.startswith(b"HTTP/1.1 200 OK\r\n"), out)
        self.assertIn(b"content-length: ", out.lower())
        self.assertNotIn(b"/head", out)  # no body
        out, err, _ = yield self.curl("--http1.0", "-i", self.url("/old"))
        self.assertTrue(out.startswith(b"HTTP/1.0 200 OK\r\n"), out)
        self.assertTrue(out.endswith(b"GET /old 0 " + hashlib.sha256(b"").hexdigest().encode()
                                     + b"\n"), out)

    @defer.inlineCallbacks
    def test_pipelined_in_order(self) -> Any:
        """Requests sent together are answered in order, the body of one not read as a head."""
        smuggled = b"GET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n"
        requests = (b"GET /1 HTTP/1.1\r\nHost: localhost\r\n\r\n"
                    b"POST /2 HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n%s"
                    b"HEAD /3 HTTP/1.1\r\nHost: localhost\r\n\r\n"
                    b"GET /4 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                    % (len(smuggled), smuggled))
        out, err, _ = yield run(["openssl", "s_client", "-connect", f"127.0.0.1:{self.port}",
                                 "-servername", "localhost", "-CAfile", self.ca, "-quiet",
                                 "-verify_return_error", "-ign_eof", "-cert", self.cert,
                                 "-key", self.key], requests)
        self.assertEqual(out.count(b"HTTP/1.1 200 OK"), 4, out)
        answers = re.findall(rb"(GET|POST) (/\S*) (\d+)", out)
        self.assertEqual(answers, [(b"GET", b"/1", b"0"), (b"POST", b"/2", b"%d" % len(smuggled)),
                                   (b"GET", b"/4", b"0")])
