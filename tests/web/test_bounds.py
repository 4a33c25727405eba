"""certsrv.web.bounds: the limit values, and how a refusal is worded and reported."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.trial.unittest import SynchronousTestCase

from certsrv.exceptions import LimitReason
from certsrv.web.bounds import Limits, log_refusal, response_text
from tests._support import captured_events


class _Observer:
    def __init__(self) -> None:
        self.refused: list[str] = []

    def request_refused(self, reason: str) -> None:
        self.refused.append(reason)


class _Site:
    def __init__(self) -> None:
        self.observer = _Observer()


class _Channel:
    def __init__(self) -> None:
        self.site = _Site()


class BoundsTests(SynchronousTestCase):
    def test_response_text(self) -> None:
        self.assertEqual(response_text(431, "too big"),
                         b"Error: too big\n")  # not in twisted.web's table
        self.assertEqual(response_text(413, "x"), b"Request Entity Too Large: x\n")
        self.assertEqual(response_text(599, "odd"), b"Error: odd\n")

    def test_hpack_bound(self) -> None:
        self.assertEqual(Limits(max_header_bytes=1000, max_headers=2).hpack_bound, 1320)

    def test_log_refusal(self) -> None:
        channel = _Channel()
        with captured_events("certsrv.limits") as events:
            log_refusal(channel, IPv4Address("TCP", "127.0.0.1", 4000), 413,
                        LimitReason.BODY_TOO_LARGE, "request body larger than 10 bytes")
        self.assertEqual([(e["peer"], e["status"], e["reason"]) for e in events],
                         [("127.0.0.1:4000", 413, "body_too_large")])
        self.assertEqual(channel.site.observer.refused, ["body_too_large"])
