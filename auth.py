"""Who is calling: directory keys (bearer tokens) for the SCIM API.

A key's access token is shown once and only its SHA-256 is stored. The token carries 256 bits of
randomness, so a fast hash is enough (nothing to brute-force), and the lookup by hash means the
token itself is never compared or kept anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from store import Store

TOKEN_BYTES = 32  # 256 bits


def generate_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def bearer_token(authorization_header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (RFC 6750 §2.1), any case."""
    if not authorization_header:
        return None
    scheme, _, token = authorization_header.strip().partition(" ")
    token = token.strip()
    if scheme.casefold() != "bearer" or not token:
        return None
    return token


def verify_directory_key(store: Store, authorization_header: str | None) -> dict | None:
    """The directory key the request's bearer token belongs to, or None.

    The final comparison is constant-time so response timing says nothing about stored hashes.
    """
    token = bearer_token(authorization_header)
    if token is None:
        return None
    token_hash = hash_token(token)
    key = store.find_key_by_token_hash(token_hash)
    if key is None or not hmac.compare_digest(key["token_hash"], token_hash):
        return None
    return key


def create_directory_key(
    store: Store, directory_id: str, name: str, actor: str
) -> tuple[dict, str]:
    """Create a key and return it with its token, which exists nowhere else from then on."""
    token = generate_token()
    key = store.create_key(directory_id, name, hash_token(token), actor)
    return key, token
