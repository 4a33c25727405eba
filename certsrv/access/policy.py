"""
``--policy FILE``: ordered rules saying which client certificates may reach which paths.

The file is TOML; its only top-level key is ``rule``, an array of tables::

    [[rule]]
    name = "health"            # optional, unique; default "rule N (line L)"
    path = "/health"           # required: a path prefix, whole segments only
    methods = ["GET"]          # optional: the methods the rule covers (GET also covers HEAD)
    public = true              # everyone may pass, with or without a certificate

    [[rule]]
    path = "/api/payments"
    [rule.allow]               # a certificate matching ANY one of these keys may pass
    subject = { O = "Example", OU = ["payments", "billing"] }
    issuer = { CN = "Example Issuing CA" }
    spiffe = ["spiffe://example.org/ns/payments/*"]
    dns = ["*.svc.example.org"]
    email = ["ops@example.org"]
    uri = ["urn:example:agent"]
    serial = ["1a:2b:3c"]
    sha256 = ["<64 hex digits, colons allowed>"]
    policies = ["2.16.840.1.101.3.2.1.48.1"]
    # any = true               # any verified certificate; must stand alone

Paths: ``path`` starts with ``/`` and is matched segment by segment after percent-decoding,
so ``/api`` matches ``/api``, ``/api/`` and ``/api/x`` but not ``/apix``; ``/`` matches every
path. It has no trailing ``/``, no empty, ``.`` or ``..`` segment, and no ``*``, ``?``, ``#``,
``;`` or ``\\``. ``methods`` are upper-case tokens compared exactly.

Matchers (every list may also be a single string; no list may be empty):

- ``subject`` / ``issuer``: a table of DN attribute names (``_ATTRIBUTES``) to values; every
  attribute given must match (AND), and an attribute matches when any of the certificate's
  values for it equals any value listed (OR). Values compare exactly and hold no ``*``.
- ``spiffe``: SPIFFE IDs, exact, or ending in ``/*``: one or more further segments. The
  certificate must carry exactly one ``spiffe://`` URI, itself a well-formed SPIFFE ID.
- ``dns``: names (case-insensitive), or ``*.`` + a domain of two or more labels: exactly one
  more label on the left. A certificate's own wildcard names never match.
- ``email``: addresses, exact but for the domain's case. ``uri``: URIs, exact, not SPIFFE.
- ``serial``: hex, colons allowed, case and leading zeros ignored. ``sha256``: the
  certificate's SHA-256 fingerprint, 64 hex digits, colons allowed.
- ``policies``: certificate policy OIDs (dotted); the chain's valid policies (RFC 5280
  §6.1, ``certsrv.x509.policies``: in the trust anchor's domain, after mappings) must hold
  one of them. anyPolicy (2.5.29.32.0) matches only when listed itself.

Deciding (``Policy.decide``): the request path is cut at ``?``/``#`` and percent-decoded per
segment; a path that is not absolute or has an empty (but last), ``.``, ``..`` segment, or a
segment holding ``/``, ``\\``, ``;`` or NUL once decoded is denied as ``bad_path``, because
servers behind certsrv could read it as another path. Otherwise the first rule whose prefix
and methods match decides: ``public`` admits; no certificate is ``no_certificate``; a
certificate matching none of ``allow`` is ``not_allowed``. No rule at all is ``no_rule``.

Loading refuses, as ConfigurationError("FILE:LINE", problem): invalid TOML or UTF-8, unknown
keys, wrong types, bad paths, methods and patterns, a rule with neither or both of ``public``
and ``allow``, ``public = false``, a repeated name, no rules, and a rule that can never match
because earlier rules with the same or a shorter prefix already cover all its methods.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NoReturn
from urllib.parse import unquote

from cryptography import x509
from cryptography.x509.oid import NameOID
from twisted.logger import Logger

from certsrv.access.request import Segments, bad_method, segments_of
from certsrv.exceptions import AccessReason, ConfigurationError
from certsrv.x509.certs import read_file
from certsrv.x509.identity import ClientIdentity
from certsrv.x509.policies import check_oid

__all__ = [
    "Claims",
    "Decision",
    "Policy",
    "Rule",
    "load_policy",
    "parse_policy",
]


@dataclass(frozen=True)
class Decision:
    """The outcome for one request: allowed or not, the rule that decided (if any), and why."""

    allowed: bool
    rule: str | None
    reason: AccessReason
    matcher: str | None = None  # the ``allow`` key that admitted the certificate

    @property
    def message(self) -> str:
        """The reason as a short sentence."""
        return self.reason.sentence

    def log_fields(self) -> dict[str, object]:
        """The decision as structured log fields (``policy_`` prefixed)."""
        return {"policy_allowed": self.allowed, "policy_rule": self.rule,
                "policy_reason": self.reason.value, "policy_matcher": self.matcher}


# DN attribute names accepted in ``subject`` and ``issuer`` tables (RFC 4514 and X.520 names).
_ATTRIBUTES: dict[str, x509.ObjectIdentifier] = {
    "CN": NameOID.COMMON_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
    "STREET": NameOID.STREET_ADDRESS,
    "DC": NameOID.DOMAIN_COMPONENT,
    "UID": NameOID.USER_ID,
    "emailAddress": NameOID.EMAIL_ADDRESS,
    "serialNumber": NameOID.SERIAL_NUMBER,
    "SN": NameOID.SURNAME,
    "GN": NameOID.GIVEN_NAME,
    "title": NameOID.TITLE,
    "pseudonym": NameOID.PSEUDONYM,
    "postalCode": NameOID.POSTAL_CODE,
    "dnQualifier": NameOID.DN_QUALIFIER,
    "organizationIdentifier": NameOID.ORGANIZATION_IDENTIFIER,
    "businessCategory": NameOID.BUSINESS_CATEGORY,
}

_RULE_KEYS = ("name", "path", "methods", "public", "allow")
_ALLOW_KEYS = ("any", "subject", "issuer", "spiffe", "dns", "email", "uri", "serial", "sha256",
               "policies")
_METHOD = re.compile(r"[A-Z][A-Z0-9_-]*\Z")
_HEX = re.compile(r"[0-9a-f]+\Z")
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)\Z")
_SPIFFE_TD = re.compile(r"[a-z0-9._-]+\Z")
_SPIFFE_SEGMENT = re.compile(r"[A-Za-z0-9._-]+\Z")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_log = Logger(namespace="certsrv.policy")
_DEFAULT_NAME = re.compile(r"rule \d+ \(line \d+\)\Z")


# --- identities ---------------------------------------------------------------------------


def _name_attributes(certificate: x509.Certificate | None, issuer: bool
                     ) -> dict[x509.ObjectIdentifier, frozenset[str]]:
    # cryptography decodes names lazily: a malformed one raises here, and then matches nothing.
    if certificate is None:
        return {}
    try:
        values: dict[x509.ObjectIdentifier, set[str]] = {}
        for attribute in certificate.issuer if issuer else certificate.subject:
            if isinstance(attribute.value, str):
                values.setdefault(attribute.oid, set()).add(attribute.value)
        return {oid: frozenset(v) for oid, v in values.items()}
    except Exception:
        return {}


def _spiffe_id(uri: str) -> str | None:
    # A well-formed SPIFFE ID, its scheme and trust domain lower-cased; else None.
    if not uri.isascii() or not uri[:9].lower() == "spiffe://":
        return None
    domain, slash, path = uri[9:].partition("/")
    domain = domain.lower()
    if not _SPIFFE_TD.match(domain) or not slash:
        return None
    segments = path.split("/")
    if any(s in (".", "..") or not _SPIFFE_SEGMENT.match(s) for s in segments):
        return None
    return f"spiffe://{domain}/{path}"


def _ia5(identity: ClientIdentity, kind: str, values: Iterable[str]) -> list[str]:
    # dNSName, rfc822Name and URI SANs are IA5String (ASCII): a value that is not can only
    # come from a broken or hostile CA, and must not match by Unicode case folding (U+212A
    # KELVIN SIGN lower-cases to "k"), so it matches nothing.
    ascii_values = []
    for value in values:
        if value.isascii():
            ascii_values.append(value)
        else:
            _log.warn("{subject}: {kind} SAN {value!r} is not ASCII (IA5String); it matches "
                      "no --policy rule", subject=identity.subject, kind=kind, value=value,
                      reason="non_ascii_san", sha256=identity.sha256)
    return ascii_values


def _normal_serial(text: str) -> str:
    return text.replace(":", "").lower().lstrip("0") or "0"


def _normal_email(text: str) -> str:
    local, at, domain = text.rpartition("@")
    return f"{local}@{domain.lower()}" if at else text


class Claims:
    """What a policy matches on, read once from an identity; cache one per connection."""

    __slots__ = ("_issuer", "_subject", "dns", "emails", "identity", "policies", "serial",
                 "sha256", "spiffe", "uris")

    def __init__(self, identity: ClientIdentity) -> None:
        self.identity = identity
        self.serial = _normal_serial(identity.serial)
        self.sha256 = identity.sha256.replace(":", "").lower()
        self.dns = frozenset(d.lower().rstrip(".") for d in _ia5(identity, "dns", identity.dns))
        self.emails = frozenset(_normal_email(e)
                                for e in _ia5(identity, "email", identity.emails))
        self.uris = frozenset(_ia5(identity, "uri", identity.uris))
        self.policies = identity.policies
        spiffe = identity.spiffe_id
        self.spiffe = _spiffe_id(spiffe) if spiffe is not None else None
        self._subject: dict[x509.ObjectIdentifier, frozenset[str]] | None = None
        self._issuer: dict[x509.ObjectIdentifier, frozenset[str]] | None = None

    def subject(self) -> Mapping[x509.ObjectIdentifier, frozenset[str]]:
        """The certificate's subject attribute values by OID (read on first use)."""
        if self._subject is None:
            self._subject = _name_attributes(self.identity.certificate, issuer=False)
        return self._subject

    def issuer(self) -> Mapping[x509.ObjectIdentifier, frozenset[str]]:
        """The certificate's issuer attribute values by OID (read on first use)."""
        if self._issuer is None:
            self._issuer = _name_attributes(self.identity.certificate, issuer=True)
        return self._issuer


# --- rules --------------------------------------------------------------------------------

_NameMatch = tuple[tuple[x509.ObjectIdentifier, frozenset[str]], ...]


def _name_matches(wanted: _NameMatch, have: Mapping[x509.ObjectIdentifier, frozenset[str]]
                  ) -> bool:
    return all(not values.isdisjoint(have.get(oid, ())) for oid, values in wanted)


@dataclass(frozen=True)
class Allow:
    """The certificates a rule admits, precomputed for set lookups."""

    any: bool = False
    subject: _NameMatch = ()
    issuer: _NameMatch = ()
    spiffe: frozenset[str] = frozenset()
    spiffe_prefixes: tuple[str, ...] = ()
    dns: frozenset[str] = frozenset()
    dns_parents: frozenset[str] = frozenset()
    email: frozenset[str] = frozenset()
    uri: frozenset[str] = frozenset()
    serial: frozenset[str] = frozenset()
    sha256: frozenset[str] = frozenset()
    policies: frozenset[str] = frozenset()

    def match(self, claims: Claims) -> str | None:
        """The name of the first key that admits ``claims``, or None."""
        if self.any:
            return "any"
        if self.sha256 and claims.sha256 in self.sha256:
            return "sha256"
        if self.serial and claims.serial in self.serial:
            return "serial"
        if claims.spiffe is not None and (
                claims.spiffe in self.spiffe
                or any(claims.spiffe.startswith(p) for p in self.spiffe_prefixes)):
            return "spiffe"
        if self.dns or self.dns_parents:
            for name in claims.dns:
                if name in self.dns:
                    return "dns"
                label, dot, parent = name.partition(".")
                if dot and label and "*" not in label and parent in self.dns_parents:
                    return "dns"
        if not self.email.isdisjoint(claims.emails):
            return "email"
        if not self.uri.isdisjoint(claims.uris):
            return "uri"
        if not self.policies.isdisjoint(claims.policies):
            return "policies"
        if self.subject and _name_matches(self.subject, claims.subject()):
            return "subject"
        if self.issuer and _name_matches(self.issuer, claims.issuer()):
            return "issuer"
        return None


@dataclass(frozen=True)
class Rule:
    """One checked rule: a path prefix, optional methods, and who may pass."""

    name: str
    line: int
    path: str
    segments: tuple[str, ...]
    methods: frozenset[str] | None
    public: bool
    allow: Allow | None
    order: int = field(default=0, compare=False)

    def covers_method(self, method: str) -> bool:
        """Whether the rule applies to ``method``."""
        return self.methods is None or method in self.methods


def _request_segments(path: str | bytes, limit: int,
                     dispatched: Segments | None = None) -> tuple[str, ...] | None:
    # The first ``limit`` decoded segments of a request path (the part before "?"), or None
    # if the path is not absolute or is ambiguous. A trailing "/" adds no segment.
    raw = path if isinstance(path, bytes) else path.encode("utf-8", "surrogatepass")
    segments = segments_of(raw.partition(b"?")[0], dispatched)
    if segments is None:
        return None
    if segments and not segments[-1]:
        segments = segments[:-1]
    return tuple(s.decode("utf-8", "surrogateescape") for s in segments[:limit])


class Policy:
    """A checked policy; ``decide`` is cheap and never raises."""

    def __init__(self, rules: Iterable[Rule], source: str = "<policy>") -> None:
        self.rules = tuple(rules)
        self.source = source
        index: dict[tuple[str, ...], list[Rule]] = {}
        for rule in self.rules:
            index.setdefault(rule.segments, []).append(rule)
        self._index = {prefix: tuple(rules) for prefix, rules in index.items()}
        self._depth = max((len(r.segments) for r in self.rules), default=0)

    def rule_for(self, path: str | bytes, method: str | bytes) -> Rule | None:
        """The first rule covering ``path`` and ``method``, or None (a bad path has none)."""
        segments = _request_segments(path, self._depth)
        return None if segments is None else self._first(segments, method)

    def _first(self, segments: tuple[str, ...], method: str | bytes) -> Rule | None:
        verb = method.decode("latin-1") if isinstance(method, bytes) else method
        found: Rule | None = None
        for depth in range(len(segments) + 1):
            for rule in self._index.get(segments[:depth], ()):
                if rule.covers_method(verb):
                    if found is None or rule.order < found.order:
                        found = rule
                    break
        return found

    def decide(self, path: str | bytes, method: str | bytes,
               identity: ClientIdentity | Claims | None,
               dispatched: Segments | None = None) -> Decision:
        """Whether a request for ``path`` by ``method`` from ``identity`` may pass, and why;
        ``dispatched`` are the path's segments as twisted.web split and decoded them."""
        rule: Rule | None = None
        try:
            verb = method if isinstance(method, bytes) else method.encode("latin-1")
            if bad_method(verb):
                return Decision(False, None, AccessReason.BAD_METHOD)
            segments = _request_segments(path, self._depth, dispatched)
            if segments is None:
                return Decision(False, None, AccessReason.BAD_PATH)
            rule = self._first(segments, method)
            if rule is None:
                return Decision(False, None, AccessReason.NO_RULE)
            if rule.public:
                return Decision(True, rule.name, AccessReason.PUBLIC)
            if identity is None:
                return Decision(False, rule.name, AccessReason.NO_CERTIFICATE)
            claims = identity if isinstance(identity, Claims) else Claims(identity)
            matcher = rule.allow.match(claims) if rule.allow is not None else None
            if matcher is None:
                return Decision(False, rule.name, AccessReason.NOT_ALLOWED)
            return Decision(True, rule.name, AccessReason.ALLOWED, matcher)
        except Exception:
            return Decision(False, rule.name if rule else None, AccessReason.INTERNAL_ERROR)


# --- where things are in the TOML text ----------------------------------------------------

_KEY_PART = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_DOTTED = rf"{_KEY_PART}(?:[ \t]*\.[ \t]*{_KEY_PART})*"
_ARRAY_HEADER = re.compile(rf"[ \t]*\[\[[ \t]*({_DOTTED})[ \t]*\]\]")
_TABLE_HEADER = re.compile(rf"[ \t]*\[[ \t]*({_DOTTED})[ \t]*\]")
_KEY_LINE = re.compile(rf"[ \t]*({_DOTTED})[ \t]*=")
_PART = re.compile(_KEY_PART)


def _key_path(dotted: str) -> tuple[str, ...]:
    return tuple(p[1:-1] if p[0] in "\"'" else p for p in _PART.findall(dotted))


def _structural_lines(text: str) -> list[tuple[int, str]]:
    # The lines (1-based) that start outside any string, array or inline table.
    lines: list[tuple[int, str]] = []
    starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
    ok = [True] * len(starts)
    i, n, line, depth = 0, len(text), 0, 0
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            ok[line] = depth == 0
        elif c == "#":
            while i + 1 < n and text[i + 1] != "\n":
                i += 1
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth = max(depth - 1, 0)
        elif c in "\"'":
            quote = c * 3 if text.startswith(c * 3, i) else c
            i += len(quote)
            while i < n and not text.startswith(quote, i):
                if text[i] == "\n":
                    line += 1
                    ok[line] = False
                elif text[i] == "\\" and c == '"':
                    i += 1
                    if i < n and text[i] == "\n":
                        line += 1
                        ok[line] = False
                i += 1
            if len(quote) == 3:
                while text.startswith(c, i + 3):  # up to two quotes may close a """ string
                    i += 1
            i += len(quote) - 1
        i += 1
    for number, start in enumerate(starts):
        if ok[number]:
            end = text.find("\n", start)
            lines.append((number + 1, text[start:] if end < 0 else text[start:end]))
    return lines


class _Lines:
    """Line numbers of the ``[[rule]]`` headers and of keys, found in (valid) TOML text."""

    def __init__(self, text: str, rule_count: int) -> None:
        self.entries: list[tuple[int, tuple[str, ...], int | None]] = []
        headers: list[int] = []
        table: tuple[str, ...] = ()
        rule: int | None = None
        for number, line in _structural_lines(text):
            if m := _ARRAY_HEADER.match(line):
                table = _key_path(m.group(1))
                if table == ("rule",):
                    headers.append(number)
                    rule = len(headers) - 1
                elif table[:1] != ("rule",):
                    rule = None
                self.entries.append((number, table, rule))
            elif m := _TABLE_HEADER.match(line):
                table = _key_path(m.group(1))
                if table[:1] != ("rule",):
                    rule = None
                self.entries.append((number, table, rule))
            elif m := _KEY_LINE.match(line):
                self.entries.append((number, table + _key_path(m.group(1)), rule))
        if len(headers) != rule_count:  # ``rule = [{...}]``: no headers to go by
            inline = self.top("rule")
            headers = [inline] * rule_count
            self.entries = [(n, p, None) for n, p, _ in self.entries]
        self.headers = headers

    def top(self, key: str) -> int:
        """The line of a top-level key or table, or 1."""
        return next((n for n, p, _ in self.entries if p[:1] == (key,)), 1)

    def of(self, rule: int, keys: tuple[str, ...]) -> int:
        """The line of ``keys`` inside rule number ``rule`` (0-based), or its header."""
        best, score = self.headers[rule], -1
        for number, path, owner in self.entries:
            relative = path[1:]
            if owner != rule or path[:1] != ("rule",):
                continue
            if relative == keys:
                return number
            if keys[:len(relative)] == relative and len(relative) > score:
                best, score = number, len(relative)
        return best


# --- parsing and checking -----------------------------------------------------------------


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date or time"


def _suggest(key: str, known: Iterable[str]) -> str:
    match = [k for k in known if k.lower() == key.lower()]
    if match:
        return f" (did you mean {match[0]!r}?)"
    return f"; expected one of: {', '.join(known)}"


class _RuleChecker:
    """Checks one rule table, raising ConfigurationError at the offending line."""

    def __init__(self, source: str, lines: _Lines, index: int, label: str) -> None:
        self.source = source
        self.lines = lines
        self.index = index
        self.label = label

    def fail(self, keys: tuple[str, ...], problem: str) -> NoReturn:
        """Raise naming the line of ``keys`` in this rule."""
        line = self.lines.of(self.index, keys)
        where = ".".join(keys)
        prefix = f"{self.label}: {where}: " if where else f"{self.label}: "
        raise ConfigurationError(f"{self.source}:{line}", prefix + problem)

    def strings(self, keys: tuple[str, ...], value: object) -> list[str]:
        """A string or a non-empty array of non-empty strings, as a list."""
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            self.fail(keys, f"expected a string or an array of strings, not {_describe(value)}")
        if not items:
            self.fail(keys, "the array is empty")
        for item in items:
            if not isinstance(item, str):
                self.fail(keys, f"expected strings, found {_describe(item)}")
            if not item.strip():
                self.fail(keys, "empty string")
        return items  # type: ignore[return-value]

    def path(self, value: object) -> tuple[str, tuple[str, ...]]:
        """The rule's path and its decoded segments."""
        if not isinstance(value, str):
            self.fail(("path",), f"expected a string, not {_describe(value)}")
        bad = "a path prefix"
        if not value.startswith("/"):
            self.fail(("path",), f"{value!r} is not {bad}: it must start with '/'")
        for char, hint in (("*", "the path is already a prefix; leave out the '*'"),
                           ("?", "a query cannot be matched"), ("#", "a fragment cannot be "
                            "matched"), (";", "';' is refused"), ("\\", "'\\' is refused")):
            if char in value:
                self.fail(("path",), f"{value!r} is not {bad}: {hint}")
        if _CONTROL.search(value) or " " in value:
            self.fail(("path",), f"{value!r} is not {bad}: it contains spaces or control "
                                 "characters (percent-encode them)")
        if value == "/":
            return value, ()
        if value.endswith("/"):
            self.fail(("path",), f"{value!r} is not {bad}: leave out the trailing '/' "
                                 f"({value.rstrip('/')!r} also matches what is below it)")
        segments = []
        for part in value[1:].split("/"):
            decoded = unquote(part, errors="surrogateescape")
            if decoded in ("", ".", ".."):
                self.fail(("path",), f"{value!r} is not {bad}: empty, '.' and '..' segments "
                                     "are refused")
            if any(c in decoded for c in "/\\;\x00"):
                self.fail(("path",), f"{value!r} is not {bad}: it encodes '/', '\\', ';' or "
                                     "NUL")
            segments.append(decoded)
        return value, tuple(segments)

    def methods(self, value: object) -> frozenset[str]:
        """The methods, GET bringing HEAD."""
        methods = set()
        for method in self.strings(("methods",), value):
            if not _METHOD.match(method):
                self.fail(("methods",), f"{method!r} is not an HTTP method (upper-case, "
                                        "like 'GET')")
            methods.add(method)
        if "GET" in methods:
            methods.add("HEAD")
        return frozenset(methods)

    def name_match(self, key: str, value: object) -> _NameMatch:
        """A ``subject``/``issuer`` table as (OID, values) pairs."""
        keys = ("allow", key)
        if not isinstance(value, dict):
            self.fail(keys, f"expected a table of DN attributes like {{ CN = \"name\" }}, not "
                            f"{_describe(value)}")
        if not value:
            self.fail(keys, "the table is empty")
        wanted = []
        for attribute, values in value.items():
            if attribute not in _ATTRIBUTES:
                self.fail((*keys, attribute), f"unknown DN attribute {attribute!r}"
                                              + _suggest(attribute, _ATTRIBUTES))
            items = self.strings((*keys, attribute), values)
            for item in items:
                if "*" in item:
                    self.fail((*keys, attribute), f"{item!r}: DN attributes compare exactly; "
                                                  "'*' is not a wildcard here")
            wanted.append((_ATTRIBUTES[attribute], frozenset(items)))
        return tuple(wanted)

    def spiffe(self, value: object) -> tuple[frozenset[str], tuple[str, ...]]:
        """Exact SPIFFE IDs and the prefixes of ``/*`` patterns."""
        exact: set[str] = set()
        prefixes: list[str] = []
        example = "as in 'spiffe://example.org/ns/payments/*'"
        for pattern in self.strings(("allow", "spiffe"), value):
            stem = pattern[:-2] if pattern.endswith("/*") else pattern
            if "*" in stem:
                self.fail(("allow", "spiffe"), f"{pattern!r}: '*' may only be a whole last "
                                               f"segment, {example}")
            if not stem[:9].lower() == "spiffe://":
                self.fail(("allow", "spiffe"), f"{pattern!r} is not a SPIFFE ID: it must "
                                               "start with 'spiffe://'")
            domain = stem[9:].partition("/")[0]
            if stem != pattern and stem[9:] == domain:
                normal: str | None = f"spiffe://{domain.lower()}" if _SPIFFE_TD.match(
                    domain.lower()) else None
            else:
                normal = _spiffe_id(stem)
            if normal is None or domain != domain.lower():
                self.fail(("allow", "spiffe"), f"{pattern!r} is not a SPIFFE ID: it needs a "
                                               "lower-case trust domain and a path of "
                                               "non-empty segments of letters, digits, '.', "
                                               "'-' and '_' (no '.' or '..')")
            if stem == pattern:
                exact.add(normal)
            else:
                prefixes.append(normal + "/")
        return frozenset(exact), tuple(prefixes)

    def dns(self, value: object) -> tuple[frozenset[str], frozenset[str]]:
        """Exact names and the parent domains of ``*.`` patterns."""
        exact: set[str] = set()
        parents: set[str] = set()
        for pattern in self.strings(("allow", "dns"), value):
            if not pattern.isascii():
                self.fail(("allow", "dns"), f"{pattern!r} is not ASCII: write international "
                                            "names in their xn-- (A-label) form")
            name = pattern.lower().rstrip(".")
            wild = name.startswith("*.")
            labels = name[2:].split(".") if wild else name.split(".")
            if wild and len(labels) < 2:
                self.fail(("allow", "dns"), f"{pattern!r}: a wildcard needs a domain of at "
                                            "least two labels, like '*.svc.example.org'")
            if any("*" in label for label in labels):
                self.fail(("allow", "dns"), f"{pattern!r}: '*' may only be the whole "
                                            "left-most label, as in '*.svc.example.org'")
            if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
                self.fail(("allow", "dns"), f"{pattern!r} is not a DNS name")
            (parents if wild else exact).add(".".join(labels))
        return frozenset(exact), frozenset(parents)

    def emails(self, value: object) -> frozenset[str]:
        """Normalised e-mail addresses."""
        found = set()
        for address in self.strings(("allow", "email"), value):
            local, at, domain = address.rpartition("@")
            if not at or not local or not domain or "*" in address or not address.isascii() \
                    or any(c.isspace() for c in address):
                self.fail(("allow", "email"), f"{address!r} is not an e-mail address "
                                              "(wildcards are not supported)")
            found.add(_normal_email(address))
        return frozenset(found)

    def uris(self, value: object) -> frozenset[str]:
        """Exact URIs."""
        found = set()
        for uri in self.strings(("allow", "uri"), value):
            if uri[:9].lower() == "spiffe://":
                self.fail(("allow", "uri"), f"{uri!r}: put SPIFFE IDs in 'spiffe'")
            if not _URI.match(uri) or "*" in uri or not uri.isascii():
                self.fail(("allow", "uri"), f"{uri!r} is not a URI (scheme:rest, no spaces, "
                                            "no wildcards)")
            found.add(uri)
        return frozenset(found)

    def hexes(self, key: str, value: object) -> frozenset[str]:
        """Serial numbers or SHA-256 fingerprints as normalised hex."""
        found = set()
        for text in self.strings(("allow", key), value):
            digits = text.strip().replace(":", "").lower()
            if key == "sha256" and (len(digits) != 64 or not _HEX.match(digits)):
                self.fail(("allow", key), f"{text!r} is not a SHA-256 fingerprint (64 hex "
                                          "digits, colons allowed)")
            if key == "serial" and not _HEX.match(digits):
                self.fail(("allow", key), f"{text!r} is not a serial number (hex digits, "
                                          "colons allowed, no '0x')")
            found.add(digits if key == "sha256" else _normal_serial(digits))
        return frozenset(found)

    def policies(self, value: object) -> frozenset[str]:
        """Certificate policy OIDs, normalised."""
        found = set()
        for text in self.strings(("allow", "policies"), value):
            try:
                found.add(check_oid(text))
            except ValueError as e:
                self.fail(("allow", "policies"), str(e))
        return frozenset(found)

    def allow(self, value: object) -> Allow:
        """The ``allow`` table."""
        if not isinstance(value, dict):
            self.fail(("allow",), f"expected a table, not {_describe(value)}")
        for key in value:
            if key not in _ALLOW_KEYS:
                self.fail(("allow", key), f"unknown key {key!r}" + _suggest(key, _ALLOW_KEYS))
        if not value:
            self.fail(("allow",), "the table is empty: give at least one matcher")
        if "any" in value:
            if value["any"] is not True:
                self.fail(("allow", "any"), "must be true (or left out)")
            if len(value) > 1:
                self.fail(("allow", "any"), "'any = true' admits every certificate: remove "
                                            "the other matchers")
            return Allow(any=True)
        none: frozenset[str] = frozenset()
        spiffe, prefixes = self.spiffe(value["spiffe"]) if "spiffe" in value else (none, ())
        dns, parents = self.dns(value["dns"]) if "dns" in value else (none, none)
        return Allow(
            subject=self.name_match("subject", value["subject"]) if "subject" in value else (),
            issuer=self.name_match("issuer", value["issuer"]) if "issuer" in value else (),
            spiffe=spiffe,
            spiffe_prefixes=prefixes,
            dns=dns,
            dns_parents=parents,
            email=self.emails(value["email"]) if "email" in value else frozenset(),
            uri=self.uris(value["uri"]) if "uri" in value else frozenset(),
            serial=self.hexes("serial", value["serial"]) if "serial" in value else frozenset(),
            sha256=self.hexes("sha256", value["sha256"]) if "sha256" in value else frozenset(),
            policies=self.policies(value["policies"]) if "policies" in value else frozenset(),
        )


def _decode_error(error: Exception, text: str, source: str) -> ConfigurationError:
    message = str(error)
    m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if m:
        return ConfigurationError(f"{source}:{m.group(1)}",
                                  f"invalid TOML: {message[:m.start()]} (column {m.group(2)})")
    message = re.sub(r"\s*\(at end of document\)$", "", message)
    if isinstance(error, RecursionError):
        message = "arrays or tables are nested too deeply"
    line = max(text.count("\n") + (0 if text.endswith("\n") else 1), 1)
    return ConfigurationError(f"{source}:{line}", f"invalid TOML: {message} (at end of file)")


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Parse and check a policy from TOML ``text``; errors name ``source:LINE``."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise _decode_error(e, text, source) from None
    except RecursionError as e:
        raise _decode_error(e, text, source) from None
    raw_rules = document.get("rule")
    lines = _Lines(text, len(raw_rules) if isinstance(raw_rules, list) else 0)
    for key in document:
        if key != "rule":
            raise ConfigurationError(f"{source}:{lines.top(key)}", f"unknown top-level key "
                                     f"{key!r}; a policy is a list of [[rule]] tables")
    if raw_rules is None:
        raise ConfigurationError(f"{source}:1", "the policy has no [[rule]] tables; every "
                                 "request would be denied")
    if not isinstance(raw_rules, list) or not all(isinstance(r, dict) for r in raw_rules):
        raise ConfigurationError(f"{source}:{lines.top('rule')}",
                                 "'rule' must be an array of tables: write [[rule]]")
    if not raw_rules:
        raise ConfigurationError(f"{source}:{lines.top('rule')}", "the policy has no rules")
    rules: list[Rule] = []
    names: dict[str, Rule] = {}
    for index, raw in enumerate(raw_rules):
        rule = _check_rule(raw, index, source, lines, names)
        names[rule.name] = rule
        _check_reachable(rule, rules, source)
        rules.append(rule)
    return Policy(rules, source)


def _check_rule(raw: dict[str, object], index: int, source: str, lines: _Lines,
                names: Mapping[str, Rule]) -> Rule:
    line = lines.headers[index]
    default = f"rule {index + 1} (line {line})"
    check = _RuleChecker(source, lines, index, default)
    for key in raw:
        if key not in _RULE_KEYS:
            check.fail((key,), f"unknown key {key!r}" + _suggest(key, _RULE_KEYS))
    name = raw.get("name", default)
    if not isinstance(name, str):
        check.fail(("name",), f"expected a string, not {_describe(name)}")
    if not name.strip() or _CONTROL.search(name):
        check.fail(("name",), "the name is empty or holds control characters")
    check.label = f"rule {name!r} (line {line})" if "name" in raw else default
    if name in names:
        check.fail(("name",), f"the name is already used by the rule at line "
                              f"{names[name].line}")
    if "path" not in raw:
        check.fail((), "missing 'path'")
    path, segments = check.path(raw["path"])
    methods = check.methods(raw["methods"]) if "methods" in raw else None
    public = raw.get("public", False)
    if "public" in raw and public is not True:
        check.fail(("public",), "must be true (or left out and [rule.allow] given)"
                   if public is False else f"expected true, not {_describe(public)}")
    if public and "allow" in raw:
        check.fail(("allow",), "a public rule admits everyone: remove 'public' or 'allow'")
    if not public and "allow" not in raw:
        check.fail((), "give 'public = true' or a [rule.allow] table")
    allow = check.allow(raw["allow"]) if "allow" in raw else None
    return Rule(name, line, path, segments, methods, bool(public), allow, order=index)


def _check_reachable(rule: Rule, earlier: list[Rule], source: str) -> None:
    covering = [r for r in earlier if rule.segments[:len(r.segments)] == r.segments]
    if not covering:
        return
    every = [r for r in covering if r.methods is None]
    if every:
        blocker = every[0]
        raise ConfigurationError(
            f"{source}:{rule.line}",
            f"{_label(rule)} can never match: {_label(blocker)} comes "
            f"first and covers path {blocker.path!r} for every method")
    if rule.methods is None:
        return
    methods: set[str] = set()
    for r in covering:
        methods |= r.methods or set()
    if rule.methods <= methods:
        names = ", ".join(_label(r) for r in covering
                          if r.methods and r.methods & rule.methods)
        listed = ", ".join(sorted(rule.methods))
        raise ConfigurationError(
            f"{source}:{rule.line}",
            f"{_label(rule)} can never match: {names} come first and cover its path for "
            f"{listed}")


def _label(rule: Rule) -> str:
    # "rule 2 (line 5)" or "rule 'name' (line 5)".
    return rule.name if _DEFAULT_NAME.match(rule.name) else f"rule {rule.name!r} (line {rule.line})"


def load_policy(path: str) -> Policy:
    """Read and check the policy file at ``path``; errors name ``path:LINE``."""
    data = read_file(path, "policy")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigurationError(f"{path}:{line}", "the policy file is not UTF-8 text") from None
    return parse_policy(text, path)
