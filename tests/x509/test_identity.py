"""certsrv.x509.identity: what a client certificate says about its holder."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from certsrv.testing import CertificateFactory
from certsrv.x509.certs import sha256_hex
from certsrv.x509.identity import ClientIdentity


class FromCertificateTests(SynchronousTestCase):
    """Names and SANs are read out of the certificate; validity is capped by the chain."""

    def setUp(self) -> None:
        self.ca = CertificateFactory.create()

    def test_names(self) -> None:
        issued = self.ca.client("bob", dns=["bob.example.org"], ips=["192.0.2.7"],
                                emails=["bob@example.org"],
                                uris=["spiffe://example.org/bob", "https://example.org/b"])
        identity = ClientIdentity.from_certificate(issued.certificate)
        self.assertEqual((identity.subject, identity.common_name), ("CN=bob", "bob"))
        self.assertEqual(identity.dns, ("bob.example.org",))
        self.assertEqual(identity.ips, ("192.0.2.7",))
        self.assertEqual(identity.emails, ("bob@example.org",))
        self.assertEqual(identity.spiffe_id, "spiffe://example.org/bob")
        self.assertEqual(identity.sha256, sha256_hex(issued.certificate))
        self.assertEqual(identity.valid_until, identity.not_after)

    def test_no_sans_and_two_spiffe_ids(self) -> None:
        plain = ClientIdentity.from_certificate(self.ca.client("carol").certificate)
        self.assertEqual((plain.dns, plain.uris, plain.spiffe_id), ((), (), None))
        two = ClientIdentity.from_certificate(self.ca.client(
            "dave", uris=["spiffe://a.example/x", "spiffe://b.example/y"]).certificate)
        self.assertIsNone(two.spiffe_id)  # ambiguous: no SPIFFE ID at all

    def test_chain_caps_validity_and_json(self) -> None:
        issued = self.ca.client("erin")
        identity = ClientIdentity.from_certificate(issued.certificate, chain_not_after=1000.0)
        self.assertEqual(identity.valid_until, 1000.0)
        document = identity.as_json()
        self.assertEqual(document["subject"], "CN=erin")
        self.assertTrue(str(document["not_after"]).endswith("Z"))

    def test_policies(self) -> None:
        """The chain's valid certificate policies are part of the identity (sorted in JSON)."""
        issued = self.ca.client("frank")
        self.assertEqual(ClientIdentity.from_certificate(issued.certificate).policies,
                         frozenset())
        identity = ClientIdentity.from_certificate(issued.certificate, None,
                                                   frozenset({"1.2.3", "1.2.10"}))
        self.assertEqual(identity.policies, {"1.2.3", "1.2.10"})
        self.assertEqual(identity.as_json()["policies"], ["1.2.10", "1.2.3"])
