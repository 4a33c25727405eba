"""certsrv.exceptions: one vocabulary of reason codes, each with a sentence; one hierarchy."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from certsrv import exceptions
from certsrv.exceptions import (
    AccessReason,
    CertsrvError,
    ConfigurationError,
    CRLError,
    EnrollmentReason,
    ForwardedReason,
    LimitReason,
    OCSPError,
    PKIError,
    Reason,
    RejectedCertificate,
    RevocationError,
)


class VocabularyTests(SynchronousTestCase):
    """Every reason code is a lower-case identifier with a sentence of its own."""

    def test_every_reason_has_a_sentence(self) -> None:
        for vocabulary in (Reason, AccessReason, ForwardedReason, LimitReason,
                           EnrollmentReason):
            sentences = set()
            for member in vocabulary:
                self.assertRegex(member.value, r"^[a-z][a-z0-9_]*$")
                sentence = member.sentence
                self.assertTrue(sentence and sentence.strip(), member)
                sentences.add(sentence)
            self.assertEqual(len(sentences), len(vocabulary), vocabulary)


class HierarchyTests(SynchronousTestCase):
    """Everything certsrv raises on purpose is a CertsrvError; CRLError is no OCSPError."""

    def test_hierarchy(self) -> None:
        for error in (ConfigurationError, RejectedCertificate, RevocationError, PKIError):
            self.assertTrue(issubclass(error, CertsrvError), error)
        for error in (OCSPError, CRLError):
            self.assertTrue(issubclass(error, RevocationError), error)
        self.assertFalse(issubclass(CRLError, OCSPError))
        self.assertTrue(hasattr(exceptions, "RevocationProblem"))
