"""The ``twistd certsrv-ocsp`` plugin: the development PKI's OCSP responder."""

from twisted.application.service import ServiceMaker

certsrv_ocsp = ServiceMaker(
    "certsrv-ocsp",
    "certsrv.pki.service",
    "An OCSP responder answering from a certsrv-pki directory's index, over plain HTTP.",
    "certsrv-ocsp",
)
