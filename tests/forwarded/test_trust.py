"""certsrv.forwarded.trust: the forwarding options checked together; headers stripped."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from certsrv.exceptions import ConfigurationError
from certsrv.forwarded.trust import forwarding, strip_forwarded_headers


class ForwardingTests(SynchronousTestCase):
    """Forwarding is off without a format; on, it needs a trusted proxy."""

    def test_off(self) -> None:
        self.assertIsNone(forwarding(None, None, []))
        for args, option in (((None, None, ["10.0.0.0/8"]), "--trusted-proxy"),
                             ((None, "X-Cert", []), "--forwarded-cert-header")):
            error = self.assertRaises(ConfigurationError, forwarding, *args)
            self.assertIn(option, str(error))

    def test_on_needs_a_proxy(self) -> None:
        error = self.assertRaises(ConfigurationError, forwarding, "rfc9440", None, [])
        self.assertIn("--trusted-proxy", str(error))
        self.assertIsNotNone(forwarding("rfc9440", None, ["127.0.0.1"]))

    def test_strip(self) -> None:
        request = DummyRequest([b""])
        for name in (b"Client-Cert", b"Client-Cert-Chain", b"X-SSL-Client-Cert",
                     b"X-Forwarded-Client-Cert", b"Accept"):
            request.requestHeaders.setRawHeaders(name, [b"x"])
        strip_forwarded_headers(request, None)  # off: every known header goes
        self.assertEqual([name for name, _ in request.requestHeaders.getAllRawHeaders()],
                         [b"Accept"])
        for spelling in (b"x-ssl-client-cert", b"CLIENT-CERT"):  # any case, one alone
            request.requestHeaders.setRawHeaders(spelling, [b"x"])
            strip_forwarded_headers(request, None)
            self.assertEqual([n for n, _ in request.requestHeaders.getAllRawHeaders()],
                             [b"Accept"])
