"""Client-certificate validation over real TLS handshakes, in memory, with a controlled clock."""

from __future__ import annotations

import json

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from twisted.internet.ssl import TLSVersion
from twisted.trial.unittest import SynchronousTestCase

from certsrv.exceptions import Reason
from certsrv.pki import IssuedCertificate, KeyType
from certsrv.tls.context import ClientCertMode
from certsrv.tls.verify import AllowedTypes, ClientVerifier
from certsrv.web.site import Limits
from tests._support import (
    DAY,
    captured_events,
    client_tls_options,
    clock_at_now,
    exchange,
    make_server_factory,
    request_bytes,
    shared_pki,
    utcnow,
)


class _Base(SynchronousTestCase):
    def setUp(self) -> None:
        self.pki = shared_pki()

    def run_exchange(self, cert: IssuedCertificate | None, **kwargs: object):  # type: ignore[no-untyped-def]
        send_chain = bool(kwargs.pop("send_chain", True))
        max_tls = kwargs.pop("max_tls", None)
        request = kwargs.pop("request", None)
        settings = self.pki.settings(**kwargs.pop("settings", {}))  # type: ignore[arg-type]
        factory = make_server_factory(settings, **kwargs)  # type: ignore[arg-type]
        with captured_events() as events:
            result = exchange(factory, client_tls_options(self.pki, cert, send_chain=send_chain,
                                                          max_tls=max_tls), request)
        return result, events

    def assertRejected(self, result, events, reason: Reason, alert: str) -> None:  # type: ignore[no-untyped-def]
        self.assertIsNone(result.status, result.client.received)
        self.assertIn(alert, result.client_error)
        decisions = [e for e in events if e.get("decision") == "rejected"]
        self.assertEqual([e["reason"] for e in decisions], [reason.value])


class AcceptedTests(_Base):
    """A valid certificate gets through to ``/secure``."""

    def test_valid_certificate(self) -> None:
        result, events = self.run_exchange(self.pki.client)
        self.assertEqual(result.status, 200)
        self.assertIn(b"Client certificate accepted", result.body)
        self.assertIn(b"CN=alice", result.body)
        self.assertIn(b"\r\nServer: certsrv\r\n", result.client.received)
        [event] = [e for e in events if e.get("decision")]
        self.assertEqual(event["decision"], "accepted")
        self.assertEqual(event["subject"], "CN=alice")
        self.assertEqual(event["sha256"], self.pki.client.fingerprint)
        self.assertEqual(event["serial"], format(self.pki.client.serial_number, "x"))
        self.assertIn("Test Root CA", event["issuer"])
        self.assertTrue(event["peer"])

    def test_valid_certificate_tls12(self) -> None:
        result, _ = self.run_exchange(self.pki.client, max_tls=TLSVersion.TLSv1_2)
        self.assertEqual(result.status, 200)

    def test_rsa_client_certificate(self) -> None:
        cert = self.pki.root.issue_client("rsa-client", key_type=KeyType.RSA_2048)
        result, _ = self.run_exchange(cert)
        self.assertEqual(result.status, 200)

    def test_json_identity(self) -> None:
        result, _ = self.run_exchange(self.pki.client,
                                      request=request_bytes(accept="application/json"))
        self.assertEqual(result.status, 200)
        document = json.loads(result.body)
        self.assertEqual(document["subject"], "CN=alice")
        self.assertEqual(document["sha256"], self.pki.client.fingerprint)
        self.assertEqual(document["serial"], format(self.pki.client.serial_number, "x"))
        self.assertEqual(document["san"]["email"], ["alice@example.org"])
        self.assertEqual(document["spiffe_id"], "spiffe://example.org/ns/a/sa/alice")
        self.assertTrue(document["not_after"].endswith("Z"))

    def test_other_paths_are_404(self) -> None:
        for path in ("/", "/secure/x/y", "/other"):
            result, _ = self.run_exchange(self.pki.client, request=request_bytes(path))
            self.assertEqual(result.status, 404, path)

    def test_ambiguous_paths_are_400(self) -> None:
        """What a server behind certsrv could read as another path never reaches the tree."""
        for path in ("/secure/x/../y", "/secure#/../x", "/x/%2e%2e/secure", "/a//secure"):
            result, _ = self.run_exchange(self.pki.client, request=request_bytes(path))
            self.assertEqual(result.status, 400, path)
            self.assertIn(b"bad_path", result.body)

    def test_intermediate_sent_by_client(self) -> None:
        result, _ = self.run_exchange(self.pki.client_cert("via_intermediate"))
        self.assertEqual(result.status, 200)

    def test_intermediate_from_server_settings(self) -> None:
        result, _ = self.run_exchange(
            self.pki.client_cert("via_intermediate"), send_chain=False,
            settings={"intermediates": (self.pki.intermediate.certificate,)})
        self.assertEqual(result.status, 200)


class RejectedTests(_Base):
    """Every rejection path fails the handshake with OpenSSL's alert and one logged reason."""

    def test_no_certificate_tls13(self) -> None:
        result, events = self.run_exchange(None)
        self.assertRejected(result, events, Reason.NO_CERTIFICATE, "certificate required")

    def test_no_certificate_tls12(self) -> None:
        result, events = self.run_exchange(None, max_tls=TLSVersion.TLSv1_2)
        self.assertRejected(result, events, Reason.NO_CERTIFICATE, "handshake failure")

    def test_unknown_ca(self) -> None:
        result, events = self.run_exchange(self.pki.client_cert("unknown_ca"))
        self.assertRejected(result, events, Reason.UNKNOWN_CA, "unknown ca")
        [event] = [e for e in events if e.get("decision")]
        self.assertEqual(event["subject"], "CN=mallory")

    def test_expired(self) -> None:
        result, events = self.run_exchange(self.pki.client_cert("expired"))
        self.assertRejected(result, events, Reason.EXPIRED, "certificate expired")

    def test_not_yet_valid(self) -> None:
        result, events = self.run_exchange(self.pki.client_cert("not_yet_valid"))
        self.assertRejected(result, events, Reason.NOT_YET_VALID, "bad certificate")

    def test_server_auth_only(self) -> None:
        result, events = self.run_exchange(self.pki.client_cert("server_auth_only"))
        self.assertRejected(result, events, Reason.BAD_KEY_USAGE, "unsupported certificate")

    def test_key_usage_without_digital_signature(self) -> None:
        usage = x509.KeyUsage(False, False, False, False, True, False, False, False, False)
        cert = self.pki.root.issue_client("agree-only", key_usage=usage)
        result, events = self.run_exchange(cert)
        self.assertRejected(result, events, Reason.BAD_KEY_USAGE, "alert")

    def test_ca_certificate_as_client(self) -> None:
        cert = IssuedCertificate(self.pki.root.certificate, self.pki.root.private_key)
        result, events = self.run_exchange(cert)
        self.assertRejected(result, events, Reason.CA_AS_CLIENT, "alert")

    def test_missing_intermediate(self) -> None:
        result, events = self.run_exchange(self.pki.client_cert("via_intermediate"),
                                           send_chain=False)
        self.assertRejected(result, events, Reason.UNKNOWN_CA, "unknown ca")

    def test_intermediate_alone_is_not_a_trust_anchor(self) -> None:
        result, events = self.run_exchange(
            self.pki.client_cert("via_intermediate"),
            settings={"roots": (), "intermediates": (self.pki.intermediate.certificate,)})
        self.assertRejected(result, events, Reason.UNKNOWN_CA, "unknown ca")

    def test_chain_longer_than_verify_depth(self) -> None:
        result, events = self.run_exchange(self.pki.client_cert("via_intermediate"),
                                           settings={"verify_depth": 0})
        self.assertIsNone(result.status)
        [event] = [e for e in events if e.get("decision")]
        self.assertIn(event["reason"], {Reason.CHAIN_TOO_LONG.value, Reason.UNKNOWN_CA.value})

    def test_optional_mode_still_validates_sent_certificate(self) -> None:
        result, events = self.run_exchange(self.pki.client_cert("expired"), settings={
            "client_cert": ClientCertMode.OPTIONAL})
        self.assertRejected(result, events, Reason.EXPIRED, "certificate expired")

    def test_optional_mode_without_certificate_is_403(self) -> None:
        result, events = self.run_exchange(None, settings={
            "client_cert": ClientCertMode.OPTIONAL})
        self.assertEqual(result.status, 403)
        self.assertIn(b"no_certificate", result.body)
        self.assertEqual([e["decision"] for e in events if e.get("decision")], ["anonymous"])


class SelfSignedTests(_Base):
    """Self-signed client certificates: only when allowed and pinned; still fully checked."""

    def test_not_allowed_when_chained(self) -> None:
        cert = self.pki.client_cert("self_signed")
        result, events = self.run_exchange(cert, pins=frozenset({cert.fingerprint}))
        self.assertRejected(result, events, Reason.SELF_SIGNED_NOT_ALLOWED, "alert")

    def test_unpinned(self) -> None:
        result, events = self.run_exchange(self.pki.client_cert("self_signed"),
                                           allowed_types=AllowedTypes.ALL,
                                           pins=frozenset({"0" * 64}))
        self.assertRejected(result, events, Reason.NOT_PINNED, "alert")

    def test_pinned_accepted(self) -> None:
        cert = self.pki.client_cert("self_signed")
        for allowed in (AllowedTypes.ALL, AllowedTypes.SELF_SIGNED):
            result, events = self.run_exchange(cert, allowed_types=allowed,
                                               pins=frozenset({cert.fingerprint}))
            self.assertEqual(result.status, 200, allowed)
            [event] = [e for e in events if e.get("decision")]
            self.assertTrue(event["pinned"])

    def test_selfsigned_mode_refuses_chained(self) -> None:
        result, events = self.run_exchange(self.pki.client, allowed_types=AllowedTypes.SELF_SIGNED,
                                           pins=frozenset({"0" * 64}))
        self.assertRejected(result, events, Reason.UNKNOWN_CA, "unknown ca")

    def test_pinned_but_expired(self) -> None:
        from certsrv.pki import self_signed_client

        now = utcnow()
        cert = self_signed_client("old-selfie", not_before=now - 10 * DAY, not_after=now - DAY)
        result, events = self.run_exchange(cert, allowed_types=AllowedTypes.ALL,
                                           pins=frozenset({cert.fingerprint}))
        self.assertRejected(result, events, Reason.EXPIRED, "certificate expired")

    def test_pinned_but_server_auth_only(self) -> None:
        from certsrv.pki import self_signed_client

        cert = self_signed_client("svc-selfie",
                                  extended_key_usage=(ExtendedKeyUsageOID.SERVER_AUTH,))
        result, events = self.run_exchange(cert, allowed_types=AllowedTypes.ALL,
                                           pins=frozenset({cert.fingerprint}))
        self.assertRejected(result, events, Reason.BAD_KEY_USAGE, "unsupported certificate")


class ClockTests(_Base):
    """The verifier judges time by its injected clock, at the handshake and on every request."""

    def test_expired_by_server_clock(self) -> None:
        clock = clock_at_now()
        clock.advance(400 * 86400)  # past the client certificate's one-year validity
        result, events = self.run_exchange(self.pki.client, clock=clock)
        self.assertRejected(result, events, Reason.EXPIRED, "alert")

    def test_certificate_expiring_on_open_connection(self) -> None:
        from certsrv.testing import open_in_memory
        from tests._support import HTTPClientProtocol

        clock = clock_at_now()
        # The idle timeout runs on the same clock: keep it out of the way.
        factory = make_server_factory(self.pki.settings(), clock=clock,
                                      limits=Limits(idle_timeout=10**9))
        keepalive = b"GET /secure HTTP/1.1\r\nHost: localhost\r\n\r\n"
        http = HTTPClientProtocol(keepalive)
        client, server, pump = open_in_memory(
            factory, client_tls_options(self.pki, self.pki.client), http)
        self.assertTrue(http.received.startswith(b"HTTP/1.1 200"), http.received)
        http.received = b""
        clock.advance(400 * 86400)
        client.write(keepalive)
        pump.flush()
        self.assertTrue(http.received.startswith(b"HTTP/1.1 403"), http.received)
        self.assertIn(b"expired", http.received)
        client.loseConnection()
        pump.flush()


class MemoTests(_Base):
    """What a verifier remembers of a certificate across handshakes is only what does not
    depend on the clock or the connection."""

    def test_time_judged_again_on_the_next_handshake(self) -> None:
        clock = clock_at_now()
        verifier = ClientVerifier(clock)
        factory = make_server_factory(self.pki.settings(), verifier=verifier)
        first = exchange(factory, client_tls_options(self.pki, self.pki.client))
        self.assertEqual(first.status, 200)
        clock.advance(400 * 86400)  # past the client certificate's validity
        with captured_events() as events:
            second = exchange(factory, client_tls_options(self.pki, self.pki.client))
        self.assertRejected(second, events, Reason.EXPIRED, "alert")

    def test_leaf_refusal_each_time_with_its_own_depth(self) -> None:
        verifier = ClientVerifier(clock_at_now())
        factory = make_server_factory(self.pki.settings(), verifier=verifier)
        cert = self.pki.client_cert("server_auth_only")
        for _ in range(2):
            with captured_events() as events:
                result = exchange(factory, client_tls_options(self.pki, cert))
            self.assertRejected(result, events, Reason.BAD_KEY_USAGE, "alert")
            [event] = [e for e in events if e.get("decision") == "rejected"]
            self.assertEqual(event["depth"], 0)

    def test_identity_shared_by_connections(self) -> None:
        from certsrv.testing import open_in_memory
        from tests._support import HTTPClientProtocol

        verifier = ClientVerifier(clock_at_now())
        factory = make_server_factory(self.pki.settings(), verifier=verifier)
        states = []
        for _ in range(2):
            http = HTTPClientProtocol(request_bytes("/secure"))
            _, server, pump = open_in_memory(
                factory, client_tls_options(self.pki, self.pki.client), http)
            self.assertTrue(http.received.startswith(b"HTTP/1.1 200"), http.received)
            states.append(server.certsrv_state)
        self.assertIsNot(states[0], states[1])
        self.assertIs(states[0].identity, states[1].identity)


class RobustnessTests(_Base):
    """A bug in the verifier fails the handshake cleanly instead of escaping into the reactor."""

    def test_exception_in_verifier(self) -> None:
        class Broken(ClientVerifier):
            def _leaf_checks(self, cert: x509.Certificate) -> None:  # type: ignore[override]
                raise RuntimeError("boom")

        result, events = self.run_exchange(self.pki.client, verifier=Broken(clock_at_now()))
        self.assertRejected(result, events, Reason.INTERNAL_ERROR, "alert")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)




class PolicyTests(_Base):
    """Certificate policies (RFC 5280 §6.1) are checked over the verified chain, in the
    handshake and for a chain verified outside one, by the same judge."""

    P1, P2 = "1.3.6.1.4.1.99999.1", "1.3.6.1.4.1.99999.2"

    def setUp(self) -> None:
        super().setUp()
        from certsrv.testing import CertificateFactory, policy_extensions

        self.root = CertificateFactory.create("Policy Root")
        self.ca = self.root.intermediate("Policy CA", extensions=policy_extensions(
            [self.P1, self.P2]))
        self.good = self.ca.client("p1", extensions=policy_extensions([self.P1]))
        self.other = self.ca.client("p2", extensions=policy_extensions([self.P2]))
        bad = self.root.intermediate("Mapping CA", extensions=policy_extensions(
            ["2.5.29.32.0"], mappings=[("2.5.29.32.0", self.P1)]))
        self.invalid = bad.client("mapped", extensions=policy_extensions([self.P1]))

    def verifier(self) -> ClientVerifier:
        from certsrv.x509.policies import PolicySettings

        return ClientVerifier(clock_at_now(), policies=PolicySettings(
            frozenset({self.P1}), require_explicit=True))

    def run_policy(self, cert: IssuedCertificate):  # type: ignore[no-untyped-def]
        return self.run_exchange(cert, verifier=self.verifier(),
                                 settings={"roots": (self.root.certificate,)},
                                 request=request_bytes(accept="application/json"))

    def test_accepted_with_its_policies(self) -> None:
        result, _ = self.run_policy(self.good)
        self.assertEqual(result.status, 200)
        self.assertEqual(json.loads(result.body)["policies"], [self.P1])

    def test_no_acceptable_policy(self) -> None:
        result, events = self.run_policy(self.other)
        self.assertRejected(result, events, Reason.NO_ACCEPTABLE_POLICY, "certificate unknown")

    def test_invalid_policy_mapping(self) -> None:
        result, events = self.run_policy(self.invalid)
        self.assertRejected(result, events, Reason.INVALID_POLICY, "certificate unknown")
        [event] = [e for e in events if e.get("decision") == "rejected"]
        self.assertEqual(event["depth"], 1)

    def test_verify_chain_outside_a_handshake(self) -> None:
        verifier = self.verifier()
        verifier.attach(self.pki.settings(roots=(self.root.certificate,)))
        state = verifier.verify_chain(self.good.certificate, self.good.chain)
        self.assertNotIsInstance(state, Exception)
        assert not isinstance(state, Exception)
        assert state.identity is not None
        self.assertEqual(state.identity.policies, {self.P1})
        refused = verifier.verify_chain(self.other.certificate, self.other.chain)
        self.assertIsInstance(refused, Exception)
        assert isinstance(refused, Exception)
        self.assertEqual(refused.reason, Reason.NO_ACCEPTABLE_POLICY)  # type: ignore[attr-defined]

    def test_default_settings_accept_without_policies(self) -> None:
        """No policy options: a chain without any policy is accepted, with none."""
        result, _ = self.run_exchange(self.pki.client,
                                      request=request_bytes(accept="application/json"))
        self.assertEqual(result.status, 200)
        self.assertEqual(json.loads(result.body)["policies"], [])

    def test_pinned_leaf_has_only_its_own_policies(self) -> None:
        """A pinned self-signed certificate is its own path: without certificatePolicies it
        is refused when an explicit policy is required."""
        from certsrv.x509.policies import PolicySettings

        cert = self.pki.client_cert("self_signed")
        verifier = ClientVerifier(clock_at_now(), AllowedTypes.ALL, frozenset({cert.fingerprint}),
                                  policies=PolicySettings(require_explicit=True))
        result, events = self.run_exchange(cert, verifier=verifier)
        self.assertRejected(result, events, Reason.NO_ACCEPTABLE_POLICY, "certificate unknown")
