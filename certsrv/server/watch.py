"""The configuration's files as the reloader sees them: what they hold, and whether they changed.

A file is known by the ``stat`` of what its path resolves to (following symlinks, so the
Kubernetes swap of ``..data`` to a new directory shows as a new inode) and by the SHA-256 of
its contents: a changed ``stat`` makes the reloader read the files, the digests decide whether
anything changed (a ``touch`` or an identical rewrite reloads nothing). A file modified within
``RACY_SECONDS`` of being read may change again without its ``stat`` showing it (same size,
same timestamp tick: git's "racily clean" case), so it is read again at the next look.
Everything here touches the disk: the reloader runs it off the reactor thread.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

__all__ = ["RACY_SECONDS", "FileState", "Signature", "Snapshot", "changed", "scan", "take"]

# Covers filesystems that keep whole seconds.
RACY_SECONDS = 2.0
# Reads of a snapshot whose files keep changing under it before it is taken as it is.
_ATTEMPTS = 3


class Signature(NamedTuple):
    """What ``stat`` says of the file a path resolves to."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int


def signature(result: os.stat_result) -> Signature:
    """The signature of a ``stat`` result."""
    return Signature(result.st_dev, result.st_ino, result.st_size, result.st_mtime_ns,
                     result.st_ctime_ns)


def stat_of(path: str) -> Signature | None:
    """The signature of what ``path`` resolves to now, None if there is nothing to stat."""
    try:
        return signature(os.stat(path))
    except OSError:
        return None


@dataclass(frozen=True)
class FileState:
    """One file as read: its signature then, its contents (or why they could not be read)."""

    signature: Signature | None
    data: bytes | OSError
    racy: bool = False

    @cached_property
    def digest(self) -> str:
        """The contents' SHA-256, or the error reading them: equal digests, same file."""
        if isinstance(self.data, OSError):
            return f"{type(self.data).__name__}: {self.data.strerror}"
        return hashlib.sha256(self.data).hexdigest()


def read(path: str) -> FileState:
    """Read ``path``, with the signature of the very file read (taken before reading)."""
    try:
        with open(path, "rb") as f:
            before = signature(os.fstat(f.fileno()))
            data = f.read()
    except OSError as e:
        return FileState(stat_of(path), e)
    # The wall clock, not the reactor's: it is compared with the filesystem's timestamps.
    racy = time.time() - max(before.mtime_ns, before.ctime_ns) / 1e9 < RACY_SECONDS
    return FileState(before, data, racy)


@dataclass(frozen=True)
class Snapshot:
    """The watched files, each as read at one moment."""

    files: dict[str, FileState]

    @property
    def contents(self) -> dict[str, bytes | OSError]:
        """What each file holds, for ``ServerConfig.load``."""
        return {path: state.data for path, state in self.files.items()}

    @property
    def digests(self) -> dict[str, str]:
        """Each file's digest: two snapshots with the same digests hold the same files."""
        return {path: state.digest for path, state in self.files.items()}

    def differing(self, other: Snapshot) -> list[str]:
        """The files whose contents differ from ``other``'s."""
        theirs = other.digests
        return [path for path, digest in self.digests.items() if theirs.get(path) != digest]


def take(paths: Sequence[str]) -> Snapshot:
    """Read every file; read again (a few times) while one changes under the reading, so
    that a pair written together (certificate and key) is seen together."""
    files = {path: read(path) for path in paths}
    for _ in range(_ATTEMPTS - 1):
        if all(stat_of(path) == state.signature for path, state in files.items()):
            break
        files = {path: read(path) for path in paths}
    return Snapshot(files)


def changed(known: Snapshot) -> bool:
    """Whether any file may differ from ``known``: its signature changed, or it was racy."""
    return any(state.racy or stat_of(path) != state.signature
               for path, state in known.files.items())


def scan(known: Snapshot) -> Snapshot | None:
    """One look: ``stat`` calls only, unless something may have changed; then a new
    snapshot."""
    if not changed(known):
        return None
    return take(tuple(known.files))
