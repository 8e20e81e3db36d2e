"""Webhook subscriptions and deliveries, per the Standard Webhooks specification.

Contract:

- ``webhook_case_transition`` is called inside the transaction that changes a
  case's state (``cases.services.common.case_apply_transition``). It writes one
  delivery per matching subscription, so a rolled-back change announces
  nothing, and queues the sending after commit.
- ``delivery_send`` sends one due delivery, signed with every secret of the
  subscription valid now (several ``v1,`` signatures during a rotation). The
  ``webhook-id`` is the delivery's and never changes between attempts. A 2xx
  marks it delivered, for good: it is never sent again unless staff resend
  it. Anything else is retried with exponential backoff and full jitter;
  after ``WEBHOOK_RETRY_FOR`` it is failed.
- Per subscription and case, deliveries go out in the order of the changes:
  one waits while an earlier one of the same case is still pending.
- ``now`` arguments are the clock seam of the tests; signatures always carry
  the real time, as receivers check it against their clock.
"""

import json
import logging
import random
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone
from standardwebhooks import Webhook

from webhooks import tasks
from webhooks.models import EVENT_TYPES, Delivery, Subscription, new_secret

logger = logging.getLogger(__name__)

# Sent per sweep at most; the rest wait for the next sweep.
SWEEP_BATCH = 200
USER_AGENT = "pos-unbinding-webhooks/1"


def subscription_create(
    *, url: str, event_types: list[str] | None = None
) -> Subscription:
    """Subscribe ``url`` to ``event_types`` (every type when None)."""
    types = list(EVENT_TYPES) if event_types is None else list(event_types)
    unknown = set(types) - set(EVENT_TYPES)
    if unknown:
        raise ValueError(f"unknown event types: {', '.join(sorted(unknown))}")
    return Subscription.objects.create(url=url, event_types=types)


@transaction.atomic
def subscription_rotate_secret(
    *,
    subscription_id: int,
    overlap: timedelta | None = None,
    now: datetime | None = None,
) -> Subscription:
    """Give the subscription a new secret; the old one also signs during ``overlap``."""
    now = now or timezone.now()
    overlap = settings.WEBHOOK_SECRET_OVERLAP if overlap is None else overlap
    subscription = Subscription.objects.select_for_update().get(pk=subscription_id)
    subscription.previous_secret = subscription.secret
    subscription.previous_secret_until = now + overlap
    subscription.secret = new_secret()
    subscription.save(
        update_fields=["previous_secret", "previous_secret_until", "secret"]
    )
    return subscription


def case_event_payload(*, case, event_type: str, from_state: str, at: datetime) -> dict:
    """Return the JSON body announcing that ``case`` entered its current state."""
    serial_numbers = list(
        case.case_terminals.order_by("pk").values_list(
            "terminal__serial_number", flat=True
        )
    )
    return {
        "type": event_type,
        "timestamp": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "data": {
            "reference": case.reference,
            "state": case.state,
            "previous_state": from_state,
            "merchant_id": case.merchant.merchant_id,
            "serial_numbers": serial_numbers,
            "updated_at": case.updated_at.astimezone(UTC)
            .isoformat()
            .replace("+00:00", "Z"),
        },
    }


def webhook_case_transition(*, case, from_state: str) -> list[Delivery]:
    """Write the deliveries announcing ``case``'s new state (call inside its transaction)."""
    event_type = f"case.{case.state}"
    subscriptions = [
        s
        for s in Subscription.objects.filter(is_active=True)
        if event_type in (s.event_types or [])
    ]
    if not subscriptions:
        return []
    now = timezone.now()
    payload = case_event_payload(
        case=case, event_type=event_type, from_state=from_state, at=now
    )
    payload = json.loads(json.dumps(payload, cls=DjangoJSONEncoder))
    deliveries = Delivery.objects.bulk_create(
        [
            Delivery(
                subscription=subscription,
                webhook_id=f"msg_{uuid.uuid4().hex}",
                event_type=event_type,
                case_id=case.pk,
                case_reference=case.reference or "",
                payload=payload,
                next_attempt_at=now,
                created_at=now,
                retry_until=now + settings.WEBHOOK_RETRY_FOR,
            )
            for subscription in subscriptions
        ]
    )
    ids = [d.pk for d in deliveries if d.pk is not None]
    if not ids:  # backends that do not return pks from bulk_create
        ids = list(
            Delivery.objects.filter(
                webhook_id__in=[d.webhook_id for d in deliveries]
            ).values_list("pk", flat=True)
        )
    transaction.on_commit(lambda: _queue(ids))
    return deliveries


def _queue(ids: list[int]) -> None:
    for delivery_id in ids:
        try:
            tasks.webhook_delivery_send_task.delay(delivery_id=delivery_id)
        except Exception:  # broker down: the sweep sends it later
            logger.warning("could not queue webhook delivery %s", delivery_id)


def retry_delay(attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failure: exponential, full jitter.

    The first retry comes within WEBHOOK_RETRY_BASE_SECONDS (20 s by default),
    well inside the contract's 60 s.
    """
    base = settings.WEBHOOK_RETRY_BASE_SECONDS
    ceiling = min(settings.WEBHOOK_RETRY_MAX_SECONDS, base * 2 ** (attempts - 1))
    # Half fixed, half random: spread the retries without making any immediate.
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _blocked_by_earlier(delivery: Delivery) -> bool:
    return Delivery.objects.filter(
        subscription_id=delivery.subscription_id,
        case_id=delivery.case_id,
        pk__lt=delivery.pk,
        status=Delivery.Status.PENDING,
    ).exists()


def _claim(*, delivery_id: int, now: datetime) -> Delivery | None:
    """Hold a due delivery for this sender, or return None if it is not ours to send."""
    with transaction.atomic():
        delivery = (
            Delivery.objects.select_for_update()
            .select_related("subscription")
            .filter(pk=delivery_id)
            .first()
        )
        if delivery is None or delivery.status != Delivery.Status.PENDING:
            return None
        if delivery.next_attempt_at > now:
            return None
        if delivery.claimed_until and delivery.claimed_until > now:
            return None
        if _blocked_by_earlier(delivery):
            return None
        delivery.claimed_until = now + timedelta(
            seconds=settings.WEBHOOK_TIMEOUT_SECONDS + 30
        )
        delivery.save(update_fields=["claimed_until"])
        return delivery


def _post(delivery: Delivery) -> tuple[int | None, str]:
    """POST the signed delivery; return (status code or None, error text)."""
    body = json.dumps(delivery.payload, separators=(",", ":"), ensure_ascii=False)
    signed_at = datetime.now(UTC)
    signatures = [
        Webhook(secret).sign(delivery.webhook_id, signed_at, body)
        for secret in delivery.subscription.secrets_at(timezone.now())
    ]
    request = urllib.request.Request(
        delivery.subscription.url,
        data=body.encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "webhook-id": delivery.webhook_id,
            "webhook-timestamp": str(int(signed_at.timestamp())),
            "webhook-signature": " ".join(signatures),
        },
    )
    try:
        with urllib.request.urlopen(
            request, timeout=settings.WEBHOOK_TIMEOUT_SECONDS
        ) as response:
            return response.status, ""
    except urllib.error.HTTPError as exc:
        return exc.code, f"HTTP {exc.code}"
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return None, str(reason)[:500] or exc.__class__.__name__


def delivery_send(*, delivery_id: int, now: datetime | None = None) -> str:
    """Send one delivery if it is due and first in line; return its status after."""
    now = now or timezone.now()
    delivery = _claim(delivery_id=delivery_id, now=now)
    if delivery is None:
        status = (
            Delivery.objects.filter(pk=delivery_id)
            .values_list("status", flat=True)
            .first()
        )
        return status or ""
    code, error = _post(delivery)
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().get(pk=delivery_id)
        delivery.attempts += 1
        delivery.last_attempt_at = now
        delivery.last_status_code = code
        delivery.claimed_until = None
        if code is not None and 200 <= code < 300:
            delivery.status = Delivery.Status.DELIVERED
            delivery.delivered_at = now
            delivery.last_error = ""
        else:
            delivery.last_error = error or f"HTTP {code}"
            retry_at = now + timedelta(seconds=retry_delay(delivery.attempts))
            if retry_at > delivery.retry_until:
                delivery.status = Delivery.Status.FAILED
                logger.error(
                    "webhook delivery %s to %s failed for good: %s",
                    delivery.webhook_id,
                    delivery.subscription_id,
                    delivery.last_error,
                )
            else:
                delivery.next_attempt_at = retry_at
        delivery.save()
    if delivery.status == Delivery.Status.DELIVERED:
        _send_next_of_case(delivery, now=now)
    elif delivery.status == Delivery.Status.PENDING and not _eager():
        # Eagerly the countdown would be ignored and retry at once: leave it
        # to the sweep.
        try:
            tasks.webhook_delivery_send_task.apply_async(
                kwargs={"delivery_id": delivery.pk},
                countdown=(delivery.next_attempt_at - now).total_seconds(),
            )
        except Exception:  # broker down: the sweep retries it
            logger.warning("could not schedule the retry of %s", delivery.pk)
    return delivery.status


def _eager() -> bool:
    return bool(tasks.webhook_delivery_send_task.app.conf.task_always_eager)


def _send_next_of_case(delivery: Delivery, *, now: datetime) -> None:
    """Send the next pending delivery of the same case that waited for this one."""
    following = (
        Delivery.objects.filter(
            subscription_id=delivery.subscription_id,
            case_id=delivery.case_id,
            pk__gt=delivery.pk,
            status=Delivery.Status.PENDING,
            next_attempt_at__lte=now,
        )
        .order_by("pk")
        .values_list("pk", flat=True)
        .first()
    )
    if following is not None:
        delivery_send(delivery_id=following, now=now)


def delivery_sweep(*, now: datetime | None = None) -> int:
    """Send every due pending delivery, oldest first; return how many were tried."""
    now = now or timezone.now()
    due = list(
        Delivery.objects.filter(
            status=Delivery.Status.PENDING, next_attempt_at__lte=now
        )
        .order_by("pk")
        .values_list("pk", flat=True)[:SWEEP_BATCH]
    )
    for delivery_id in due:
        delivery_send(delivery_id=delivery_id, now=now)
    return len(due)


@transaction.atomic
def delivery_resend(*, delivery_id: int, now: datetime | None = None) -> Delivery:
    """Put a delivery back in line with the same ``webhook-id`` (staff resend)."""
    now = now or timezone.now()
    delivery = Delivery.objects.select_for_update().get(pk=delivery_id)
    delivery.status = Delivery.Status.PENDING
    delivery.next_attempt_at = now
    delivery.claimed_until = None
    # A fresh day of retries from now.
    delivery.retry_until = now + settings.WEBHOOK_RETRY_FOR
    delivery.save(
        update_fields=["status", "next_attempt_at", "claimed_until", "retry_until"]
    )
    transaction.on_commit(lambda: _queue([delivery.pk]))
    return delivery
