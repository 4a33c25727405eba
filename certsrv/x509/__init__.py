"""
Certificates and keys: loading them from files, fingerprints, and the client identity.

Owns: ``certs`` (PEM/DER loading with one-line errors, the ONE loader of private keys:
encrypted PEM/DER and PKCS#12 included; the private-key types, fingerprints, descriptions
for log events), ``passphrase`` (where a key's passphrase comes from: environment, file,
prompt), ``identity`` (``ClientIdentity``, read once per client), ``policies`` (certificate
policy processing, RFC 5280 §6.1) and ``names`` (distinguished names compared as §7.1 says).
May import: nothing of certsrv but ``certsrv.exceptions``.
"""
