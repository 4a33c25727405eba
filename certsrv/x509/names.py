"""Distinguished names compared as RFC 5280 §7.1 asks: ASCII case and spaces ignored."""

from __future__ import annotations

import re
import string
from functools import lru_cache
from typing import Any

from cryptography import x509

__all__ = ["canonical", "canonical_der", "canonical_general"]


_SPACES = re.compile(r"[ \t\n\r\f\v]+")
_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _value(text: str) -> str:
    # OpenSSL's canonical form (x509_name_canon): ASCII spaces collapsed and trimmed, ASCII
    # letters lower-cased. Unicode folding would match more than OpenSSL's chain building
    # does (the Kelvin sign as "k"), letting two CAs' names collide.
    return _SPACES.sub(" ", text).strip(" \t\n\r\f\v").translate(_LOWER)


def _attribute(attribute: x509.NameAttribute[Any]) -> x509.NameAttribute[Any]:
    value = attribute.value
    if not isinstance(value, str):
        return attribute
    try:
        return x509.NameAttribute(attribute.oid, _value(value))
    except ValueError:  # a value the canonical form cannot hold keeps its own
        return attribute


@lru_cache(maxsize=4096)
def canonical(name: x509.Name) -> x509.Name:
    """``name`` with every string value case-folded and its spaces normalized."""
    return x509.Name([x509.RelativeDistinguishedName([_attribute(a) for a in rdn])
                      for rdn in name.rdns])


def canonical_der(name: x509.Name) -> bytes:
    """The DER of ``name``'s canonical form: equal for names RFC 5280 calls the same."""
    return canonical(name).public_bytes()


def canonical_general(name: x509.GeneralName) -> x509.GeneralName:
    """A general name with a directory name in canonical form; others as they are."""
    if isinstance(name, x509.DirectoryName):
        return x509.DirectoryName(canonical(name.value))
    return name
