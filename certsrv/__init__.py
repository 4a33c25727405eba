"""certsrv: an HTTPS server on Twisted that authenticates clients by X.509 certificate."""

from __future__ import annotations

from certsrv.client.http import (
    ClientTLSPolicy,
    Explanation,
    HTTPStatusError,
    client_tls_policy,
    explain,
    http_client,
    raise_for_status,
)
from certsrv.exceptions import (
    CertsrvError,
    ConfigurationError,
    OCSPError,
    PKIError,
    Reason,
    RejectedCertificate,
)
from certsrv.server.app import protected_site
from certsrv.web.gate import protect
from certsrv.web.site import identity_of
from certsrv.x509.identity import ClientIdentity

__all__ = [
    "CertsrvError",
    "ClientIdentity",
    "ClientTLSPolicy",
    "ConfigurationError",
    "Explanation",
    "HTTPStatusError",
    "OCSPError",
    "PKIError",
    "Reason",
    "RejectedCertificate",
    "client_tls_policy",
    "explain",
    "http_client",
    "identity_of",
    "protect",
    "protected_site",
    "raise_for_status",
]
