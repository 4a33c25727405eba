"""A bare twisted.web mTLS server for bench/run: the floor certsrv builds on, with no checks.

python bench/bare_twisted.py PORT CA CERT KEY: requires a client certificate issued by CA
(OpenSSL's verification only, no callback), no session cache or tickets, no access log,
``/secure`` answers a fixed body with a Content-Length.
"""

import sys

from OpenSSL import crypto
from twisted.internet import reactor, ssl
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web import resource, server

BODY = b"Client certificate accepted\n"


class Secure(resource.Resource):
    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return BODY


class QuietSite(server.Site):
    def log(self, request: server.Request) -> None:
        """No access log (nginx runs with access_log off)."""


def main(port: str, ca: str, cert: str, key: str) -> None:
    def load(path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    authority = ssl.Certificate.loadPEM(load(ca))
    options = ssl.CertificateOptions(
        privateKey=crypto.load_privatekey(crypto.FILETYPE_PEM, load(key)),
        certificate=crypto.load_certificate(crypto.FILETYPE_PEM, load(cert)),
        trustRoot=authority, raiseMinimumTo=ssl.TLSVersion.TLSv1_2)
    root = resource.Resource()
    root.putChild(b"secure", Secure())
    factory = TLSMemoryBIOFactory(options, False, QuietSite(root))
    reactor.listenTCP(int(port), factory, interface="127.0.0.1")  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(*sys.argv[1:5])
