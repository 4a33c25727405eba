"""
The private pyOpenSSL and OpenSSL-binding internals certsrv relies on, in one place.

Each use here has a test in ``tests/test_compat.py`` that fails loudly when an upgrade of
pyOpenSSL or cryptography removes or changes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from OpenSSL import SSL, crypto

__all__ = [
    "X509_V_OK",
    "VerifyCallback",
    "set_groups",
    "set_store_purpose_client",
    "set_verify",
    "verify_error_text",
]

X509_V_OK = 0
# X509_V_ERR_UNSPECIFIED: what a callback that fails unexpectedly reports.
_UNSPECIFIED = 1

# ``(connection, certificate, errno, depth, ok) -> error``: X509_V_OK accepts the certificate
# at this depth; any other X509_V_ERR_* code refuses it, and OpenSSL sends the TLS alert
# that code maps to (certificate_revoked for X509_V_ERR_CERT_REVOKED, and so on).
VerifyCallback = Callable[[SSL.Connection, crypto.X509, int, int, bool], int]


def _binding() -> tuple[Any, Any]:
    from OpenSSL._util import ffi, lib

    return ffi, lib


def set_verify(ctx: SSL.Context, mode: int, callback: VerifyCallback) -> None:
    """``SSL_CTX_set_verify`` with a callback that chooses the verify error (and so the alert).

    pyOpenSSL's ``Context.set_verify`` passes no ``X509_STORE_CTX``, so its callbacks can
    only accept or refuse, and a refusal of a certificate OpenSSL found good becomes an
    ``internal_error`` alert.
    """
    ffi, lib = _binding()
    index = lib.SSL_get_ex_data_X509_STORE_CTX_idx()

    def wrapper(ok: int, store_ctx: Any) -> int:
        try:
            x509 = lib.X509_STORE_CTX_get_current_cert(store_ctx)
            lib.X509_up_ref(x509)
            cert = crypto.X509._from_raw_x509_ptr(x509)
            errno = lib.X509_STORE_CTX_get_error(store_ctx)
            depth = lib.X509_STORE_CTX_get_error_depth(store_ctx)
            connection = SSL.Connection._reverse_mapping[  # type: ignore[attr-defined]
                lib.X509_STORE_CTX_get_ex_data(store_ctx, index)]
            error = callback(connection, cert, errno, depth, bool(ok))
        except BaseException:  # the callback never raises; this is the last line of defence
            error = _UNSPECIFIED
        lib.X509_STORE_CTX_set_error(store_ctx, error)
        return 1 if error == X509_V_OK else 0

    handle = ffi.callback("int (*)(int, X509_STORE_CTX *)", wrapper)
    # The context must keep the cffi callback alive for as long as OpenSSL may call it.
    ctx._certsrv_verify = handle  # type: ignore[attr-defined]
    lib.SSL_CTX_set_verify(ctx._context, mode, handle)  # type: ignore[attr-defined]


def set_store_purpose_client(store: crypto.X509Store) -> None:
    """Verify chains in ``store`` for the TLS client purpose, as a TLS server does."""
    _, lib = _binding()
    if lib.X509_STORE_set_purpose(store._store, lib.X509_PURPOSE_SSL_CLIENT) != 1:  # type: ignore[attr-defined]
        raise RuntimeError("X509_STORE_set_purpose refused the ssl_client purpose")


def set_groups(ctx: SSL.Context, groups: bytes) -> None:
    """Limit the key-exchange groups (pyOpenSSL has no public call for it)."""
    _, lib = _binding()
    if lib.SSL_CTX_set1_curves_list(ctx._context, groups) != 1:  # type: ignore[attr-defined]
        raise ValueError("SSL_CTX_set1_curves_list refused the list")


def verify_error_text(errno: int) -> str:
    """OpenSSL's text for an X509_V_ERR_* code (the public API has no such lookup)."""
    try:
        ffi, lib = _binding()
        return str(ffi.string(lib.X509_verify_cert_error_string(errno)).decode("ascii"))
    except Exception:
        return f"X509 verify error {errno}"
