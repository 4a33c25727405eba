"""certsrv.server.apploader: ``--app DOTTED.NAME`` names a resource, a Klein app or a factory."""

from __future__ import annotations

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import resource, static

from certsrv.server.apploader import load_app

PAGE = static.Data(b"hello", "text/plain")
NOT_AN_APP = 42


def page_factory() -> resource.IResource:
    return PAGE


def broken_factory() -> resource.IResource:
    raise RuntimeError("database unreachable")


class LoadAppTests(SynchronousTestCase):
    """A resource or a factory of one loads; anything else is one UsageError saying why."""

    def test_resource_and_factory(self) -> None:
        self.assertIs(load_app(f"{__name__}.PAGE"), PAGE)
        self.assertIs(load_app(f"{__name__}.page_factory"), PAGE)

    def test_errors(self) -> None:
        for name, words in ((f"{__name__}.no_such_app", "cannot import"),
                            ("no_such_package_for_certsrv.app", "cannot import"),
                            (f"{__name__}.NOT_AN_APP", "not a twisted.web resource"),
                            (f"{__name__}.broken_factory", "database unreachable")):
            error = self.assertRaises(usage.UsageError, load_app, name)
            self.assertIn(f"--app {name}", str(error))
            self.assertIn(words, str(error))
