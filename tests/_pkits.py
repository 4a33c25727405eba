"""The NIST PKITS suite as data, and a certsrv server in memory per case.

The test data ships in ``cryptography-vectors`` (``x509/PKITS_data``: DER certificates and
CRLs, PKCS#12 end-entity keys with password ``password``). ``CASES`` is every PKITS test
(PKITS.pdf §4; the cases needing other initial settings as subparts): the path below the
trust anchor (leaf last), the CRLs, the RFC 5280 §6.1.1 inputs, the expected verdict and,
for a valid path, its user-constrained-policy-set. ``DEVIATIONS`` are the cases where
certsrv refuses on purpose, with the refusal it gives and why. Only test modules import it.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs12
from twisted.internet.task import Clock
from twisted.python.usage import UsageError

from certsrv.exceptions import ConfigurationError, Reason
from certsrv.pki import IssuedCertificate, write_private_key
from certsrv.server.options import Options, makeService
from certsrv.testing import CertificateFactory, MemoryServer
from certsrv.tls.context import TLSFactory
from tests._support import captured_events

ANY = "2.5.29.32.0"
P1, P2, P3, P4, P5, P6, P7, P8 = (f"2.16.840.1.101.3.2.1.48.{i}" for i in range(1, 9))
ANCHOR = "TrustAnchorRootCertificate"
# Inside every PKITS certificate's and CRL's validity (2010-01-01 to 2030-12-31).
WHEN = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def data_dir() -> str | None:
    """Where the PKITS data is, or None without cryptography-vectors."""
    try:
        import cryptography_vectors
    except ImportError:
        return None
    return os.path.join(os.path.dirname(cryptography_vectors.__file__), "x509", "PKITS_data")


@dataclass(frozen=True)
class Case:
    """One PKITS test: its path and CRLs, the policy inputs, and what should happen."""

    number: str
    name: str
    valid: bool
    path: tuple[str, ...]
    crls: tuple[str, ...]
    subpart: int | None = None
    initial: tuple[str, ...] = (ANY,)
    explicit: bool = False
    inhibit_mapping: bool = False
    inhibit_any: bool = False
    policies: tuple[str, ...] = (P1,)  # the user-constrained-policy-set of a valid path

    @property
    def ident(self) -> str:
        """The number, with the subpart: ``4.8.1.2``."""
        return self.number if self.subpart is None else f"{self.number}.{self.subpart}"

    @property
    def section(self) -> str:
        """``4.8``."""
        return ".".join(self.number.split(".")[:2])

    @property
    def default_settings(self) -> bool:
        """Whether the case runs with PKITS's default initial settings."""
        return (self.initial == (ANY,) and not self.explicit and not self.inhibit_mapping
                and not self.inhibit_any)

    def options(self) -> list[str]:
        """certsrv's policy options for the case's initial settings."""
        argv = [] if self.initial == (ANY,) else [
            a for oid in self.initial for a in ("--policy-oid", oid)]
        flags = (("--require-explicit-policy", self.explicit),
                 ("--inhibit-policy-mapping", self.inhibit_mapping),
                 ("--inhibit-any-policy", self.inhibit_any))
        return argv + [flag for flag, on in flags if on]


_C = Case


@dataclass(frozen=True)
class Deviation:
    """A case certsrv answers otherwise on purpose: how (a Reason or a problem) and why."""

    outcome: str
    why: str


_CA = ("certsrv never accepts a CA certificate (basicConstraints CA=true) as a client "
       "certificate")
_DSA = "DSA keys and DSA-signed CRLs are obsolete and unsupported by cryptography"
DEVIATIONS: dict[str, Deviation] = {
    "4.1.4": Deviation("startup refused", _DSA),
    "4.1.5": Deviation("EE certificate unreadable", _DSA),
    "4.1.6": Deviation("startup refused", _DSA),
    "4.6.8": Deviation(Reason.CA_AS_CLIENT.value, _CA),
    "4.6.14": Deviation(Reason.CA_AS_CLIENT.value, _CA),
    "4.8.6.1": Deviation(Reason.CA_AS_CLIENT.value, _CA),
    "4.8.6.2": Deviation(Reason.CA_AS_CLIENT.value, _CA),
    "4.14.13": Deviation(Reason.CA_AS_CLIENT.value, _CA),
}

CASES: tuple[Case, ...] = (
    # 4.1
    _C("4.1.1", "Valid Signatures Test1", True, ("GoodCACert", "ValidCertificatePathTest1EE"),
       ("TrustAnchorRootCRL", "GoodCACRL")),
    _C("4.1.2", "Invalid CA Signature Test2", False,
       ("BadSignedCACert", "InvalidCASignatureTest2EE"), ("TrustAnchorRootCRL", "BadSignedCACRL")),
    _C("4.1.3", "Invalid EE Signature Test3", False, ("GoodCACert", "InvalidEESignatureTest3EE"),
       ("TrustAnchorRootCRL", "GoodCACRL")),
    _C("4.1.4", "Valid DSA Signatures Test4", True, ("DSACACert", "ValidDSASignaturesTest4EE"),
       ("TrustAnchorRootCRL", "DSACACRL")),
    _C("4.1.5", "Valid DSA Parameter Inheritance Test5", True, ("DSACACert",
       "DSAParametersInheritedCACert", "ValidDSAParameterInheritanceTest5EE"),
       ("TrustAnchorRootCRL", "DSACACRL", "DSAParametersInheritedCACRL")),
    _C("4.1.6", "Invalid DSA Signature Test6", False, ("DSACACert", "InvalidDSASignatureTest6EE"),
       ("TrustAnchorRootCRL", "DSACACRL")),
    # 4.2
    _C("4.2.1", "Invalid CA notBefore Date Test1", False,
       ("BadnotBeforeDateCACert", "InvalidCAnotBeforeDateTest1EE"),
       ("TrustAnchorRootCRL", "BadnotBeforeDateCACRL")),
    _C("4.2.2", "Invalid EE notBefore Date Test2", False,
       ("GoodCACert", "InvalidEEnotBeforeDateTest2EE"), ("TrustAnchorRootCRL", "GoodCACRL")),
    _C("4.2.3", "Valid pre2000 UTC notBefore Date Test3", True,
       ("GoodCACert", "Validpre2000UTCnotBeforeDateTest3EE"), ("TrustAnchorRootCRL", "GoodCACRL")),
    _C("4.2.4", "Valid GeneralizedTime notBefore Date Test4", True,
       ("GoodCACert", "ValidGeneralizedTimenotBeforeDateTest4EE"),
       ("TrustAnchorRootCRL", "GoodCACRL")),
    _C("4.2.5", "Invalid CA notAfter Date Test5", False,
       ("BadnotAfterDateCACert", "InvalidCAnotAfterDateTest5EE"),
       ("TrustAnchorRootCRL", "BadnotAfterDateCACRL")),
    _C("4.2.6", "Invalid EE notAfter Date Test6", False,
       ("GoodCACert", "InvalidEEnotAfterDateTest6EE"), ("TrustAnchorRootCRL", "GoodCACRL")),
    _C("4.2.7", "Invalid pre2000 UTC EE notAfter Date Test7", False,
       ("GoodCACert", "Invalidpre2000UTCEEnotAfterDateTest7EE"),
       ("TrustAnchorRootCRL", "GoodCACRL")),
    _C("4.2.8", "Valid GeneralizedTime notAfter Date Test8", True,
       ("GoodCACert", "ValidGeneralizedTimenotAfterDateTest8EE"),
       ("TrustAnchorRootCRL", "GoodCACRL")),
    # 4.3
    _C("4.3.1", "Invalid Name Chaining EE Test1", False,
       ("GoodCACert", "InvalidNameChainingTest1EE"), ("TrustAnchorRootCRL", "GoodCACRL")),
    _C("4.3.2", "Invalid Name Chaining Order Test2", False,
       ("NameOrderingCACert", "InvalidNameChainingOrderTest2EE"),
       ("TrustAnchorRootCRL", "NameOrderCACRL")),
    _C("4.3.3", "Valid Name Chaining Whitespace Test3", True,
       ("GoodCACert", "ValidNameChainingWhitespaceTest3EE"), ("TrustAnchorRootCRL", "GoodCACRL")),
    _C("4.3.4", "Valid Name Chaining Whitespace Test4", True,
       ("GoodCACert", "ValidNameChainingWhitespaceTest4EE"), ("TrustAnchorRootCRL", "GoodCACRL")),
    _C("4.3.5", "Valid Name Chaining Capitalization Test5", True,
       ("GoodCACert", "ValidNameChainingCapitalizationTest5EE"),
       ("TrustAnchorRootCRL", "GoodCACRL")),
    _C("4.3.6", "Valid Name Chaining UIDs Test6", True, ("UIDCACert", "ValidNameUIDsTest6EE"),
       ("TrustAnchorRootCRL", "UIDCACRL")),
    _C("4.3.7", "Valid RFC3280 Mandatory Attribute Types Test7", True,
       ("RFC3280MandatoryAttributeTypesCACert", "ValidRFC3280MandatoryAttributeTypesTest7EE"),
       ("TrustAnchorRootCRL", "RFC3280MandatoryAttributeTypesCACRL")),
    _C("4.3.8", "Valid RFC3280 Optional Attribute Types Test8", True,
       ("RFC3280OptionalAttributeTypesCACert", "ValidRFC3280OptionalAttributeTypesTest8EE"),
       ("TrustAnchorRootCRL", "RFC3280OptionalAttributeTypesCACRL")),
    _C("4.3.9", "Valid UTF8String Encoded Names Test9", True, ("UTF8StringEncodedNamesCACert",
       "ValidUTF8StringEncodedNamesTest9EE"),
       ("TrustAnchorRootCRL", "UTF8StringEncodedNamesCACRL")),
    _C("4.3.10", "Valid Rollover from PrintableString to UTF8String Test10", True,
       ("RolloverfromPrintableStringtoUTF8StringCACert",
       "ValidRolloverfromPrintableStringtoUTF8StringTest10EE"), ("TrustAnchorRootCRL",
       "RolloverfromPrintableStringtoUTF8StringCACRL")),
    _C("4.3.11", "Valid UTF8String Case Insensitive Match Test11", True,
       ("UTF8StringCaseInsensitiveMatchCACert", "ValidUTF8StringCaseInsensitiveMatchTest11EE"),
       ("TrustAnchorRootCRL", "UTF8StringCaseInsensitiveMatchCACRL")),
    # 4.4
    _C("4.4.1", "Missing CRL Test1", False, ("NoCRLCACert", "InvalidMissingCRLTest1EE"),
       ("TrustAnchorRootCRL",)),
    _C("4.4.2", "Invalid Revoked CA Test2", False, ("GoodCACert", "RevokedsubCACert",
       "InvalidRevokedCATest2EE"), ("TrustAnchorRootCRL", "GoodCACRL", "RevokedsubCACRL")),
    _C("4.4.3", "Invalid Revoked EE Test3", False, ("GoodCACert", "InvalidRevokedEETest3EE"),
       ("TrustAnchorRootCRL", "GoodCACRL")),
    _C("4.4.4", "Invalid Bad CRL Signature Test4", False,
       ("BadCRLSignatureCACert", "InvalidBadCRLSignatureTest4EE"),
       ("TrustAnchorRootCRL", "BadCRLSignatureCACRL")),
    _C("4.4.5", "Invalid Bad CRL Issuer Name Test5", False,
       ("BadCRLIssuerNameCACert", "InvalidBadCRLIssuerNameTest5EE"),
       ("TrustAnchorRootCRL", "BadCRLIssuerNameCACRL")),
    _C("4.4.6", "Invalid Wrong CRL Test6", False, ("WrongCRLCACert", "InvalidWrongCRLTest6EE"),
       ("TrustAnchorRootCRL", "WrongCRLCACRL")),
    _C("4.4.7", "Valid Two CRLs Test7", True, ("TwoCRLsCACert", "ValidTwoCRLsTest7EE"),
       ("TrustAnchorRootCRL", "TwoCRLsCAGoodCRL", "TwoCRLsCABadCRL")),
    _C("4.4.8", "Invalid Unknown CRL Entry Extension Test8", False,
       ("UnknownCRLEntryExtensionCACert", "InvalidUnknownCRLEntryExtensionTest8EE"),
       ("TrustAnchorRootCRL", "UnknownCRLEntryExtensionCACRL")),
    _C("4.4.9", "Invalid Unknown CRL Extension Test9", False, ("UnknownCRLExtensionCACert",
       "InvalidUnknownCRLExtensionTest9EE"), ("TrustAnchorRootCRL", "UnknownCRLExtensionCACRL")),
    _C("4.4.10", "Invalid Unknown CRL Extension Test10", False, ("UnknownCRLExtensionCACert",
       "InvalidUnknownCRLExtensionTest10EE"), ("TrustAnchorRootCRL", "UnknownCRLExtensionCACRL")),
    _C("4.4.11", "Invalid Old CRL nextUpdate Test11", False, ("OldCRLnextUpdateCACert",
       "InvalidOldCRLnextUpdateTest11EE"), ("TrustAnchorRootCRL", "OldCRLnextUpdateCACRL")),
    _C("4.4.12", "Invalid pre2000 CRL nextUpdate Test12", False, ("pre2000CRLnextUpdateCACert",
       "Invalidpre2000CRLnextUpdateTest12EE"), ("TrustAnchorRootCRL", "pre2000CRLnextUpdateCACRL")),
    _C("4.4.13", "Valid GeneralizedTime CRL nextUpdate Test13", True,
       ("GeneralizedTimeCRLnextUpdateCACert", "ValidGeneralizedTimeCRLnextUpdateTest13EE"),
       ("TrustAnchorRootCRL", "GeneralizedTimeCRLnextUpdateCACRL")),
    _C("4.4.14", "Valid Negative Serial Number Test14", True, ("NegativeSerialNumberCACert",
       "ValidNegativeSerialNumberTest14EE"), ("TrustAnchorRootCRL", "NegativeSerialNumberCACRL")),
    _C("4.4.15", "Invalid Negative Serial Number Test15", False, ("NegativeSerialNumberCACert",
       "InvalidNegativeSerialNumberTest15EE"), ("TrustAnchorRootCRL", "NegativeSerialNumberCACRL")),
    _C("4.4.16", "Valid Long Serial Number Test16", True,
       ("LongSerialNumberCACert", "ValidLongSerialNumberTest16EE"),
       ("TrustAnchorRootCRL", "LongSerialNumberCACRL")),
    _C("4.4.17", "Valid Long Serial Number Test17", True,
       ("LongSerialNumberCACert", "ValidLongSerialNumberTest17EE"),
       ("TrustAnchorRootCRL", "LongSerialNumberCACRL")),
    _C("4.4.18", "Invalid Long Serial Number Test18", False, ("LongSerialNumberCACert",
       "InvalidLongSerialNumberTest18EE"), ("TrustAnchorRootCRL", "LongSerialNumberCACRL")),
    _C("4.4.19", "Valid Separate Certificate and CRL Keys Test19", True,
       ("SeparateCertificateandCRLKeysCertificateSigningCACert",
       "SeparateCertificateandCRLKeysCRLSigningCert",
       "ValidSeparateCertificateandCRLKeysTest19EE"),
       ("TrustAnchorRootCRL", "SeparateCertificateandCRLKeysCRL")),
    _C("4.4.20", "Invalid Separate Certificate and CRL Keys Test20", False,
       ("SeparateCertificateandCRLKeysCertificateSigningCACert",
       "SeparateCertificateandCRLKeysCRLSigningCert",
       "InvalidSeparateCertificateandCRLKeysTest20EE"),
       ("TrustAnchorRootCRL", "SeparateCertificateandCRLKeysCRL")),
    _C("4.4.21", "Invalid Separate Certificate and CRL Keys Test21", False,
       ("SeparateCertificateandCRLKeysCA2CertificateSigningCACert",
       "SeparateCertificateandCRLKeysCA2CRLSigningCert",
       "InvalidSeparateCertificateandCRLKeysTest21EE"), ("TrustAnchorRootCRL",
       "SeparateCertificateandCRLKeysCA2CRL")),
    # 4.5
    _C("4.5.1", "Valid Basic Self-Issued Old With New Test1", True,
       ("BasicSelfIssuedNewKeyCACert", "BasicSelfIssuedNewKeyOldWithNewCACert",
       "ValidBasicSelfIssuedOldWithNewTest1EE"),
       ("TrustAnchorRootCRL", "BasicSelfIssuedNewKeyCACRL")),
    _C("4.5.2", "Invalid Basic Self-Issued Old With New Test2", False,
       ("BasicSelfIssuedNewKeyCACert", "BasicSelfIssuedNewKeyOldWithNewCACert",
       "InvalidBasicSelfIssuedOldWithNewTest2EE"),
       ("TrustAnchorRootCRL", "BasicSelfIssuedNewKeyCACRL")),
    _C("4.5.3", "Valid Basic Self-Issued New With Old Test3", True,
       ("BasicSelfIssuedOldKeyCACert", "BasicSelfIssuedOldKeyNewWithOldCACert",
       "ValidBasicSelfIssuedNewWithOldTest3EE"), ("TrustAnchorRootCRL",
       "BasicSelfIssuedOldKeySelfIssuedCertCRL", "BasicSelfIssuedOldKeyCACRL")),
    _C("4.5.4", "Valid Basic Self-Issued New With Old Test4", True,
       ("BasicSelfIssuedOldKeyCACert", "BasicSelfIssuedOldKeyNewWithOldCACert",
       "ValidBasicSelfIssuedNewWithOldTest4EE"), ("TrustAnchorRootCRL",
       "BasicSelfIssuedOldKeySelfIssuedCertCRL", "BasicSelfIssuedOldKeyCACRL")),
    _C("4.5.5", "Invalid Basic Self-Issued New With Old Test5", False,
       ("BasicSelfIssuedOldKeyCACert", "BasicSelfIssuedOldKeyNewWithOldCACert",
       "InvalidBasicSelfIssuedNewWithOldTest5EE"), ("TrustAnchorRootCRL",
       "BasicSelfIssuedOldKeySelfIssuedCertCRL", "BasicSelfIssuedOldKeyCACRL")),
    _C("4.5.6", "Valid Basic Self-Issued CRL Signing Key Test6", True,
       ("BasicSelfIssuedCRLSigningKeyCACert", "BasicSelfIssuedCRLSigningKeyCRLCert",
       "ValidBasicSelfIssuedCRLSigningKeyTest6EE"), ("TrustAnchorRootCRL",
       "BasicSelfIssuedCRLSigningKeyCRLCertCRL", "BasicSelfIssuedCRLSigningKeyCACRL")),
    _C("4.5.7", "Invalid Basic Self-Issued CRL Signing Key Test7", False,
       ("BasicSelfIssuedCRLSigningKeyCACert", "BasicSelfIssuedCRLSigningKeyCRLCert",
       "InvalidBasicSelfIssuedCRLSigningKeyTest7EE"), ("TrustAnchorRootCRL",
       "BasicSelfIssuedCRLSigningKeyCRLCertCRL", "BasicSelfIssuedCRLSigningKeyCACRL")),
    _C("4.5.8", "Invalid Basic Self-Issued CRL Signing Key Test8", False,
       ("BasicSelfIssuedCRLSigningKeyCACert", "BasicSelfIssuedCRLSigningKeyCRLCert",
       "InvalidBasicSelfIssuedCRLSigningKeyTest8EE"), ("TrustAnchorRootCRL",
       "BasicSelfIssuedCRLSigningKeyCRLCertCRL", "BasicSelfIssuedCRLSigningKeyCACRL")),
    # 4.6
    _C("4.6.1", "Invalid Missing basicConstraints Test1", False, ("MissingbasicConstraintsCACert",
       "InvalidMissingbasicConstraintsTest1EE"),
       ("TrustAnchorRootCRL", "MissingbasicConstraintsCACRL")),
    _C("4.6.2", "Invalid cA False Test2", False, ("basicConstraintsCriticalcAFalseCACert",
       "InvalidcAFalseTest2EE"), ("TrustAnchorRootCRL", "basicConstraintsCriticalcAFalseCACRL")),
    _C("4.6.3", "Invalid cA False Test3", False, ("basicConstraintsNotCriticalcAFalseCACert",
       "InvalidcAFalseTest3EE"), ("TrustAnchorRootCRL", "basicConstraintsNotCriticalcAFalseCACRL")),
    _C("4.6.4", "Valid basicConstraints Not Critical Test4", True,
       ("basicConstraintsNotCriticalCACert", "ValidbasicConstraintsNotCriticalTest4EE"),
       ("TrustAnchorRootCRL", "basicConstraintsNotCriticalCACRL")),
    _C("4.6.5", "Invalid pathLenConstraint Test5", False, ("pathLenConstraint0CACert",
       "pathLenConstraint0subCACert", "InvalidpathLenConstraintTest5EE"), ("TrustAnchorRootCRL",
       "pathLenConstraint0CACRL", "pathLenConstraint0subCACRL")),
    _C("4.6.6", "Invalid pathLenConstraint Test6", False, ("pathLenConstraint0CACert",
       "pathLenConstraint0subCACert", "InvalidpathLenConstraintTest6EE"), ("TrustAnchorRootCRL",
       "pathLenConstraint0CACRL", "pathLenConstraint0subCACRL")),
    _C("4.6.7", "Valid pathLenConstraint Test7", True, ("pathLenConstraint0CACert",
       "ValidpathLenConstraintTest7EE"), ("TrustAnchorRootCRL", "pathLenConstraint0CACRL")),
    _C("4.6.8", "Valid pathLenConstraint Test8", True, ("pathLenConstraint0CACert",
       "ValidpathLenConstraintTest8EE"), ("TrustAnchorRootCRL", "pathLenConstraint0CACRL")),
    _C("4.6.9", "Invalid pathLenConstraint Test9", False, ("pathLenConstraint6CACert",
       "pathLenConstraint6subCA0Cert", "pathLenConstraint6subsubCA00Cert",
       "InvalidpathLenConstraintTest9EE"), ("TrustAnchorRootCRL", "pathLenConstraint6CACRL",
       "pathLenConstraint6subCA0CRL", "pathLenConstraint6subsubCA00CRL")),
    _C("4.6.10", "Invalid pathLenConstraint Test10", False, ("pathLenConstraint6CACert",
       "pathLenConstraint6subCA0Cert", "pathLenConstraint6subsubCA00Cert",
       "InvalidpathLenConstraintTest10EE"), ("TrustAnchorRootCRL", "pathLenConstraint6CACRL",
       "pathLenConstraint6subCA0CRL", "pathLenConstraint6subsubCA00CRL")),
    _C("4.6.11", "Invalid pathLenConstraint Test11", False, ("pathLenConstraint6CACert",
       "pathLenConstraint6subCA1Cert", "pathLenConstraint6subsubCA11Cert",
       "pathLenConstraint6subsubsubCA11XCert", "InvalidpathLenConstraintTest11EE"),
       ("TrustAnchorRootCRL", "pathLenConstraint6CACRL", "pathLenConstraint6subCA1CRL",
       "pathLenConstraint6subsubCA11CRL", "pathLenConstraint6subsubsubCA11XCRL")),
    _C("4.6.12", "Invalid pathLenConstraint Test12", False, ("pathLenConstraint6CACert",
       "pathLenConstraint6subCA1Cert", "pathLenConstraint6subsubCA11Cert",
       "pathLenConstraint6subsubsubCA11XCert", "InvalidpathLenConstraintTest12EE"),
       ("TrustAnchorRootCRL", "pathLenConstraint6CACRL", "pathLenConstraint6subCA1CRL",
       "pathLenConstraint6subsubCA11CRL", "pathLenConstraint6subsubsubCA11XCRL")),
    _C("4.6.13", "Valid pathLenConstraint Test13", True, ("pathLenConstraint6CACert",
       "pathLenConstraint6subCA4Cert", "pathLenConstraint6subsubCA41Cert",
       "pathLenConstraint6subsubsubCA41XCert", "ValidpathLenConstraintTest13EE"),
       ("TrustAnchorRootCRL", "pathLenConstraint6CACRL", "pathLenConstraint6subCA4CRL",
       "pathLenConstraint6subsubCA41CRL", "pathLenConstraint6subsubsubCA41XCRL")),
    _C("4.6.14", "Valid pathLenConstraint Test14", True, ("pathLenConstraint6CACert",
       "pathLenConstraint6subCA4Cert", "pathLenConstraint6subsubCA41Cert",
       "pathLenConstraint6subsubsubCA41XCert", "ValidpathLenConstraintTest14EE"),
       ("TrustAnchorRootCRL", "pathLenConstraint6CACRL", "pathLenConstraint6subCA4CRL",
       "pathLenConstraint6subsubCA41CRL", "pathLenConstraint6subsubsubCA41XCRL")),
    _C("4.6.15", "Valid Self-Issued pathLenConstraint Test15", True, ("pathLenConstraint0CACert",
       "pathLenConstraint0SelfIssuedCACert", "ValidSelfIssuedpathLenConstraintTest15EE"),
       ("TrustAnchorRootCRL", "pathLenConstraint0CACRL")),
    _C("4.6.16", "Invalid Self-Issued pathLenConstraint Test16", False,
       ("pathLenConstraint0CACert", "pathLenConstraint0SelfIssuedCACert",
       "pathLenConstraint0subCA2Cert", "InvalidSelfIssuedpathLenConstraintTest16EE"),
       ("TrustAnchorRootCRL", "pathLenConstraint0CACRL", "pathLenConstraint0subCA2CRL")),
    _C("4.6.17", "Valid Self-Issued pathLenConstraint Test17", True, ("pathLenConstraint1CACert",
       "pathLenConstraint1SelfIssuedCACert", "pathLenConstraint1subCACert",
       "pathLenConstraint1SelfIssuedsubCACert", "ValidSelfIssuedpathLenConstraintTest17EE"),
       ("TrustAnchorRootCRL", "pathLenConstraint1CACRL", "pathLenConstraint1subCACRL")),
    # 4.7
    _C("4.7.1", "Invalid keyUsage Critical keyCertSign False Test1", False,
       ("keyUsageCriticalkeyCertSignFalseCACert",
       "InvalidkeyUsageCriticalkeyCertSignFalseTest1EE"), ("TrustAnchorRootCRL",
       "keyUsageCriticalkeyCertSignFalseCACRL")),
    _C("4.7.2", "Invalid keyUsage Not Critical keyCertSign False Test2", False,
       ("keyUsageNotCriticalkeyCertSignFalseCACert",
       "InvalidkeyUsageNotCriticalkeyCertSignFalseTest2EE"), ("TrustAnchorRootCRL",
       "keyUsageNotCriticalkeyCertSignFalseCACRL")),
    _C("4.7.3", "Valid keyUsage Not Critical Test3", True, ("keyUsageNotCriticalCACert",
       "ValidkeyUsageNotCriticalTest3EE"), ("TrustAnchorRootCRL", "keyUsageNotCriticalCACRL")),
    _C("4.7.4", "Invalid keyUsage Critical cRLSign False Test4", False,
       ("keyUsageCriticalcRLSignFalseCACert", "InvalidkeyUsageCriticalcRLSignFalseTest4EE"),
       ("TrustAnchorRootCRL", "keyUsageCriticalcRLSignFalseCACRL")),
    _C("4.7.5", "Invalid keyUsage Not Critical cRLSign False Test5", False,
       ("keyUsageNotCriticalcRLSignFalseCACert", "InvalidkeyUsageNotCriticalcRLSignFalseTest5EE"),
       ("TrustAnchorRootCRL", "keyUsageNotCriticalcRLSignFalseCACRL")),
    # 4.8
    _C("4.8.1", "All Certificates Same Policy Test1", True,
       ("GoodCACert", "ValidCertificatePathTest1EE"), ("TrustAnchorRootCRL", "GoodCACRL"),
       subpart=1, explicit=True),
    _C("4.8.1", "All Certificates Same Policy Test1", True,
       ("GoodCACert", "ValidCertificatePathTest1EE"), ("TrustAnchorRootCRL", "GoodCACRL"),
       subpart=2, initial=(P1,), explicit=True),
    _C("4.8.1", "All Certificates Same Policy Test1", False,
       ("GoodCACert", "ValidCertificatePathTest1EE"), ("TrustAnchorRootCRL", "GoodCACRL"),
       subpart=3, initial=(P2,), explicit=True, policies=()),
    _C("4.8.1", "All Certificates Same Policy Test1", True,
       ("GoodCACert", "ValidCertificatePathTest1EE"), ("TrustAnchorRootCRL", "GoodCACRL"),
       subpart=4, initial=(P1, P2,), explicit=True),
    _C("4.8.2", "All Certificates No Policies Test2", True,
       ("NoPoliciesCACert", "AllCertificatesNoPoliciesTest2EE"),
       ("TrustAnchorRootCRL", "NoPoliciesCACRL"), subpart=1, policies=()),
    _C("4.8.2", "All Certificates No Policies Test2", False,
       ("NoPoliciesCACert", "AllCertificatesNoPoliciesTest2EE"),
       ("TrustAnchorRootCRL", "NoPoliciesCACRL"), subpart=2, explicit=True, policies=()),
    _C("4.8.3", "Different Policies Test3", True, ("GoodCACert", "PoliciesP2subCACert",
       "DifferentPoliciesTest3EE"), ("TrustAnchorRootCRL", "GoodCACRL", "PoliciesP2subCACRL"),
       subpart=1, policies=()),
    _C("4.8.3", "Different Policies Test3", False, ("GoodCACert", "PoliciesP2subCACert",
       "DifferentPoliciesTest3EE"), ("TrustAnchorRootCRL", "GoodCACRL", "PoliciesP2subCACRL"),
       subpart=2, explicit=True, policies=()),
    _C("4.8.3", "Different Policies Test3", False, ("GoodCACert", "PoliciesP2subCACert",
       "DifferentPoliciesTest3EE"), ("TrustAnchorRootCRL", "GoodCACRL", "PoliciesP2subCACRL"),
       subpart=3, initial=(P1, P2,), explicit=True, policies=()),
    _C("4.8.4", "Different Policies Test4", False,
       ("GoodCACert", "GoodsubCACert", "DifferentPoliciesTest4EE"),
       ("TrustAnchorRootCRL", "GoodCACRL", "GoodsubCACRL"), policies=()),
    _C("4.8.5", "Different Policies Test5", False, ("GoodCACert", "PoliciesP2subCA2Cert",
       "DifferentPoliciesTest5EE"), ("TrustAnchorRootCRL", "GoodCACRL", "PoliciesP2subCA2CRL"),
       policies=()),
    _C("4.8.6", "Overlapping Policies Test6", True, ("PoliciesP1234CACert",
       "PoliciesP1234subCAP123Cert", "PoliciesP1234subsubCAP123P12Cert",
       "OverlappingPoliciesTest6EE"), ("TrustAnchorRootCRL", "PoliciesP1234CACRL",
       "PoliciesP1234subCAP123CRL", "PoliciesP1234subsubCAP123P12CRL"), subpart=1),
    _C("4.8.6", "Overlapping Policies Test6", True, ("PoliciesP1234CACert",
       "PoliciesP1234subCAP123Cert", "PoliciesP1234subsubCAP123P12Cert",
       "OverlappingPoliciesTest6EE"), ("TrustAnchorRootCRL", "PoliciesP1234CACRL",
       "PoliciesP1234subCAP123CRL", "PoliciesP1234subsubCAP123P12CRL"), subpart=2, initial=(P1,)),
    _C("4.8.6", "Overlapping Policies Test6", False, ("PoliciesP1234CACert",
       "PoliciesP1234subCAP123Cert", "PoliciesP1234subsubCAP123P12Cert",
       "OverlappingPoliciesTest6EE"), ("TrustAnchorRootCRL", "PoliciesP1234CACRL",
       "PoliciesP1234subCAP123CRL", "PoliciesP1234subsubCAP123P12CRL"), subpart=3, initial=(P2,),
       policies=()),
    _C("4.8.7", "Different Policies Test7", False, ("PoliciesP123CACert",
       "PoliciesP123subCAP12Cert", "PoliciesP123subsubCAP12P1Cert", "DifferentPoliciesTest7EE"),
       ("TrustAnchorRootCRL", "PoliciesP123CACRL", "PoliciesP123subCAP12CRL",
       "PoliciesP123subsubCAP12P1CRL"), policies=()),
    _C("4.8.8", "Different Policies Test8", False, ("PoliciesP12CACert", "PoliciesP12subCAP1Cert",
       "PoliciesP12subsubCAP1P2Cert", "DifferentPoliciesTest8EE"), ("TrustAnchorRootCRL",
       "PoliciesP12CACRL", "PoliciesP12subCAP1CRL", "PoliciesP12subsubCAP1P2CRL"), policies=()),
    _C("4.8.9", "Different Policies Test9", False, ("PoliciesP123CACert",
       "PoliciesP123subCAP12Cert", "PoliciesP123subsubCAP12P2Cert",
       "PoliciesP123subsubsubCAP12P2P1Cert", "DifferentPoliciesTest9EE"), ("TrustAnchorRootCRL",
       "PoliciesP123CACRL", "PoliciesP123subCAP12CRL", "PoliciesP123subsubCAP2P2CRL",
       "PoliciesP123subsubsubCAP12P2P1CRL"), policies=()),
    _C("4.8.10", "All Certificates Same Policies Test10", True,
       ("PoliciesP12CACert", "AllCertificatesSamePoliciesTest10EE"),
       ("TrustAnchorRootCRL", "PoliciesP12CACRL"), subpart=1, policies=(P1, P2,)),
    _C("4.8.10", "All Certificates Same Policies Test10", True,
       ("PoliciesP12CACert", "AllCertificatesSamePoliciesTest10EE"),
       ("TrustAnchorRootCRL", "PoliciesP12CACRL"), subpart=2, initial=(P1,)),
    _C("4.8.10", "All Certificates Same Policies Test10", True,
       ("PoliciesP12CACert", "AllCertificatesSamePoliciesTest10EE"),
       ("TrustAnchorRootCRL", "PoliciesP12CACRL"), subpart=3, initial=(P2,), policies=(P2,)),
    _C("4.8.11", "All Certificates AnyPolicy Test11", True,
       ("anyPolicyCACert", "AllCertificatesanyPolicyTest11EE"),
       ("TrustAnchorRootCRL", "anyPolicyCACRL"), subpart=1, policies=(ANY,)),
    _C("4.8.11", "All Certificates AnyPolicy Test11", True,
       ("anyPolicyCACert", "AllCertificatesanyPolicyTest11EE"),
       ("TrustAnchorRootCRL", "anyPolicyCACRL"), subpart=2, initial=(P1,)),
    _C("4.8.12", "Different Policies Test12", False,
       ("PoliciesP3CACert", "DifferentPoliciesTest12EE"),
       ("TrustAnchorRootCRL", "PoliciesP3CACRL"), policies=()),
    _C("4.8.13", "All Certificates Same Policies Test13", True, ("PoliciesP123CACert",
       "AllCertificatesSamePoliciesTest13EE"), ("TrustAnchorRootCRL", "PoliciesP123CACRL"),
       subpart=1, initial=(P1,)),
    _C("4.8.13", "All Certificates Same Policies Test13", True, ("PoliciesP123CACert",
       "AllCertificatesSamePoliciesTest13EE"), ("TrustAnchorRootCRL", "PoliciesP123CACRL"),
       subpart=2, initial=(P2,), policies=(P2,)),
    _C("4.8.13", "All Certificates Same Policies Test13", True, ("PoliciesP123CACert",
       "AllCertificatesSamePoliciesTest13EE"), ("TrustAnchorRootCRL", "PoliciesP123CACRL"),
       subpart=3, initial=(P3,), policies=(P3,)),
    _C("4.8.14", "AnyPolicy Test14", True, ("anyPolicyCACert", "AnyPolicyTest14EE"),
       ("TrustAnchorRootCRL", "anyPolicyCACRL"), subpart=1, initial=(P1,)),
    _C("4.8.14", "AnyPolicy Test14", False, ("anyPolicyCACert", "AnyPolicyTest14EE"),
       ("TrustAnchorRootCRL", "anyPolicyCACRL"), subpart=2, initial=(P2,), policies=()),
    _C("4.8.15", "User Notice Qualifier Test15", True, ("UserNoticeQualifierTest15EE",),
       ("TrustAnchorRootCRL",)),
    _C("4.8.16", "User Notice Qualifier Test16", True,
       ("GoodCACert", "UserNoticeQualifierTest16EE"), ("TrustAnchorRootCRL", "GoodCACRL")),
    _C("4.8.17", "User Notice Qualifier Test17", True,
       ("GoodCACert", "UserNoticeQualifierTest17EE"), ("TrustAnchorRootCRL", "GoodCACRL")),
    _C("4.8.18", "User Notice Qualifier Test18", True,
       ("PoliciesP12CACert", "UserNoticeQualifierTest18EE"),
       ("TrustAnchorRootCRL", "PoliciesP12CACRL"), subpart=1, initial=(P1,)),
    _C("4.8.18", "User Notice Qualifier Test18", True,
       ("PoliciesP12CACert", "UserNoticeQualifierTest18EE"),
       ("TrustAnchorRootCRL", "PoliciesP12CACRL"), subpart=2, initial=(P2,), policies=(P2,)),
    _C("4.8.19", "User Notice Qualifier Test19", True, ("UserNoticeQualifierTest19EE",),
       ("TrustAnchorRootCRL",)),
    _C("4.8.20", "CPS Pointer Qualifier Test20", True,
       ("GoodCACert", "CPSPointerQualifierTest20EE"), ("TrustAnchorRootCRL", "GoodCACRL"),
       initial=(P1,), explicit=True),
    # 4.9
    _C("4.9.1", "Valid RequireExplicitPolicy Test1", True, ("requireExplicitPolicy10CACert",
       "requireExplicitPolicy10subCACert", "requireExplicitPolicy10subsubCACert",
       "requireExplicitPolicy10subsubsubCACert", "ValidrequireExplicitPolicyTest1EE"),
       ("TrustAnchorRootCRL", "requireExplicitPolicy10CACRL", "requireExplicitPolicy10subCACRL",
       "requireExplicitPolicy10subsubCACRL", "requireExplicitPolicy10subsubsubCACRL"), policies=()),
    _C("4.9.2", "Valid RequireExplicitPolicy Test2", True, ("requireExplicitPolicy5CACert",
       "requireExplicitPolicy5subCACert", "requireExplicitPolicy5subsubCACert",
       "requireExplicitPolicy5subsubsubCACert", "ValidrequireExplicitPolicyTest2EE"),
       ("TrustAnchorRootCRL", "requireExplicitPolicy5CACRL", "requireExplicitPolicy5subCACRL",
       "requireExplicitPolicy5subsubCACRL", "requireExplicitPolicy5subsubsubCACRL"), policies=()),
    _C("4.9.3", "Invalid RequireExplicitPolicy Test3", False, ("requireExplicitPolicy4CACert",
       "requireExplicitPolicy4subCACert", "requireExplicitPolicy4subsubCACert",
       "requireExplicitPolicy4subsubsubCACert", "InvalidrequireExplicitPolicyTest3EE"),
       ("TrustAnchorRootCRL", "requireExplicitPolicy4CACRL", "requireExplicitPolicy4subCACRL",
       "requireExplicitPolicy4subsubCACRL", "requireExplicitPolicy4subsubsubCACRL"), policies=()),
    _C("4.9.4", "Valid RequireExplicitPolicy Test4", True, ("requireExplicitPolicy0CACert",
       "requireExplicitPolicy0subCACert", "requireExplicitPolicy0subsubCACert",
       "requireExplicitPolicy0subsubsubCACert", "ValidrequireExplicitPolicyTest4EE"),
       ("TrustAnchorRootCRL", "requireExplicitPolicy0CACRL", "requireExplicitPolicy0subCACRL",
       "requireExplicitPolicy0subsubCACRL", "requireExplicitPolicy0subsubsubCACRL")),
    _C("4.9.5", "Invalid RequireExplicitPolicy Test5", False, ("requireExplicitPolicy7CACert",
       "requireExplicitPolicy7subCARE2Cert", "requireExplicitPolicy7subsubCARE2RE4Cert",
       "requireExplicitPolicy7subsubsubCARE2RE4Cert", "InvalidrequireExplicitPolicyTest5EE"),
       ("TrustAnchorRootCRL", "requireExplicitPolicy7CACRL", "requireExplicitPolicy7subCARE2CRL",
       "requireExplicitPolicy7subsubCARE2RE4CRL", "requireExplicitPolicy7subsubsubCARE2RE4CRL"),
       policies=()),
    _C("4.9.6", "Valid Self-Issued requireExplicitPolicy Test6", True,
       ("requireExplicitPolicy2CACert", "requireExplicitPolicy2SelfIssuedCACert",
       "ValidSelfIssuedrequireExplicitPolicyTest6EE"),
       ("TrustAnchorRootCRL", "requireExplicitPolicy2CACRL"), policies=()),
    _C("4.9.7", "Invalid Self-Issued requireExplicitPolicy Test7", False,
       ("requireExplicitPolicy2CACert", "requireExplicitPolicy2SelfIssuedCACert",
       "requireExplicitPolicy2subCACert", "InvalidSelfIssuedrequireExplicitPolicyTest7EE"),
       ("TrustAnchorRootCRL", "requireExplicitPolicy2CACRL", "requireExplicitPolicy2subCACRL"),
       policies=()),
    _C("4.9.8", "Invalid Self-Issued requireExplicitPolicy Test8", False,
       ("requireExplicitPolicy2CACert", "requireExplicitPolicy2SelfIssuedCACert",
       "requireExplicitPolicy2subCACert", "requireExplicitPolicy2SelfIssuedsubCACert",
       "InvalidSelfIssuedrequireExplicitPolicyTest8EE"), ("TrustAnchorRootCRL",
       "requireExplicitPolicy2CACRL", "requireExplicitPolicy2subCACRL"), policies=()),
    # 4.10
    _C("4.10.1", "Valid Policy Mapping Test1", True,
       ("Mapping1to2CACert", "ValidPolicyMappingTest1EE"),
       ("TrustAnchorRootCRL", "Mapping1to2CACRL"), subpart=1, initial=(P1,)),
    _C("4.10.1", "Valid Policy Mapping Test1", False,
       ("Mapping1to2CACert", "ValidPolicyMappingTest1EE"),
       ("TrustAnchorRootCRL", "Mapping1to2CACRL"), subpart=2, initial=(P2,), policies=()),
    _C("4.10.1", "Valid Policy Mapping Test1", False,
       ("Mapping1to2CACert", "ValidPolicyMappingTest1EE"),
       ("TrustAnchorRootCRL", "Mapping1to2CACRL"), subpart=3, inhibit_mapping=True, policies=()),
    _C("4.10.2", "Invalid Policy Mapping Test2", False,
       ("Mapping1to2CACert", "InvalidPolicyMappingTest2EE"),
       ("TrustAnchorRootCRL", "Mapping1to2CACRL"), subpart=1, policies=()),
    _C("4.10.2", "Invalid Policy Mapping Test2", False,
       ("Mapping1to2CACert", "InvalidPolicyMappingTest2EE"),
       ("TrustAnchorRootCRL", "Mapping1to2CACRL"), subpart=2, inhibit_mapping=True, policies=()),
    _C("4.10.3", "Valid Policy Mapping Test3", False, ("P12Mapping1to3CACert",
       "P12Mapping1to3subCACert", "P12Mapping1to3subsubCACert", "ValidPolicyMappingTest3EE"),
       ("TrustAnchorRootCRL", "P12Mapping1to3CACRL", "P12Mapping1to3subCACRL",
       "P12Mapping1to3subsubCACRL"), subpart=1, initial=(P1,), policies=()),
    _C("4.10.3", "Valid Policy Mapping Test3", True, ("P12Mapping1to3CACert",
       "P12Mapping1to3subCACert", "P12Mapping1to3subsubCACert", "ValidPolicyMappingTest3EE"),
       ("TrustAnchorRootCRL", "P12Mapping1to3CACRL", "P12Mapping1to3subCACRL",
       "P12Mapping1to3subsubCACRL"), subpart=2, initial=(P2,), policies=(P2,)),
    _C("4.10.4", "Invalid Policy Mapping Test4", False, ("P12Mapping1to3CACert",
       "P12Mapping1to3subCACert", "P12Mapping1to3subsubCACert", "InvalidPolicyMappingTest4EE"),
       ("TrustAnchorRootCRL", "P12Mapping1to3CACRL", "P12Mapping1to3subCACRL",
       "P12Mapping1to3subsubCACRL"), policies=()),
    _C("4.10.5", "Valid Policy Mapping Test5", True, ("P1Mapping1to234CACert",
       "P1Mapping1to234subCACert", "ValidPolicyMappingTest5EE"), ("TrustAnchorRootCRL",
       "P1Mapping1to234CACRL", "P1Mapping1to234subCACRL"), subpart=1, initial=(P1,)),
    _C("4.10.5", "Valid Policy Mapping Test5", False, ("P1Mapping1to234CACert",
       "P1Mapping1to234subCACert", "ValidPolicyMappingTest5EE"), ("TrustAnchorRootCRL",
       "P1Mapping1to234CACRL", "P1Mapping1to234subCACRL"), subpart=2, initial=(P6,), policies=()),
    _C("4.10.6", "Valid Policy Mapping Test6", True, ("P1Mapping1to234CACert",
       "P1Mapping1to234subCACert", "ValidPolicyMappingTest6EE"), ("TrustAnchorRootCRL",
       "P1Mapping1to234CACRL", "P1Mapping1to234subCACRL"), subpart=1, initial=(P1,)),
    _C("4.10.6", "Valid Policy Mapping Test6", False, ("P1Mapping1to234CACert",
       "P1Mapping1to234subCACert", "ValidPolicyMappingTest6EE"), ("TrustAnchorRootCRL",
       "P1Mapping1to234CACRL", "P1Mapping1to234subCACRL"), subpart=2, initial=(P6,), policies=()),
    _C("4.10.7", "Invalid Mapping From anyPolicy Test7", False, ("MappingFromanyPolicyCACert",
       "InvalidMappingFromanyPolicyTest7EE"), ("TrustAnchorRootCRL", "MappingFromanyPolicyCACRL"),
       policies=()),
    _C("4.10.8", "Invalid Mapping To anyPolicy Test8", False, ("MappingToanyPolicyCACert",
       "InvalidMappingToanyPolicyTest8EE"), ("TrustAnchorRootCRL", "MappingToanyPolicyCACRL"),
       policies=()),
    _C("4.10.9", "Valid Policy Mapping Test9", True,
       ("PanyPolicyMapping1to2CACert", "ValidPolicyMappingTest9EE"),
       ("TrustAnchorRootCRL", "PanyPolicyMapping1to2CACRL")),
    _C("4.10.10", "Invalid Policy Mapping Test10", False, ("GoodCACert",
       "GoodsubCAPanyPolicyMapping1to2CACert", "InvalidPolicyMappingTest10EE"),
       ("TrustAnchorRootCRL", "GoodCACRL", "GoodsubCAPanyPolicyMapping1to2CACRL"), policies=()),
    _C("4.10.11", "Valid Policy Mapping Test11", True, ("GoodCACert",
       "GoodsubCAPanyPolicyMapping1to2CACert", "ValidPolicyMappingTest11EE"),
       ("TrustAnchorRootCRL", "GoodCACRL", "GoodsubCAPanyPolicyMapping1to2CACRL")),
    _C("4.10.12", "Valid Policy Mapping Test12", True,
       ("P12Mapping1to3CACert", "ValidPolicyMappingTest12EE"),
       ("TrustAnchorRootCRL", "P12Mapping1to3CACRL"), subpart=1, initial=(P1,)),
    _C("4.10.12", "Valid Policy Mapping Test12", True,
       ("P12Mapping1to3CACert", "ValidPolicyMappingTest12EE"),
       ("TrustAnchorRootCRL", "P12Mapping1to3CACRL"), subpart=2, initial=(P2,), policies=(P2,)),
    _C("4.10.13", "Valid Policy Mapping Test13", True, ("P1anyPolicyMapping1to2CACert",
       "ValidPolicyMappingTest13EE"), ("TrustAnchorRootCRL", "P1anyPolicyMapping1to2CACRL"),
       subpart=1),
    _C("4.10.13", "Valid Policy Mapping Test13", True, ("P1anyPolicyMapping1to2CACert",
       "ValidPolicyMappingTest13EE"), ("TrustAnchorRootCRL", "P1anyPolicyMapping1to2CACRL"),
       subpart=2, initial=(P1, P2,)),
    _C("4.10.13", "Valid Policy Mapping Test13", False, ("P1anyPolicyMapping1to2CACert",
       "ValidPolicyMappingTest13EE"), ("TrustAnchorRootCRL", "P1anyPolicyMapping1to2CACRL"),
       subpart=3, initial=(P2,), policies=()),
    _C("4.10.14", "Valid Policy Mapping Test14", True, ("P1anyPolicyMapping1to2CACert",
       "ValidPolicyMappingTest14EE"), ("TrustAnchorRootCRL", "P1anyPolicyMapping1to2CACRL")),
    # 4.11
    _C("4.11.1", "Invalid inhibitPolicyMapping Test1", False, ("inhibitPolicyMapping0CACert",
       "inhibitPolicyMapping0subCACert", "InvalidinhibitPolicyMappingTest1EE"),
       ("TrustAnchorRootCRL", "inhibitPolicyMapping0CACRL", "inhibitPolicyMapping0subCACRL"),
       policies=()),
    _C("4.11.2", "Valid inhibitPolicyMapping Test2", True, ("inhibitPolicyMapping1P12CACert",
       "inhibitPolicyMapping1P12subCACert", "ValidinhibitPolicyMappingTest2EE"),
       ("TrustAnchorRootCRL", "inhibitPolicyMapping1P12CACRL", "inhibitPolicyMapping1P12subCACRL")),
    _C("4.11.3", "Invalid inhibitPolicyMapping Test3", False, ("inhibitPolicyMapping1P12CACert",
       "inhibitPolicyMapping1P12subCACert", "inhibitPolicyMapping1P12subsubCACert",
       "InvalidinhibitPolicyMappingTest3EE"), ("TrustAnchorRootCRL",
       "inhibitPolicyMapping1P12CACRL", "inhibitPolicyMapping1P12subCACRL",
       "inhibitPolicyMapping1P12subsubCACRL"), policies=()),
    _C("4.11.4", "Valid inhibitPolicyMapping Test4", True, ("inhibitPolicyMapping1P12CACert",
       "inhibitPolicyMapping1P12subCACert", "inhibitPolicyMapping1P12subsubCACert",
       "ValidinhibitPolicyMappingTest4EE"), ("TrustAnchorRootCRL",
       "inhibitPolicyMapping1P12CACRL", "inhibitPolicyMapping1P12subCACRL",
       "inhibitPolicyMapping1P12subsubCACRL"), policies=(P2,)),
    _C("4.11.5", "Invalid inhibitPolicyMapping Test5", False, ("inhibitPolicyMapping5CACert",
       "inhibitPolicyMapping5subCACert", "inhibitPolicyMapping5subsubCACert",
       "inhibitPolicyMapping5subsubsubCACert", "InvalidinhibitPolicyMappingTest5EE"),
       ("TrustAnchorRootCRL", "inhibitPolicyMapping5CACRL", "inhibitPolicyMapping5subCACRL",
       "inhibitPolicyMapping5subsubCACRL", "inhibitPolicyMapping5subsubsubCACRL"), policies=()),
    _C("4.11.6", "Invalid inhibitPolicyMapping Test6", False, ("inhibitPolicyMapping1P12CACert",
       "inhibitPolicyMapping1P12subCAIPM5Cert", "inhibitPolicyMapping1P12subsubCAIPM5Cert",
       "InvalidinhibitPolicyMappingTest6EE"), ("TrustAnchorRootCRL",
       "inhibitPolicyMapping1P12CACRL", "inhibitPolicyMapping1P12subCAIPM5CRL",
       "inhibitPolicyMapping1P12subsubCAIPM5CRL"), policies=()),
    _C("4.11.7", "Valid Self-Issued inhibitPolicyMapping Test7", True,
       ("inhibitPolicyMapping1P1CACert", "inhibitPolicyMapping1P1SelfIssuedCACert",
       "inhibitPolicyMapping1P1subCACert", "ValidSelfIssuedinhibitPolicyMappingTest7EE"),
       ("TrustAnchorRootCRL", "inhibitPolicyMapping1P1CACRL", "inhibitPolicyMapping1P1subCACRL")),
    _C("4.11.8", "Invalid Self-Issued inhibitPolicyMapping Test8", False,
       ("inhibitPolicyMapping1P1CACert", "inhibitPolicyMapping1P1SelfIssuedCACert",
       "inhibitPolicyMapping1P1subCACert", "inhibitPolicyMapping1P1subsubCACert",
       "InvalidSelfIssuedinhibitPolicyMappingTest8EE"), ("TrustAnchorRootCRL",
       "inhibitPolicyMapping1P1CACRL", "inhibitPolicyMapping1P1subCACRL",
       "inhibitPolicyMapping1P1subsubCACRL"), policies=()),
    _C("4.11.9", "Invalid Self-Issued inhibitPolicyMapping Test9", False,
       ("inhibitPolicyMapping1P1CACert", "inhibitPolicyMapping1P1SelfIssuedCACert",
       "inhibitPolicyMapping1P1subCACert", "inhibitPolicyMapping1P1subsubCACert",
       "InvalidSelfIssuedinhibitPolicyMappingTest9EE"), ("TrustAnchorRootCRL",
       "inhibitPolicyMapping1P1CACRL", "inhibitPolicyMapping1P1subCACRL",
       "inhibitPolicyMapping1P1subsubCACRL"), policies=()),
    _C("4.11.10", "Invalid Self-Issued inhibitPolicyMapping Test10", False,
       ("inhibitPolicyMapping1P1CACert", "inhibitPolicyMapping1P1SelfIssuedCACert",
       "inhibitPolicyMapping1P1subCACert", "inhibitPolicyMapping1P1SelfIssuedsubCACert",
       "InvalidSelfIssuedinhibitPolicyMappingTest10EE"), ("TrustAnchorRootCRL",
       "inhibitPolicyMapping1P1CACRL", "inhibitPolicyMapping1P1subCACRL"), policies=()),
    _C("4.11.11", "Invalid Self-Issued inhibitPolicyMapping Test11", False,
       ("inhibitPolicyMapping1P1CACert", "inhibitPolicyMapping1P1SelfIssuedCACert",
       "inhibitPolicyMapping1P1subCACert", "inhibitPolicyMapping1P1SelfIssuedsubCACert",
       "InvalidSelfIssuedinhibitPolicyMappingTest11EE"), ("TrustAnchorRootCRL",
       "inhibitPolicyMapping1P1CACRL", "inhibitPolicyMapping1P1subCACRL"), policies=()),
    # 4.12
    _C("4.12.1", "Invalid inhibitAnyPolicy Test1", False, ("inhibitAnyPolicy0CACert",
       "InvalidinhibitAnyPolicyTest1EE"), ("TrustAnchorRootCRL", "inhibitAnyPolicy0CACRL"),
       policies=()),
    _C("4.12.2", "Valid inhibitAnyPolicy Test2", True,
       ("inhibitAnyPolicy0CACert", "ValidinhibitAnyPolicyTest2EE"),
       ("TrustAnchorRootCRL", "inhibitAnyPolicy0CACRL")),
    _C("4.12.3", "inhibitAnyPolicy Test3", True, ("inhibitAnyPolicy1CACert",
       "inhibitAnyPolicy1subCA1Cert", "inhibitAnyPolicyTest3EE"), ("TrustAnchorRootCRL",
       "inhibitAnyPolicy1CACRL", "inhibitAnyPolicy1subCA1CRL"), subpart=1),
    _C("4.12.3", "inhibitAnyPolicy Test3", False, ("inhibitAnyPolicy1CACert",
       "inhibitAnyPolicy1subCA1Cert", "inhibitAnyPolicyTest3EE"), ("TrustAnchorRootCRL",
       "inhibitAnyPolicy1CACRL", "inhibitAnyPolicy1subCA1CRL"), subpart=2, inhibit_any=True,
       policies=()),
    _C("4.12.4", "Invalid inhibitAnyPolicy Test4", False, ("inhibitAnyPolicy1CACert",
       "inhibitAnyPolicy1subCA1Cert", "InvalidinhibitAnyPolicyTest4EE"), ("TrustAnchorRootCRL",
       "inhibitAnyPolicy1CACRL", "inhibitAnyPolicy1subCA1CRL"), policies=()),
    _C("4.12.5", "Invalid inhibitAnyPolicy Test5", False, ("inhibitAnyPolicy5CACert",
       "inhibitAnyPolicy5subCACert", "inhibitAnyPolicy5subsubCACert",
       "InvalidinhibitAnyPolicyTest5EE"), ("TrustAnchorRootCRL", "inhibitAnyPolicy5CACRL",
       "inhibitAnyPolicy5subCACRL", "inhibitAnyPolicy5subsubCACRL"), policies=()),
    _C("4.12.6", "Invalid inhibitAnyPolicy Test6", False, ("inhibitAnyPolicy1CACert",
       "inhibitAnyPolicy1subCAIAP5Cert", "InvalidinhibitAnyPolicyTest6EE"), ("TrustAnchorRootCRL",
       "inhibitAnyPolicy1CACRL", "inhibitAnyPolicy1subCAIAP5CRL"), policies=()),
    _C("4.12.7", "Valid Self-Issued inhibitAnyPolicy Test7", True, ("inhibitAnyPolicy1CACert",
       "inhibitAnyPolicy1SelfIssuedCACert", "inhibitAnyPolicy1subCA2Cert",
       "ValidSelfIssuedinhibitAnyPolicyTest7EE"), ("TrustAnchorRootCRL", "inhibitAnyPolicy1CACRL",
       "inhibitAnyPolicy1subCA2CRL")),
    _C("4.12.8", "Invalid Self-Issued inhibitAnyPolicy Test8", False, ("inhibitAnyPolicy1CACert",
       "inhibitAnyPolicy1SelfIssuedCACert", "inhibitAnyPolicy1subCA2Cert",
       "inhibitAnyPolicy1subsubCA2Cert", "InvalidSelfIssuedinhibitAnyPolicyTest8EE"),
       ("TrustAnchorRootCRL", "inhibitAnyPolicy1CACRL", "inhibitAnyPolicy1subCA2CRL",
       "inhibitAnyPolicy1subsubCA2CRL"), policies=()),
    _C("4.12.9", "Valid Self-Issued inhibitAnyPolicy Test9", True, ("inhibitAnyPolicy1CACert",
       "inhibitAnyPolicy1SelfIssuedCACert", "inhibitAnyPolicy1subCA2Cert",
       "inhibitAnyPolicy1SelfIssuedsubCA2Cert", "ValidSelfIssuedinhibitAnyPolicyTest9EE"),
       ("TrustAnchorRootCRL", "inhibitAnyPolicy1CACRL", "inhibitAnyPolicy1subCA2CRL")),
    _C("4.12.10", "Invalid Self-Issued inhibitAnyPolicy Test10", False,
       ("inhibitAnyPolicy1CACert", "inhibitAnyPolicy1SelfIssuedCACert",
       "inhibitAnyPolicy1subCA2Cert", "InvalidSelfIssuedinhibitAnyPolicyTest10EE"),
       ("TrustAnchorRootCRL", "inhibitAnyPolicy1CACRL", "inhibitAnyPolicy1subCA2CRL"), policies=()),
    # 4.13
    _C("4.13.1", "Valid DN nameConstraints Test1", True, ("nameConstraintsDN1CACert",
       "ValidDNnameConstraintsTest1EE"), ("TrustAnchorRootCRL", "nameConstraintsDN1CACRL")),
    _C("4.13.2", "Invalid DN nameConstraints Test2", False, ("nameConstraintsDN1CACert",
       "InvalidDNnameConstraintsTest2EE"), ("TrustAnchorRootCRL", "nameConstraintsDN1CACRL")),
    _C("4.13.3", "Invalid DN nameConstraints Test3", False, ("nameConstraintsDN1CACert",
       "InvalidDNnameConstraintsTest3EE"), ("TrustAnchorRootCRL", "nameConstraintsDN1CACRL")),
    _C("4.13.4", "Valid DN nameConstraints Test4", True, ("nameConstraintsDN1CACert",
       "ValidDNnameConstraintsTest4EE"), ("TrustAnchorRootCRL", "nameConstraintsDN1CACRL")),
    _C("4.13.5", "Valid DN nameConstraints Test5", True, ("nameConstraintsDN2CACert",
       "ValidDNnameConstraintsTest5EE"), ("TrustAnchorRootCRL", "nameConstraintsDN2CACRL")),
    _C("4.13.6", "Valid DN nameConstraints Test6", True, ("nameConstraintsDN3CACert",
       "ValidDNnameConstraintsTest6EE"), ("TrustAnchorRootCRL", "nameConstraintsDN3CACRL")),
    _C("4.13.7", "Invalid DN nameConstraints Test7", False, ("nameConstraintsDN3CACert",
       "InvalidDNnameConstraintsTest7EE"), ("TrustAnchorRootCRL", "nameConstraintsDN3CACRL")),
    _C("4.13.8", "Invalid DN nameConstraints Test8", False, ("nameConstraintsDN4CACert",
       "InvalidDNnameConstraintsTest8EE"), ("TrustAnchorRootCRL", "nameConstraintsDN4CACRL")),
    _C("4.13.9", "Invalid DN nameConstraints Test9", False, ("nameConstraintsDN4CACert",
       "InvalidDNnameConstraintsTest9EE"), ("TrustAnchorRootCRL", "nameConstraintsDN4CACRL")),
    _C("4.13.10", "Invalid DN nameConstraints Test10", False, ("nameConstraintsDN5CACert",
       "InvalidDNnameConstraintsTest10EE"), ("TrustAnchorRootCRL", "nameConstraintsDN5CACRL")),
    _C("4.13.11", "Valid DN nameConstraints Test11", True, ("nameConstraintsDN5CACert",
       "ValidDNnameConstraintsTest11EE"), ("TrustAnchorRootCRL", "nameConstraintsDN5CACRL")),
    _C("4.13.12", "Invalid DN nameConstraints Test12", False, ("nameConstraintsDN1CACert",
       "nameConstraintsDN1subCA1Cert", "InvalidDNnameConstraintsTest12EE"), ("TrustAnchorRootCRL",
       "nameConstraintsDN1CACRL", "nameConstraintsDN1subCA1CRL")),
    _C("4.13.13", "Invalid DN nameConstraints Test13", False, ("nameConstraintsDN1CACert",
       "nameConstraintsDN1subCA2Cert", "InvalidDNnameConstraintsTest13EE"), ("TrustAnchorRootCRL",
       "nameConstraintsDN1CACRL", "nameConstraintsDN1subCA2CRL")),
    _C("4.13.14", "Valid DN nameConstraints Test14", True, ("nameConstraintsDN1CACert",
       "nameConstraintsDN1subCA2Cert", "ValidDNnameConstraintsTest14EE"), ("TrustAnchorRootCRL",
       "nameConstraintsDN1CACRL", "nameConstraintsDN1subCA2CRL")),
    _C("4.13.15", "Invalid DN nameConstraints Test15", False, ("nameConstraintsDN3CACert",
       "nameConstraintsDN3subCA1Cert", "InvalidDNnameConstraintsTest15EE"), ("TrustAnchorRootCRL",
       "nameConstraintsDN3CACRL", "nameConstraintsDN3subCA1CRL")),
    _C("4.13.16", "Invalid DN nameConstraints Test16", False, ("nameConstraintsDN3CACert",
       "nameConstraintsDN3subCA1Cert", "InvalidDNnameConstraintsTest16EE"), ("TrustAnchorRootCRL",
       "nameConstraintsDN3CACRL", "nameConstraintsDN3subCA1CRL")),
    _C("4.13.17", "Invalid DN nameConstraints Test17", False, ("nameConstraintsDN3CACert",
       "nameConstraintsDN3subCA2Cert", "InvalidDNnameConstraintsTest17EE"), ("TrustAnchorRootCRL",
       "nameConstraintsDN3CACRL", "nameConstraintsDN3subCA2CRL")),
    _C("4.13.18", "Valid DN nameConstraints Test18", True, ("nameConstraintsDN3CACert",
       "nameConstraintsDN3subCA2Cert", "ValidDNnameConstraintsTest18EE"), ("TrustAnchorRootCRL",
       "nameConstraintsDN3CACRL", "nameConstraintsDN3subCA2CRL")),
    _C("4.13.19", "Valid Self-Issued DN nameConstraints Test19", True,
       ("nameConstraintsDN1CACert", "nameConstraintsDN1SelfIssuedCACert",
       "ValidDNnameConstraintsTest19EE"), ("TrustAnchorRootCRL", "nameConstraintsDN1CACRL")),
    _C("4.13.20", "Invalid Self-Issued DN nameConstraints Test20", False,
       ("nameConstraintsDN1CACert", "InvalidDNnameConstraintsTest20EE"),
       ("TrustAnchorRootCRL", "nameConstraintsDN1CACRL")),
    _C("4.13.21", "Valid RFC822 nameConstraints Test21", True, ("nameConstraintsRFC822CA1Cert",
       "ValidRFC822nameConstraintsTest21EE"),
       ("TrustAnchorRootCRL", "nameConstraintsRFC822CA1CRL")),
    _C("4.13.22", "Invalid RFC822 nameConstraints Test22", False, ("nameConstraintsRFC822CA1Cert",
       "InvalidRFC822nameConstraintsTest22EE"),
       ("TrustAnchorRootCRL", "nameConstraintsRFC822CA1CRL")),
    _C("4.13.23", "Valid RFC822 nameConstraints Test23", True, ("nameConstraintsRFC822CA2Cert",
       "ValidRFC822nameConstraintsTest23EE"),
       ("TrustAnchorRootCRL", "nameConstraintsRFC822CA2CRL")),
    _C("4.13.24", "Invalid RFC822 nameConstraints Test24", False, ("nameConstraintsRFC822CA2Cert",
       "InvalidRFC822nameConstraintsTest24EE"),
       ("TrustAnchorRootCRL", "nameConstraintsRFC822CA2CRL")),
    _C("4.13.25", "Valid RFC822 nameConstraints Test25", True, ("nameConstraintsRFC822CA3Cert",
       "ValidRFC822nameConstraintsTest25EE"),
       ("TrustAnchorRootCRL", "nameConstraintsRFC822CA3CRL")),
    _C("4.13.26", "Invalid RFC822 nameConstraints Test26", False, ("nameConstraintsRFC822CA3Cert",
       "InvalidRFC822nameConstraintsTest26EE"),
       ("TrustAnchorRootCRL", "nameConstraintsRFC822CA3CRL")),
    _C("4.13.27", "Valid DN and RFC822 nameConstraints Test27", True, ("nameConstraintsDN1CACert",
       "nameConstraintsDN1subCA3Cert", "ValidDNandRFC822nameConstraintsTest27EE"),
       ("TrustAnchorRootCRL", "nameConstraintsDN1CACRL", "nameConstraintsDN1subCA3CRL")),
    _C("4.13.28", "Invalid DN and RFC822 nameConstraints Test28", False,
       ("nameConstraintsDN1CACert", "nameConstraintsDN1subCA3Cert",
       "InvalidDNandRFC822nameConstraintsTest28EE"), ("TrustAnchorRootCRL",
       "nameConstraintsDN1CACRL", "nameConstraintsDN1subCA3CRL")),
    _C("4.13.29", "Invalid DN and RFC822 nameConstraints Test29", False,
       ("nameConstraintsDN1CACert", "nameConstraintsDN1subCA3Cert",
       "InvalidDNandRFC822nameConstraintsTest29EE"), ("TrustAnchorRootCRL",
       "nameConstraintsDN1CACRL", "nameConstraintsDN1subCA3CRL")),
    _C("4.13.30", "Valid DNS nameConstraints Test30", True, ("nameConstraintsDNS1CACert",
       "ValidDNSnameConstraintsTest30EE"), ("TrustAnchorRootCRL", "nameConstraintsDNS1CACRL")),
    _C("4.13.31", "Invalid DNS nameConstraints Test31", False, ("nameConstraintsDNS1CACert",
       "InvalidDNSnameConstraintsTest31EE"), ("TrustAnchorRootCRL", "nameConstraintsDNS1CACRL")),
    _C("4.13.32", "Valid DNS nameConstraints Test32", True, ("nameConstraintsDNS2CACert",
       "ValidDNSnameConstraintsTest32EE"), ("TrustAnchorRootCRL", "nameConstraintsDNS2CACRL")),
    _C("4.13.33", "Invalid DNS nameConstraints Test33", False, ("nameConstraintsDNS2CACert",
       "InvalidDNSnameConstraintsTest33EE"), ("TrustAnchorRootCRL", "nameConstraintsDNS2CACRL")),
    _C("4.13.34", "Valid URI nameConstraints Test34", True, ("nameConstraintsURI1CACert",
       "ValidURInameConstraintsTest34EE"), ("TrustAnchorRootCRL", "nameConstraintsURI1CACRL")),
    _C("4.13.35", "Invalid URI nameConstraints Test35", False, ("nameConstraintsURI1CACert",
       "InvalidURInameConstraintsTest35EE"), ("TrustAnchorRootCRL", "nameConstraintsURI1CACRL")),
    _C("4.13.36", "Valid URI nameConstraints Test36", True, ("nameConstraintsURI2CACert",
       "ValidURInameConstraintsTest36EE"), ("TrustAnchorRootCRL", "nameConstraintsURI2CACRL")),
    _C("4.13.37", "Invalid URI nameConstraints Test37", False, ("nameConstraintsURI2CACert",
       "InvalidURInameConstraintsTest37EE"), ("TrustAnchorRootCRL", "nameConstraintsURI2CACRL")),
    _C("4.13.38", "Invalid DNS nameConstraints Test38", False, ("nameConstraintsDNS1CACert",
       "InvalidDNSnameConstraintsTest38EE"), ("TrustAnchorRootCRL", "nameConstraintsDNS1CACRL")),
    # 4.14
    _C("4.14.1", "Valid distributionPoint Test1", True, ("distributionPoint1CACert",
       "ValiddistributionPointTest1EE"), ("TrustAnchorRootCRL", "distributionPoint1CACRL")),
    _C("4.14.2", "Invalid distributionPoint Test2", False, ("distributionPoint1CACert",
       "InvaliddistributionPointTest2EE"), ("TrustAnchorRootCRL", "distributionPoint1CACRL")),
    _C("4.14.3", "Invalid distributionPoint Test3", False, ("distributionPoint1CACert",
       "InvaliddistributionPointTest3EE"), ("TrustAnchorRootCRL", "distributionPoint1CACRL")),
    _C("4.14.4", "Valid distributionPoint Test4", True, ("distributionPoint1CACert",
       "ValiddistributionPointTest4EE"), ("TrustAnchorRootCRL", "distributionPoint1CACRL")),
    _C("4.14.5", "Valid distributionPoint Test5", True, ("distributionPoint2CACert",
       "ValiddistributionPointTest5EE"), ("TrustAnchorRootCRL", "distributionPoint2CACRL")),
    _C("4.14.6", "Invalid distributionPoint Test6", False, ("distributionPoint2CACert",
       "InvaliddistributionPointTest6EE"), ("TrustAnchorRootCRL", "distributionPoint2CACRL")),
    _C("4.14.7", "Valid distributionPoint Test7", True, ("distributionPoint2CACert",
       "ValiddistributionPointTest7EE"), ("TrustAnchorRootCRL", "distributionPoint2CACRL")),
    _C("4.14.8", "Invalid distributionPoint Test8", False, ("distributionPoint2CACert",
       "InvaliddistributionPointTest8EE"), ("TrustAnchorRootCRL", "distributionPoint2CACRL")),
    _C("4.14.9", "Invalid distributionPoint Test9", False, ("distributionPoint2CACert",
       "InvaliddistributionPointTest9EE"), ("TrustAnchorRootCRL", "distributionPoint2CACRL")),
    _C("4.14.10", "Valid No issuingDistributionPoint Test10", True,
       ("NoissuingDistributionPointCACert", "ValidNoissuingDistributionPointTest10EE"),
       ("TrustAnchorRootCRL", "NoissuingDistributionPointCACRL")),
    _C("4.14.11", "Invalid onlyContainsUserCerts CRL Test11", False,
       ("onlyContainsUserCertsCACert", "InvalidonlyContainsUserCertsTest11EE"),
       ("TrustAnchorRootCRL", "onlyContainsUserCertsCACRL")),
    _C("4.14.12", "Invalid onlyContainsCACerts CRL Test12", False, ("onlyContainsCACertsCACert",
       "InvalidonlyContainsCACertsTest12EE"), ("TrustAnchorRootCRL", "onlyContainsCACertsCACRL")),
    _C("4.14.13", "Valid onlyContainsCACerts CRL Test13", True, ("onlyContainsCACertsCACert",
       "ValidonlyContainsCACertsTest13EE"), ("TrustAnchorRootCRL", "onlyContainsCACertsCACRL")),
    _C("4.14.14", "Invalid onlyContainsAttributeCerts Test14", False,
       ("onlyContainsAttributeCertsCACert", "InvalidonlyContainsAttributeCertsTest14EE"),
       ("TrustAnchorRootCRL", "onlyContainsAttributeCertsCACRL")),
    _C("4.14.15", "Invalid onlySomeReasons Test15", False,
       ("onlySomeReasonsCA1Cert", "InvalidonlySomeReasonsTest15EE"), ("TrustAnchorRootCRL",
       "onlySomeReasonsCA1compromiseCRL", "onlySomeReasonsCA1otherreasonsCRL")),
    _C("4.14.16", "Invalid onlySomeReasons Test16", False,
       ("onlySomeReasonsCA1Cert", "InvalidonlySomeReasonsTest16EE"), ("TrustAnchorRootCRL",
       "onlySomeReasonsCA1compromiseCRL", "onlySomeReasonsCA1otherreasonsCRL")),
    _C("4.14.17", "Invalid onlySomeReasons Test17", False,
       ("onlySomeReasonsCA2Cert", "InvalidonlySomeReasonsTest17EE"), ("TrustAnchorRootCRL",
       "onlySomeReasonsCA2CRL1", "onlySomeReasonsCA2CRL2")),
    _C("4.14.18", "Valid onlySomeReasons Test18", True,
       ("onlySomeReasonsCA3Cert", "ValidonlySomeReasonsTest18EE"), ("TrustAnchorRootCRL",
       "onlySomeReasonsCA3compromiseCRL", "onlySomeReasonsCA3otherreasonsCRL")),
    _C("4.14.19", "Valid onlySomeReasons Test19", True,
       ("onlySomeReasonsCA4Cert", "ValidonlySomeReasonsTest19EE"), ("TrustAnchorRootCRL",
       "onlySomeReasonsCA4compromiseCRL", "onlySomeReasonsCA4otherreasonsCRL")),
    _C("4.14.20", "Invalid onlySomeReasons Test20", False,
       ("onlySomeReasonsCA4Cert", "InvalidonlySomeReasonsTest20EE"), ("TrustAnchorRootCRL",
       "onlySomeReasonsCA4compromiseCRL", "onlySomeReasonsCA4otherreasonsCRL")),
    _C("4.14.21", "Invalid onlySomeReasons Test21", False,
       ("onlySomeReasonsCA4Cert", "InvalidonlySomeReasonsTest21EE"), ("TrustAnchorRootCRL",
       "onlySomeReasonsCA4compromiseCRL", "onlySomeReasonsCA4otherreasonsCRL")),
    _C("4.14.22", "Valid IDP with indirectCRL Test22", True,
       ("indirectCRLCA1Cert", "ValidIDPwithindirectCRLTest22EE"),
       ("TrustAnchorRootCRL", "indirectCRLCA1CRL")),
    _C("4.14.23", "Invalid IDP with indirectCRL Test23", False,
       ("indirectCRLCA1Cert", "InvalidIDPwithindirectCRLTest23EE"),
       ("TrustAnchorRootCRL", "indirectCRLCA1CRL")),
    _C("4.14.24", "Valid IDP with indirectCRL Test24", True, ("indirectCRLCA2Cert",
       "indirectCRLCA1Cert", "ValidIDPwithindirectCRLTest24EE"),
       ("TrustAnchorRootCRL", "indirectCRLCA1CRL")),
    _C("4.14.25", "Valid IDP with indirectCRL Test25", True, ("indirectCRLCA2Cert",
       "indirectCRLCA1Cert", "ValidIDPwithindirectCRLTest25EE"),
       ("TrustAnchorRootCRL", "indirectCRLCA1CRL")),
    _C("4.14.26", "Invalid IDP with indirectCRL Test26", False, ("indirectCRLCA2Cert",
       "indirectCRLCA1Cert", "InvalidIDPwithindirectCRLTest26EE"),
       ("TrustAnchorRootCRL", "indirectCRLCA1CRL")),
    _C("4.14.27", "Invalid cRLIssuer Test27", False, ("indirectCRLCA2Cert", "GoodCACert",
       "InvalidcRLIssuerTest27EE"), ("TrustAnchorRootCRL", "GoodCACRL")),
    _C("4.14.28", "Valid cRLIssuer Test28", True, ("indirectCRLCA3Cert",
       "indirectCRLCA3cRLIssuerCert", "ValidcRLIssuerTest28EE"), ("TrustAnchorRootCRL",
       "indirectCRLCA3CRL", "indirectCRLCA3cRLIssuerCRL")),
    _C("4.14.29", "Valid cRLIssuer Test29", True, ("indirectCRLCA3Cert",
       "indirectCRLCA3cRLIssuerCert", "ValidcRLIssuerTest29EE"), ("TrustAnchorRootCRL",
       "indirectCRLCA3CRL", "indirectCRLCA3cRLIssuerCRL")),
    _C("4.14.30", "Valid cRLIssuer Test30", True, ("indirectCRLCA4Cert",
       "indirectCRLCA4cRLIssuerCert", "ValidcRLIssuerTest30EE"),
       ("TrustAnchorRootCRL", "indirectCRLCA4cRLIssuerCRL")),
    _C("4.14.31", "Invalid cRLIssuer Test31", False, ("indirectCRLCA5Cert", "indirectCRLCA6Cert",
       "InvalidcRLIssuerTest31EE"), ("TrustAnchorRootCRL", "indirectCRLCA5CRL")),
    _C("4.14.32", "Invalid cRLIssuer Test32", False, ("indirectCRLCA5Cert", "indirectCRLCA6Cert",
       "InvalidcRLIssuerTest32EE"), ("TrustAnchorRootCRL", "indirectCRLCA5CRL")),
    _C("4.14.33", "Valid cRLIssuer Test33", True, ("indirectCRLCA5Cert", "indirectCRLCA6Cert",
       "ValidcRLIssuerTest33EE"), ("TrustAnchorRootCRL", "indirectCRLCA5CRL")),
    _C("4.14.34", "Invalid cRLIssuer Test34", False,
       ("indirectCRLCA5Cert", "InvalidcRLIssuerTest34EE"),
       ("TrustAnchorRootCRL", "indirectCRLCA5CRL")),
    _C("4.14.35", "Invalid cRLIssuer Test35", False,
       ("indirectCRLCA5Cert", "InvalidcRLIssuerTest35EE"),
       ("TrustAnchorRootCRL", "indirectCRLCA5CRL")),
    # 4.15
    _C("4.15.1", "Invalid deltaCRLIndicator No Base Test1", False,
       ("deltaCRLIndicatorNoBaseCACert", "InvaliddeltaCRLIndicatorNoBaseTest1EE"),
       ("TrustAnchorRootCRL", "deltaCRLIndicatorNoBaseCACRL")),
    _C("4.15.2", "Valid delta-CRL Test2", True, ("deltaCRLCA1Cert", "ValiddeltaCRLTest2EE"),
       ("TrustAnchorRootCRL", "deltaCRLCA1CRL", "deltaCRLCA1deltaCRL")),
    _C("4.15.3", "Invalid delta-CRL Test3", False, ("deltaCRLCA1Cert", "InvaliddeltaCRLTest3EE"),
       ("TrustAnchorRootCRL", "deltaCRLCA1CRL", "deltaCRLCA1deltaCRL")),
    _C("4.15.4", "Invalid delta-CRL Test4", False, ("deltaCRLCA1Cert", "InvaliddeltaCRLTest4EE"),
       ("TrustAnchorRootCRL", "deltaCRLCA1CRL", "deltaCRLCA1deltaCRL")),
    _C("4.15.5", "Valid delta-CRL Test5", True, ("deltaCRLCA1Cert", "ValiddeltaCRLTest5EE"),
       ("TrustAnchorRootCRL", "deltaCRLCA1CRL", "deltaCRLCA1deltaCRL")),
    _C("4.15.6", "Invalid delta-CRL Test6", False, ("deltaCRLCA1Cert", "InvaliddeltaCRLTest6EE"),
       ("TrustAnchorRootCRL", "deltaCRLCA1CRL", "deltaCRLCA1deltaCRL")),
    _C("4.15.7", "Valid delta-CRL Test7", True, ("deltaCRLCA1Cert", "ValiddeltaCRLTest7EE"),
       ("TrustAnchorRootCRL", "deltaCRLCA1CRL", "deltaCRLCA1deltaCRL")),
    _C("4.15.8", "Valid delta-CRL Test8", True, ("deltaCRLCA2Cert", "ValiddeltaCRLTest8EE"),
       ("TrustAnchorRootCRL", "deltaCRLCA2CRL", "deltaCRLCA2deltaCRL")),
    _C("4.15.9", "Invalid delta-CRL Test9", False, ("deltaCRLCA2Cert", "InvaliddeltaCRLTest9EE"),
       ("TrustAnchorRootCRL", "deltaCRLCA2CRL", "deltaCRLCA2deltaCRL")),
    _C("4.15.10", "Invalid delta-CRL Test10", False,
       ("deltaCRLCA3Cert", "InvaliddeltaCRLTest10EE"), ("TrustAnchorRootCRL", "deltaCRLCA3CRL",
       "deltaCRLCA3deltaCRL")),
    # 4.16
    _C("4.16.1", "Valid Unknown Not Critical Certificate Extension Test1", True,
       ("ValidUnknownNotCriticalCertificateExtensionTest1EE",), ("TrustAnchorRootCRL",)),
    _C("4.16.2", "Invalid Unknown Critical Certificate Extension Test2", False,
       ("InvalidUnknownCriticalCertificateExtensionTest2EE",), ("TrustAnchorRootCRL",)),
)


def certificate(name: str) -> x509.Certificate:
    """A PKITS certificate by name."""
    return _certificate(name)


@cache
def _certificate(name: str) -> x509.Certificate:
    directory = data_dir()
    assert directory is not None
    with open(os.path.join(directory, "certs", f"{name}.crt"), "rb") as f:
        return x509.load_der_x509_certificate(f.read())


@cache
def client(name: str) -> IssuedCertificate:
    """The end entity ``name`` with its key, from its PKCS#12 file (ValueError if unreadable)."""
    directory = data_dir()
    assert directory is not None
    with open(os.path.join(directory, "pkcs12", f"{name}.p12"), "rb") as f:
        key, cert, _ = pkcs12.load_key_and_certificates(f.read(), b"password")
    assert cert is not None and key is not None
    return IssuedCertificate(cert, key)  # type: ignore[arg-type]  # DSA keys too


class Servers:
    """Builds a certsrv server per PKITS case, in memory, from files written once."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        data = data_dir()
        assert data is not None
        self.data = data
        start = WHEN - datetime.timedelta(days=365)
        root = CertificateFactory.create("PKITS harness server root")
        self.server_root = root.certificate
        server = root.server(not_before=start, not_after=start + datetime.timedelta(days=3650))
        self.cert = self._write("server.pem", server.chain_pem())
        self.key = os.path.join(directory, "server.key")
        write_private_key(self.key, server.private_key_pem())

    def _write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.directory, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def _pem(self, names: Iterable[str], file_name: str) -> str:
        return self._write(file_name, b"".join(
            certificate(n).public_bytes(Encoding.PEM) for n in names))

    def argv(self, case: Case) -> list[str]:
        """``twistd certsrv``'s arguments for ``case``: its anchor, CAs, CRLs, policy inputs."""
        argv = ["--cert", self.cert, "--key", self.key,
                "--ca", self._pem([ANCHOR], "anchor.pem"), "--crl-check", "chain"]
        if len(case.path) > 1:
            argv += ["--intermediates", self._pem(case.path[:-1], "intermediates.pem"),
                     "--verify-depth", str(len(case.path))]
        for crl in case.crls:
            argv += ["--crl", os.path.join(self.data, "crls", f"{crl}.crl")]
        return argv + case.options()

    def server(self, case: Case) -> MemoryServer:
        """A server configured for ``case`` (ConfigurationError if it refuses to start)."""
        options = Options()
        clock = Clock()
        clock.advance(WHEN.timestamp())
        options.clock = clock
        options.parseOptions(self.argv(case))
        service: Any = makeService(options)
        factories = [child.factory for child in service
                     if isinstance(getattr(child, "factory", None), TLSFactory)]
        return MemoryServer(factories[0], [self.server_root])



ACCEPTED = "accepted"
STARTUP_REFUSED = "startup refused"
UNREADABLE = "EE certificate unreadable"


@dataclass(frozen=True)
class Outcome:
    """What certsrv did with a case: ``ACCEPTED``, a refusal's Reason value, or
    ``STARTUP_REFUSED`` / ``UNREADABLE``; the alert, detail and the valid policies."""

    verdict: str
    alert: str | None = None
    detail: str = ""
    policies: tuple[str, ...] = ()

    @property
    def accepted(self) -> bool:
        """Whether the client got through."""
        return self.verdict == ACCEPTED


def outcome(servers: Servers, case: Case) -> Outcome:
    """Run ``case`` through a certsrv server in memory."""
    try:
        peer = client(case.path[-1])
    except ValueError as e:
        return Outcome(UNREADABLE, detail=str(e))
    try:
        server = servers.server(case)
    except (ConfigurationError, UsageError) as e:
        return Outcome(STARTUP_REFUSED, detail=str(e))
    with captured_events() as events:
        response = server.get("/secure", client=peer, headers=[("Accept", "application/json")])
    if response.status == 200:
        return Outcome(ACCEPTED, policies=tuple(sorted(response.json()["policies"])))
    refusals = [e for e in events if e.get("decision") == "rejected"]
    reason = refusals[0]["reason"] if refusals else f"HTTP {response.status}"
    return Outcome(reason, response.alert, refusals[0].get("detail") or "" if refusals else "")


def summary(results: dict[Case, Outcome]) -> str:
    """The per-section table: cases, expected valid/invalid, certsrv's matches, the rest."""
    rows: list[tuple[str, ...]] = [("section", "cases", "default", "valid", "invalid",
                                    "match", "deviation", "other")]
    sections: dict[str, list[Case]] = {}
    for case in results:
        sections.setdefault(case.section, []).append(case)
    totals = [0] * 7
    for section, cases in sorted(sections.items(), key=lambda s: int(s[0].split(".")[1])):
        counts = [len(cases), sum(c.default_settings for c in cases),
                  sum(c.valid for c in cases), sum(not c.valid for c in cases),
                  sum(results[c].accepted == c.valid for c in cases),
                  sum(c.ident in DEVIATIONS for c in cases),
                  sum(results[c].accepted != c.valid and c.ident not in DEVIATIONS
                      for c in cases)]
        totals = [t + n for t, n in zip(totals, counts, strict=True)]
        rows.append((section, *map(str, counts)))
    rows.append(("total", *map(str, totals)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True))
             for row in rows]
    for default, label in ((True, "default settings"), (False, "other settings")):
        group = [c for c in results if c.default_settings is default]
        matched = sum(results[c].accepted == c.valid for c in group)
        lines.append(f"{label}: {matched} of {len(group)} as expected")
    return "\n".join(lines)


def main() -> None:
    """Print every case's outcome that differs from the expected one, then the table."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="certsrv-pkits-") as directory:
        servers = Servers(directory)
        results = {case: outcome(servers, case) for case in CASES}
    for case, result in results.items():
        if result.accepted != case.valid:
            why = DEVIATIONS[case.ident].why if case.ident in DEVIATIONS else "UNEXPECTED"
            print(f"{case.ident:10} {case.name}: expected {'valid' if case.valid else 'invalid'}"
                  f", got {result.verdict} ({why})")
    print(summary(results))


if __name__ == "__main__":
    main()
