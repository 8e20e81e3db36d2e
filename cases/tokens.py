"""Tracking tokens: the one construction of a case's secret link.

Built the way ``django.contrib.auth.tokens`` builds password reset tokens:
``salted_hmac`` keyed by SECRET_KEY under a key salt naming this class, and
compared in constant time. A case stores a random salt and a hash of its
token, never the token: a copy of the database alone opens no case, and the
token is derived again from the salt to go in every e-mail.

Intake, the demo data, the benchmarks and the tests all create a case's
token fields through ``tracking_token_fields``.
"""

import base64
import hashlib
import hmac
import secrets

from django.conf import settings
from django.utils.crypto import constant_time_compare, salted_hmac

KEY_SALT = "cases.tokens.TrackingTokenGenerator"


def hash_secret(value: str) -> str:
    """Hash a token or code for storage and lookup (SHA-256 of SECRET_KEY and it)."""
    return hashlib.sha256(f"{settings.SECRET_KEY}:{value}".encode()).hexdigest()


def new_token_salt() -> str:
    """Return a fresh random salt for a case's tracking token (128 bits)."""
    return secrets.token_hex(16)


def token_for_salt(salt: str) -> str:
    """Derive the tracking token of ``salt`` (192 bits, URL-safe)."""
    digest = salted_hmac(KEY_SALT, salt, algorithm="sha256").digest()
    return _encode(digest)


def tracking_token_fields(salt: str) -> dict[str, str]:
    """Return the token fields of a new case with ``salt``: its salt and token hash."""
    return {"token_salt": salt, "token_hash": hash_secret(token_for_salt(salt))}


def tracking_token_check(*, token_hash_stored: str, token: str) -> bool:
    """Tell, in constant time, whether ``token`` is the one behind the stored hash."""
    return constant_time_compare(hash_secret(token), token_hash_stored)


def tracking_token_for_case(*, token_salt: str, token_hash_stored: str) -> str:
    """Return the token of an existing case, whichever construction made it.

    Cases filed before tokens were built on ``salted_hmac`` keep the token
    already e-mailed to the merchant (an HMAC of the salt keyed by
    SECRET_KEY directly); their stored hash tells which one it is. Drop the
    fallback once no case filed before that change is open or kept.
    """
    token = token_for_salt(token_salt)
    if tracking_token_check(token_hash_stored=token_hash_stored, token=token):
        return token
    legacy = hmac.new(
        settings.SECRET_KEY.encode(), f"case-token:{token_salt}".encode(), "sha256"
    ).digest()
    return _encode(legacy)


def _encode(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")
