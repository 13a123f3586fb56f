"""Secrets (enrollment keys, agent tokens, operator API tokens): made here, stored hashed.

The secrets are 256 random bits, so a single SHA-256 is the right hash: a slow password
hash buys nothing against brute force of such a space and would cost every request.
The short prefix names the kind of secret so a leaked one is easy to recognise.
"""

import hashlib
import hmac
import secrets

ENROLLMENT_PREFIX = "pge_"
AGENT_PREFIX = "pga_"
API_PREFIX = "pgo_"


def token_make(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def token_hint(raw: str) -> str:
    """What the admin shows of a secret after creation: its kind and first characters."""
    return raw[: len(ENROLLMENT_PREFIX) + 6] + "…"


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def bearer_required(value: str | None) -> str:
    """The bearer token of an Authorization header, or AuthenticationFailed saying how to send it."""
    from apps.core.errors import AuthenticationFailed

    token = bearer_from_header(value)
    if token is None:
        raise AuthenticationFailed("Send the key as 'Authorization: Bearer <key>'", code="authentication_required")
    return token


def bearer_from_header(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
