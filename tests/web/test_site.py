"""certsrv.web.site: the default tree and refusal bodies (JSON when asked for, text otherwise)."""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from certsrv.exceptions import Reason
from certsrv.web.site import forbidden, identity_of, refuse, root_resource


def _request(accept: bytes | None = None) -> DummyRequest:
    request = DummyRequest([b"secure"])
    if accept is not None:
        request.requestHeaders.setRawHeaders(b"accept", [accept])
    return request


class RefusalTests(SynchronousTestCase):
    """A refusal names a stable reason code and a sentence; never cached."""

    def test_json(self) -> None:
        request = _request(b"application/json")
        body = json.loads(forbidden(request, Reason.NO_CERTIFICATE, "try --cert"))
        self.assertEqual(request.responseCode, 403)
        self.assertEqual(body, {"error": "forbidden", "reason": "no_certificate",
                                "message": Reason.NO_CERTIFICATE.sentence,
                                "detail": "try --cert"})
        self.assertEqual(request.responseHeaders.getRawHeaders(b"cache-control"), [b"no-store"])

    def test_text(self) -> None:
        request = _request()
        body = refuse(request, "too_large", "The body is too large.", status=413)
        self.assertEqual(request.responseCode, 413)
        self.assertEqual(body, b"Request Entity Too Large: The body is too large. (too_large)\n")


class DefaultTreeTests(SynchronousTestCase):
    """``/secure`` without a client certificate is a 403; nothing lives below it."""

    def test_secure_without_certificate(self) -> None:
        request = _request()
        self.assertIsNone(identity_of(request))
        secure = root_resource().getChildWithDefault(b"secure", request)
        self.assertIn(b"no_certificate", secure.render(request))
        self.assertEqual(request.responseCode, 403)
        self.assertEqual(secure.getChild(b"below", request).code, 404)
