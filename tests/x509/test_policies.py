"""certsrv.x509.policies: RFC 5280 §6.1 certificate policy processing over a verified path."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from certsrv.testing import CertificateFactory, policy_extensions
from certsrv.x509.policies import (
    ANY_POLICY,
    PolicyRefusal,
    PolicySettings,
    check_oid,
    parse_policy_mappings,
    policy_mappings,
    valid_policies,
)

P1, P2, P3 = "1.3.6.1.4.1.99999.1", "1.3.6.1.4.1.99999.2", "1.3.6.1.4.1.99999.3"
PROPERTY = settings(max_examples=60, deadline=None, database=None, derandomize=True)
Spec = dict[str, object]


def chain(*specs: Spec, leaf: Spec | None = None) -> list[x509.Certificate]:
    """A path below a fresh root: one intermediate per spec (``policy_extensions``
    keywords), then a client certificate with ``leaf``'s; anchor left out."""
    ca = CertificateFactory.create("policy root")
    path = []
    for number, spec in enumerate(specs):
        ca = ca.intermediate(f"policy CA {number}", path_length=None,
                             extensions=policy_extensions(**spec))  # type: ignore[arg-type]
        path.append(ca.certificate)
    path.append(ca.client("leaf", extensions=policy_extensions(
        **(leaf or {}))).certificate)  # type: ignore[arg-type]
    return path


def run(path: Sequence[x509.Certificate], *initial: str, explicit: bool = False,
        inhibit_mapping: bool = False, inhibit_any: bool = False
        ) -> frozenset[str] | PolicyRefusal:
    """valid_policies with these inputs (initial: anyPolicy unless given)."""
    return valid_policies(path, PolicySettings(frozenset(initial or (ANY_POLICY,)), explicit,
                                               inhibit_mapping, inhibit_any))


class ValidPoliciesTests(SynchronousTestCase):
    """The user-constrained-policy-set, or why the path fails."""

    def assertRefused(self, outcome: object, depth: int, invalid: bool = False) -> None:
        self.assertIsInstance(outcome, PolicyRefusal)
        assert isinstance(outcome, PolicyRefusal)
        self.assertEqual((outcome.depth, outcome.invalid), (depth, invalid))

    def test_no_policies(self) -> None:
        """Without certificatePolicies a path is valid under no policy: accepted unless an
        explicit policy is required."""
        path = chain({})
        self.assertEqual(run(path), frozenset())
        self.assertRefused(run(path, explicit=True), 1)

    def test_same_policy(self) -> None:
        path = chain({"policies": [P1]}, leaf={"policies": [P1]})
        self.assertEqual(run(path), {P1})
        self.assertEqual(run(path, P1, P2, explicit=True), {P1})
        self.assertRefused(run(path, P2, explicit=True), 0)
        self.assertEqual(run(path, P2), frozenset())

    def test_any_policy_expands_to_the_initial_set(self) -> None:
        path = chain({"policies": [ANY_POLICY]}, leaf={"policies": [ANY_POLICY]})
        self.assertEqual(run(path), {ANY_POLICY})
        self.assertEqual(run(path, P1, P2), {P1, P2})

    def test_leaf_narrows(self) -> None:
        path = chain({"policies": [P1, P2]}, leaf={"policies": [P2, P3]})
        self.assertEqual(run(path), {P2})

    def test_require_explicit_policy_in_a_ca(self) -> None:
        """policyConstraints requireExplicitPolicy counts certificates below the CA."""
        self.assertRefused(run(chain({"require_explicit": 0})), 0)
        self.assertRefused(run(chain({"require_explicit": 1})), 0)
        self.assertEqual(run(chain({"require_explicit": 2})), frozenset())
        self.assertRefused(run(chain({"require_explicit": 2}, {})), 0)
        self.assertRefused(run(chain({"require_explicit": 1, "policies": [P1]},
                                     {"policies": [P1]})), 0)
        path = chain({"require_explicit": 0, "policies": [P1]}, leaf={"policies": [P1]})
        self.assertEqual(run(path), {P1})

    def test_mapping_reports_the_anchor_domain(self) -> None:
        """A mapped policy is reported as the policy it stands for at the trust anchor."""
        path = chain({"policies": [P1], "mappings": [(P1, P2)]}, {"policies": [P2]},
                     leaf={"policies": [P2]})
        self.assertEqual(run(path), {P1})
        self.assertEqual(run(path, P1, explicit=True), {P1})
        self.assertRefused(run(path, P2, explicit=True), 0)
        self.assertRefused(run(path, explicit=True, inhibit_mapping=True), 1)

    def test_inhibit_policy_mapping_in_a_ca(self) -> None:
        path = chain({"policies": [P1], "inhibit_mapping": 0, "require_explicit": 0},
                     {"policies": [P1], "mappings": [(P1, P2)]}, leaf={"policies": [P2]})
        self.assertRefused(run(path), 0)  # the mapped node is deleted; the leaf finds none

    def test_mapping_any_policy_is_invalid(self) -> None:
        for pair in ((ANY_POLICY, P1), (P1, ANY_POLICY)):
            path = chain({"policies": [ANY_POLICY], "mappings": [pair]}, leaf={"policies": [P1]})
            self.assertRefused(run(path), 1, invalid=True)

    def test_inhibit_any_policy(self) -> None:
        path = chain({"policies": [ANY_POLICY], "inhibit_any": 0, "require_explicit": 0},
                     leaf={"policies": [ANY_POLICY]})
        self.assertRefused(run(path), 0)
        loose = chain({"policies": [ANY_POLICY]}, leaf={"policies": [ANY_POLICY]})
        self.assertEqual(run(loose), {ANY_POLICY})
        self.assertRefused(run(loose, explicit=True, inhibit_any=True), 1)

    def test_pinned_leaf_is_its_own_anchor(self) -> None:
        self.assertEqual(run([], P1), {P1})
        self.assertEqual(run([]), {ANY_POLICY})

    @PROPERTY
    @given(st.lists(st.one_of(st.none(), st.sets(st.sampled_from([P1, P2, ANY_POLICY]))),
                    min_size=1, max_size=4),
           st.sets(st.sampled_from([P1, P2, P3])), st.booleans(), st.booleans())
    def test_properties(self, specs: list[set[str] | None], initial: set[str], explicit: bool,
                        inhibit_any: bool) -> None:
        """Whatever the policies: an answer, never more than the initial set, non-empty when
        explicit, and no refusal without explicit policy (no constraints, no mappings)."""
        path = chain(*({"policies": s} for s in specs[:-1]), leaf={"policies": specs[-1]})
        outcome = run(path, *initial, explicit=explicit, inhibit_any=inhibit_any)
        if isinstance(outcome, PolicyRefusal):
            self.assertTrue(explicit)
            self.assertFalse(outcome.invalid)
            return
        if initial:
            self.assertLessEqual(outcome, initial)
        if explicit:
            self.assertTrue(outcome)


def _der(pairs: list[tuple[str, str]]) -> bytes:
    extension = policy_extensions(mappings=pairs)[0][0]
    assert isinstance(extension, x509.UnrecognizedExtension)
    return extension.value


_OIDS = st.builds(lambda first, second, rest: ".".join(map(str, (first, second, *rest))),
                  st.integers(0, 2), st.integers(0, 39),
                  st.lists(st.integers(0, 2**64), max_size=6))


class PKITSTests(SynchronousTestCase):
    """Every NIST PKITS case's path, without TLS: the policy sections' verdicts, and every
    valid path's user-constrained-policy-set (also where certsrv refuses the leaf for
    another reason, a CA certificate as client)."""

    def test_pkits(self) -> None:
        from tests import _pkits

        if _pkits.data_dir() is None:
            raise SkipTest("cryptography-vectors (the PKITS data) is not installed")
        checked = 0
        for case in _pkits.CASES:
            deviation = _pkits.DEVIATIONS.get(case.ident)
            if deviation is not None and deviation.outcome == _pkits.UNREADABLE:
                continue  # 4.1.5: cryptography cannot load its DSA certificate
            path = [_pkits.certificate(name) for name in case.path]
            outcome = valid_policies(path, PolicySettings(
                frozenset(case.initial), case.explicit, case.inhibit_mapping, case.inhibit_any))
            if case.valid:
                self.assertEqual(outcome, frozenset(case.policies), case.ident)
            elif case.section in ("4.8", "4.9", "4.10", "4.11", "4.12"):
                self.assertIsInstance(outcome, PolicyRefusal, case.ident)
            checked += 1
        self.assertEqual(checked, 248)


class PolicyMappingsTests(SynchronousTestCase):
    """policyMappings, which cryptography leaves undecoded, decoded from DER."""

    def test_from_a_certificate(self) -> None:
        path = chain({"policies": [P1], "mappings": [(P1, P2), (P1, P3)]})
        self.assertEqual(policy_mappings(path[0]), [(P1, P2), (P1, P3)])
        self.assertEqual(policy_mappings(path[1]), [])

    @PROPERTY
    @given(st.lists(st.tuples(_OIDS, _OIDS), min_size=1, max_size=5))
    def test_round_trip(self, pairs: list[tuple[str, str]]) -> None:
        self.assertEqual(parse_policy_mappings(_der(pairs)), pairs)

    @settings(max_examples=300, deadline=None, database=None, derandomize=True)
    @given(st.binary(max_size=40))
    def test_garbage_is_a_value_error(self, data: bytes) -> None:
        """Outside input: anything but a decoded list is a ValueError, nothing else."""
        try:
            pairs = parse_policy_mappings(data)
        except ValueError:
            return
        self.assertEqual(_der(pairs), data)

    @settings(max_examples=500, deadline=None, database=None, derandomize=True)
    @given(st.lists(st.tuples(_OIDS, _OIDS), min_size=1, max_size=3),
           st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10_000), st.integers(0, 255)),
                    min_size=1, max_size=3))
    def test_mutated_encodings(self, pairs: list[tuple[str, str]],
                               edits: list[tuple[int, int, int]]) -> None:
        """Near-valid DER (bytes changed, added, removed): accepted only as the one DER
        encoding of what it decodes to (no BER lengths, padded arcs or trailing bytes)."""
        data = bytearray(_der(pairs))
        for kind, where, value in edits:
            at = where % (len(data) + 1)
            if kind == 0 and at < len(data):
                data[at] = value
            elif kind == 1:
                data.insert(at, value)
            elif at < len(data):
                del data[at]
        try:
            decoded = parse_policy_mappings(bytes(data))
        except ValueError:
            return
        self.assertEqual(_der(decoded), bytes(data))

    def test_malformed(self) -> None:
        good = _der([(P1, P2)])
        for data in (b"", good + b"\0", b"\x30\x00", good[:-1], b"\x31" + good[1:],
                     b"\x30\x81\x05" + good[2:], b"\x30\x03\x30\x01\x06"):
            self.assertRaises(ValueError, parse_policy_mappings, data)

    def test_unreadable_extension_refuses(self) -> None:
        """A certificate whose policyMappings does not decode fails policy processing."""
        bad = x509.UnrecognizedExtension(x509.ObjectIdentifier("2.5.29.33"), b"\x30\x01\x00")
        ca = CertificateFactory.create().intermediate("bad", extensions=[(bad, True)])
        outcome = run([ca.certificate, ca.client("leaf").certificate])
        self.assertIsInstance(outcome, PolicyRefusal)
        assert isinstance(outcome, PolicyRefusal)
        self.assertTrue(outcome.invalid)


class CheckOIDTests(SynchronousTestCase):
    """Dotted OIDs as options and matchers take them."""

    def test_valid(self) -> None:
        self.assertEqual(check_oid(" 2.16.840.1.101.3.2.1.48.1 "), "2.16.840.1.101.3.2.1.48.1")
        self.assertEqual(check_oid("1.03"), "1.3")

    def test_invalid(self) -> None:
        for text in ("", "1", "anyPolicy", "1..2", "3.1", "1.40", "1.2.x", "1.٣", "-1.2"):
            self.assertRaises(ValueError, check_oid, text)
