"""The NIST PKITS path validation suite, each case a real mutual-TLS handshake in memory.

Per case (tests._pkits.CASES): a server trusting only the PKITS trust anchor, with the
path's CAs as --intermediates, every CRL of the case with --crl-check chain, and the case's
policy options; the end entity presents its certificate and key. The verdict must be the
expected one, a valid path's valid policies PKITS's user-constrained-policy-set, and a
deliberate deviation exactly the documented refusal. ``python -m tests._pkits`` prints the
per-section table.
"""

from __future__ import annotations

import tempfile
from functools import cache

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from certsrv.exceptions import Reason
from tests._pkits import (
    ACCEPTED,
    CASES,
    DEVIATIONS,
    Case,
    Outcome,
    Servers,
    data_dir,
    outcome,
    summary,
)

_POLICY_REFUSALS = (Reason.NO_ACCEPTABLE_POLICY.value, Reason.INVALID_POLICY.value)


@cache
def _servers() -> Servers:
    directory = tempfile.TemporaryDirectory(prefix="certsrv-pkits-")
    servers = Servers(directory.name)
    servers.keep = directory  # type: ignore[attr-defined]  # removed at exit
    return servers


class PKITSTests(SynchronousTestCase):
    """One test per PKITS case (test_4_8_1_2 is 4.8.1 subpart 2)."""

    def setUp(self) -> None:
        if data_dir() is None:
            raise SkipTest("cryptography-vectors (the PKITS data) is not installed")

    def check(self, case: Case) -> None:
        """Run ``case`` and compare with the table."""
        result = outcome(_servers(), case)
        deviation = DEVIATIONS.get(case.ident)
        if deviation is not None:
            self.assertEqual(result.verdict, deviation.outcome, f"{case.ident}: {result}")
            return
        self.assertEqual(result.accepted, case.valid, f"{case.ident} {case.name}: {result}")
        if result.accepted:
            self.assertEqual(result.policies, tuple(sorted(case.policies)))
        elif result.verdict in _POLICY_REFUSALS:
            self.assertEqual(result.alert, "certificate unknown")


def _test(case: Case) -> object:
    def test(self: PKITSTests) -> None:
        self.check(case)

    expected = "valid" if case.valid else "invalid"
    test.__doc__ = f"PKITS {case.ident} {case.name}: {expected}."
    return test


for _case in CASES:
    setattr(PKITSTests, "test_" + _case.ident.replace(".", "_"), _test(_case))


class TableTests(SynchronousTestCase):
    """The PKITS table itself."""

    def test_counts(self) -> None:
        """249 cases, 214 with the default settings; 16 sections."""
        self.assertEqual(len(CASES), 249)
        self.assertEqual(sum(c.default_settings for c in CASES), 214)
        self.assertEqual(len({c.section for c in CASES}), 16)
        self.assertEqual(len({c.ident for c in CASES}), 249)

    def test_exceptions_name_cases(self) -> None:
        """Every deviation is a case of the table."""
        self.assertLessEqual(set(DEVIATIONS), {c.ident for c in CASES})

    def test_policy_options(self) -> None:
        """A case's initial settings become certsrv's policy options."""
        case = next(c for c in CASES if c.ident == "4.8.1.4")
        self.assertEqual(case.options(), [
            "--policy-oid", "2.16.840.1.101.3.2.1.48.1",
            "--policy-oid", "2.16.840.1.101.3.2.1.48.2", "--require-explicit-policy"])
        self.assertEqual(CASES[0].options(), [])

    def test_summary(self) -> None:
        """The summary counts matches, deviations and other misses per section."""
        first, deviation = CASES[0], next(c for c in CASES if c.ident == "4.6.8")
        table = summary({first: Outcome(ACCEPTED), deviation: Outcome("ca_as_client")})
        lines = table.splitlines()
        self.assertEqual(lines[0].split(), ["section", "cases", "default", "valid", "invalid",
                                            "match", "deviation", "other"])
        self.assertEqual(lines[1].split(), ["4.1", "1", "1", "1", "0", "1", "0", "0"])
        self.assertEqual(lines[2].split(), ["4.6", "1", "1", "1", "0", "0", "1", "0"])
        self.assertEqual(lines[-3].split()[0], "total")
        self.assertEqual(lines[-2:], ["default settings: 1 of 2 as expected",
                                      "other settings: 0 of 0 as expected"])
