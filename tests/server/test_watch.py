"""certsrv.server.watch: which changes of a file a look sees, and what a snapshot holds."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from certsrv.server import watch
from tests._support import write_pem


def kubelet_secret(directory: str, stamp: str, files: dict[str, bytes]) -> None:
    """Publish ``files`` in a Kubernetes secret volume as the kubelet does: a new
    timestamped directory, a ``..data_tmp`` symlink to it renamed over ``..data``, and
    (the first time) ``NAME -> ..data/NAME`` links."""
    os.makedirs(directory, exist_ok=True)
    for name, data in files.items():
        write_pem(os.path.join(directory, stamp), name, data)
    os.symlink(stamp, os.path.join(directory, "..data_tmp"))
    os.rename(os.path.join(directory, "..data_tmp"), os.path.join(directory, "..data"))
    for name in files:
        link = os.path.join(directory, name)
        if not os.path.islink(link):
            os.symlink(os.path.join("..data", name), link)


class LookTests(SynchronousTestCase):
    """A look is ``stat`` calls only until a signature changes or a file is racy."""

    def setUp(self) -> None:
        self.directory = self.mktemp()
        self.path = write_pem(self.directory, "server.pem", b"one")

    def settled(self) -> watch.Snapshot:
        """A snapshot of the file, taken as if it were written long ago (not racy)."""
        self.patch(watch, "RACY_SECONDS", 0.0)
        return watch.take([self.path])

    def test_unchanged_files_are_not_read(self) -> None:
        known = self.settled()
        self.assertFalse(known.files[self.path].racy)
        self.assertIsNone(watch.scan(known))

    def test_in_place_rewrite_of_the_same_size_is_seen(self) -> None:
        known = self.settled()
        before = os.stat(self.path)
        write_pem(self.directory, "server.pem", b"two")
        # cp -p, rsync -t: the old modification time, restored; the ctime still moves.
        os.utime(self.path, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = watch.scan(known)
        assert after is not None
        self.assertEqual(after.files[self.path].data, b"two")
        self.assertEqual(after.differing(known), [self.path])

    def test_touch_reads_the_same_contents(self) -> None:
        known = self.settled()
        os.utime(self.path, ns=(1, 10**18))
        after = watch.scan(known)
        assert after is not None
        self.assertEqual(after.differing(known), [])
        self.assertIsNone(watch.scan(after), "the new signature is remembered")

    def test_a_racy_file_is_read_again_at_the_next_look(self) -> None:
        known = watch.take([self.path])
        self.assertTrue(known.files[self.path].racy, "just written")
        again = watch.scan(known)
        assert again is not None
        self.assertEqual(again.differing(known), [])

    def test_a_missing_file_is_an_error_as_its_contents(self) -> None:
        known = self.settled()
        os.remove(self.path)
        after = watch.scan(known)
        assert after is not None
        self.assertIsInstance(after.contents[self.path], FileNotFoundError)
        self.assertIsNone(after.files[self.path].signature)
        self.assertEqual(after.differing(known), [self.path])


class KubeletTests(SynchronousTestCase):
    """The kubelet's atomic swap of ``..data`` shows as new files behind the same names."""

    def test_swap_of_the_data_directory(self) -> None:
        self.patch(watch, "RACY_SECONDS", 0.0)
        secret = self.mktemp()
        kubelet_secret(secret, "..2026_11_29_10_00_00.1", {"tls.crt": b"old", "tls.key": b"k1"})
        paths = [os.path.join(secret, "tls.crt"), os.path.join(secret, "tls.key")]
        known = watch.take(paths)
        self.assertIsNone(watch.scan(known))
        kubelet_secret(secret, "..2026_11_29_11_00_00.2", {"tls.crt": b"new", "tls.key": b"k2"})
        after = watch.scan(known)
        assert after is not None
        self.assertEqual(after.contents, {paths[0]: b"new", paths[1]: b"k2"})
        self.assertEqual(after.differing(known), paths)

    def test_a_swap_between_two_reads_is_read_again(self) -> None:
        self.patch(watch, "RACY_SECONDS", 0.0)
        secret = self.mktemp()
        kubelet_secret(secret, "..1", {"tls.crt": b"old", "tls.key": b"k1"})
        crt, key = os.path.join(secret, "tls.crt"), os.path.join(secret, "tls.key")
        read = watch.read

        def swapping(path: str) -> watch.FileState:
            state = read(path)
            if path == crt and state.data == b"old":
                kubelet_secret(secret, "..2", {"tls.crt": b"new", "tls.key": b"k2"})
            return state

        self.patch(watch, "read", swapping)
        snapshot = watch.take([crt, key])
        self.assertEqual(snapshot.contents, {crt: b"new", key: b"k2"},
                         "never the old certificate with the new key")
