"""
Certificate policy processing (RFC 5280 §6.1): a verified path in, its valid policies out.

``valid_policies`` runs the policy parts of path validation over a path OpenSSL already
verified (initialization §6.1.2; §6.1.3 (d)-(f); §6.1.4 (a), (b), (h)-(j); wrap-up
§6.1.5 (a), (b), (g)) with the user's inputs in ``PolicySettings``. It keeps the
valid_policy_tree, honours policyMappings, anyPolicy, inhibitAnyPolicy and
policyConstraints, and answers the user-constrained-policy-set, or a ``PolicyRefusal``.
The answer is in the trust anchor's terms, as PKITS gives it: a policy mapped on the way
down is reported as the policy it was mapped from. cryptography leaves policyMappings
undecoded; ``parse_policy_mappings`` decodes it (DER, strictly).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import CertificatePoliciesOID, ExtensionOID

__all__ = [
    "ANY_POLICY",
    "DEFAULT_POLICIES",
    "PolicyRefusal",
    "PolicySettings",
    "check_oid",
    "parse_policy_mappings",
    "policy_mappings",
    "valid_policies",
]

ANY_POLICY = CertificatePoliciesOID.ANY_POLICY.dotted_string  # 2.5.29.32.0


def check_oid(text: str) -> str:
    """A dotted OID, checked (two or more decimal arcs; first 0-2); raises ValueError."""
    arcs = text.strip().split(".")
    if len(arcs) < 2 or not all(a.isdigit() and a.isascii() for a in arcs):
        raise ValueError(f"{text!r} is not an object identifier (like 2.16.840.1.101.3.2.1.48.1)")
    if int(arcs[0]) > 2 or (int(arcs[0]) < 2 and int(arcs[1]) > 39):
        raise ValueError(f"{text!r} is not an object identifier (bad first arcs)")
    return ".".join(str(int(a)) for a in arcs)


@dataclass(frozen=True)
class PolicySettings:
    """The policy inputs of RFC 5280 §6.1.1 (c), (e), (f), (g)."""

    initial: frozenset[str] = frozenset({ANY_POLICY})  # user-initial-policy-set
    require_explicit: bool = False  # initial-explicit-policy
    inhibit_mapping: bool = False  # initial-policy-mapping-inhibit
    inhibit_any: bool = False  # initial-any-policy-inhibit


DEFAULT_POLICIES = PolicySettings()


@dataclass(frozen=True)
class PolicyRefusal:
    """Why a path fails policy processing; ``invalid`` when an extension itself is bad."""

    detail: str
    depth: int
    invalid: bool = False


class _Node:
    """A valid_policy_tree node: its policy, expected policies, parent and children."""

    __slots__ = ("children", "depth", "expected", "parent", "policy")

    def __init__(self, policy: str, expected: Iterable[str], parent: _Node | None) -> None:
        self.policy = policy
        self.depth: int = 0 if parent is None else parent.depth + 1
        self.expected = set(expected)
        self.parent = parent
        self.children: list[_Node] = []
        if parent is not None:
            parent.children.append(self)


class _Tree:
    """The valid_policy_tree as levels of nodes (level 0: the root); empty once NULL."""

    def __init__(self) -> None:
        self.levels: list[list[_Node]] = [[_Node(ANY_POLICY, (ANY_POLICY,), None)]]

    @property
    def null(self) -> bool:
        return not self.levels[0]

    def clear(self) -> None:
        self.levels = [[]]

    def add(self, depth: int, policy: str, expected: Iterable[str], parent: _Node) -> None:
        while len(self.levels) <= depth:
            self.levels.append([])
        self.levels[depth].append(_Node(policy, expected, parent))

    def remove(self, node: _Node) -> None:
        """Delete ``node`` and its subtree."""
        for child in list(node.children):
            self.remove(child)
        self.levels[node.depth].remove(node)
        if node.parent is not None:
            node.parent.children.remove(node)

    def prune(self, below: int) -> None:
        """Delete childless nodes of depth ``below`` or less, repeatedly (bottom up)."""
        for depth in range(min(below, len(self.levels) - 1), -1, -1):
            for node in [n for n in self.levels[depth] if not n.children]:
                self.remove(node)


def _extension(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def policy_mappings(cert: x509.Certificate) -> list[tuple[str, str]]:
    """The (issuerDomainPolicy, subjectDomainPolicy) pairs of ``cert``'s policyMappings
    extension (cryptography leaves it undecoded); ValueError if malformed."""
    try:
        extension = cert.extensions.get_extension_for_oid(ExtensionOID.POLICY_MAPPINGS).value
    except x509.ExtensionNotFound:
        return []
    assert isinstance(extension, x509.UnrecognizedExtension)
    return parse_policy_mappings(extension.value)


def parse_policy_mappings(der: bytes) -> list[tuple[str, str]]:
    """Decode PolicyMappings ::= SEQUENCE SIZE (1..MAX) OF SEQUENCE { OID, OID } (DER)."""
    outer, rest = _tlv(der, _SEQUENCE)
    if rest:
        raise ValueError("policyMappings: trailing data")
    pairs = []
    while outer:
        pair, outer = _tlv(outer, _SEQUENCE)
        issuer, pair = _tlv(pair, _OID)
        subject, pair = _tlv(pair, _OID)
        if pair:
            raise ValueError("policyMappings: a mapping holds more than two OIDs")
        pairs.append((_oid_text(issuer), _oid_text(subject)))
    if not pairs:
        raise ValueError("policyMappings: no mapping")
    return pairs


_SEQUENCE, _OID = 0x30, 0x06


def _tlv(data: bytes, tag: int) -> tuple[bytes, bytes]:
    """The content of the DER element of ``tag`` at the start of ``data``, and what follows."""
    if len(data) < 2 or data[0] != tag:
        raise ValueError(f"policyMappings: expected tag {tag:#x}")
    length, offset = data[1], 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4 or len(data) < 2 + count or data[2] == 0:
            raise ValueError("policyMappings: bad length")
        length, offset = int.from_bytes(data[2:2 + count], "big"), 2 + count
        if length < 0x80:
            raise ValueError("policyMappings: length not minimally encoded")
    if len(data) < offset + length:
        raise ValueError("policyMappings: truncated")
    return data[offset:offset + length], data[offset + length:]


def _oid_text(content: bytes) -> str:
    """An OBJECT IDENTIFIER's content octets as a dotted string."""
    if not content or content[-1] & 0x80:
        raise ValueError("policyMappings: bad object identifier")
    arcs, value, fresh = [], 0, True
    for octet in content:
        if fresh and octet == 0x80:
            raise ValueError("policyMappings: object identifier not minimally encoded")
        value = value << 7 | octet & 0x7F
        fresh = not octet & 0x80
        if fresh:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in (first, arcs[0] - 40 * first, *arcs[1:]))


def _self_issued(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject


def valid_policies(path: Sequence[x509.Certificate], settings: PolicySettings
                   ) -> frozenset[str] | PolicyRefusal:
    """The user-constrained-policy-set of a verified ``path`` (trust anchor's subject first,
    leaf last, anchor itself excluded), or why the path fails policy processing."""
    try:
        return _Processor(path, settings).run()
    except ValueError as e:  # an extension cryptography cannot decode
        return PolicyRefusal(f"unreadable policy extension ({e})", 0, invalid=True)


def _anchor_policy(leaf: _Node) -> str:
    """The policy a leaf node stands for in the trust anchor's domain (before mappings):
    its top-most ancestor that is not anyPolicy (anyPolicy if there is none)."""
    chain = []
    node: _Node | None = leaf
    while node is not None and node.parent is not None:
        chain.append(node)
        node = node.parent
    return next((n.policy for n in reversed(chain) if n.policy != ANY_POLICY), ANY_POLICY)


class _Processor:
    """One run of the policy state machine over a path."""

    def __init__(self, path: Sequence[x509.Certificate], settings: PolicySettings) -> None:
        self.path = path
        self.settings = settings
        n = len(path)
        self.tree = _Tree()
        self.explicit = 0 if settings.require_explicit else n + 1
        self.inhibit_any = 0 if settings.inhibit_any else n + 1
        self.mapping = 0 if settings.inhibit_mapping else n + 1

    def depth_of(self, i: int) -> int:
        """The chain depth (0: leaf) of the ``i``-th certificate (1-based) of the path."""
        return len(self.path) - i

    def run(self) -> frozenset[str] | PolicyRefusal:
        n = len(self.path)
        if n == 0:  # a pinned self-signed leaf is its own trust anchor
            return frozenset(self.settings.initial)
        for i, cert in enumerate(self.path, 1):
            self.certificate_policies(i, cert)
            if self.explicit == 0 and self.tree.null:
                return PolicyRefusal(_NO_POLICY, self.depth_of(i))
            if i < n:
                refusal = self.prepare(i, cert)
                if refusal is not None:
                    return refusal
        return self.wrap_up(self.path[-1])

    def certificate_policies(self, i: int, cert: x509.Certificate) -> None:
        """§6.1.3 (d), (e): grow the tree by the certificate's policies, or make it NULL."""
        policies = _extension(cert, x509.CertificatePolicies)
        if policies is None or self.tree.null:
            self.tree.clear()
            return
        assert isinstance(policies, x509.CertificatePolicies)
        oids = [p.policy_identifier.dotted_string for p in policies]
        parents = self.tree.levels[i - 1]
        for oid in oids:
            if oid == ANY_POLICY:
                continue
            matched = [p for p in parents if oid in p.expected]
            if not matched:
                matched = [p for p in parents if p.policy == ANY_POLICY][:1]
            for parent in matched:
                self.tree.add(i, oid, (oid,), parent)
        if ANY_POLICY in oids and (self.inhibit_any > 0
                                   or (i < len(self.path) and _self_issued(cert))):
            for parent in parents:
                present = {c.policy for c in parent.children}
                for oid in sorted(parent.expected - present):
                    self.tree.add(i, oid, (oid,), parent)
        self.tree.prune(i - 1)
        if len(self.tree.levels) <= i or not self.tree.levels[i]:
            self.tree.clear()

    def prepare(self, i: int, cert: x509.Certificate) -> PolicyRefusal | None:
        """§6.1.4 (a), (b), (h), (i), (j): mappings and the counters for the next one."""
        pairs = policy_mappings(cert)
        if pairs:
            if any(ANY_POLICY in pair for pair in pairs):
                return PolicyRefusal("policyMappings maps to or from anyPolicy",
                                     self.depth_of(i), invalid=True)
            self.apply_mappings(i, pairs)
        if not _self_issued(cert):
            self.explicit = max(self.explicit - 1, 0)
            self.mapping = max(self.mapping - 1, 0)
            self.inhibit_any = max(self.inhibit_any - 1, 0)
        constraints = _extension(cert, x509.PolicyConstraints)
        if constraints is not None:
            assert isinstance(constraints, x509.PolicyConstraints)
            if constraints.require_explicit_policy is not None:
                self.explicit = min(self.explicit, constraints.require_explicit_policy)
            if constraints.inhibit_policy_mapping is not None:
                self.mapping = min(self.mapping, constraints.inhibit_policy_mapping)
        inhibit = _extension(cert, x509.InhibitAnyPolicy)
        if inhibit is not None:
            assert isinstance(inhibit, x509.InhibitAnyPolicy)
            self.inhibit_any = min(self.inhibit_any, inhibit.skip_certs)
        return None

    def apply_mappings(self, i: int, pairs: list[tuple[str, str]]) -> None:
        """§6.1.4 (b): rewrite expected policies, or delete mapped nodes when inhibited."""
        if self.tree.null:
            return
        mapped: dict[str, list[str]] = {}
        for issuer_policy, subject_policy in pairs:
            mapped.setdefault(issuer_policy, []).append(subject_policy)
        level = self.tree.levels[i]
        for issuer_policy, subject_policies in mapped.items():
            nodes = [node for node in level if node.policy == issuer_policy]
            if self.mapping > 0:
                for node in nodes:
                    node.expected = set(subject_policies)
                if not nodes:
                    anys = [node for node in level if node.policy == ANY_POLICY]
                    if anys and anys[0].parent is not None:
                        self.tree.add(i, issuer_policy, subject_policies, anys[0].parent)
            else:
                for node in nodes:
                    self.tree.remove(node)
                self.tree.prune(i - 1)
        if not self.tree.levels[0]:
            self.tree.clear()

    def wrap_up(self, leaf: x509.Certificate) -> frozenset[str] | PolicyRefusal:
        """§6.1.5 (a), (b), (g): the last counters and the intersection with the user's set."""
        if self.explicit > 0:
            self.explicit -= 1
        constraints = _extension(leaf, x509.PolicyConstraints)
        if isinstance(constraints, x509.PolicyConstraints) \
                and constraints.require_explicit_policy == 0:
            self.explicit = 0
        n = len(self.path)
        if not self.tree.null and ANY_POLICY not in self.settings.initial:
            self.intersect(n)
        if self.explicit == 0 and self.tree.null:
            return PolicyRefusal(_NO_POLICY, 0)
        if self.tree.null:
            return frozenset()
        return frozenset(_anchor_policy(node) for node in self.tree.levels[n])

    def intersect(self, n: int) -> None:
        """§6.1.5 (g)(iii): keep only the user's policies (anyPolicy becomes them)."""
        initial = self.settings.initial
        valid_set = [node for level in self.tree.levels for node in level
                     if node.parent is not None and node.parent.policy == ANY_POLICY]
        for node in valid_set:
            if node.policy not in initial and node.policy != ANY_POLICY:
                self.tree.remove(node)
        kept = {node.policy for node in valid_set if node in self.tree.levels[node.depth]}
        leaves = self.tree.levels[n] if len(self.tree.levels) > n else []
        for leaf in [node for node in leaves if node.policy == ANY_POLICY]:
            assert leaf.parent is not None
            for oid in sorted(initial - kept):
                self.tree.add(n, oid, (oid,), leaf.parent)
            self.tree.remove(leaf)
        self.tree.prune(n - 1)
        if len(self.tree.levels) <= n or not self.tree.levels[n]:
            self.tree.clear()


_NO_POLICY = "no acceptable certificate policy (explicit policy required)"
