"""One view of a request: its method and path segments exactly as twisted.web dispatches them.

The gate refuses what servers behind certsrv could read another way before the access policy
or the application sees it, so that what the policy decides on is what the resource tree
receives: a fragment (``#``), dot segments, empty segments (but a trailing ``/``), segments
that hold ``/``, ``\\``, ``;`` or a control character once percent-decoded, and segments that
are not UTF-8 once decoded (overlong forms such as ``%C0%AF`` are how lenient decoders are
tricked into ``/`` and ``..``). A method must be an upper-case token (RFC 9110 9.1: methods are
case-sensitive; nginx refuses the rest too).
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

__all__ = ["Segments", "bad_method", "dispatched_segments", "segments_of"]

Segments = tuple[bytes, ...]

_METHOD = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Z]+\Z")
_BAD_RAW = re.compile(rb"[\x00-\x20\x7f#]")
_BAD_DECODED = re.compile(rb"[/\\;#\x00-\x1f\x7f]")


def bad_method(method: bytes) -> bool:
    """Whether ``method`` is not an upper-case token."""
    return _METHOD.match(method) is None


def dispatched_segments(path: bytes) -> Segments:
    """The segments twisted.web dispatches ``path`` (the target before ``?``) by."""
    return tuple(unquote_to_bytes(part) if b"%" in part else part
                 for part in path[1:].split(b"/"))


def segments_of(path: bytes, dispatched: Segments | None = None) -> Segments | None:
    """``path``'s dispatched segments, or None if servers behind certsrv could read it as
    another path; ``dispatched`` is what twisted.web already made of it, if known."""
    if not path.startswith(b"/") or _BAD_RAW.search(path):
        return None
    segments = dispatched if dispatched is not None else dispatched_segments(path)
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if not segment:
            if index != last:
                return None
        elif segment in (b".", b"..") or _BAD_DECODED.search(segment) or not _utf8(segment):
            return None
    return segments


def _utf8(segment: bytes) -> bool:
    if segment.isascii():
        return True
    try:
        segment.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
