"""
Certificates and keys: loading them from files, fingerprints, and the client identity.

Owns: ``certs`` (PEM/DER loading with one-line errors, the private-key types, fingerprints,
descriptions for log events) and ``identity`` (``ClientIdentity``, read once per client).
May import: nothing of certsrv but ``certsrv.exceptions``.
"""
