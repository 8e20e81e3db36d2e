"""Webhook subscriptions and deliveries, per the Standard Webhooks specification.

Contract:

- ``webhook_case_transition`` is called inside the transaction that changes a
  case's state (``cases.services.common.case_apply_transition``). It writes one
  delivery per matching subscription, so a rolled-back change announces
  nothing, and queues the sending after commit.
- ``deliveries_send`` sends due deliveries (a change's, queued as one task
  after commit, or the sweep's), each signed with every secret of the
  subscription valid now (several ``v1,`` signatures during a rotation), over
  kept-alive connections (urllib3 pools) per worker thread. The
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
import threading
import uuid
from datetime import UTC, datetime, timedelta

import requests
import urllib3
from django.conf import settings
from django.core.cache import cache
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone
from requests.certs import where as ca_bundle
from standardwebhooks import Webhook

from cases.models import rows_update
from webhooks import tasks
from webhooks.models import EVENT_TYPES, Delivery, Subscription, new_secret

logger = logging.getLogger(__name__)

# Sent per sweep at most; the rest wait for the next sweep.
SWEEP_BATCH = 200
USER_AGENT = "pos-unbinding-webhooks/1"
# Deliveries claimed, sent and recorded together (one UPDATE for their answers);
# their claim lasts the timeout of each of them plus 30 s.
CLAIM_CHUNK = 20

_local = threading.local()
# The active subscriptions and their event types, in the shared cache.
SUBSCRIPTIONS_CACHE_KEY = "webhooks:subscriptions:v1"
SUBSCRIPTIONS_CACHE_SECONDS = 60


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


def _cache_shared() -> bool:
    """Whether the default cache is one for every process (Redis), not per process."""
    backend = settings.CACHES["default"]["BACKEND"]
    return not backend.endswith(("LocMemCache", "DummyCache"))


def subscribed(event_type: str) -> list[int]:
    """Ids of the active subscriptions to ``event_type``.

    Every case transition asks, and most find none: with a cache shared by
    every process the list is kept there (``SUBSCRIPTIONS_CACHE_SECONDS`` at
    most) and dropped whenever a subscription is saved or deleted
    (``subscriptions_changed``, also once that transaction commits). A
    per-process cache would keep a worker blind to a subscription added in
    the web process, so without a shared one it is read from the database.
    """
    shared = _cache_shared()
    rows = cache.get(SUBSCRIPTIONS_CACHE_KEY) if shared else None
    if rows is None:
        rows = list(
            Subscription.objects.filter(is_active=True)
            .order_by("pk")
            .values_list("pk", "event_types")
        )
        if shared:
            cache.set(SUBSCRIPTIONS_CACHE_KEY, rows, SUBSCRIPTIONS_CACHE_SECONDS)
    return [pk for pk, types in rows if event_type in (types or [])]


def subscriptions_changed(**kwargs) -> None:
    """Drop the cached subscriptions now and once the change commits (signal receiver)."""
    cache.delete(SUBSCRIPTIONS_CACHE_KEY)
    # A reader between now and the commit may cache the old rows again.
    transaction.on_commit(lambda: cache.delete(SUBSCRIPTIONS_CACHE_KEY))


def webhook_case_transition(*, case, from_state: str) -> list[Delivery]:
    """Write the deliveries announcing ``case``'s new state (call inside its transaction)."""
    event_type = f"case.{case.state}"
    subscriptions = subscribed(event_type)
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
                subscription_id=subscription_id,
                webhook_id=f"msg_{uuid.uuid4().hex}",
                event_type=event_type,
                case_id=case.pk,
                case_reference=case.reference or "",
                payload=payload,
                next_attempt_at=now,
                created_at=now,
                retry_until=now + settings.WEBHOOK_RETRY_FOR,
            )
            for subscription_id in subscriptions
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
    """Queue one task sending these deliveries (one change's), in order."""
    if not ids:
        return
    try:
        tasks.webhook_deliveries_send_task.delay(delivery_ids=list(ids))
    except Exception:  # broker down: the sweep sends them later
        logger.warning("could not queue webhook deliveries %s", ids)


def retry_delay(attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failure: exponential, full jitter.

    The first retry comes within WEBHOOK_RETRY_BASE_SECONDS (20 s by default),
    well inside the contract's 60 s.
    """
    base = settings.WEBHOOK_RETRY_BASE_SECONDS
    ceiling = min(settings.WEBHOOK_RETRY_MAX_SECONDS, base * 2 ** (attempts - 1))
    # Half fixed, half random: spread the retries without making any immediate.
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _http() -> dict:
    """This thread's HTTP connection pools, one per proxy: kept alive across deliveries.

    urllib3 directly: requests' per-request work (preparing, hooks, cookies,
    adapters) was a third of the sender's CPU with a loopback receiver. The
    same semantics are kept: certificates verified against requests' CA
    bundle (certifi) for https, the environment's proxies honoured per URL
    (``no_proxy`` too, resolved once per URL with requests' own rules),
    redirects never followed, no retries here (the backoff is ours).
    """
    pools = getattr(_local, "pools", None)
    if pools is None:
        pools = _local.pools = {}
        _local.proxies = {}
        _local.signers = {}
    return pools


def _pool(url: str) -> urllib3.PoolManager:
    """The connection pool for ``url``: direct, or through the environment's proxy."""
    pools = _http()
    proxy = _local.proxies.get(url, False)
    if proxy is False:
        proxy = _local.proxies[url] = requests.utils.select_proxy(
            url, requests.utils.get_environ_proxies(url)
        )
    manager = pools.get(proxy)
    if manager is None:
        options = {
            "num_pools": 50,
            "cert_reqs": "CERT_REQUIRED",
            "ca_certs": ca_bundle(),
            "retries": False,
        }
        manager = pools[proxy] = (
            urllib3.ProxyManager(proxy, **options)
            if proxy
            else urllib3.PoolManager(**options)
        )
    return manager


def _signer(secret: str) -> Webhook:
    """The Standard Webhooks signer of ``secret`` (its key decoded once per thread)."""
    _http()
    signers = _local.signers
    signer = signers.get(secret)
    if signer is None:
        if len(signers) > 1000:
            signers.clear()
        signer = signers[secret] = Webhook(secret)
    return signer


def _claim(*, delivery_ids: list[int], now: datetime) -> list[Delivery]:
    """Hold the due deliveries that are first in line of their case for this sender.

    On PostgreSQL one statement (``_claim_sql``); elsewhere the ORM (``_claim_orm``),
    with the same rules. Return them, oldest first.
    """
    if connection.vendor == "postgresql":
        return _claim_sql(delivery_ids=delivery_ids, now=now)
    return _claim_orm(delivery_ids=delivery_ids, now=now)


# The rows among the ids that are pending and not locked by another sender;
# of them the due, unclaimed ones; of those the ones with no earlier pending
# delivery of their subscription and case outside that set (so a delivery
# goes only with every earlier one of its case going before it, in pk order)
# are claimed for the timeout of each plus 30 s, and returned with their
# subscription's URL and secrets.
CLAIM_SQL = """
WITH locked AS (
    SELECT id, subscription_id, case_id, next_attempt_at, claimed_until
    FROM webhooks_delivery
    WHERE id = ANY(%(ids)s) AND status = 'pending'
    FOR UPDATE SKIP LOCKED
), ready AS (
    SELECT id, subscription_id, case_id FROM locked
    WHERE next_attempt_at <= %(now)s
    AND (claimed_until IS NULL OR claimed_until <= %(now)s)
), claimable AS (
    SELECT r.id FROM ready r
    WHERE NOT EXISTS (
        SELECT 1 FROM webhooks_delivery e
        WHERE e.subscription_id = r.subscription_id AND e.case_id = r.case_id
        AND e.status = 'pending' AND e.id < r.id
        AND e.id NOT IN (SELECT id FROM ready)
    )
)
UPDATE webhooks_delivery d
SET claimed_until = %(now)s + make_interval(
    secs => %(timeout)s * (SELECT count(*) FROM claimable) + 30
)
FROM claimable c, webhooks_subscription s
WHERE d.id = c.id AND s.id = d.subscription_id
RETURNING d.id, d.subscription_id, d.webhook_id, d.case_id, d.payload,
    d.attempts, d.next_attempt_at, d.retry_until, d.delivered_at, d.last_error,
    d.claimed_until, s.url, s.secret, s.previous_secret, s.previous_secret_until
"""


def _claim_sql(*, delivery_ids: list[int], now: datetime) -> list[Delivery]:
    """Claim with one statement (``CLAIM_SQL``, its own transaction); oldest first."""
    with connection.cursor() as cursor:
        cursor.execute(
            CLAIM_SQL,
            {
                "ids": list(delivery_ids),
                "now": now,
                "timeout": float(settings.WEBHOOK_TIMEOUT_SECONDS),
            },
        )
        rows = cursor.fetchall()
    subscriptions: dict[int, Subscription] = {}
    claimed = []
    for row in sorted(rows):
        (pk, subscription_id, webhook_id, case_id, payload, attempts) = row[:6]
        (next_attempt_at, retry_until, delivered_at, last_error, until) = row[6:11]
        subscription = subscriptions.get(subscription_id)
        if subscription is None:
            url, secret, previous_secret, previous_until = row[11:]
            subscription = subscriptions[subscription_id] = Subscription(
                pk=subscription_id,
                url=url,
                secret=secret,
                previous_secret=previous_secret,
                previous_secret_until=previous_until,
            )
        if isinstance(payload, str):  # a driver that does not decode jsonb
            payload = json.loads(payload)
        delivery = Delivery(
            pk=pk,
            subscription_id=subscription_id,
            webhook_id=webhook_id,
            case_id=case_id,
            payload=payload,
            status=Delivery.Status.PENDING,
            attempts=attempts,
            next_attempt_at=next_attempt_at,
            retry_until=retry_until,
            delivered_at=delivered_at,
            last_error=last_error,
            claimed_until=until,
        )
        delivery.subscription = subscription
        claimed.append(delivery)
    return claimed


def _claim_orm(*, delivery_ids: list[int], now: datetime) -> list[Delivery]:
    """The claim with the ORM: one transaction, two statements: the rows locked (rows another sender is
    locking are skipped), each with the nearest earlier pending delivery of
    its subscription and case; then one UPDATE of the claim. A delivery waits
    while that earlier one is not claimed here before it; the ones claimed go
    out in ``pk`` order. Return them, oldest first.
    """
    earlier_pending = (
        Delivery.objects.filter(
            subscription_id=OuterRef("subscription_id"),
            case_id=OuterRef("case_id"),
            status=Delivery.Status.PENDING,
            pk__lt=OuterRef("pk"),
        )
        .order_by("-pk")
        .values("pk")[:1]
    )
    claimable: list[Delivery] = []
    with transaction.atomic():
        rows = list(
            Delivery.objects.select_for_update(of=("self",), skip_locked=True)
            .select_related("subscription")
            .annotate(earlier_pending=Subquery(earlier_pending))
            .filter(pk__in=delivery_ids, status=Delivery.Status.PENDING)
            .order_by("pk")
        )
        claimed: set[int] = set()
        for delivery in rows:
            if delivery.earlier_pending is not None and (
                delivery.earlier_pending not in claimed
            ):
                continue  # an earlier one of its case is not going first
            if delivery.next_attempt_at > now or (
                delivery.claimed_until and delivery.claimed_until > now
            ):
                continue  # not due, or another sender has it
            claimable.append(delivery)
            claimed.add(delivery.pk)
        if claimable:
            until = now + timedelta(
                seconds=settings.WEBHOOK_TIMEOUT_SECONDS * len(claimable) + 30
            )
            Delivery.objects.filter(pk__in=claimed).update(claimed_until=until)
    return claimable


def _post(delivery: Delivery) -> tuple[int | None, str]:
    """POST the signed delivery; return (status code or None, error text)."""
    body = json.dumps(delivery.payload, separators=(",", ":"), ensure_ascii=False)
    signed_at = datetime.now(UTC)
    signatures = [
        _signer(secret).sign(delivery.webhook_id, signed_at, body)
        for secret in delivery.subscription.secrets_at(signed_at)
    ]
    url = delivery.subscription.url
    try:
        response = _pool(url).urlopen(
            "POST",
            url,
            body=body.encode(),
            headers={
                "User-Agent": USER_AGENT,
                "Content-Type": "application/json",
                "webhook-id": delivery.webhook_id,
                "webhook-timestamp": str(int(signed_at.timestamp())),
                "webhook-signature": " ".join(signatures),
            },
            timeout=float(settings.WEBHOOK_TIMEOUT_SECONDS),
            retries=False,
            # A redirect is an answer that is not 2xx: retried, never followed.
            redirect=False,
            preload_content=True,  # read whole: the connection goes back to the pool
        )
    except urllib3.exceptions.NewConnectionError as exc:  # a ConnectTimeoutError too
        return None, str(exc)[:500]
    except urllib3.exceptions.TimeoutError:
        return None, "timed out"
    except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
        return None, str(exc)[:500] or exc.__class__.__name__
    code = response.status
    return code, "" if 200 <= code < 300 else f"HTTP {code}"


def _record(delivery: Delivery, *, code: int | None, error: str, now: datetime):
    """Note one attempt's answer on the (claimed) delivery, unsaved."""
    delivery.attempts += 1
    delivery.last_attempt_at = now
    delivery.last_status_code = code
    delivery.claimed_until = None
    if code is not None and 200 <= code < 300:
        delivery.status = Delivery.Status.DELIVERED
        delivery.delivered_at = now
        delivery.last_error = ""
        return
    delivery.last_error = (error or f"HTTP {code}")[:500]
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


RECORDED_FIELDS = (
    "attempts",
    "last_attempt_at",
    "last_status_code",
    "claimed_until",
    "status",
    "delivered_at",
    "last_error",
    "next_attempt_at",
)


def deliveries_send(
    *, delivery_ids: list[int], now: datetime | None = None
) -> dict[int, str]:
    """Send the due deliveries among ``delivery_ids``, in order per case; return statuses.

    The deliveries are claimed (``_claim``) and sent ``CLAIM_CHUNK`` at a time
    over this thread's kept-alive HTTP session, oldest first; the answers of a
    chunk are written with one UPDATE (``rows_update``). Once a delivery of a case fails, the
    later ones of that case wait for it. A delivered one lets the case's next
    pending delivery (not in this batch) go at once; a failed one is retried
    by its own task after its backoff (or by the sweep).
    """
    now = now or timezone.now()
    ids = sorted(set(delivery_ids))
    statuses: dict[int, str] = {}
    for start in range(0, len(ids), CLAIM_CHUNK):
        claimed = _claim(delivery_ids=ids[start : start + CLAIM_CHUNK], now=now)
        sent: list[Delivery] = []
        released: list[int] = []
        failing: set[tuple[int, int]] = set()
        for delivery in claimed:
            key = (delivery.subscription_id, delivery.case_id)
            if key in failing:  # an earlier one of its case just failed
                released.append(delivery.pk)
                continue
            code, error = _post(delivery)
            _record(delivery, code=code, error=error, now=now)
            if delivery.status != Delivery.Status.DELIVERED:
                failing.add(key)
            sent.append(delivery)
        if released:
            with transaction.atomic():
                rows_update(sent, RECORDED_FIELDS)
                Delivery.objects.filter(pk__in=released).update(claimed_until=None)
        else:  # one statement: its own transaction
            rows_update(sent, RECORDED_FIELDS)
        for delivery in sent:
            statuses[delivery.pk] = delivery.status
            if delivery.status == Delivery.Status.PENDING and not _eager():
                # Eagerly the countdown would be ignored and retry at once:
                # leave it to the sweep.
                try:
                    tasks.webhook_delivery_send_task.apply_async(
                        kwargs={"delivery_id": delivery.pk},
                        countdown=(delivery.next_attempt_at - now).total_seconds(),
                    )
                except Exception:  # broker down: the sweep retries it
                    logger.warning("could not schedule the retry of %s", delivery.pk)
        _send_next_of_cases(
            [d for d in sent if d.status == Delivery.Status.DELIVERED],
            batch=ids,
            now=now,
        )
    missing = [pk for pk in ids if pk not in statuses]
    if missing:
        statuses.update(
            Delivery.objects.filter(pk__in=missing).values_list("pk", "status")
        )
    return statuses


def delivery_send(*, delivery_id: int, now: datetime | None = None) -> str:
    """Send one delivery if it is due and first in line; return its status after."""
    return deliveries_send(delivery_ids=[delivery_id], now=now).get(delivery_id, "")


def _eager() -> bool:
    return bool(tasks.webhook_delivery_send_task.app.conf.task_always_eager)


def _send_next_of_cases(
    delivered: list[Delivery], *, batch: list[int], now: datetime
) -> None:
    """Send the pending deliveries that waited for these delivered ones, in order."""
    if not delivered:
        return
    keys = {(d.subscription_id, d.case_id) for d in delivered}
    case_ids = {d.case_id for d in delivered}
    after = min(d.pk for d in delivered)
    if connection.vendor == "postgresql":  # the same query without the ORM's cost
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT id, subscription_id, case_id FROM webhooks_delivery"
                " WHERE status = 'pending' AND case_id = ANY(%s)"
                " AND next_attempt_at <= %s AND id > %s AND NOT (id = ANY(%s))"
                " ORDER BY id",
                [list(case_ids), now, after, list(batch)],
            )
            rows = cursor.fetchall()
    else:
        rows = (
            Delivery.objects.filter(
                status=Delivery.Status.PENDING,
                case_id__in=case_ids,
                next_attempt_at__lte=now,
                pk__gt=after,
            )
            .exclude(pk__in=batch)
            .order_by("pk")
            .values_list("pk", "subscription_id", "case_id")
        )
    following = [
        pk
        for pk, subscription_id, case_id in rows
        if (subscription_id, case_id) in keys
    ]
    if following:
        deliveries_send(delivery_ids=following, now=now)


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
    if due:
        deliveries_send(delivery_ids=due, now=now)
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
