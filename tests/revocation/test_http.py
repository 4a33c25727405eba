"""certsrv.revocation.http: which URLs the bounded fetcher may ask."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from certsrv.revocation.http import usable_url


class UsableURLTests(SynchronousTestCase):
    """Only plain printable-ASCII http:// URLs with a host are fetched."""

    def test_urls(self) -> None:
        for good in ("http://ocsp.example.org", "http://127.0.0.1:8080/ca.crl"):
            self.assertTrue(usable_url(good), good)
        for bad in ("https://ocsp.example.org/", "ldap://example.org/cn=ca", "http://",
                    "http://exa mple.org/", "http://example.org/\x7f", "http://ex\u00e4mple.org/",
                    "ocsp.example.org"):
            self.assertFalse(usable_url(bad), bad)
