"""The merchant page: sign in with a one-time code sent to the contact on file.

A merchant types the merchant number and picks the mobile or the e-mail ON
FILE (never a typed address). Every request writes a ``MerchantSignIn`` row,
also for a number we do not know, and the answer never says whether the
number exists. The code is stored hashed, valid ``MERCHANT_SIGN_IN_CODE_TTL``,
checked at most ``MERCHANT_SIGN_IN_MAX_ATTEMPTS`` times, not re-sent within
``CASE_VERIFICATION_RESEND_INTERVAL``, and a merchant's wrong codes of the
day are capped by ``VERIFICATION_MAX_FAILURES_PER_MERCHANT_PER_DAY`` as for
a case's code. A successful check opens a session: a random secret, stored
hashed on the row, idle for at most ``MERCHANT_SESSION_IDLE``.
"""

import hmac
import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from cases.models import MerchantSignIn, Notification
from cases.notifications import notification_queue
from cases.tokens import hash_secret
from terminals.models import Merchant

# Why no code was sent (kept on the row for the audit, never shown).
REFUSED_UNKNOWN = "unknown_merchant"
REFUSED_CLOSED = "closed"
REFUSED_NO_CONTACT = "no_contact_on_file"
REFUSED_TOO_SOON = "resend_too_soon"
REFUSED_DAILY_LIMIT = "daily_failure_limit"

# Results of a code check.
OK = "ok"
WRONG = "wrong"
EXPIRED = "expired"
LOCKED = "locked"
DAILY_LIMIT = "daily_limit"

# How often a signed-in page writes its "last seen" time.
TOUCH_EVERY = timedelta(minutes=1)


def _now() -> datetime:
    """Return the current time; a seam for tests."""
    return timezone.now()


def _code_hash(sign_in_id: int, code: str) -> str:
    return hash_secret(f"merchant-sign-in:{sign_in_id}:{code}")


def _failures_today(*, merchant_id: int, now: datetime) -> int:
    start = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    total = MerchantSignIn.objects.filter(
        merchant_id=merchant_id, created_at__gte=start
    ).aggregate(n=Sum("code_attempts"))["n"]
    return total or 0


def _refusal(merchant: Merchant | None, channel: str, *, now: datetime) -> str:
    if merchant is None:
        return REFUSED_UNKNOWN
    if merchant.status != Merchant.Status.ACTIVE:
        return REFUSED_CLOSED
    address = (
        merchant.contact_phone
        if channel == MerchantSignIn.Channel.SMS
        else merchant.contact_email
    )
    if not address:
        return REFUSED_NO_CONTACT
    if (
        _failures_today(merchant_id=merchant.pk, now=now)
        >= settings.VERIFICATION_MAX_FAILURES_PER_MERCHANT_PER_DAY
    ):
        return REFUSED_DAILY_LIMIT
    recent = MerchantSignIn.objects.filter(
        merchant=merchant,
        status=MerchantSignIn.Status.CODE_SENT,
        created_at__gt=now - settings.CASE_VERIFICATION_RESEND_INTERVAL,
    )
    if recent.exists():
        return REFUSED_TOO_SOON
    return ""


def merchant_sign_in_start(
    *, merchant_number: str, channel: str, client_ip: str | None = None
) -> MerchantSignIn:
    """Send a sign-in code to the contact on file; always return the audit row.

    The caller answers the same way whatever the row says, so nobody learns
    from the answer whether a merchant number exists.
    """
    if channel not in MerchantSignIn.Channel.values:
        channel = MerchantSignIn.Channel.SMS
    with transaction.atomic():
        now = _now()
        merchant = (
            Merchant.objects.select_for_update()
            .filter(merchant_id=merchant_number)
            .first()
        )
        refused = _refusal(merchant, channel, now=now)
        sign_in = MerchantSignIn.objects.create(
            merchant=merchant,
            merchant_number=merchant_number[:20],
            channel=channel,
            status=MerchantSignIn.Status.REFUSED
            if refused
            else MerchantSignIn.Status.CODE_SENT,
            refused_because=refused,
            client_ip=client_ip,
            created_at=now,
        )
        if refused:
            return sign_in
        code = f"{secrets.randbelow(10**6):06d}"
        sign_in.code_hash = _code_hash(sign_in.pk, code)
        sign_in.code_expires_at = now + settings.MERCHANT_SIGN_IN_CODE_TTL
        sign_in.save(update_fields=["code_hash", "code_expires_at"])
        sms = channel == MerchantSignIn.Channel.SMS
        notification_queue(
            kind=Notification.Kind.SIGN_IN_CODE,
            recipients=[merchant.contact_phone if sms else merchant.contact_email],
            channel=Notification.Channel.SMS if sms else Notification.Channel.EMAIL,
            context={
                "code": code,
                "merchant_name": merchant.name,
                "ttl_minutes": int(
                    settings.MERCHANT_SIGN_IN_CODE_TTL.total_seconds() // 60
                ),
            },
            dedupe_key=f"merchant-sign-in:{sign_in.pk}",
        )
    return sign_in


def merchant_sign_in_verify(
    *, sign_in_id: int, code: str, client_ip: str | None = None
) -> tuple[str, str]:
    """Check a sign-in code; return (result, session secret or "")."""
    with transaction.atomic():
        sign_in = (
            MerchantSignIn.objects.select_for_update().filter(pk=sign_in_id).first()
        )
        if sign_in is None or sign_in.merchant_id is None:
            return WRONG, ""
        # One merchant's checks wait for each other: the daily cap holds.
        Merchant.objects.select_for_update().filter(pk=sign_in.merchant_id).first()
        now = _now()
        if sign_in.status == MerchantSignIn.Status.LOCKED:
            return LOCKED, ""
        if sign_in.status != MerchantSignIn.Status.CODE_SENT:
            # Refused (no code was sent) answers like a wrong code; a used
            # code is spent.
            return WRONG, ""
        if (
            _failures_today(merchant_id=sign_in.merchant_id, now=now)
            >= settings.VERIFICATION_MAX_FAILURES_PER_MERCHANT_PER_DAY
        ):
            return DAILY_LIMIT, ""
        if sign_in.code_expires_at is None or sign_in.code_expires_at < now:
            return EXPIRED, ""
        if not hmac.compare_digest(sign_in.code_hash, _code_hash(sign_in.pk, code)):
            sign_in.code_attempts += 1
            fields = ["code_attempts"]
            if sign_in.code_attempts >= settings.MERCHANT_SIGN_IN_MAX_ATTEMPTS:
                sign_in.status = MerchantSignIn.Status.LOCKED
                sign_in.code_hash = ""
                fields += ["status", "code_hash"]
            sign_in.save(update_fields=fields)
            return (
                LOCKED if sign_in.status == MerchantSignIn.Status.LOCKED else WRONG
            ), ""
        secret = secrets.token_urlsafe(32)
        sign_in.status = MerchantSignIn.Status.SIGNED_IN
        sign_in.code_hash = ""
        sign_in.session_hash = hash_secret(f"merchant-session:{secret}")
        sign_in.signed_in_at = now
        sign_in.last_seen_at = now
        if client_ip:
            sign_in.client_ip = client_ip
        sign_in.save(
            update_fields=[
                "status",
                "code_hash",
                "session_hash",
                "signed_in_at",
                "last_seen_at",
                "client_ip",
            ]
        )
    return OK, secret


def merchant_session_resume(*, sign_in_id: int, secret: str) -> Merchant | None:
    """Return the signed-in merchant of a session, or None (unknown, idle, signed out).

    Records when the session was last used (at most once a minute), which
    is what the idle timeout counts from.
    """
    sign_in = (
        MerchantSignIn.objects.select_related("merchant")
        .filter(pk=sign_in_id, status=MerchantSignIn.Status.SIGNED_IN)
        .first()
    )
    if sign_in is None or not sign_in.session_hash or sign_in.merchant is None:
        return None
    if not hmac.compare_digest(
        sign_in.session_hash, hash_secret(f"merchant-session:{secret}")
    ):
        return None
    now = _now()
    if (
        sign_in.last_seen_at is None
        or sign_in.signed_in_at is None
        or now - sign_in.last_seen_at > settings.MERCHANT_SESSION_IDLE
        or now - sign_in.signed_in_at > settings.MERCHANT_SESSION_MAX_AGE
    ):
        return None
    if now - sign_in.last_seen_at > TOUCH_EVERY:
        MerchantSignIn.objects.filter(pk=sign_in.pk).update(last_seen_at=now)
    return sign_in.merchant


def merchant_sign_out(*, sign_in_id: int, secret: str) -> None:
    """End a session: its secret no longer opens the merchant page."""
    with transaction.atomic():
        sign_in = (
            MerchantSignIn.objects.select_for_update()
            .filter(pk=sign_in_id, status=MerchantSignIn.Status.SIGNED_IN)
            .first()
        )
        if sign_in is None or not hmac.compare_digest(
            sign_in.session_hash, hash_secret(f"merchant-session:{secret}")
        ):
            return
        sign_in.status = MerchantSignIn.Status.SIGNED_OUT
        sign_in.session_hash = ""
        sign_in.signed_out_at = _now()
        sign_in.save(update_fields=["status", "session_hash", "signed_out_at"])
