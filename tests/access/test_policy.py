"""The --policy rules: matchers, first-match order, default deny, and load-time checks."""

from __future__ import annotations

import datetime
import json
from functools import cache
from pathlib import Path
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from certsrv.access.policy import Claims, Decision, Policy, load_policy, parse_policy
from certsrv.exceptions import AccessReason, ConfigurationError
from certsrv.pki import CertificateAuthority, generate_key
from certsrv.x509.identity import ClientIdentity

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "policy-example.toml"
SPIFFE = "spiffe://example.org/ns/payments/sa/api"
PROPERTY = settings(max_examples=250, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


@cache
def issuing_ca() -> CertificateAuthority:
    """The CA the example policy's issuer rule names."""
    return CertificateAuthority.create("Example Issuing CA", organization="Example")


@cache
def other_ca() -> CertificateAuthority:
    """An unrelated CA."""
    return CertificateAuthority.create("Other CA", organization="Other")


def identity(cn: str = "client", ca: CertificateAuthority | None = None,
             **kwargs: object) -> ClientIdentity:
    """An identity for a fresh certificate issued by ``ca`` (default: the issuing CA)."""
    issued = (ca or issuing_ca()).issue_client(cn, **kwargs)
    return ClientIdentity.from_certificate(issued.certificate)


def named(*attributes: tuple[x509.ObjectIdentifier, str]) -> ClientIdentity:
    """An identity whose subject DN is exactly ``attributes`` (repeats allowed)."""
    ca = issuing_ca()
    key = generate_key()
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(ca.private_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return ClientIdentity.from_certificate(certificate)


def policy(allow: str, path: str = "/api", extra: str = "") -> Policy:
    """A one-rule policy admitting ``allow`` (TOML inline-table body) on ``path``."""
    return parse_policy(f'[[rule]]\nname = "r"\npath = "{path}"\n{extra}allow = {{ {allow} }}\n',
                        "policy.toml")


class MatcherTests(SynchronousTestCase):
    """Each ``allow`` key admits the certificates it names, and only those."""

    def assertAdmits(self, rules: Policy, who: ClientIdentity, matcher: str) -> None:
        self.assertEqual(rules.decide("/api", "GET", who),
                         Decision(True, "r", AccessReason.ALLOWED, matcher))

    def assertRefuses(self, rules: Policy, who: ClientIdentity) -> None:
        self.assertEqual(rules.decide("/api", "GET", who),
                         Decision(False, "r", AccessReason.NOT_ALLOWED))

    def test_any(self) -> None:
        """``any = true`` admits any certificate, but not its absence."""
        rules = policy("any = true")
        self.assertAdmits(rules, identity(ca=other_ca()), "any")
        self.assertEqual(rules.decide("/api", "GET", None).reason, AccessReason.NO_CERTIFICATE)

    def test_subject_all_attributes_must_match(self) -> None:
        """Every subject attribute given must match; a listed value is one of several."""
        rules = policy('subject = { O = "Example", OU = ["payments", "billing"] }')
        org, unit = NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME
        cn = NameOID.COMMON_NAME
        self.assertAdmits(rules, named((org, "Example"), (unit, "billing"), (cn, "a")), "subject")
        self.assertAdmits(rules, named((org, "Example"), (unit, "x"), (unit, "payments")),
                          "subject")
        self.assertRefuses(rules, named((org, "Example"), (unit, "shipping")))
        self.assertRefuses(rules, named((org, "Other"), (unit, "payments")))
        self.assertRefuses(rules, named((unit, "payments")))
        self.assertRefuses(rules, named((org, "example"), (unit, "payments")))  # exact case

    def test_subject_common_name_and_dc(self) -> None:
        """CN and multi-valued DC compare exactly against any of the certificate's values."""
        self.assertAdmits(policy('subject = { CN = "alice" }'), identity("alice"), "subject")
        self.assertRefuses(policy('subject = { CN = "alice" }'), identity("alice2"))
        rules = policy('subject = { DC = "example", UID = "u1" }')
        dc, uid = NameOID.DOMAIN_COMPONENT, NameOID.USER_ID
        self.assertAdmits(rules, named((dc, "org"), (dc, "example"), (uid, "u1")), "subject")
        self.assertRefuses(rules, named((dc, "org"), (dc, "example")))

    def test_issuer(self) -> None:
        """The issuer table reads the issuer's DN."""
        rules = policy('issuer = { CN = "Example Issuing CA", O = "Example" }')
        self.assertAdmits(rules, identity(), "issuer")
        self.assertRefuses(rules, identity(ca=other_ca()))
        self.assertRefuses(policy('issuer = { CN = "client" }'), identity("client"))

    def test_identity_without_certificate(self) -> None:
        """Without the certificate object DN matchers cannot match, and nothing raises."""
        bare = ClientIdentity(subject="CN=client", issuer="CN=Example Issuing CA",
                              serial="1a", not_before=0, not_after=0, sha256="00" * 32)
        self.assertRefuses(policy('subject = { CN = "client" }'), bare)
        self.assertAdmits(policy('serial = "1A"'), bare, "serial")

    def test_spiffe_exact(self) -> None:
        """An exact SPIFFE ID matches only itself; the trust domain's case is ignored."""
        rules = policy(f'spiffe = "{SPIFFE}"')
        self.assertAdmits(rules, identity(uris=[SPIFFE]), "spiffe")
        upper = SPIFFE.replace("spiffe://example.org", "SPIFFE://Example.ORG")
        self.assertAdmits(rules, identity(uris=[upper]), "spiffe")
        self.assertRefuses(rules, identity(uris=[SPIFFE + "2"]))
        self.assertRefuses(rules, identity(uris=[SPIFFE + "/x"]))

    def test_spiffe_wildcard_is_segment_aware(self) -> None:
        """``/*`` matches one or more further segments, never the stem or a longer name."""
        rules = policy('spiffe = ["spiffe://example.org/ns/payments/*"]')
        self.assertAdmits(rules, identity(uris=[SPIFFE]), "spiffe")
        self.assertAdmits(rules, identity(uris=["spiffe://example.org/ns/payments/x"]),
                          "spiffe")
        for refused in ("spiffe://example.org/ns/payments", "spiffe://example.org/ns/paymentsx/a",
                        "spiffe://example.org/ns/payments/", "spiffe://example.com/ns/payments/a",
                        "spiffe://example.org/ns/payments/../admin",
                        "spiffe://example.org/ns/payments//a"):
            self.assertRefuses(rules, identity(uris=[refused]))
        everyone = policy('spiffe = "spiffe://example.org/*"')
        self.assertAdmits(everyone, identity(uris=["spiffe://example.org/a"]), "spiffe")
        self.assertRefuses(everyone, identity(uris=["spiffe://example.org.evil/a"]))

    def test_spiffe_needs_exactly_one_id(self) -> None:
        """A certificate with two SPIFFE IDs has none; plain URIs do not count."""
        rules = policy('spiffe = "spiffe://example.org/*"')
        self.assertRefuses(rules, identity(uris=[SPIFFE, "spiffe://example.org/other"]))
        self.assertAdmits(rules, identity(uris=[SPIFFE, "https://example.org/x"]), "spiffe")

    def test_dns(self) -> None:
        """Names compare case-insensitively; ``*.`` matches exactly one more label."""
        rules = policy('dns = ["*.svc.example.org", "Host.Example.org"]')
        self.assertAdmits(rules, identity(dns=["api.svc.example.org"]), "dns")
        self.assertAdmits(rules, identity(dns=["API.SVC.example.org"]), "dns")
        self.assertAdmits(rules, identity(dns=["other.org", "host.example.org"]), "dns")
        for refused in ("svc.example.org", "a.b.svc.example.org", "apisvc.example.org",
                        "*.svc.example.org", "other.host.example.org"):
            self.assertRefuses(rules, identity(dns=[refused]))

    def test_email(self) -> None:
        """Addresses are exact but for the domain's case."""
        rules = policy('email = "ops@Example.org"')
        self.assertAdmits(rules, identity(emails=["ops@example.ORG"]), "email")
        self.assertRefuses(rules, identity(emails=["OPS@example.org"]))
        self.assertRefuses(rules, identity(emails=["dev@example.org"]))

    def test_uri(self) -> None:
        """URIs are exact."""
        rules = policy('uri = ["urn:example:agent"]')
        self.assertAdmits(rules, identity(uris=["urn:example:agent"]), "uri")
        self.assertRefuses(rules, identity(uris=["urn:example:agent2"]))

    def test_serial(self) -> None:
        """Serials ignore colons, case and leading zeros."""
        who = identity(serial_number=0x1A2B3C)
        for written in ("1a2b3c", "1A:2B:3C", "00:1a:2b:3c"):
            self.assertAdmits(policy(f'serial = "{written}"'), who, "serial")
        self.assertRefuses(policy('serial = "1a2b3d"'), who)

    def test_sha256(self) -> None:
        """Fingerprints ignore colons and case."""
        who = identity()
        colons = ":".join(who.sha256[i:i + 2] for i in range(0, 64, 2)).upper()
        self.assertAdmits(policy(f'sha256 = "{colons}"'), who, "sha256")
        self.assertRefuses(policy(f'sha256 = "{"0" * 64}"'), who)

    def test_policies(self) -> None:
        """Certificate policy OIDs match the chain's valid policies exactly; anyPolicy only
        when listed itself."""
        from dataclasses import replace

        p1, p2, any_policy = "2.16.840.1.101.3.2.1.48.1", "2.16.840.1.101.3.2.1.48.2", "2.5.29.32.0"
        rules = policy(f'policies = ["{p1}", "{p2}"]')
        who = identity()
        self.assertAdmits(rules, replace(who, policies=frozenset({p2})), "policies")
        self.assertRefuses(rules, who)
        self.assertRefuses(rules, replace(who, policies=frozenset({any_policy})))
        self.assertAdmits(policy(f'policies = "{any_policy}"'),
                          replace(who, policies=frozenset({any_policy})), "policies")
        self.assertAdmits(policy('policies = "2.16.840.1.101.3.2.1.048.1"'),
                          replace(who, policies=frozenset({p1})), "policies")

    def test_keys_are_alternatives(self) -> None:
        """Any one key admits: a certificate matching only the e-mail passes."""
        rules = policy('subject = { O = "Nobody" }, email = "ops@example.org"')
        self.assertAdmits(rules, identity(emails=["ops@example.org"]), "email")

    def test_claims_are_reusable(self) -> None:
        """Precomputed Claims decide as the identity itself does."""
        who = identity(organization="Example")
        claims = Claims(who)
        rules = policy('subject = { O = "Example" }')
        self.assertEqual(rules.decide("/api", "GET", claims), rules.decide("/api", "GET", who))
        self.assertTrue(rules.decide("/api", "GET", claims).allowed)


ORDERED = """
[[rule]]
name = "health"
path = "/health"
public = true

[[rule]]
name = "payments-write"
path = "/api/payments"
methods = ["POST"]
allow = { subject = { OU = "payments" } }

[[rule]]
name = "payments"
path = "/api/payments"
methods = ["GET"]
allow = { any = true }

[[rule]]
name = "api"
path = "/api"
allow = { email = "ops@example.org" }
"""


class DecideTests(SynchronousTestCase):
    """The first rule covering the path and method decides; nothing covering it denies."""

    def setUp(self) -> None:
        self.policy = parse_policy(ORDERED, "ordered.toml")
        self.ops = identity("ops", emails=["ops@example.org"])
        self.other = identity("other")

    def decide(self, path: str | bytes, method: str | bytes = "GET",
               who: ClientIdentity | None = None) -> tuple[str | None, str]:
        decision = self.policy.decide(path, method, who)
        return decision.rule, decision.reason

    def test_public(self) -> None:
        """A public rule admits with or without a certificate."""
        self.assertEqual(self.decide("/health"), ("health", "public"))
        self.assertEqual(self.decide("/health/live", "DELETE", self.other), ("health", "public"))

    def test_default_deny(self) -> None:
        """A path no rule covers is denied, certificate or not."""
        self.assertEqual(self.decide("/", who=self.ops), (None, "no_rule"))
        self.assertEqual(self.decide("/other"), (None, "no_rule"))
        self.assertEqual(Policy([]).decide("/", "GET", None).reason, AccessReason.NO_RULE)

    def test_no_certificate_and_not_allowed(self) -> None:
        """A rule needing a certificate tells its absence from a refused one."""
        self.assertEqual(self.decide("/api/x"), ("api", "no_certificate"))
        self.assertEqual(self.decide("/api/x", who=self.other), ("api", "not_allowed"))
        self.assertEqual(self.decide("/api/x", who=self.ops), ("api", "allowed"))

    def test_first_match_wins(self) -> None:
        """An earlier, longer rule decides before the broader one, even to deny."""
        self.assertEqual(self.decide("/api/payments/1", "GET", self.other),
                         ("payments", "allowed"))
        self.assertEqual(self.decide("/api/payments", "POST", self.ops),
                         ("payments-write", "not_allowed"))

    def test_methods(self) -> None:
        """A rule's methods limit it; GET covers HEAD; other methods fall through."""
        self.assertEqual(self.decide("/api/payments", "HEAD", self.other),
                         ("payments", "allowed"))
        self.assertEqual(self.decide("/api/payments", "PUT", self.ops), ("api", "allowed"))
        # Methods are case-sensitive upper-case tokens (RFC 9110 9.1): others decide nothing.
        for method in ("get", "Post", "GE T", "", "G\x00"):
            self.assertEqual(self.decide("/api/payments", method, self.other),
                             (None, "bad_method"), method)
        self.assertEqual(self.decide(b"/api/payments", b"GET", self.other),
                         ("payments", "allowed"))

    def test_prefixes_are_segment_aware(self) -> None:
        """``/api`` covers /api, /api/ and /api/x but not /apix."""
        for path in ("/api", "/api/", "/api/x/y", "/api?q=1", "/api?q=#f"):
            self.assertEqual(self.decide(path, who=self.ops), ("api", "allowed"), path)
        self.assertEqual(self.decide("/apix", who=self.ops), (None, "no_rule"))
        self.assertEqual(self.decide("/api/paymentsx", "POST", self.ops), ("api", "allowed"))

    def test_root_covers_everything(self) -> None:
        """Path ``/`` is a prefix of every path."""
        rules = parse_policy('[[rule]]\npath = "/"\npublic = true\n', "root.toml")
        for path in ("/", "/a", "/a/b/c/"):
            self.assertTrue(rules.decide(path, "GET", None).allowed)

    def test_percent_decoding(self) -> None:
        """Paths compare decoded, so an encoded letter does not dodge a rule."""
        self.assertEqual(self.decide("/api/%70ayments", "POST", self.ops),
                         ("payments-write", "not_allowed"))
        rules = parse_policy('[[rule]]\npath = "/caf%C3%A9/a%20b"\npublic = true\n', "x.toml")
        self.assertTrue(rules.decide("/café/a%20b/x", "GET", None).allowed)
        self.assertTrue(rules.decide("/caf%c3%a9/a%20b", "GET", None).allowed)
        self.assertTrue(rules.decide("/café/a%20b".encode(), b"GET", None).allowed)

    def test_ambiguous_paths(self) -> None:
        """Paths other servers could read as another path are denied as bad_path."""
        for path in ("/health/../api/payments", "/health/./x", "/api//payments",
                     "/health/%2e%2e/api", "/health%2F..%2Fapi", "/health/a%5Cb",
                     "/health;x/y", "/health/%00", "health", "", "*", "//health",
                     "http://host/health", "/health#/../api", "/health%23/../api",
                     "/health/a b", "/health/%0d%0a", "/health\t"):
            self.assertEqual(self.decide(path, who=self.ops), (None, "bad_path"), path)

    def test_fails_closed(self) -> None:
        """An identity that breaks matching is denied as internal_error, not raised."""
        broken = ClientIdentity(subject="", issuer="", serial=cast(Any, None), not_before=0,
                                not_after=0, sha256="")
        self.assertEqual(self.decide("/api", who=broken), ("api", "internal_error"))
        self.assertEqual(self.policy.decide(cast(Any, None), "GET", None).reason,
                         AccessReason.INTERNAL_ERROR)

    def test_rule_for(self) -> None:
        """rule_for names the rule decide would use."""
        found = self.policy.rule_for("/api/payments/x", "POST")
        self.assertEqual((found.name, found.line) if found else None, ("payments-write", 7))
        self.assertIsNone(self.policy.rule_for("/a/../api", "GET"))

    def test_decision_logging(self) -> None:
        """A decision offers a sentence and structured log fields."""
        decision = self.policy.decide("/api", "GET", self.ops)
        self.assertEqual(decision.log_fields(), {
            "policy_allowed": True, "policy_rule": "api", "policy_reason": "allowed",
            "policy_matcher": "email"})
        self.assertEqual(Decision(False, None, AccessReason.NO_RULE).message,
                         "no access rule covers this path and method")
        json.dumps(decision.log_fields())

    def test_example_file(self) -> None:
        """The documented example loads and decides as its comments say."""
        example = load_policy(str(EXAMPLE))
        self.assertEqual([r.name for r in example.rules],
                         ["health", "admin", "payments", "api", "secure"])
        payments = identity("api", uris=[SPIFFE])
        self.assertEqual(example.decide("/health", "GET", None).reason, AccessReason.PUBLIC)
        self.assertEqual(example.decide("/api/payments/1", "POST", payments).rule, "payments")
        self.assertEqual(example.decide("/api/admin", "GET", payments).reason,
                         AccessReason.NOT_ALLOWED)
        self.assertTrue(example.decide("/secure", "GET", payments).allowed)
        self.assertFalse(example.decide("/secure", "GET", identity(ca=other_ca())).allowed)
        self.assertEqual(example.decide("/", "GET", payments).reason, AccessReason.NO_RULE)


def rule(body: str) -> str:
    """A policy of a public health rule (lines 1-3) and then ``body`` (from line 4)."""
    return f'[[rule]]\npath = "/health"\npublic = true\n{body}'


# (policy text, the line the error names, text the problem contains)
INVALID: list[tuple[str, int, str]] = [
    ('[[rule]]\npath = "/a\npublic = true\n', 2, "invalid TOML"),
    ("[[rule]]\npath = 1 2\n", 2, "(column 10)"),
    ('[[rule]]\npath = "/a"\npublic = true\nx = [1,\n', 4, "end of file"),
    ('version = 1\n[[rule]]\npath = "/"\npublic = true\n', 1, "unknown top-level key 'version'"),
    ('[[rule]]\npath = "/"\npublic = true\n[other]\nx = 1\n', 4, "unknown top-level key"),
    ("# nothing\n", 1, "no [[rule]] tables"),
    ("rule = []\n", 1, "has no rules"),
    ('\n[rule]\npath = "/"\n', 2, "must be an array of tables"),
    (rule('[[rule]]\nPath = "/a"\npublic = true\n'), 5, "unknown key 'Path' (did you mean"),
    (rule('[[rule]]\npath = "/a"\nallow = { spife = "x" }\n'), 6, "unknown key 'spife'"),
    (rule('[[rule]]\npath = "/a"\n[rule.allow]\nsubject = { cn = "x" }\n'), 7,
     "unknown DN attribute 'cn' (did you mean 'CN'?)"),
    (rule('[[rule]]\npath = "/a"\n[rule.allow.subject]\nCN = "a"\nXX = "b"\n'), 8,
     "unknown DN attribute 'XX'; expected one of: CN, O"),
    (rule('[[rule]]\npath = 1\npublic = true\n'), 5, "path: expected a string, not a number"),
    (rule('[[rule]]\nname = true\npath = "/a"\npublic = true\n'), 5, "expected a string"),
    (rule('[[rule]]\nname = ""\npath = "/a"\npublic = true\n'), 5, "empty"),
    (rule('[[rule]]\npath = "/a"\nmethods = 7\npublic = true\n'), 6, "methods: expected"),
    (rule('[[rule]]\npath = "/a"\nmethods = []\npublic = true\n'), 6, "array is empty"),
    (rule('[[rule]]\npath = "/a"\nmethods = ["get"]\npublic = true\n'), 6,
     "'get' is not an HTTP method"),
    (rule('[[rule]]\npath = "/a"\npublic = "yes"\n'), 6, "expected true, not a string"),
    (rule('[[rule]]\npath = "/a"\npublic = false\n'), 6, "must be true"),
    (rule('[[rule]]\npath = "/a"\nallow = "everyone"\n'), 6, "allow: expected a table"),
    (rule('[[rule]]\npath = "/a"\nallow = {}\n'), 6, "the table is empty"),
    (rule('[[rule]]\npath = "/a"\nallow = { subject = "CN=x" }\n'), 6,
     "expected a table of DN attributes"),
    (rule('[[rule]]\npath = "/a"\nallow = { subject = {} }\n'), 6, "the table is empty"),
    (rule('[[rule]]\npath = "/a"\nallow = { subject = { CN = "*" } }\n'), 6, "not a wildcard"),
    (rule('[[rule]]\npath = "/a"\nallow = { issuer = { O = [] } }\n'), 6, "array is empty"),
    (rule('[[rule]]\npath = "/a"\nallow = { dns = [1] }\n'), 6, "found a number"),
    (rule('[[rule]]\npath = "/a"\n'), 4, "give 'public = true' or a [rule.allow] table"),
    (rule('[[rule]]\npath = "/a"\npublic = true\nallow = { any = true }\n'), 7,
     "remove 'public' or 'allow'"),
    (rule('[[rule]]\npublic = true\n'), 4, "missing 'path'"),
    (rule('[[rule]]\npath = "a"\npublic = true\n'), 5, "must start with '/'"),
    (rule('[[rule]]\npath = "/a/"\npublic = true\n'), 5, "trailing '/'"),
    (rule('[[rule]]\npath = "/a/*"\npublic = true\n'), 5, "leave out the '*'"),
    (rule('[[rule]]\npath = "/a/../b"\npublic = true\n'), 5, "'..' segments"),
    (rule('[[rule]]\npath = "/a//b"\npublic = true\n'), 5, "empty"),
    (rule('[[rule]]\npath = "/a%2Fb"\npublic = true\n'), 5, "encodes '/'"),
    (rule('[[rule]]\npath = "/a?b"\npublic = true\n'), 5, "query"),
    (rule('[[rule]]\npath = "/a b"\npublic = true\n'), 5, "spaces"),
    (rule('[[rule]]\npath = "/a"\nallow.any = false\n'), 6, "must be true"),
    (rule('[[rule]]\npath = "/a"\nallow.any = true\nallow.dns = "a.org"\n'), 6,
     "remove the other matchers"),
    (rule('[[rule]]\npath = "/a"\n[rule.allow]\nspiffe = "spiffe://example.org/*/x"\n'), 7,
     "'*' may only be a whole last segment"),
    (rule('[[rule]]\npath = "/a"\nallow.spiffe = "spiffe://example.org/ns/pay*"\n'), 6,
     "'*' may only be a whole last segment"),
    (rule('[[rule]]\npath = "/a"\nallow.spiffe = "https://example.org/*"\n'), 6,
     "must start with 'spiffe://'"),
    (rule('[[rule]]\npath = "/a"\nallow.spiffe = "spiffe://Example.org/a"\n'), 6,
     "lower-case trust domain"),
    (rule('[[rule]]\npath = "/a"\nallow.spiffe = "spiffe://example.org"\n'), 6,
     "is not a SPIFFE ID"),
    (rule('[[rule]]\npath = "/a"\nallow.spiffe = "spiffe://example.org/a/../b"\n'), 6,
     "is not a SPIFFE ID"),
    (rule('[[rule]]\npath = "/a"\nallow.spiffe = ["spiffe://example.org/a", ""]\n'), 6,
     "empty string"),
    (rule('[[rule]]\npath = "/a"\nallow.dns = "a*.example.org"\n'), 6,
     "'*' may only be the whole left-most label"),
    (rule('[[rule]]\npath = "/a"\nallow.dns = "foo.*.example.org"\n'), 6, "left-most label"),
    (rule('[[rule]]\npath = "/a"\nallow.dns = "*.org"\n'), 6, "at least two labels"),
    (rule('[[rule]]\npath = "/a"\nallow.dns = "*"\n'), 6, "left-most label"),
    (rule('[[rule]]\npath = "/a"\nallow.dns = "a..org"\n'), 6, "is not a DNS name"),
    (rule('[[rule]]\npath = "/a"\nallow.email = "ops"\n'), 6, "is not an e-mail address"),
    (rule('[[rule]]\npath = "/a"\nallow.email = "*@example.org"\n'), 6, "wildcards"),
    (rule('[[rule]]\npath = "/a"\nallow.uri = "spiffe://example.org/a"\n'), 6,
     "put SPIFFE IDs in 'spiffe'"),
    (rule('[[rule]]\npath = "/a"\nallow.uri = "no scheme"\n'), 6, "is not a URI"),
    (rule('[[rule]]\npath = "/a"\nallow.serial = "0x1a"\n'), 6, "is not a serial number"),
    (rule('[[rule]]\npath = "/a"\nallow.serial = "1g"\n'), 6, "is not a serial number"),
    (rule('[[rule]]\npath = "/a"\nallow.sha256 = "ab:cd"\n'), 6, "not a SHA-256 fingerprint"),
    (rule('[[rule]]\npath = "/a"\nallow.policies = "anyPolicy"\n'), 6,
     "is not an object identifier"),
    (rule('[[rule]]\npath = "/a"\nallow.policies = []\n'), 6, "empty"),
    (rule('[[rule]]\nname = "h"\npath = "/x"\npublic = true\n[[rule]]\nname = "h"\n'
          'path = "/y"\npublic = true\n'), 9, "already used by the rule at line 4"),
    (rule('[[rule]]\npath = "/health/x"\nallow.any = true\n'), 4,
     "rule 2 (line 4) can never match: rule 1 (line 1) comes first and covers path "
     "'/health' for every method"),
    (rule('[[rule]]\nname = "x"\npath = "/y"\npublic = true\n[[rule]]\npath = "/y"\n'
          'methods = "GET"\npublic = true\n'), 8, "rule 3 (line 8) can never match: rule 'x' "
                                                   "(line 4) comes first"),
    (rule('[[rule]]\nname = "again"\npath = "/health"\nmethods = ["GET"]\npublic = true\n'), 4,
     "rule 'again' (line 4) can never match"),
    ('[[rule]]\npath = "/a"\nmethods = ["GET"]\npublic = true\n[[rule]]\npath = "/a"\n'
     'methods = "POST"\npublic = true\n[[rule]]\npath = "/a/b"\nmethods = ["HEAD", "POST"]\n'
     'public = true\n', 9, "rule 1 (line 1), rule 2 (line 5) come first and cover its path "
                           "for HEAD, POST"),
    ('rule = [\n  { path = "/a", public = true },\n  { path = "/a", public = true },\n]\n', 1,
     "can never match"),
    ('[[rule]]\npath = "/a"\nallow.uri = """urn:x:\\\n[[rule]]"""\n[[rule]]\npath = "/b"\n'
     "allow.dns = '''*'''\n", 7, "rule 2 (line 5)"),
]


class ValidationTests(SynchronousTestCase):
    """Every unusable policy is refused at load, naming FILE:LINE and the problem."""

    def test_errors_name_file_and_line(self) -> None:
        """Each invalid policy fails with the expected line and problem."""
        for text, line, problem in INVALID:
            error = self.assertRaises(ConfigurationError, parse_policy, text, "p.toml")
            self.assertEqual(error.source, f"p.toml:{line}", f"{text!r}: {error}")
            self.assertIn(problem, error.problem, f"{text!r}: {error}")

    def test_reachable_rules_are_accepted(self) -> None:
        """Shorter prefixes after longer ones, and disjoint methods, are fine."""
        rules = parse_policy(
            '[[rule]]\npath = "/a/b"\npublic = true\n[[rule]]\npath = "/a"\nmethods = "GET"\n'
            'public = true\n[[rule]]\npath = "/a/c"\nmethods = ["GET", "PUT"]\npublic = true\n'
            '[[rule]]\npath = "/ab"\npublic = true\n', "ok.toml")
        self.assertEqual([r.line for r in rules.rules], [1, 4, 8, 12])
        self.assertEqual(rules.rules[1].name, "rule 2 (line 4)")

    def test_load_policy_file_errors(self) -> None:
        """A missing file and a non-UTF-8 file are configuration errors naming the file."""
        missing = self.mktemp()
        error = self.assertRaises(ConfigurationError, load_policy, missing)
        self.assertEqual(error.source, missing)
        latin = Path(self.mktemp())
        latin.write_bytes(b'[[rule]]\n# caf\xe9\npath = "/"\npublic = true\n')
        error = self.assertRaises(ConfigurationError, load_policy, str(latin))
        self.assertEqual(error.source, f"{latin}:2")
        good = Path(self.mktemp())
        good.write_text('[[rule]]\npath = "/"\npublic = true\n')
        self.assertEqual(load_policy(str(good)).source, str(good))


# --- properties ---------------------------------------------------------------------------

_atoms = st.one_of(
    st.sampled_from(["/", "/api", "/api/x", "a", "", "*", "GET", "get", "spiffe://e.org/*",
                     "spiffe://e.org/a", "*.svc.example.org", "a@b.org", "urn:x", "1a",
                     "00" * 32, "CN", "O", "/a/../b", "%2F"]),
    st.text(max_size=8), st.integers(), st.booleans(), st.floats(allow_nan=False),
)
_values = st.recursive(_atoms, lambda inner: st.lists(inner, max_size=3), max_leaves=6)
def mostly(good: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """Usually ``good``, sometimes any value."""
    return st.integers(0, 7).flatmap(lambda n: _values if n == 7 else good)


_names = st.dictionaries(st.sampled_from(["CN", "O", "OU", "DC", "cn"]),
                         mostly(st.sampled_from(["a", "Example", ["a", "b"], "*"])), max_size=3)
_matchers = mostly(st.sampled_from([
    "spiffe://example.org/ns/payments/*", ["spiffe://example.org/a/*", "spiffe://e.org/b"],
    "*.svc.example.org", ["x.svc.example.org", "a*.b.org"], "ops@example.org", "urn:x",
    "1a:2b", "00" * 32, [],
]) | _names)
_allow = st.one_of(
    st.just({"any": True}),
    st.dictionaries(st.sampled_from(["subject", "issuer", "spiffe", "dns", "email", "uri",
                                     "serial", "sha256", "x"]), _matchers, max_size=4),
)
_modes = mostly(st.one_of(st.builds(lambda allow: {"allow": allow}, mostly(_allow)),
                         st.just({"public": True})))
_rules = st.builds(
    lambda base, mode: {**base, **mode} if isinstance(mode, dict) else {**base, "public": mode},
    st.fixed_dictionaries(
        {"path": mostly(st.sampled_from(["/", "/api", "/api/x", "/b", "/api/%70"]))},
        optional={"name": mostly(st.sampled_from(["a", "b", "c"])),
                  "methods": mostly(st.sampled_from([["GET"], "POST", ["GET", "PUT"]]))}),
    _modes,
)


def toml_value(value: object) -> str:
    """``value`` as TOML (inline tables for dicts)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    pairs = (f"{toml_value(k)} = {toml_value(v)}" for k, v in value.items())
    return "{" + ", ".join(pairs) + "}"


def toml_policy(rules: list[dict[str, object]]) -> str:
    """``rules`` as ``[[rule]]`` tables."""
    return "".join("[[rule]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in r.items())
                   for r in rules)


@cache
def sample_identities() -> tuple[ClientIdentity, ...]:
    """A few identities for property tests, made once."""
    return (identity("a", uris=[SPIFFE], dns=["x.svc.example.org"], emails=["a@b.org"]),
            identity("b", ca=other_ca(), organization="Example"))


TOML_LINES = [
    "[[rule]]", "[[ rule ]]  # c", "[rule.allow]", "[rule.allow.subject]", "[other]",
    'path = "/a"', "path = '/b/c'", 'path = "/"', 'name = "n"', 'methods = ["GET", "POST"]',
    "public = true", "public = false", "allow.any = true", 'allow.dns = "*.svc.example.org"',
    'spiffe = ["spiffe://example.org/*",', '  "spiffe://example.org/a/b",', "]",
    'CN = "x"', 'O = ["a", "b"]', 'x = """', "'''", '"""', "[[rule]] = 1", '"path" = "/q"',
    "rule = [", '{ path = "/i", public = true },', 'dns = "a..b"', "",
    "serial = '0A:0b'", 'sha256 = "' + "ab" * 32 + '"', "subject = { CN = 'c' }",
]


class PropertyTests(SynchronousTestCase):
    """Parsing only ever fails with ConfigurationError; deciding never fails."""

    @PROPERTY
    @given(st.text(max_size=300))
    def test_parse_arbitrary_text(self, text: str) -> None:
        """Arbitrary text parses or raises ConfigurationError naming a line."""
        try:
            parse_policy(text, "p.toml")
        except ConfigurationError as e:
            self.assertRegex(e.source, r"^p\.toml:\d+$")

    @PROPERTY
    @given(st.lists(st.sampled_from(TOML_LINES), max_size=14).map("\n".join))
    def test_parse_toml_fragments(self, text: str) -> None:
        """TOML-like text parses or raises ConfigurationError naming a line of it."""
        try:
            parse_policy(text, "p.toml")
        except ConfigurationError as e:
            line = int(e.source.rpartition(":")[2])
            self.assertTrue(1 <= line <= text.count("\n") + 1, (text, str(e)))

    @PROPERTY
    @given(st.lists(_rules, min_size=1, max_size=4))
    def test_parse_arbitrary_rules(self, rules: list[dict[str, object]]) -> None:
        """Arbitrary rule tables parse or raise ConfigurationError naming a real line."""
        text = toml_policy(rules)
        try:
            parsed = parse_policy(text, "p.toml")
        except ConfigurationError as e:
            line = int(e.source.rpartition(":")[2])
            self.assertTrue(1 <= line <= max(text.count("\n"), 1), (text, str(e)))
        else:
            for who in (None, *sample_identities()):
                parsed.decide("/api/x", "GET", who)

    @PROPERTY
    @given(st.one_of(st.text(max_size=40), st.binary(max_size=40),
                     st.lists(st.sampled_from(["api", "payments", "..", ".", "", "%2f", "%",
                                               "%e9", "\udcff", "x;y", "%00"]))
                     .map(lambda parts: "/" + "/".join(parts))),
           st.one_of(st.text(max_size=8), st.binary(max_size=8)),
           st.sampled_from([0, 1, 2]))
    def test_decide_never_raises(self, path: str | bytes, method: str | bytes,
                                 who: int) -> None:
        """Any path and method gets a Decision, denied unless a rule admitted it."""
        example = load_policy(str(EXAMPLE))
        identity = (None, *sample_identities())[who]
        decision = example.decide(path, method, identity)
        self.assertIsInstance(decision, Decision)
        self.assertEqual(decision.allowed,
                         decision.reason in (AccessReason.PUBLIC, AccessReason.ALLOWED))

    @PROPERTY
    @given(st.builds(ClientIdentity, subject=st.text(), issuer=st.text(), serial=st.text(),
                     not_before=st.floats(), not_after=st.floats(), sha256=st.text(),
                     common_name=st.none() | st.text(), dns=st.lists(st.text()).map(tuple),
                     emails=st.lists(st.text()).map(tuple),
                     uris=st.lists(st.text()).map(tuple)))
    def test_decide_any_identity(self, who: ClientIdentity) -> None:
        """Identities with arbitrary fields are decided on, never raising."""
        example = load_policy(str(EXAMPLE))
        for path in ("/api/payments", "/api/admin", "/api", "/secure"):
            decision = example.decide(path, "GET", who)
            self.assertIn(decision.reason, (AccessReason.ALLOWED, AccessReason.NOT_ALLOWED))
