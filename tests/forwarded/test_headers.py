"""Certificates forwarded by TLS-terminating proxies: rfc9440, nginx and xfcc headers, trust."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import http
from twisted.web.http_headers import Headers

from certsrv.exceptions import CertsrvError, ConfigurationError, ForwardedReason
from certsrv.forwarded.headers import (
    ALL_FORWARDED_HEADERS,
    DEFAULT_MAX_CERTIFICATES,
    DEFAULT_MAX_HEADER_BYTES,
    FORWARDED_HEADERS,
    ForwardedCertConfig,
    ForwardedCertError,
    ForwardedChain,
    ForwardedFormat,
    TrustedProxies,
    forwarded_headers,
    parse_forwarded,
)
from certsrv.pki import CertificateAuthority, IssuedCertificate

R = ForwardedReason
FUZZ = settings(max_examples=300, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


# --- test PKI ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Certs:
    """A root, two intermediates, client certificates below them, and non-certificates."""

    root: CertificateAuthority
    inter: CertificateAuthority
    inter2: CertificateAuthority
    alice: IssuedCertificate  # below inter2: chain (inter2, inter)
    bob: IssuedCertificate    # below the root: no chain
    crl: x509.CertificateRevocationList

    @property
    def pool(self) -> list[x509.Certificate]:
        """Every certificate here, for property tests."""
        return [self.root.certificate, self.inter.certificate, self.inter2.certificate,
                self.alice.certificate, self.bob.certificate]


@cache
def certs() -> Certs:
    root = CertificateAuthority.create("Forwarding Test Root")
    inter = root.intermediate("Forwarding Test Intermediate", path_length=1)
    inter2 = inter.intermediate("Forwarding Test Issuing CA")
    alice = inter2.issue_client("alice", emails=["alice@example.org"])
    bob = root.issue_client("bob")
    return Certs(root, inter, inter2, alice, bob, root.crl())


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


# --- encoders: the headers exactly as the proxies write them -------------------------------

_ALNUM = (string.ascii_letters + string.digits).encode()
NGINX_UNESCAPED = _ALNUM + b"-._~!'()*"  # ngx_escape_uri(NGX_ESCAPE_URI_COMPONENT)
ENVOY_UNESCAPED = _ALNUM + b"*-._"       # Envoy Http::Utility::PercentEncoding::urlEncode


def percent_encode(data: bytes, unescaped: bytes) -> bytes:
    """Escape every byte not in ``unescaped`` as %XX with uppercase hex."""
    return b"".join(bytes([b]) if b in unescaped else b"%%%02X" % b for b in data)


def sf_binary(data: bytes) -> bytes:
    """An RFC 8941 Byte Sequence."""
    return b":" + base64.b64encode(data) + b":"


def rfc9440_headers(issued: IssuedCertificate, chain: bool = True) -> dict[bytes, list[bytes]]:
    """Client-Cert and Client-Cert-Chain as RFC 9440 appendix A shows them."""
    headers = {b"Client-Cert": [sf_binary(der(issued.certificate))]}
    if chain and issued.chain:
        headers[b"Client-Cert-Chain"] = [b", ".join(sf_binary(der(c)) for c in issued.chain)]
    return headers


def nginx_escaped(cert: x509.Certificate) -> bytes:
    """nginx's $ssl_client_escaped_cert."""
    return percent_encode(pem(cert), NGINX_UNESCAPED)


def nginx_legacy_as_received(cert: x509.Certificate) -> bytes:
    """nginx's deprecated $ssl_client_cert, as Twisted's HTTP/1.1 parser hands it over."""
    raw = pem(cert)[:-1].replace(b"\n", b"\n\t")  # every line but the first starts with a tab
    return received(b"X-SSL-Client-Cert: " + raw.replace(b"\n", b"\r\n") + b"\r\n").getRawHeaders(
        b"x-ssl-client-cert", [b""])[0]


def envoy_encode(data: bytes) -> bytes:
    """Envoy's current URL encoding of a PEM."""
    return percent_encode(data, ENVOY_UNESCAPED)


def envoy_legacy_encode(data: bytes) -> bytes:
    """Envoy's URL encoding before PercentEncoding::urlEncode (five replacements)."""
    for raw, escaped in ((b"\n", b"%0A"), (b" ", b"%20"), (b"+", b"%2B"), (b"/", b"%2F"),
                         (b"=", b"%3D")):
        data = data.replace(raw, escaped)
    return data


def san_uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def xfcc_element(issued: IssuedCertificate, *, cert: bool = True, chain: bool = False,
                 subject: bool = True, uri: bool = False, dns: Sequence[str] = (),
                 encode: Callable[[bytes], bytes] = envoy_encode) -> bytes:
    """One XFCC element as Envoy's mutateXfccRequestHeader writes it (SANITIZE_SET)."""
    leaf = issued.certificate
    parts = [b"By=spiffe://cluster.local/ns/edge/sa/envoy",
             b"Hash=" + hashlib.sha256(der(leaf)).hexdigest().encode()]
    if cert:
        parts.append(b'Cert="' + encode(pem(leaf)) + b'"')
    if chain:
        parts.append(b'Chain="' + b"".join(encode(pem(c)) for c in (leaf, *issued.chain)) + b'"')
    if subject:
        parts.append(b'Subject="' + leaf.subject.rfc4514_string().encode() + b'"')
    if uri:
        uris = san_uris(leaf)
        parts += [b"URI=" + u.encode() for u in uris] if uris else [b"URI="]
    parts += [b"DNS=" + d.encode() for d in dns]
    return b";".join(parts)


def xfcc(*elements: bytes) -> dict[bytes, list[bytes]]:
    return {b"x-forwarded-client-cert": [b",".join(elements)]}


def received(header_lines: bytes) -> Headers:
    """The request headers Twisted's HTTP/1.1 parser produces from raw header lines."""
    captured: list[Headers] = []

    class Capture(http.Request):
        def process(self) -> None:
            captured.append(self.requestHeaders)
            self.finish()

    channel = http.HTTPChannel()
    channel.requestFactory = Capture
    channel.makeConnection(StringTransport())
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: certsrv\r\n" + header_lines + b"\r\n")
    return captured[0]


# --- assertions ----------------------------------------------------------------------------

class _Base(SynchronousTestCase):
    def setUp(self) -> None:
        self.certs = certs()

    def refused(self, reason: ForwardedReason, format: str, headers: Any,
                **kwargs: Any) -> ForwardedCertError:
        error = self.assertRaises(ForwardedCertError, parse_forwarded, format, headers, **kwargs)
        self.assertEqual(error.reason, reason, str(error))
        return error

    def assertChain(self, result: ForwardedChain | None, issued: IssuedCertificate,
                    chain: Sequence[x509.Certificate] | None = None) -> None:
        assert result is not None
        self.assertEqual(result.leaf, issued.certificate)
        self.assertEqual(result.chain, tuple(issued.chain if chain is None else chain))


# --- rfc9440 -------------------------------------------------------------------------------

class RFC9440Tests(_Base):
    """Client-Cert / Client-Cert-Chain as RFC 8941 byte sequences."""

    def test_leaf(self) -> None:
        """A leaf alone round-trips."""
        result = parse_forwarded("rfc9440", rfc9440_headers(self.certs.bob))
        self.assertChain(result, self.certs.bob, ())

    def test_leaf_and_chain(self) -> None:
        """The chain comes back in TLS order, without the leaf."""
        result = parse_forwarded("rfc9440", rfc9440_headers(self.certs.alice))
        self.assertChain(result, self.certs.alice)
        assert result is not None
        self.assertEqual(result.certificates, (self.certs.alice.certificate,
                                               *self.certs.alice.chain))

    def test_chain_over_several_lines(self) -> None:
        """Client-Cert-Chain lines are combined into one list, in order."""
        headers = rfc9440_headers(self.certs.alice, chain=False)
        headers[b"client-cert-chain"] = [sf_binary(der(c)) for c in self.certs.alice.chain]
        self.assertChain(parse_forwarded("rfc9440", headers), self.certs.alice)

    def test_whitespace_parameters_and_unpadded_base64(self) -> None:
        """Optional whitespace, parameters and missing padding are accepted (RFC 8941)."""
        leaf = base64.b64encode(der(self.certs.alice.certificate)).rstrip(b"=")
        chain = [sf_binary(der(c)) for c in self.certs.alice.chain]
        headers = {b"client-cert": [b":" + leaf + b':;a=1;b;c="x,y";d=tok/1;e=?0;f=:AA==:'],
                   b"client-cert-chain": [b"  " + chain[0] + b" ,\t" + chain[1] + b";p=2.5 "]}
        self.assertChain(parse_forwarded("rfc9440", headers), self.certs.alice)

    def test_root_in_chain_kept(self) -> None:
        """A root sent in the chain is passed on; validation decides what it means."""
        headers = rfc9440_headers(self.certs.alice)
        headers[b"Client-Cert-Chain"][0] += b", " + sf_binary(der(self.certs.root.certificate))
        chain = (*self.certs.alice.chain, self.certs.root.certificate)
        self.assertChain(parse_forwarded("rfc9440", headers), self.certs.alice, chain)

    def test_empty_chain_header(self) -> None:
        """An empty Client-Cert-Chain is an empty list."""
        headers = rfc9440_headers(self.certs.bob)
        headers[b"client-cert-chain"] = [b""]
        self.assertChain(parse_forwarded("rfc9440", headers), self.certs.bob, ())

    def test_two_client_cert_headers(self) -> None:
        """A repeated Client-Cert is refused, even when both lines are the same."""
        value = sf_binary(der(self.certs.bob.certificate))
        self.refused(R.MULTIPLE_VALUES, "rfc9440", {b"client-cert": [value, value]})

    def test_list_in_client_cert(self) -> None:
        """Client-Cert holding a list of two certificates is refused."""
        value = sf_binary(der(self.certs.bob.certificate))
        self.refused(R.MULTIPLE_VALUES, "rfc9440", {b"client-cert": [value + b", " + value]})

    def test_bad_base64(self) -> None:
        """Characters outside base64, misplaced padding or a bad length are bad_encoding."""
        good = base64.b64encode(der(self.certs.bob.certificate))
        for value in (b":" + good[:40] + b"$" + good[40:] + b":",
                      b":" + good[:40] + b"==" + good[40:] + b":",
                      b":" + good + b"===:",
                      # 4k+1 base64 characters can never be a whole number of bytes
                      b":" + good.rstrip(b"=")[:4 * (len(good.rstrip(b"=")) // 4) - 3] + b":"):
            self.refused(R.BAD_ENCODING, "rfc9440", {b"client-cert": [value]})

    def test_not_a_byte_sequence(self) -> None:
        """Missing colons, tokens, strings and inner lists are bad_encoding."""
        good = base64.b64encode(der(self.certs.bob.certificate))
        for value in (good, b":" + good, b'"' + good + b'"', b"(:" + good + b":)",
                      b":" + good + b": x", b":" + good + b":;A=1"):
            self.refused(R.BAD_ENCODING, "rfc9440", {b"client-cert": [value]})

    def test_chain_syntax(self) -> None:
        """A trailing comma or a non-byte-sequence member in the chain is bad_encoding."""
        headers = rfc9440_headers(self.certs.alice)
        for chain in (headers[b"Client-Cert-Chain"][0] + b",", b"token, :AAAA:"):
            self.refused(R.BAD_ENCODING, "rfc9440",
                         {**headers, b"Client-Cert-Chain": [chain]})

    def test_der_garbage(self) -> None:
        """Well-encoded bytes that are not DER of a certificate are not_a_certificate."""
        cert_der = der(self.certs.bob.certificate)
        for data in (b"\x30\x03\x02\x01\x01", b"hello world", cert_der[:-10],
                     cert_der + b"\x00", der(self.certs.alice.certificate)[:200]):
            self.refused(R.NOT_A_CERTIFICATE, "rfc9440", {b"client-cert": [sf_binary(data)]})

    def test_crl_and_key(self) -> None:
        """A CRL or a private key in DER is not a certificate."""
        key = self.certs.bob.private_key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        crl = self.certs.crl.public_bytes(serialization.Encoding.DER)
        for data in (crl, key):
            self.refused(R.NOT_A_CERTIFICATE, "rfc9440", {b"client-cert": [sf_binary(data)]})

    def test_garbage_in_chain(self) -> None:
        """A chain member that is not a certificate is refused, naming its position."""
        headers = rfc9440_headers(self.certs.alice)
        headers[b"Client-Cert-Chain"][0] += b", " + sf_binary(b"\x30\x00")
        error = self.refused(R.NOT_A_CERTIFICATE, "rfc9440", headers)
        self.assertIn("client-cert-chain[2]", error.detail)

    def test_empty_values(self) -> None:
        """An empty Client-Cert, or an empty byte sequence, is empty_value."""
        for value in (b"", b"  ", b"::"):
            self.refused(R.EMPTY_VALUE, "rfc9440", {b"client-cert": [value]})

    def test_chain_without_leaf(self) -> None:
        """Client-Cert-Chain without Client-Cert is missing_certificate."""
        headers = rfc9440_headers(self.certs.alice)
        del headers[b"Client-Cert"]
        self.refused(R.MISSING_CERTIFICATE, "rfc9440", headers)

    def test_custom_header_names(self) -> None:
        """Both header names can be changed."""
        source = rfc9440_headers(self.certs.alice)
        headers = {b"X-Client-Cert": source[b"Client-Cert"],
                   b"X-Client-Chain": source[b"Client-Cert-Chain"]}
        result = parse_forwarded("rfc9440", headers, "X-Client-Cert",
                                 chain_header_name="x-client-chain")
        self.assertChain(result, self.certs.alice)
        self.assertIsNone(parse_forwarded("rfc9440", source, "X-Client-Cert",
                                          chain_header_name="x-client-chain"))


# --- nginx ---------------------------------------------------------------------------------

class NginxTests(_Base):
    """$ssl_client_escaped_cert (and the deprecated $ssl_client_cert) in X-SSL-Client-Cert."""

    def test_escaped_cert(self) -> None:
        """$ssl_client_escaped_cert round-trips."""
        headers = {b"X-SSL-Client-Cert": [nginx_escaped(self.certs.bob.certificate)]}
        self.assertChain(parse_forwarded("nginx", headers), self.certs.bob, ())

    def test_escaping_is_what_nginx_does(self) -> None:
        """The encoder escapes the PEM's space, newline, '+', '/' and '=' and nothing else."""
        value = nginx_escaped(self.certs.bob.certificate)
        self.assertTrue(value.startswith(b"-----BEGIN%20CERTIFICATE-----%0A"))
        self.assertNotIn(b"+", value)
        self.assertNotIn(b"/", value)
        self.assertNotIn(b"=", value)

    def test_lowercase_hex_escapes(self) -> None:
        """Percent-escapes with lowercase hex digits decode too."""
        value = nginx_escaped(self.certs.bob.certificate).replace(b"%0A", b"%0a")
        self.assertChain(parse_forwarded("nginx", {b"x-ssl-client-cert": [value]}),
                         self.certs.bob, ())

    def test_plus_is_not_a_space(self) -> None:
        """A literal '+' is a base64 character, never form-decoded to a space."""
        # A certificate whose base64 has a '+' (one of 64 characters: seldom none at all).
        issued = next(c for c in (self.certs.root.issue_client(f"plus-{n}") for n in range(50))
                      if b"+" in pem(c.certificate))
        value = nginx_escaped(issued.certificate).replace(b"%2B", b"+")
        self.assertIn(b"+", value)
        self.assertChain(parse_forwarded("nginx", {b"x-ssl-client-cert": [value]}), issued, ())

    def test_deprecated_ssl_client_cert(self) -> None:
        """$ssl_client_cert's tab-continued PEM, unfolded by Twisted, is accepted."""
        value = nginx_legacy_as_received(self.certs.alice.certificate)
        self.assertTrue(value.startswith(b"-----BEGIN CERTIFICATE----- MII"))
        result = parse_forwarded("nginx", {b"x-ssl-client-cert": [value]})
        self.assertChain(result, self.certs.alice, ())

    def test_through_twisted(self) -> None:
        """The escaped form survives Twisted's header parsing; Headers work as the source."""
        value = nginx_escaped(self.certs.bob.certificate)
        headers = received(b"X-SSL-Client-Cert: " + value + b"\r\n")
        self.assertChain(parse_forwarded("nginx", headers), self.certs.bob, ())

    def test_chain_header(self) -> None:
        """An optional chain header holds the intermediates as escaped PEM."""
        chain = b"".join(pem(c) for c in self.certs.alice.chain)
        headers = {b"x-ssl-client-cert": [nginx_escaped(self.certs.alice.certificate)],
                   b"X-SSL-Client-Chain": [percent_encode(chain, NGINX_UNESCAPED)]}
        result = parse_forwarded("nginx", headers, chain_header_name="X-SSL-Client-Chain")
        self.assertChain(result, self.certs.alice)
        self.assertChain(parse_forwarded("nginx", headers), self.certs.alice, ())

    def test_custom_header_name(self) -> None:
        """The header name is configurable, case-insensitively."""
        headers = {b"ssl-client-cert": [nginx_escaped(self.certs.bob.certificate)]}
        self.assertChain(parse_forwarded("nginx", headers, "SSL-Client-Cert"), self.certs.bob, ())
        self.assertIsNone(parse_forwarded("nginx", headers))

    def test_bad_percent_encoding(self) -> None:
        """A '%' not followed by two hex digits is bad_encoding."""
        value = nginx_escaped(self.certs.bob.certificate)
        for bad in (value.replace(b"%0A", b"%G0", 1), value + b"%4", value + b"%"):
            self.refused(R.BAD_ENCODING, "nginx", {b"x-ssl-client-cert": [bad]})

    def test_truncated_pem(self) -> None:
        """A PEM cut short (no END line) is bad_encoding."""
        value = nginx_escaped(self.certs.bob.certificate)
        for cut in (len(value) // 2, value.rindex(b"-----END"), 12):
            self.refused(R.BAD_ENCODING, "nginx", {b"x-ssl-client-cert": [value[:cut]]})

    def test_damaged_pem(self) -> None:
        """Bad base64 inside the armour, or text around it, is bad_encoding."""
        raw = pem(self.certs.bob.certificate)
        for damaged in (raw.replace(b"MII", b"M!I", 1), b"hello " + raw, raw + b"trailer",
                        raw.replace(b"-----BEGIN CERTIFICATE-----", b"-----BEGIN certificate-----")
                        .replace(b"END CERTIFICATE", b"END certificate"), "é".encode() + raw):
            self.refused(R.BAD_ENCODING, "nginx",
                         {b"x-ssl-client-cert": [percent_encode(damaged, NGINX_UNESCAPED)]})

    def test_der_garbage_in_pem(self) -> None:
        """Valid PEM armour around bytes that are no certificate is not_a_certificate."""
        body = base64.encodebytes(b"\x30\x82\x01\x00" + bytes(range(200)))
        value = b"-----BEGIN CERTIFICATE-----\n" + body + b"-----END CERTIFICATE-----\n"
        self.refused(R.NOT_A_CERTIFICATE, "nginx",
                     {b"x-ssl-client-cert": [percent_encode(value, NGINX_UNESCAPED)]})

    def test_crl_and_key_pem(self) -> None:
        """A CRL or private key PEM is not_a_certificate, saying what it was."""
        crl = self.certs.crl.public_bytes(serialization.Encoding.PEM)
        for data, label in ((crl, "X509 CRL"), (self.certs.bob.private_key_pem(), "PRIVATE KEY")):
            error = self.refused(R.NOT_A_CERTIFICATE, "nginx",
                                 {b"x-ssl-client-cert": [percent_encode(data, NGINX_UNESCAPED)]})
            self.assertIn(label, error.detail)

    def test_two_certificates_in_leaf_header(self) -> None:
        """The leaf header holding a chain is multiple_certificates."""
        value = percent_encode(self.certs.alice.chain_pem(), NGINX_UNESCAPED)
        self.refused(R.MULTIPLE_CERTIFICATES, "nginx", {b"x-ssl-client-cert": [value]})

    def test_two_header_lines(self) -> None:
        """Two X-SSL-Client-Cert lines, or two chain lines, are multiple_values."""
        value = nginx_escaped(self.certs.bob.certificate)
        self.refused(R.MULTIPLE_VALUES, "nginx", {b"x-ssl-client-cert": [value, value]})
        self.refused(R.MULTIPLE_VALUES, "nginx",
                     {b"x-ssl-client-cert": [value], b"x-chain": [b"", b""]},
                     chain_header_name="x-chain")

    def test_empty_value(self) -> None:
        """An empty header is empty_value."""
        for value in (b"", b"   "):
            self.refused(R.EMPTY_VALUE, "nginx", {b"x-ssl-client-cert": [value]})


# --- xfcc ----------------------------------------------------------------------------------

class XFCCTests(_Base):
    """Envoy's x-forwarded-client-cert: Cert/Chain of the nearest element, nothing else."""

    def test_cert(self) -> None:
        """Cert alone gives the leaf and no chain."""
        result = parse_forwarded("xfcc", xfcc(xfcc_element(self.certs.alice)))
        self.assertChain(result, self.certs.alice, ())

    def test_chain(self) -> None:
        """Chain alone gives the leaf (its first certificate) and the rest."""
        result = parse_forwarded("xfcc", xfcc(xfcc_element(self.certs.alice, cert=False,
                                                           chain=True)))
        self.assertChain(result, self.certs.alice)

    def test_cert_and_chain_with_everything(self) -> None:
        """With every Envoy detail enabled, Cert and Chain are used and the rest ignored."""
        element = xfcc_element(self.certs.alice, chain=True, uri=True, dns=["alice.example"])
        self.assertChain(parse_forwarded("xfcc", xfcc(element)), self.certs.alice)

    def test_old_envoy_encoding(self) -> None:
        """Envoy's older five-character URL encoding decodes the same."""
        element = xfcc_element(self.certs.alice, chain=True, encode=envoy_legacy_encode)
        self.assertChain(parse_forwarded("xfcc", xfcc(element)), self.certs.alice)

    def test_verdicts_ignored(self) -> None:
        """Hash, Subject, URI and DNS do not matter, even when they lie."""
        element = (b'Hash=0000;Cert="' + envoy_encode(pem(self.certs.bob.certificate))
                   + b'";Subject="CN=admin";URI=spiffe://example.org/admin;DNS=admin')
        self.assertChain(parse_forwarded("xfcc", xfcc(element)), self.certs.bob, ())

    def test_last_element_is_used(self) -> None:
        """With several hops (APPEND_FORWARD), the nearest proxy's element - the last - wins."""
        far = xfcc_element(self.certs.bob, chain=True)
        near = xfcc_element(self.certs.alice)
        self.assertChain(parse_forwarded("xfcc", xfcc(far, near)), self.certs.alice, ())
        self.assertChain(parse_forwarded("xfcc", xfcc(near, far)), self.certs.bob, ())

    def test_several_header_lines(self) -> None:
        """Several header lines are one list; the last element of the last line wins."""
        headers = {b"X-Forwarded-Client-Cert": [xfcc_element(self.certs.bob),
                                                xfcc_element(self.certs.alice)]}
        self.assertChain(parse_forwarded("xfcc", headers), self.certs.alice, ())

    def test_quoted_values_with_separators(self) -> None:
        """Quoted values may hold ',', ';', '=' and escaped quotes without splitting anything."""
        bob = envoy_encode(pem(self.certs.bob.certificate))
        far = b'By=spiffe://far;Subject="O=Evil\\, Inc.;CN=\\"x\\"";Cert="' + bob + b'"'
        near = (b'Hash=ab;Cert="' + envoy_encode(pem(self.certs.alice.certificate))
                + b'";Subject="CN=x,Cert=\\"' + bob + b'\\";OU=a=b"')
        self.assertChain(parse_forwarded("xfcc", xfcc(far, near)), self.certs.alice, ())

    def test_keys_case_insensitive_and_whitespace(self) -> None:
        """Keys match in any case; whitespace around separators and empty elements is skipped."""
        cert = envoy_encode(pem(self.certs.alice.certificate))
        chain = b"".join(envoy_encode(pem(c)) for c in (self.certs.alice.certificate,
                                                         *self.certs.alice.chain))
        value = (b' , hash=00 ; by=x,  , CERT="' + cert + b'" ;\tchain=' + chain + b" ,")
        result = parse_forwarded("xfcc", {b"x-forwarded-client-cert": [value]})
        self.assertChain(result, self.certs.alice)

    def test_custom_header_name(self) -> None:
        """The header name is configurable."""
        headers = {b"x-client-cert-details": [xfcc_element(self.certs.bob)]}
        self.assertChain(parse_forwarded("xfcc", headers, b"X-Client-Cert-Details"),
                         self.certs.bob, ())

    def test_uri_injection_of_an_element(self) -> None:
        """A URI SAN carrying ',...Cert=' would forge a last element: refused as ambiguous."""
        victim = envoy_encode(pem(self.certs.bob.certificate)).decode()
        for injected in (f'spiffe://x,Hash=00;Cert="{victim}"',
                         f"spiffe://x,Hash=00,By=y;Cert={victim}",
                         f'"",Cert="{victim}"'):
            mallory = self.certs.root.issue_client("mallory", uris=[injected])
            element = xfcc_element(mallory, uri=True, dns=["mallory.example"])
            self.refused(R.AMBIGUOUS, "xfcc", xfcc(element))

    def test_uri_injection_of_a_field(self) -> None:
        """A URI SAN carrying ';Cert=' would add a Cert field: refused as ambiguous."""
        victim = envoy_encode(pem(self.certs.bob.certificate)).decode()
        mallory = self.certs.root.issue_client("mallory", uris=[f'spiffe://x;Cert="{victim}"'])
        for cert in (True, False):
            self.refused(R.AMBIGUOUS, "xfcc", xfcc(xfcc_element(mallory, cert=cert, uri=True)))
        self.refused(R.AMBIGUOUS, "xfcc",
                     xfcc(xfcc_element(mallory, cert=False, dns=[f"x;Chain={victim}"])))

    def test_san_ending_earlier_element(self) -> None:
        """Any element before the last that ends in URI/DNS makes the header ambiguous."""
        far = xfcc_element(self.certs.bob, uri=True)
        self.refused(R.AMBIGUOUS, "xfcc", xfcc(far, xfcc_element(self.certs.alice)))

    def test_malformed_structure(self) -> None:
        """Unterminated or misplaced quotes and pairs without '=' are bad_encoding."""
        cert = envoy_encode(pem(self.certs.bob.certificate))
        for value in (b'Cert="' + cert, b"Cert=a\"b", b'Cert="' + cert + b'"x', b"Cert",
                      b'Hash=1;;Cert="' + cert + b'"', b'Hash=1;Cert="' + cert + b'";',
                      b'Ha sh=1;Cert="' + cert + b'"'):
            self.refused(R.BAD_ENCODING, "xfcc", {b"x-forwarded-client-cert": [value]})

    def test_no_certificate_field(self) -> None:
        """An element without Cert or Chain is missing_certificate."""
        element = xfcc_element(self.certs.alice, cert=False, uri=True)
        self.refused(R.MISSING_CERTIFICATE, "xfcc", xfcc(element))
        self.refused(R.MISSING_CERTIFICATE, "xfcc",
                     xfcc(xfcc_element(self.certs.bob), b'By=x;Subject="CN=a"'))

    def test_two_cert_fields(self) -> None:
        """Two Cert fields in the nearest element are multiple_values."""
        cert = b'Cert="' + envoy_encode(pem(self.certs.bob.certificate)) + b'"'
        self.refused(R.MULTIPLE_VALUES, "xfcc", xfcc(b"Hash=1;" + cert + b";" + cert))

    def test_several_certificates_in_cert(self) -> None:
        """Cert holding a chain is multiple_certificates."""
        element = b'Cert="' + envoy_encode(self.certs.alice.chain_pem()) + b'"'
        self.refused(R.MULTIPLE_CERTIFICATES, "xfcc", xfcc(element))

    def test_chain_not_starting_with_cert(self) -> None:
        """Cert and Chain disagreeing about the leaf is leaf_mismatch."""
        element = (b'Cert="' + envoy_encode(pem(self.certs.bob.certificate)) + b'";Chain="'
                   + envoy_encode(self.certs.alice.chain_pem()) + b'"')
        self.refused(R.LEAF_MISMATCH, "xfcc", xfcc(element))

    def test_bad_cert_values(self) -> None:
        """Bad percent-encoding, a truncated PEM, a CRL and garbage DER are refused."""
        cert = envoy_encode(pem(self.certs.bob.certificate))
        crl = envoy_encode(self.certs.crl.public_bytes(serialization.Encoding.PEM))
        garbage = envoy_encode(b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n")
        for value, reason in ((cert.replace(b"%0A", b"%0", 1), R.BAD_ENCODING),
                              (cert[:len(cert) // 2], R.BAD_ENCODING),
                              (crl, R.NOT_A_CERTIFICATE),
                              (garbage, R.NOT_A_CERTIFICATE)):
            self.refused(reason, "xfcc", xfcc(b'Hash=1;Cert="' + value + b'"'))

    def test_empty(self) -> None:
        """An empty header, an empty Cert or an empty Chain is empty_value."""
        for value in (b"", b" , ,", b'Cert=""', b"Chain=", b'Hash=1;Chain=""'):
            self.refused(R.EMPTY_VALUE, "xfcc", {b"x-forwarded-client-cert": [value]})


# --- limits, header sources, configuration -------------------------------------------------

class LimitTests(_Base):
    """Header size and chain length are bounded."""

    def test_header_bytes_boundary(self) -> None:
        """Exactly the limit is accepted; one byte more is too_large."""
        headers = rfc9440_headers(self.certs.alice)
        size = sum(len(v) for values in headers.values() for v in values)
        self.assertChain(parse_forwarded("rfc9440", headers, max_header_bytes=size),
                         self.certs.alice)
        self.refused(R.TOO_LARGE, "rfc9440", headers, max_header_bytes=size - 1)

    def test_default_size_limit_before_parsing(self) -> None:
        """Anything over 32 KiB is too_large, without being parsed, in every format."""
        self.assertEqual(DEFAULT_MAX_HEADER_BYTES, 32 * 1024)
        junk = b"%" * (DEFAULT_MAX_HEADER_BYTES + 1)
        for fmt, name in ((ForwardedFormat.RFC9440, b"client-cert"),
                          (ForwardedFormat.NGINX, b"x-ssl-client-cert"),
                          (ForwardedFormat.XFCC, b"x-forwarded-client-cert")):
            self.refused(R.TOO_LARGE, fmt, {name: [junk]})
        half = b"%" * (DEFAULT_MAX_HEADER_BYTES // 2 + 1)
        self.refused(R.TOO_LARGE, "rfc9440", {b"client-cert-chain": [half, half]})

    def test_chain_length(self) -> None:
        """Leaf plus chain above max_certificates is too_many_certificates, in every format."""
        alice = self.certs.alice
        chain_pem = b"".join(pem(c) for c in alice.chain)
        cases: list[tuple[str, dict[bytes, list[bytes]], dict[str, Any]]] = [
            ("rfc9440", rfc9440_headers(alice), {}),
            ("nginx", {b"x-ssl-client-cert": [nginx_escaped(alice.certificate)],
                       b"x-chain": [percent_encode(chain_pem, NGINX_UNESCAPED)]},
             {"chain_header_name": "x-chain"}),
            ("xfcc", xfcc(xfcc_element(alice, chain=True)), {}),
        ]
        for fmt, headers, kwargs in cases:
            self.assertChain(parse_forwarded(fmt, headers, max_certificates=3, **kwargs), alice)
            self.refused(R.TOO_MANY_CERTIFICATES, fmt, headers, max_certificates=2, **kwargs)

    def test_default_chain_length(self) -> None:
        """By default a leaf and 7 more certificates pass, a leaf and 8 do not."""
        self.assertEqual(DEFAULT_MAX_CERTIFICATES, 8)
        leaf = sf_binary(der(self.certs.alice.certificate))
        member = sf_binary(der(self.certs.inter.certificate))
        for extra, ok in ((7, True), (8, False)):
            headers = {b"client-cert": [leaf], b"client-cert-chain": [member] * extra}
            if ok:
                result = parse_forwarded("rfc9440", headers)
                assert result is not None
                self.assertEqual(len(result.chain), extra)
            else:
                self.refused(R.TOO_MANY_CERTIFICATES, "rfc9440", headers)

    def test_limits_must_be_positive(self) -> None:
        """A zero limit is a programming error."""
        self.assertRaises(ValueError, ForwardedCertConfig.create, "nginx", max_certificates=0)
        self.assertRaises(ValueError, ForwardedCertConfig.create, "nginx", max_header_bytes=0)


class HeaderSourceTests(_Base):
    """Headers come from a mapping, a getter or a Twisted Headers object."""

    def test_absent(self) -> None:
        """No forwarded header at all is None, in every format."""
        for fmt in ForwardedFormat:
            self.assertIsNone(parse_forwarded(fmt, {}))
            self.assertIsNone(parse_forwarded(fmt, {b"client-cert-x": [b"junk"]}))
            self.assertIsNone(parse_forwarded(fmt, lambda name: None))
            self.assertIsNone(parse_forwarded(fmt, Headers()))

    def test_getter(self) -> None:
        """A getter (such as Headers.getRawHeaders) is called with lowercase names."""
        source = rfc9440_headers(self.certs.alice)
        asked: list[bytes] = []

        def get(name: bytes) -> list[bytes] | None:
            asked.append(name)
            return {k.lower(): v for k, v in source.items()}.get(name)

        self.assertChain(parse_forwarded("rfc9440", get), self.certs.alice)
        self.assertEqual(asked, [b"client-cert", b"client-cert-chain"])

    def test_headers_object(self) -> None:
        """A twisted.web Headers object works directly and via getRawHeaders."""
        headers = Headers(rfc9440_headers(self.certs.alice))  # type: ignore[arg-type]
        self.assertChain(parse_forwarded("rfc9440", headers), self.certs.alice)
        self.assertChain(parse_forwarded("rfc9440", headers.getRawHeaders), self.certs.alice)

    def test_mapping_names_differing_in_case(self) -> None:
        """Mapping keys differing only in case are the same header."""
        value = sf_binary(der(self.certs.bob.certificate))
        self.refused(R.MULTIPLE_VALUES, "rfc9440",
                     {b"Client-Cert": [value], b"client-cert": [value]})

    def test_config_parse(self) -> None:
        """ForwardedCertConfig.parse is parse_forwarded with settings checked once."""
        config = ForwardedCertConfig.create("NGINX", "X-Client", max_certificates=1)
        self.assertEqual((config.format, config.header_name, config.chain_header_name),
                         (ForwardedFormat.NGINX, b"x-client", None))
        headers = {b"x-client": [nginx_escaped(self.certs.bob.certificate)]}
        self.assertChain(config.parse(headers), self.certs.bob, ())


class ConfigurationTests(SynchronousTestCase):
    """Formats, header names, and the headers to strip from untrusted peers."""

    def test_format_names(self) -> None:
        """Formats parse case-insensitively; an unknown one names --forwarded-cert."""
        self.assertIs(ForwardedFormat.parse(" RFC9440 "), ForwardedFormat.RFC9440)
        error = self.assertRaises(ConfigurationError, ForwardedFormat.parse, "haproxy")
        self.assertEqual(error.source, "--forwarded-cert")
        self.assertIn("'haproxy'", error.problem)
        self.assertIn("rfc9440, nginx, xfcc", error.problem)
        self.assertRaises(ConfigurationError, parse_forwarded, "bogus", {})

    def test_bad_header_names(self) -> None:
        """Header names must be HTTP tokens; the error names the option and the value."""
        for name in ("X SSL", "x-ssl:", "", "x-é"):
            error = self.assertRaises(ConfigurationError, ForwardedCertConfig.create,
                                      "nginx", name)
            self.assertEqual(error.source, "--forwarded-cert-header")
            self.assertIn(repr(name), error.problem)
        error = self.assertRaises(ConfigurationError, ForwardedCertConfig.create,
                                  "nginx", None, "bad name")
        self.assertEqual(error.source, "--forwarded-cert-chain-header")

    def test_chain_header_rules(self) -> None:
        """xfcc takes no chain header, and the chain header must differ from the leaf one."""
        self.assertRaises(ConfigurationError, ForwardedCertConfig.create, "xfcc", None, "x-c")
        self.assertRaises(ConfigurationError, ForwardedCertConfig.create, "rfc9440",
                          None, "Client-Cert")
        self.assertRaises(ConfigurationError, ForwardedCertConfig.create, "nginx",
                          "x-a", "X-A")

    def test_forwarded_headers_table(self) -> None:
        """FORWARDED_HEADERS lists each format's default names, lowercase."""
        self.assertEqual(FORWARDED_HEADERS[ForwardedFormat.RFC9440],
                         {b"client-cert", b"client-cert-chain"})
        self.assertEqual(FORWARDED_HEADERS[ForwardedFormat.NGINX], {b"x-ssl-client-cert"})
        self.assertEqual(FORWARDED_HEADERS[ForwardedFormat.XFCC], {b"x-forwarded-client-cert"})

    def test_strip_headers(self) -> None:
        """Every format's default names and the configured ones are stripped, lowercase."""
        names = forwarded_headers("nginx", "X-Client-PEM", "X-Client-Chain")
        self.assertEqual(names, {b"client-cert", b"client-cert-chain", b"x-ssl-client-cert",
                                 b"x-forwarded-client-cert", b"x-client-pem",
                                 b"x-client-chain"})
        self.assertEqual(ForwardedCertConfig.create("xfcc").strip_headers,
                         ALL_FORWARDED_HEADERS)
        self.assertEqual(forwarded_headers("rfc9440"), ALL_FORWARDED_HEADERS)


class ErrorTests(SynchronousTestCase):
    """ForwardedCertError is data."""

    def test_error(self) -> None:
        """It is a CertsrvError with a stable string code, a detail and a sentence."""
        error = ForwardedCertError(R.TOO_LARGE, "40000 bytes")
        self.assertIsInstance(error, CertsrvError)
        self.assertEqual(error.reason, "too_large")
        self.assertEqual(str(error), "too_large: 40000 bytes")
        self.assertEqual(str(ForwardedCertError(R.AMBIGUOUS)), "ambiguous")
        for reason in ForwardedReason:
            self.assertTrue(reason.sentence)
        self.assertEqual({r.value for r in ForwardedReason}, {
            "bad_encoding", "too_large", "multiple_values", "multiple_certificates",
            "not_a_certificate", "too_many_certificates", "empty_value",
            "missing_certificate", "leaf_mismatch", "ambiguous"})


# --- trusted proxies -----------------------------------------------------------------------

class TrustedProxiesTests(SynchronousTestCase):
    """--trusted-proxy networks, IPv4, IPv6 and IPv4-mapped IPv6."""

    def test_ipv4(self) -> None:
        proxies = TrustedProxies(["10.0.0.0/8", "192.0.2.7"])
        self.assertTrue(proxies.contains("10.1.2.3"))
        self.assertTrue(proxies.contains("192.0.2.7"))
        self.assertFalse(proxies.contains("192.0.2.8"))
        self.assertFalse(proxies.contains("11.0.0.1"))

    def test_ipv6(self) -> None:
        proxies = TrustedProxies(["2001:db8::/32", "fe80::/10", "::1"])
        self.assertTrue(proxies.contains("2001:db8:1::5"))
        self.assertTrue(proxies.contains("::1"))
        self.assertTrue(proxies.contains("fe80::1%eth0"))
        self.assertTrue(proxies.contains("[2001:db8::1]"))
        self.assertFalse(proxies.contains("2001:db9::1"))
        self.assertFalse(proxies.contains("10.0.0.1"))

    def test_mapped_address_matches_ipv4_network(self) -> None:
        """::ffff:a.b.c.d, as a dual-stack socket reports IPv4 peers, matches IPv4 networks."""
        proxies = TrustedProxies(["10.0.0.0/8"])
        self.assertTrue(proxies.contains("::ffff:10.9.8.7"))
        self.assertTrue(proxies.contains("::FFFF:0a09:0807"))
        self.assertFalse(proxies.contains("::ffff:11.9.8.7"))
        self.assertFalse(proxies.contains("::10.9.8.7"))

    def test_mapped_network_matches_ipv4_address(self) -> None:
        """A network written as ::ffff:a.b.c.d/N means the IPv4 network."""
        proxies = TrustedProxies(["::ffff:192.168.0.0/112"])
        self.assertEqual([str(n) for n in proxies.networks], ["192.168.0.0/16"])
        self.assertTrue(proxies.contains("192.168.4.4"))
        self.assertTrue(proxies.contains("::ffff:192.168.4.4"))
        self.assertFalse(proxies.contains("192.169.0.1"))

    def test_not_addresses(self) -> None:
        """Host names, empty strings and garbage are never trusted."""
        proxies = TrustedProxies(["0.0.0.0/0", "::/0"])
        for host in ("localhost", "", "10.0.0.1:443", "10.0.0", "/tmp/sock"):
            self.assertFalse(proxies.contains(host), host)
        self.assertFalse(TrustedProxies([]).contains("127.0.0.1"))

    def test_single_string(self) -> None:
        """One CIDR given as a bare string is one network, not its characters."""
        self.assertTrue(TrustedProxies("10.0.0.0/8").contains("10.0.0.1"))

    def test_bad_cidrs(self) -> None:
        """Unusable values raise ConfigurationError naming --trusted-proxy and the value."""
        for value, words in (("10.0.0.0/33", "not an IP"), ("banana", "not an IP"),
                             ("", "empty"), ("10.0.0.1/8", "did you mean 10.0.0.0/8"),
                             ("2001:db8::1/32", "did you mean 2001:db8::/32"),
                             ("::1/129", "not an IP"), ("10.0.0.0/8/8", "not an IP")):
            error = self.assertRaises(ConfigurationError, TrustedProxies, ["10.0.0.0/8", value])
            self.assertEqual(error.source, "--trusted-proxy")
            self.assertIn(words, error.problem)
            if value:
                self.assertIn(repr(value), error.problem)


# --- properties ----------------------------------------------------------------------------

_FORMATS = st.sampled_from(list(ForwardedFormat))
_LINES = st.lists(st.binary(max_size=200), max_size=3)


def _token_soup() -> st.SearchStrategy[bytes]:
    c = certs()
    leaf = c.alice.certificate
    tokens = [b":", b",", b";", b"=", b'"', b"\\", b" ", b"\t", b"%", b"%2", b"%0A", b"%20",
              b"(", b")", b"?1", b"Cert=", b"Chain=", b"URI=", b"DNS=", b"Hash=", b"By=",
              b"-----BEGIN CERTIFICATE-----", b"-----END CERTIFICATE-----", b"-----BEGIN ",
              b"MII", b"AAAA", b"==", b"\n", b"\xff",
              sf_binary(der(leaf)), nginx_escaped(leaf), envoy_encode(pem(leaf)),
              pem(leaf), base64.b64encode(der(leaf)), sf_binary(b"\x30\x00")]
    return st.lists(st.sampled_from(tokens), max_size=12).map(b"".join)


def _valid_headers(fmt: ForwardedFormat, issued: IssuedCertificate) -> dict[bytes, list[bytes]]:
    if fmt is ForwardedFormat.RFC9440:
        return rfc9440_headers(issued)
    if fmt is ForwardedFormat.NGINX:
        return {b"x-ssl-client-cert": [nginx_escaped(issued.certificate)],
                b"x-ssl-client-chain": [
                    percent_encode(b"".join(pem(c) for c in issued.chain), NGINX_UNESCAPED)]}
    return xfcc(xfcc_element(issued, chain=True, uri=True))


def _parse_any(fmt: ForwardedFormat, headers: Any) -> ForwardedChain | None:
    """Parse with the nginx chain header enabled; only ForwardedCertError may escape."""
    chain_name = "x-ssl-client-chain" if fmt is ForwardedFormat.NGINX else None
    try:
        result = parse_forwarded(fmt, headers, chain_header_name=chain_name)
    except ForwardedCertError as e:
        assert isinstance(e.reason, ForwardedReason)
        return None
    assert result is None or all(isinstance(c, x509.Certificate) for c in result.certificates)
    return result


class PropertyTests(SynchronousTestCase):
    """Whatever arrives, the parser answers with a chain, None, or ForwardedCertError."""

    @FUZZ
    @given(fmt=_FORMATS, leaf=_LINES, chain=_LINES)
    def test_arbitrary_bytes(self, fmt: ForwardedFormat, leaf: list[bytes],
                             chain: list[bytes]) -> None:
        headers = {name: leaf for name in FORWARDED_HEADERS[fmt]}
        headers[b"client-cert-chain"] = headers[b"x-ssl-client-chain"] = chain
        _parse_any(fmt, headers)

    @FUZZ
    @given(fmt=_FORMATS, soup=st.lists(_token_soup(), min_size=1, max_size=2),
           chain=_token_soup())
    def test_structured_noise(self, fmt: ForwardedFormat, soup: list[bytes],
                              chain: bytes) -> None:
        headers = {name: soup for name in FORWARDED_HEADERS[fmt]}
        headers[b"client-cert-chain"] = headers[b"x-ssl-client-chain"] = [chain]
        _parse_any(fmt, headers)

    @FUZZ
    @given(fmt=_FORMATS, data=st.data())
    def test_mutated_valid_headers(self, fmt: ForwardedFormat, data: st.DataObject) -> None:
        headers = _valid_headers(fmt, certs().alice)
        name = data.draw(st.sampled_from(sorted(headers)))
        value = headers[name][0]
        at = data.draw(st.integers(0, len(value)))
        op = data.draw(st.sampled_from(["cut", "insert", "replace", "drop"]))
        noise = data.draw(st.binary(min_size=1, max_size=4))
        if op == "cut":
            value = value[:at]
        elif op == "insert":
            value = value[:at] + noise + value[at:]
        elif op == "replace":
            value = value[:at] + noise + value[at + len(noise):]
        else:
            value = value[:at] + value[at + len(noise):]
        _parse_any(fmt, {**headers, name: [value]})

    @FUZZ
    @given(data=st.data())
    def test_damaged_der(self, data: st.DataObject) -> None:
        cert_der = bytearray(der(data.draw(st.sampled_from(certs().pool))))
        for _ in range(data.draw(st.integers(1, 4))):
            at = data.draw(st.integers(0, len(cert_der) - 1))
            cert_der[at] = data.draw(st.integers(0, 255))
        result = _parse_any(ForwardedFormat.RFC9440, {b"client-cert": [sf_binary(bytes(cert_der))]})
        if result is not None:
            self.assertEqual(der(result.leaf), bytes(cert_der))

    @FUZZ
    @given(fmt=_FORMATS, picks=st.lists(st.integers(0, 4), min_size=1, max_size=8))
    def test_round_trip(self, fmt: ForwardedFormat, picks: list[int]) -> None:
        pool = certs().pool
        leaf, *chain = [pool[i] for i in picks]
        issued = IssuedCertificate(leaf, certs().bob.private_key, tuple(chain))
        result = _parse_any(fmt, _valid_headers(fmt, issued))
        assert result is not None
        self.assertEqual(result.certificates, (leaf, *chain))

    @FUZZ
    @given(address=st.ip_addresses(v=4), prefix=st.integers(0, 32), probe=st.ip_addresses(v=4))
    def test_mapped_like_ipv4(self, address: ipaddress.IPv4Address, prefix: int,
                              probe: ipaddress.IPv4Address) -> None:
        network = ipaddress.IPv4Network((int(address), prefix), strict=False)
        for proxies in (TrustedProxies([str(network)]),
                        TrustedProxies([f"::ffff:{network.network_address}/{prefix + 96}"])):
            for host in (address, probe):
                expected = host in network
                self.assertEqual(proxies.contains(str(host)), expected)
                self.assertEqual(proxies.contains(f"::ffff:{host}"), expected)

    @FUZZ
    @given(host=st.text(max_size=50))
    def test_contains_never_raises(self, host: str) -> None:
        self.assertIn(TrustedProxies(["10.0.0.0/8", "::/0"]).contains(host), (True, False))
