"""
Differential tests: the handshake verdict on a client chain equals the forwarded verdict.

certsrv judges a client chain in two places: the TLS handshake (OpenSSL's verify callback
feeding ``ClientVerifier.judge``) and the gate, for a certificate a trusted proxy
forwards (``ForwardedVerifier`` feeding ``judge`` through ``verify_chain``), each followed by
the one revocation decision. Issue 9 findings 3 and 4 were places where they drifted apart.

Here hypothesis generates chains (leaf EKU, keyUsage, CA flag, validity; issued by the root,
by an intermediate whose EKU is absent or serverAuth only, by an unknown CA, or self-signed;
the intermediate sent by the client or known to the server), CRL files (absent, current or
expired per issuer, listing the leaf and/or the intermediate) and the options around them
(``--revocation-fail``, ``--crl-check``, ``--allowed-types``, pins). Each example is run twice
through real code, in memory: once as a direct mutual-TLS client of a certsrv site, once as
a certificate forwarded in RFC 9440 headers by a trusted proxy on 127.0.0.1 to a certsrv site
with the same configuration. Both verdicts are reduced to "accepted" or the reason code of
the rejection event (and the depth it names), and must be equal.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import protocol
from twisted.internet.address import IPv4Address
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test.iosim import FakeTransport, connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase

from certsrv.exceptions import Reason
from certsrv.forwarded.trust import forwarding
from certsrv.pki import CertificateAuthority, IssuedCertificate, fingerprint
from certsrv.server.build import build_site
from certsrv.server.config import ServerConfig
from certsrv.tls.context import ClientCertMode, ServerTLS, TLSFactory
from certsrv.tls.verify import AllowedTypes
from tests._support import (
    DAY,
    Exchange,
    HTTPClientProtocol,
    captured_events,
    clock_at_now,
    utcnow,
    write_pem,
)

PROPERTY = settings(max_examples=150, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

# The proxy's address: trusted by --trusted-proxy; the direct client comes from elsewhere.
PROXY = IPv4Address("TCP", "127.0.0.1", 40001)
CLIENT = IPv4Address("TCP", "192.0.2.7", 40002)

Verdict = tuple[str, ...]  # ("accepted",) or ("rejected", reason code)
ACCEPTED: Verdict = ("accepted",)


def rejected(reason: Reason) -> Verdict:
    return ("rejected", reason.value)


# --- the generated parameters ----------------------------------------------------------------

EKUS = ("client", "absent", "server", "both")
KEY_USAGES = ("digital_signature", "absent", "key_encipherment")
VALIDITIES = ("valid", "expired", "not_yet_valid")
ISSUERS = ("root", "inter_plain", "inter_server", "unknown_ca", "self_signed")
# Who has the intermediate: the client sends it (the proxy forwards it in
# Client-Cert-Chain), the server has it from --intermediates, both, or neither.
INTERMEDIATE_SOURCES = ("client", "server", "both", "neither")
CRL_STATES = ("absent", "current", "expired")


@dataclass(frozen=True)
class Case:
    """One generated client chain and the server configuration judging it."""

    eku: str = "client"
    key_usage: str = "digital_signature"
    leaf_ca: bool = False
    validity: str = "valid"
    issuer: str = "root"
    intermediate: str = "client"
    root_crl: str = "absent"  # the root's CRL file (covers root-issued leaves, intermediates)
    inter_crl: str = "absent"  # the intermediate's CRL file (covers its leaves)
    leaf_listed: bool = False  # the leaf's serial is in its issuer's CRL
    inter_listed: bool = False  # the intermediate's serial is in the root's CRL
    fail_open: bool = False
    crl_check_chain: bool = False
    allowed_types: str = "chained"
    pinned: bool = False  # with --allowed-types all: the leaf's fingerprint is the pin

    @property
    def via_intermediate(self) -> bool:
        return self.issuer in ("inter_plain", "inter_server")

    @property
    def client_sends_intermediate(self) -> bool:
        return self.via_intermediate and self.intermediate in ("client", "both")

    @property
    def server_has_intermediate(self) -> bool:
        return self.via_intermediate and self.intermediate in ("server", "both")


_revocation = {
    "root_crl": st.sampled_from(CRL_STATES),
    "inter_crl": st.sampled_from(CRL_STATES),
    "leaf_listed": st.booleans(),
    "inter_listed": st.booleans(),
    "fail_open": st.booleans(),
    "crl_check_chain": st.booleans(),
}
# Anything goes: most of these chains fail before revocation matters.
any_case = st.builds(
    Case,
    eku=st.sampled_from(EKUS),
    key_usage=st.sampled_from(KEY_USAGES),
    leaf_ca=st.integers(0, 9).map(lambda n: n == 9),  # rare
    validity=st.sampled_from(VALIDITIES),
    issuer=st.sampled_from(ISSUERS),
    intermediate=st.sampled_from(INTERMEDIATE_SOURCES),
    allowed_types=st.sampled_from(("chained", "all")),
    pinned=st.booleans(),
    **_revocation,
)
# A chain that verifies, so that revocation (every CRL state, listing, option) decides.
good_chain_case = st.builds(
    Case,
    eku=st.sampled_from(("client", "both")),
    key_usage=st.sampled_from(("digital_signature", "absent")),
    issuer=st.sampled_from(("root", "inter_plain")),
    intermediate=st.sampled_from(("client", "server", "both")),
    allowed_types=st.sampled_from(("chained", "all")),
    **_revocation,
)
cases = st.one_of(good_chain_case, any_case)


# --- the fixed PKI and the certificates cached by their parameters -------------------------

def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(digital_signature: bool = False, key_encipherment: bool = False,
               ca: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature, content_commitment=False,
        key_encipherment=key_encipherment, data_encipherment=False, key_agreement=False,
        key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False)


def _server_auth_intermediate(root: CertificateAuthority, common_name: str
                              ) -> CertificateAuthority:
    """An intermediate CA whose EKU is serverAuth only (issue 9 finding 3)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = utcnow()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(root.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - DAY)
        .not_valid_after(now + 3650 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        .add_extension(_key_usage(digital_signature=True, ca=True), True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            root.private_key.public_key()), False)  # type: ignore[arg-type]
        .sign(root.private_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return CertificateAuthority.load(cert, key)


_EKU_VALUES: dict[str, list[x509.ObjectIdentifier] | None] = {
    "absent": None,
    "client": [ExtendedKeyUsageOID.CLIENT_AUTH],
    "server": [ExtendedKeyUsageOID.SERVER_AUTH],
    "both": [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
}


class Fixture:
    """The CAs, server certificate and files every example shares; made once."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="differential-", dir=os.getcwd())
        self.root = CertificateAuthority.create("Differential Root CA")
        self.unknown = CertificateAuthority.create("Differential Unknown CA")
        self.inters = {
            "inter_plain": self.root.intermediate("Differential Intermediate (no EKU)"),
            "inter_server": _server_auth_intermediate(
                self.root, "Differential Intermediate (serverAuth)"),
        }
        server = self.root.issue_server("localhost", "127.0.0.1")
        self.server_pem = self._write("server.pem", server.chain_pem())
        self.server_key = self._write("server.key", server.private_key_pem(), 0o600)
        self.root_pem = self._write("root.pem", self.root.certificate_pem())
        self.inter_pems = {name: self._write(f"{name}.pem", ca.certificate_pem())
                           for name, ca in self.inters.items()}
        self.trust_root = Certificate.loadPEM(self.root.certificate_pem())
        self._leaves: dict[tuple[Any, ...], IssuedCertificate] = {}
        self._crls: dict[tuple[Any, ...], str] = {}

    def _write(self, name: str, data: bytes, mode: int = 0o644) -> str:
        return write_pem(self.dir, name, data, mode)

    def issuer_of(self, case: Case) -> CertificateAuthority | None:
        """The CA that issues the case's leaf (None: the leaf signs itself)."""
        if case.issuer == "root":
            return self.root
        if case.issuer == "unknown_ca":
            return self.unknown
        if case.issuer == "self_signed":
            return None
        return self.inters[case.issuer]

    def leaf(self, case: Case) -> IssuedCertificate:
        """The client certificate of ``case``, made once per distinct parameter tuple."""
        key = (case.eku, case.key_usage, case.leaf_ca, case.validity, case.issuer)
        issued = self._leaves.get(key)
        if issued is None:
            issued = self._leaves[key] = self._make_leaf(case)
        return issued

    def _make_leaf(self, case: Case) -> IssuedCertificate:
        key = ec.generate_private_key(ec.SECP256R1())
        now = utcnow()
        start, end = {"valid": (now - DAY, now + 30 * DAY),
                      "expired": (now - 30 * DAY, now - DAY),
                      "not_yet_valid": (now + DAY, now + 30 * DAY)}[case.validity]
        subject = _name(f"leaf {case.issuer} {case.eku} {case.key_usage} {case.validity}"
                        f"{' ca' if case.leaf_ca else ''}")
        ca = self.issuer_of(case)
        issuer_name = ca.certificate.subject if ca is not None else subject
        signer = ca.private_key if ca is not None else key
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=case.leaf_ca, path_length=None), True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        )
        if ca is not None:
            builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca.private_key.public_key()), False)  # type: ignore[arg-type]
        if case.key_usage != "absent":
            builder = builder.add_extension(_key_usage(
                digital_signature=case.key_usage == "digital_signature",
                key_encipherment=case.key_usage == "key_encipherment"), True)
        ekus = _EKU_VALUES[case.eku]
        if ekus is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage(ekus), False)
        cert = builder.sign(signer, hashes.SHA256())  # type: ignore[arg-type]
        chain = (ca.certificate,) if ca is not None and not ca.is_root else ()
        return IssuedCertificate(cert, key, chain)

    def crl(self, ca: CertificateAuthority, state: str, revoked: Sequence[int]) -> str | None:
        """The path of ``ca``'s CRL file in ``state`` listing ``revoked`` (None: no file)."""
        if state == "absent":
            return None
        key = (ca.certificate.serial_number, state, tuple(sorted(revoked)))
        path = self._crls.get(key)
        if path is None:
            now = utcnow()
            window: dict[str, datetime.datetime] = {}
            if state == "expired":
                window = {"last_update": now - 10 * DAY, "next_update": now - DAY}
            crl = ca.crl([(serial, now - 2 * DAY, x509.ReasonFlags.key_compromise)
                          for serial in sorted(revoked)], **window)  # type: ignore[arg-type]
            path = self._crls[key] = self._write(
                f"crl-{len(self._crls)}.pem", crl.public_bytes(serialization.Encoding.PEM))
        return path

    def config(self, case: Case) -> ServerConfig:
        """The server configuration of ``case`` (as a direct, certificate-requiring server)."""
        leaf = self.leaf(case).certificate
        crls: list[str] = []
        root_revoked = []
        if case.issuer == "root" and case.leaf_listed:
            root_revoked.append(leaf.serial_number)
        if case.via_intermediate and case.inter_listed:
            root_revoked.append(self.inters[case.issuer].certificate.serial_number)
        root_crl = self.crl(self.root, case.root_crl, root_revoked)
        if root_crl is not None:
            crls.append(root_crl)
        if case.via_intermediate:
            inter = self.inters[case.issuer]
            inter_crl = self.crl(inter, case.inter_crl,
                                 [leaf.serial_number] if case.leaf_listed else [])
            if inter_crl is not None:
                crls.append(inter_crl)
        allowed = AllowedTypes(case.allowed_types)
        pins: tuple[str, ...] = ()
        if allowed.self_signed:  # --allowed-types all needs a pin: the leaf's, or another
            pins = (fingerprint(leaf) if case.pinned else "00" * 32,)
        return ServerConfig(
            cert=self.server_pem, key=self.server_key, ca=(self.root_pem,),
            intermediates=(self.inter_pems[case.issuer],) if case.server_has_intermediate
            else (),
            pins=pins, allowed_types=allowed, crls=tuple(crls),
            crl_check_chain=case.crl_check_chain, fail_open=case.fail_open)


@cache
def fixture() -> Fixture:
    return Fixture()


# --- running one connection in memory ----------------------------------------------------------

def _request(headers: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
    lines = [b"GET /secure HTTP/1.1", b"Host: localhost", b"Connection: close",
             b"Accept: application/json"]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _run(factory: TLSFactory, clock: Clock, options: Any, request: bytes, peer: IPv4Address
         ) -> Exchange:
    """``tests._support.exchange``, with the server seeing the client at ``peer``."""
    http = HTTPClientProtocol(request)
    client_factory = TLSMemoryBIOFactory(options, True,
                                         protocol.Factory.forProtocol(lambda: http), clock=clock)
    client: Any
    server: Any
    client, server, pump = connectedServerAndClient(
        lambda: factory.buildProtocol(peer),
        lambda: client_factory.buildProtocol(None),
        serverTransportFactory=lambda p: FakeTransport(p, isServer=True, peerAddress=peer),
        greet=False,
        clock=clock,
    )
    pump.flush()
    for _ in range(5):
        if http.lost is not None:
            break
        client.transport.loseConnection()
        server.transport.loseConnection()
        pump.flush()
    return Exchange(http, server)


@dataclass(frozen=True)
class Outcome:
    """A verdict and what it was read from, for failure messages."""

    verdict: Verdict
    status: int | None
    events: tuple[tuple[Any, ...], ...]  # (decision, reason, stage, depth) of each decision
    body: bytes

    @property
    def warned(self) -> bool:
        """Whether an accepted certificate's unknown revocation status was logged."""
        return any(d == "accepted" and r == Reason.REVOCATION_UNKNOWN.value
                   for d, r, *_ in self.events)

    @property
    def depth(self) -> int | None:
        """Where in the chain the rejected certificate sits (0: the client's own)."""
        return next((e[3] for e in self.events if e[0] == "rejected"), None)


def _outcome(result: Exchange, events: list[dict[str, Any]]) -> Outcome:
    decisions = tuple((e["decision"], e.get("reason"), e.get("stage"), e.get("depth"))
                      for e in events if e.get("decision"))
    refusals = [reason for decision, reason, *_ in decisions if decision == "rejected"]
    if result.status == 200 and not refusals:
        verdict = ACCEPTED
    elif refusals:
        verdict = ("rejected", str(refusals[0]))
    else:
        verdict = ("unexplained", str(result.status), result.client_error)
    return Outcome(verdict, result.status, decisions, result.client.received[-400:])


def handshake(case: Case) -> Outcome:
    """The verdict of a direct mutual-TLS connection presenting the case's chain."""
    fx = fixture()
    clock = clock_at_now()
    tls_settings, verifier = fx.config(case).load(clock)
    factory = TLSFactory(ServerTLS(tls_settings, verifier), build_site(verifier))
    issued = fx.leaf(case)
    extra: dict[str, Any] = {}
    if case.client_sends_intermediate:
        extra["extraCertChain"] = [
            Certificate.loadPEM(c.public_bytes(serialization.Encoding.PEM)).original
            for c in issued.chain]
    options = optionsForClientTLS(
        "localhost", trustRoot=fx.trust_root,
        clientCertificate=PrivateCertificate.loadPEM(issued.certificate_pem()
                                                     + issued.private_key_pem()),
        extraCertificateOptions=extra or None)
    with captured_events() as events:
        result = _run(factory, clock, options, _request(), CLIENT)
    return _outcome(result, events)


def _der_b64(cert: x509.Certificate) -> bytes:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER))


def forwarded(case: Case) -> Outcome:
    """The verdict of a request in which a trusted proxy forwards the case's chain.

    The proxy connects without a certificate of its own (``--client-cert optional``, else the
    same configuration), so the only certificate judged is the forwarded one.
    """
    fx = fixture()
    config = dataclasses.replace(fx.config(case), client_cert=ClientCertMode.OPTIONAL)
    clock = clock_at_now()
    tls_settings, verifier = config.load(clock)
    site = build_site(verifier, forwarded=forwarding("rfc9440", None, ["127.0.0.1/32"]))
    factory = TLSFactory(ServerTLS(tls_settings, verifier), site)
    issued = fx.leaf(case)
    headers = [(b"Client-Cert", b":" + _der_b64(issued.certificate) + b":")]
    if case.client_sends_intermediate:
        headers.append((b"Client-Cert-Chain",
                        b", ".join(b":" + _der_b64(c) + b":" for c in issued.chain)))
    options = optionsForClientTLS("localhost", trustRoot=fx.trust_root)
    with captured_events() as events:
        result = _run(factory, clock, options, _request(headers), PROXY)
    outcome = _outcome(result, events)
    if outcome.verdict[0] == "rejected" and result.status == 403:
        # What the proxy was told agrees with what was logged.
        body = json.loads(result.body)
        if body.get("reason") != outcome.verdict[1]:
            outcome = dataclasses.replace(
                outcome, verdict=("inconsistent", outcome.verdict[1], str(body.get("reason"))))
    return outcome


def _describe(case: Case, direct: Outcome, proxied: Outcome) -> str:
    return (f"\n{case}\nhandshake: {direct.verdict} events {direct.events}"
            f"\nforwarded: {proxied.verdict} events {proxied.events} body {proxied.body!r}")


# --- the tests ---------------------------------------------------------------------------------

class HandshakeEqualsForwardedTests(SynchronousTestCase):
    """For generated chains, a direct TLS client and a forwarded one get the same verdict."""

    def assertSameVerdict(self, case: Case) -> tuple[Outcome, Outcome]:
        direct = handshake(case)
        proxied = forwarded(case)
        self.assertEqual(direct.verdict, proxied.verdict, _describe(case, direct, proxied))
        # And the refusal names the same certificate of the chain.
        self.assertEqual(direct.depth, proxied.depth, _describe(case, direct, proxied))
        self.assertNotEqual(direct.verdict[0], "unexplained", _describe(case, direct, proxied))
        return direct, proxied

    @PROPERTY
    @given(case=cases)
    def test_same_verdict(self, case: Case) -> None:
        self.assertSameVerdict(case)

    def test_sanity(self) -> None:
        """The plain cases come out as they should, so equal verdicts mean something."""
        for case, expected in (
            (Case(), ACCEPTED),
            (Case(issuer="inter_plain"), ACCEPTED),
            (Case(issuer="inter_plain", intermediate="server"), ACCEPTED),
            (Case(issuer="inter_plain", intermediate="neither"), rejected(Reason.UNKNOWN_CA)),
            (Case(validity="expired"), rejected(Reason.EXPIRED)),
            (Case(eku="server"), rejected(Reason.BAD_KEY_USAGE)),
            (Case(issuer="unknown_ca"), rejected(Reason.UNKNOWN_CA)),
            (Case(issuer="self_signed"), rejected(Reason.SELF_SIGNED_NOT_ALLOWED)),
            (Case(issuer="self_signed", allowed_types="all"), rejected(Reason.NOT_PINNED)),
            (Case(issuer="self_signed", allowed_types="all", pinned=True), ACCEPTED),
            (Case(root_crl="current", leaf_listed=True), rejected(Reason.REVOKED)),
            (Case(root_crl="current"), ACCEPTED),
            (Case(root_crl="expired"), rejected(Reason.CRL_EXPIRED)),
            (Case(root_crl="expired", fail_open=True), ACCEPTED),
        ):
            direct, _ = self.assertSameVerdict(case)
            self.assertEqual(direct.verdict, expected, case)

    def test_intermediate_server_auth_only_refused_both_ways(self) -> None:
        """Issue 9 finding 3: an intermediate whose EKU is serverAuth only is refused with
        the same reason (OpenSSL's purpose failure, bad_key_usage) directly and forwarded,
        whether the client sends the intermediate or the server has it."""
        for source in ("client", "server", "both"):
            case = Case(issuer="inter_server", intermediate=source)
            direct, proxied = self.assertSameVerdict(case)
            self.assertEqual(direct.verdict, rejected(Reason.BAD_KEY_USAGE), case)
            self.assertEqual(proxied.verdict, rejected(Reason.BAD_KEY_USAGE), case)
        # The same leaf under the EKU-less intermediate is fine: it is the intermediate's EKU.
        self.assertEqual(handshake(Case(issuer="inter_plain")).verdict, ACCEPTED)

    def test_expired_crl_listing_the_leaf_revokes_even_fail_open(self) -> None:
        """Issue 9 finding 4: a serial listed in an expired CRL stays revoked with
        --revocation-fail open, directly and forwarded; leaf and chain checking alike."""
        for issuer, crls in (("root", {"root_crl": "expired"}),
                             ("inter_plain", {"inter_crl": "expired", "root_crl": "current",
                                              "intermediate": "server"})):
            for chain in (False, True):
                case = Case(issuer=issuer, leaf_listed=True, fail_open=True,
                            crl_check_chain=chain, **crls)  # type: ignore[arg-type]
                direct, proxied = self.assertSameVerdict(case)
                self.assertEqual(direct.verdict, rejected(Reason.REVOKED), case)
                self.assertEqual(proxied.verdict, rejected(Reason.REVOKED), case)
        # An intermediate listed in the root's expired CRL, with --crl-check chain.
        case = Case(issuer="inter_plain", intermediate="server", root_crl="expired",
                    inter_crl="current", inter_listed=True, fail_open=True, crl_check_chain=True)
        direct, proxied = self.assertSameVerdict(case)
        self.assertEqual(direct.verdict, rejected(Reason.REVOKED), case)

    def test_fail_open_warning_logged_both_ways(self) -> None:
        """Admitted with an unknown revocation status (--revocation-fail open): the warning
        that says so is logged for a forwarded certificate as for a direct one."""
        for case in (Case(root_crl="expired", fail_open=True),
                     Case(issuer="inter_plain", root_crl="current", fail_open=True)):
            direct, proxied = self.assertSameVerdict(case)
            self.assertEqual(direct.verdict, ACCEPTED, case)
            self.assertTrue(direct.warned, _describe(case, direct, proxied))
            self.assertTrue(proxied.warned, _describe(case, direct, proxied))
