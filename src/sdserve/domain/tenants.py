"""Tenant names: the owner of jobs, workflows and images, and part of blob keys.

A name ends up in folder names and object keys, so it is a strict, lowercase slug
(lowercase only: "Acme" and "acme" would be one folder on a case-insensitive disk).
"""

from __future__ import annotations

import re

from sdserve.domain.errors import InvalidRequest

TENANT_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
MAX_TENANT_LENGTH = 63
# The tenant of the admin key a fresh embedded deployment creates for itself.
DEFAULT_TENANT = "default"


def valid_tenant(name: object) -> bool:
    return isinstance(name, str) and bool(TENANT_RE.fullmatch(name))


def checked_tenant(name: str, field: str = "tenant") -> str:
    """The name itself, or InvalidRequest naming ``field``."""
    if not valid_tenant(name):
        raise InvalidRequest.single(
            field,
            "a tenant is 1 to 63 characters: lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit",
            MAX_TENANT_LENGTH,
        )
    return name
