"""certsrv: an HTTPS server on Twisted that authenticates clients by X.509 certificate."""

from __future__ import annotations

from certsrv._app import protect, protected_site
from certsrv._client import (
    ClientTLSPolicy,
    Explanation,
    HTTPStatusError,
    client_tls_policy,
    explain,
    http_client,
    raise_for_status,
)
from certsrv._identity import ClientIdentity
from certsrv._web import identity_of
from certsrv.exceptions import (
    CertsrvError,
    ConfigurationError,
    OCSPError,
    PKIError,
    Reason,
    RejectedCertificate,
)

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
