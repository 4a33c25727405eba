"""The ``twistd certsrv-ocsp`` plugin: the development PKI's OCSP responder."""

from twisted.application.service import ServiceMaker

certsrv_ocsp = ServiceMaker(
    "certsrv-ocsp",
    "certsrv.pki.service",
    "An OCSP responder answering from a certsrv-pki directory's index, over plain HTTP.",
    "certsrv-ocsp",
)

# The same service under a name for both of its jobs: OCSP, and EST with --est.
certsrv_pki_service = ServiceMaker(
    "certsrv-pki-service",
    "certsrv.pki.service",
    "The development PKI's services: OCSP over plain HTTP, EST re-enrollment over mutual TLS.",
    "certsrv-pki-service",
)
