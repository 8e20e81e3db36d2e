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
import re
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


# The request form's idempotency key: 128 bits in lower-case hex, nothing
# else. Its first half is a random nonce, its second half a MAC of the nonce
# and of the browser's binding cookie, so only that browser can post it back.
SUBMISSION_KEY_RE = re.compile(r"[0-9a-f]{32}")
SUBMISSION_BINDING_KEY_SALT = "cases.tokens.submission_binding"
SUBMISSION_SALT_KEY_SALT = "cases.tokens.submission_salt"


def is_submission_key(value: str) -> bool:
    """Tell whether ``value`` has the exact format of a form's submission key."""
    return bool(value) and SUBMISSION_KEY_RE.fullmatch(value) is not None


def _submission_key_mac(*, binding: str, nonce: str) -> str:
    return salted_hmac(
        SUBMISSION_BINDING_KEY_SALT, f"{binding}:{nonce}", algorithm="sha256"
    ).hexdigest()[:16]


def submission_key_issue(*, binding: str) -> str:
    """Return a new submission key for the browser holding ``binding``."""
    nonce = secrets.token_hex(8)
    return nonce + _submission_key_mac(binding=binding, nonce=nonce)


def submission_key_is_bound(*, key: str, binding: str) -> bool:
    """Tell whether ``key`` was issued to the browser holding ``binding``."""
    if not is_submission_key(key) or not is_submission_key(binding):
        return False
    return constant_time_compare(
        key[16:], _submission_key_mac(binding=binding, nonce=key[:16])
    )


def salt_for_submission_key(key: str) -> str:
    """Derive a case's token salt from its form's submission key.

    The key is the idempotency key of one filled-in form: the same form posted
    twice finds the same case. The database keeps only this keyed hash of it
    (as the token salt), so neither the salt nor any other stored value,
    posted back as a submission key, leads to a case.
    """
    return salted_hmac(SUBMISSION_SALT_KEY_SALT, key, algorithm="sha256").hexdigest()[
        :32
    ]


def _encode(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")
