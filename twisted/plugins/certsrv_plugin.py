"""The ``twistd certsrv`` plugin: a mutual-TLS HTTPS server."""

from twisted.application.service import ServiceMaker

certsrv = ServiceMaker(
    "certsrv",
    "certsrv.server.options",
    "An HTTPS server that admits only clients presenting a valid X.509 certificate.",
    "certsrv",
)
