"""certsrv.access.request: the request view the policy decides on (methods, path segments)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from certsrv.access.request import bad_method, dispatched_segments, segments_of


class BadMethodTests(SynchronousTestCase):
    """Methods are upper-case tokens."""

    def test_methods(self) -> None:
        for good in (b"GET", b"POST", b"DELETE", b"PROPFIND"):
            self.assertFalse(bad_method(good), good)
        for bad in (b"get", b"", b"GE T", b"GET\r\n", b"G\x00T"):
            self.assertTrue(bad_method(bad), bad)


class SegmentsTests(SynchronousTestCase):
    """Paths another server could read as a different path have no segments."""

    def test_plain_and_encoded(self) -> None:
        self.assertEqual(segments_of(b"/a/b"), (b"a", b"b"))
        self.assertEqual(segments_of(b"/a/"), (b"a", b""))
        self.assertEqual(segments_of(b"/a%20b"), (b"a b",))
        self.assertEqual(dispatched_segments(b"/x/%41"), (b"x", b"A"))

    def test_ambiguous(self) -> None:
        for path in (b"a/b", b"/a//b", b"/a/../b", b"/./a", b"/a%2fb", b"/a%5cb", b"/a%3bb",
                     b"/a b", b"/a#b", b"/a/%2e%2e/b", b"/a%00", b"/a%09b", b"/a%7f",
                     b"/%c0%af", b"/%c0%ae%c0%ae/x", b"/caf\xe9", b"/%e0%80%ae"):
            self.assertIsNone(segments_of(path), path)
        # UTF-8, raw or encoded, is a path like any other.
        self.assertEqual(segments_of(b"/caf%C3%A9"), ("café".encode(),))
        self.assertEqual(segments_of("/café".encode()), ("café".encode(),))

    @settings(max_examples=300, derandomize=True)
    @given(st.binary(max_size=40))
    def test_segments_are_plain(self, tail: bytes) -> None:
        """Whatever the path, accepted segments hold no separator, dot segment or control."""
        segments = segments_of(b"/" + tail)
        if segments is None:
            return
        for index, segment in enumerate(segments):
            self.assertNotIn(segment, (b".", b".."))
            for forbidden in (b"/", b"\\", b";", b"\x00", b"\r", b"\n", b"\t", b"#"):
                self.assertNotIn(forbidden, segment)
            segment.decode("utf-8")  # never an overlong or invalid form
            if not segment:
                self.assertEqual(index, len(segments) - 1)
