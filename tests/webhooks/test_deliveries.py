"""Webhook deliveries against a real HTTP receiver on loopback.

Time is simulated by running the due-deliveries sweep with a ``now`` seam
instead of waiting; the signatures carry the real time, as receivers check it.
"""

import io
import json
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone
from standardwebhooks import Webhook

from cases.models import CaseState
from cases.services import review
from tests import factories
from webhooks.models import EVENT_TYPES, Delivery, Subscription
from webhooks.services import (
    deliveries_send,
    delivery_sweep,
    subscription_create,
    subscription_rotate_secret,
)

pytestmark = pytest.mark.django_db


class Receiver:
    """A threaded HTTP server that records every POST and answers as told."""

    def __init__(self, port: int = 0, keep_alive: bool = False):
        self.received: list[dict] = []
        # TCP connections the senders opened.
        self.connections = 0
        # Status codes to answer, in order; 200 once they run out.
        self.answers: list[int] = []
        self.delay = 0.0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.1 keeps the connection open for the sender's next POST.
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

            def setup(self):
                super().setup()
                receiver.connections += 1

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.delay:
                    time.sleep(receiver.delay)
                status = receiver.answers.pop(0) if receiver.answers else 200
                receiver.received.append(
                    {
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "path": self.path,
                        "body": body,
                        "status": status,
                    }
                )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def delivered(self) -> list[dict]:
        return [r for r in self.received if 200 <= r["status"] < 300]


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.stop()


@pytest.fixture
def on_commit(django_capture_on_commit_callbacks):
    def run(func, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return func(*args, **kwargs)

    return run


def start_review(case, reviewer, on_commit):
    on_commit(
        review.case_transition, case_id=case.pk, name="start_review", actor=reviewer
    )


def reject(case, reviewer, on_commit):
    on_commit(
        review.case_transition,
        case_id=case.pk,
        name="reject",
        actor=reviewer,
        note="Documents do not match.",
    )


def test_add_webhook_subscribes_to_every_type_and_prints_the_secret_last():
    out = io.StringIO()

    call_command("add_webhook", "https://core.example.com/hooks", stdout=out)

    secret = out.getvalue().strip().splitlines()[-1]
    assert secret.startswith("whsec_")
    subscription = Subscription.objects.get()
    assert subscription.secret == secret
    assert set(subscription.event_types) == set(EVENT_TYPES)
    Webhook(secret)  # a valid Standard Webhooks secret


def test_a_delivery_is_signed_per_standard_webhooks(receiver, reviewer, on_commit):
    # given
    subscription = subscription_create(url=receiver.url)
    case = factories.CaseFactory(state=CaseState.SUBMITTED)

    # when
    start_review(case, reviewer, on_commit)

    # then
    assert len(receiver.received) == 1
    request = receiver.received[0]
    payload = Webhook(subscription.secret).verify(request["body"], request["headers"])
    assert payload["type"] == "case.in_review"
    assert payload["timestamp"]
    assert payload["data"]["reference"] == case.reference
    assert payload["data"]["state"] == "in_review"
    assert payload["data"]["merchant_id"] == case.merchant.merchant_id
    assert request["headers"]["webhook-signature"].startswith("v1,")
    delivery = Delivery.objects.get()
    assert request["headers"]["webhook-id"] == delivery.webhook_id
    assert delivery.status == Delivery.Status.DELIVERED


def test_a_rolled_back_change_announces_nothing(receiver, reviewer):
    # given
    subscription_create(url=receiver.url)
    case = factories.CaseFactory(state=CaseState.SUBMITTED)

    # when
    def change_then_fail():
        with transaction.atomic():
            review.case_transition(case_id=case.pk, name="start_review", actor=reviewer)
            written.append(Delivery.objects.count())  # written with the change
            raise RuntimeError

    written = []
    with pytest.raises(RuntimeError):
        change_then_fail()
    assert written == [1]

    # then
    assert Delivery.objects.count() == 0
    assert receiver.received == []


def test_only_subscribed_event_types_are_written(receiver, reviewer, on_commit):
    subscription_create(url=receiver.url, event_types=["case.rejected"])
    case = factories.CaseFactory(state=CaseState.SUBMITTED)

    start_review(case, reviewer, on_commit)
    reject(case, reviewer, on_commit)

    assert list(Delivery.objects.values_list("event_type", flat=True)) == [
        "case.rejected"
    ]


def test_a_500_is_retried_within_60_seconds_with_the_same_id_and_never_twice_after(
    receiver, reviewer, on_commit
):
    # given
    subscription_create(url=receiver.url)
    case = factories.CaseFactory(state=CaseState.SUBMITTED)
    receiver.answers = [500]

    # when
    start_review(case, reviewer, on_commit)
    delivery = Delivery.objects.get()
    first_try = timezone.now()

    # then: failed once, due again within a minute
    assert delivery.status == Delivery.Status.PENDING
    assert delivery.attempts == 1
    assert delivery.last_status_code == 500
    assert delivery.next_attempt_at - first_try <= timedelta(seconds=60)

    # when: a minute later the sweep runs, then runs again
    later = first_try + timedelta(seconds=61)
    delivery_sweep(now=later)
    delivery_sweep(now=later + timedelta(hours=1))

    # then
    assert [r["status"] for r in receiver.received] == [500, 200]
    ids = {r["headers"]["webhook-id"] for r in receiver.received}
    assert ids == {delivery.webhook_id}
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.DELIVERED
    assert delivery.attempts == 2


def test_a_timeout_is_retried_with_the_same_id(receiver, reviewer, on_commit, settings):
    # given
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.5
    subscription_create(url=receiver.url)
    case = factories.CaseFactory(state=CaseState.SUBMITTED)
    receiver.delay = 1.5

    # when
    start_review(case, reviewer, on_commit)
    delivery = Delivery.objects.get()
    assert delivery.status == Delivery.Status.PENDING
    assert delivery.last_status_code is None
    receiver.delay = 0
    delivery_sweep(now=timezone.now() + timedelta(seconds=60))

    # then
    time.sleep(1.2)  # let the slow first request finish on the receiver's side
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.DELIVERED
    assert {r["headers"]["webhook-id"] for r in receiver.received} == {
        delivery.webhook_id
    }


def test_a_receiver_down_for_ten_minutes_gets_everything_after_in_order_per_case(
    reviewer, on_commit
):
    # given: a receiver that is down
    probe = Receiver()
    port = probe.port
    url = probe.url
    probe.stop()
    subscription_create(url=url)
    cases = [factories.CaseFactory(state=CaseState.SUBMITTED) for _ in range(2)]

    # when: two changes per case while it is down, the sweep running every
    # 15 s of simulated time for ten minutes
    for case in cases:
        start_review(case, reviewer, on_commit)
    for case in cases:
        reject(case, reviewer, on_commit)
    start = timezone.now()
    for step in range(0, 600, 15):
        delivery_sweep(now=start + timedelta(seconds=step))
    assert Delivery.objects.filter(status=Delivery.Status.PENDING).count() == 4

    # when: it is back up
    receiver = Receiver(port=port)
    try:
        for step in range(600, 600 + 3600, 60):
            delivery_sweep(now=start + timedelta(seconds=step))
    finally:
        receiver.stop()

    # then: everything once, and per case in the order of the changes
    assert Delivery.objects.filter(status=Delivery.Status.DELIVERED).count() == 4
    got = [json.loads(r["body"]) for r in receiver.received]
    assert len({r["headers"]["webhook-id"] for r in receiver.received}) == 4
    assert len(got) == 4
    for case in cases:
        types = [p["type"] for p in got if p["data"]["reference"] == case.reference]
        assert types == ["case.in_review", "case.rejected"]


def test_a_delivery_failing_for_a_day_is_marked_failed(receiver, reviewer, on_commit):
    # given
    subscription_create(url=receiver.url)
    case = factories.CaseFactory(state=CaseState.SUBMITTED)
    receiver.answers = [503] * 1000
    start_review(case, reviewer, on_commit)
    start = timezone.now()

    # when: a day and a bit of sweeps, an hour apart
    for hour in range(1, 27):
        delivery_sweep(now=start + timedelta(hours=hour))

    # then
    delivery = Delivery.objects.get()
    assert delivery.status == Delivery.Status.FAILED
    attempts = len(receiver.received)
    delivery_sweep(now=start + timedelta(days=3))
    assert len(receiver.received) == attempts


def test_during_a_rotation_both_secrets_sign(receiver, reviewer, on_commit):
    # given
    subscription = subscription_create(url=receiver.url)
    old = subscription.secret
    rotated = subscription_rotate_secret(subscription_id=subscription.pk)
    case = factories.CaseFactory(state=CaseState.SUBMITTED)

    # when
    start_review(case, reviewer, on_commit)

    # then: a receiver with either secret accepts it
    request = receiver.received[0]
    assert len(request["headers"]["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(request["body"], request["headers"])
    Webhook(rotated.secret).verify(request["body"], request["headers"])


def test_after_the_overlap_only_the_new_secret_signs(receiver, reviewer, on_commit):
    subscription = subscription_create(url=receiver.url)
    rotated = subscription_rotate_secret(
        subscription_id=subscription.pk, overlap=timedelta(0)
    )
    case = factories.CaseFactory(state=CaseState.SUBMITTED)

    start_review(case, reviewer, on_commit)

    request = receiver.received[0]
    assert len(request["headers"]["webhook-signature"].split(" ")) == 1
    Webhook(rotated.secret).verify(request["body"], request["headers"])


def test_staff_resend_sends_again_with_the_same_id(
    receiver, reviewer, on_commit, admin_client
):
    # given
    subscription_create(url=receiver.url)
    case = factories.CaseFactory(state=CaseState.SUBMITTED)
    start_review(case, reviewer, on_commit)
    delivery = Delivery.objects.get()

    # when: the resend button on the delivery's admin page
    page = admin_client.get(f"/admin/webhooks/delivery/{delivery.pk}/change/")
    on_commit(admin_client.post, f"/admin/webhooks/delivery/{delivery.pk}/resend/")

    # then
    assert b"/resend/" in page.content
    assert len(receiver.received) == 2
    assert {r["headers"]["webhook-id"] for r in receiver.received} == {
        delivery.webhook_id
    }


def test_operations_see_the_delivery_log(client, operations):
    client.force_login(operations)

    response = client.get("/admin/webhooks/delivery/?status__exact=failed")

    assert response.status_code == 200


def test_a_later_change_waits_for_an_earlier_one_of_the_same_case(
    receiver, reviewer, on_commit
):
    # given: the first announcement failed and is due later than the second
    subscription_create(url=receiver.url)
    case = factories.CaseFactory(state=CaseState.SUBMITTED)
    receiver.answers = [500]
    start_review(case, reviewer, on_commit)
    reject(case, reviewer, on_commit)
    first, second = Delivery.objects.order_by("pk")
    now = timezone.now()
    Delivery.objects.filter(pk=first.pk).update(
        next_attempt_at=now + timedelta(minutes=5)
    )
    Delivery.objects.filter(pk=second.pk).update(next_attempt_at=now)

    # when: only the second is due
    delivery_sweep(now=now + timedelta(minutes=1))

    # then: nothing overtakes the first
    assert [json.loads(r["body"])["type"] for r in receiver.received] == [
        "case.in_review"
    ]

    # when: the first is due
    delivery_sweep(now=now + timedelta(minutes=6))

    # then
    assert [json.loads(r["body"])["type"] for r in receiver.received] == [
        "case.in_review",
        "case.in_review",
        "case.rejected",
    ]


def _announced_types(receiver, case) -> list[str]:
    return [
        payload["type"]
        for payload in (json.loads(r["body"]) for r in receiver.received)
        if payload["data"]["reference"] == case.reference
    ]


def test_a_batch_goes_over_one_kept_alive_connection_in_order_per_case(reviewer):
    # given: two changes of each of three cases, written but not sent yet
    receiver = Receiver(keep_alive=True)
    try:
        subscription = subscription_create(url=receiver.url)
        cases = [factories.CaseFactory(state=CaseState.SUBMITTED) for _ in range(3)]
        for case in cases:
            review.case_transition(case_id=case.pk, name="start_review", actor=reviewer)
        for case in cases:
            review.case_transition(
                case_id=case.pk, name="reject", actor=reviewer, note="No."
            )
        ids = list(Delivery.objects.values_list("pk", flat=True))

        # when: sent as one batch, then the same batch again (a second delivery
        # of the task)
        statuses = deliveries_send(delivery_ids=ids)
        again = deliveries_send(delivery_ids=ids)
    finally:
        receiver.stop()

    # then: six POSTs over one connection, each signed, in order per case, once
    assert set(statuses.values()) == {Delivery.Status.DELIVERED}
    assert set(again.values()) == {Delivery.Status.DELIVERED}
    assert len(receiver.received) == 6
    assert receiver.connections == 1
    for request in receiver.received:
        Webhook(subscription.secret).verify(request["body"], request["headers"])
    for case in cases:
        assert _announced_types(receiver, case) == ["case.in_review", "case.rejected"]


def test_in_a_batch_a_failed_delivery_holds_back_only_its_own_case(receiver, reviewer):
    # given: two cases with two changes each; the first POST gets a 500
    subscription_create(url=receiver.url)
    first, second = [factories.CaseFactory(state=CaseState.SUBMITTED) for _ in range(2)]
    for case in (first, second):
        review.case_transition(case_id=case.pk, name="start_review", actor=reviewer)
        review.case_transition(
            case_id=case.pk, name="reject", actor=reviewer, note="No."
        )
    receiver.answers = [500]

    # when
    statuses = deliveries_send(
        delivery_ids=list(Delivery.objects.values_list("pk", flat=True))
    )

    # then: the first case's later change waits, unsent and unclaimed; the
    # second case's go
    assert _announced_types(receiver, first) == ["case.in_review"]
    assert _announced_types(receiver, second) == ["case.in_review", "case.rejected"]
    held = Delivery.objects.get(case_id=first.pk, event_type="case.rejected")
    assert held.status == Delivery.Status.PENDING
    assert held.attempts == 0
    assert held.claimed_until is None
    failed = Delivery.objects.get(case_id=first.pk, event_type="case.in_review")
    assert statuses[failed.pk] == Delivery.Status.PENDING
    assert failed.attempts == 1
    assert failed.last_status_code == 500

    # when: the sweep after the retry delay
    delivery_sweep(now=timezone.now() + timedelta(seconds=61))

    # then
    assert _announced_types(receiver, first) == [
        "case.in_review",
        "case.in_review",
        "case.rejected",
    ]
    assert not Delivery.objects.exclude(status=Delivery.Status.DELIVERED).exists()


def test_a_delivery_claimed_by_another_sender_holds_back_its_case(receiver, reviewer):
    # given: two changes of a case; the first is held by another sender
    subscription_create(url=receiver.url)
    case = factories.CaseFactory(state=CaseState.SUBMITTED)
    review.case_transition(case_id=case.pk, name="start_review", actor=reviewer)
    review.case_transition(case_id=case.pk, name="reject", actor=reviewer, note="No.")
    first, later = Delivery.objects.order_by("pk")
    held_until = timezone.now() + timedelta(seconds=30)
    Delivery.objects.filter(pk=first.pk).update(claimed_until=held_until)

    # when
    statuses = deliveries_send(delivery_ids=[first.pk, later.pk])

    # then: neither is sent, the later one is left unclaimed
    assert receiver.received == []
    assert statuses == {
        first.pk: Delivery.Status.PENDING,
        later.pk: Delivery.Status.PENDING,
    }
    first.refresh_from_db()
    later.refresh_from_db()
    assert first.claimed_until == held_until
    assert first.attempts == 0
    assert later.claimed_until is None

    # when: that claim has run out
    delivery_sweep(now=held_until + timedelta(seconds=1))

    # then: both go, in order
    assert _announced_types(receiver, case) == ["case.in_review", "case.rejected"]


def test_deliveries_go_through_the_environments_proxy_unless_no_proxy(
    receiver, reviewer, monkeypatch
):
    # given: the receiver stands in for an HTTP proxy; a URL only it can reach
    monkeypatch.setenv("http_proxy", receiver.url.removesuffix("/hooks"))
    monkeypatch.setenv("no_proxy", "direct.example.test")
    url = f"http://hooks-{time.monotonic_ns()}.example.test/hooks"
    subscription = subscription_create(url=url)
    case = factories.CaseFactory(state=CaseState.SUBMITTED)

    # when
    review.case_transition(case_id=case.pk, name="start_review", actor=reviewer)
    deliveries_send(delivery_ids=list(Delivery.objects.values_list("pk", flat=True)))

    # then: the proxy got the absolute URL, signed
    assert [r["path"] for r in receiver.received] == [url]
    Webhook(subscription.secret).verify(
        receiver.received[0]["body"], receiver.received[0]["headers"]
    )
    assert Delivery.objects.get().status == Delivery.Status.DELIVERED

    # when: a host named in no_proxy (unresolvable, so tried directly it fails)
    Subscription.objects.update(url="http://direct.example.test/hooks")
    review.case_transition(case_id=case.pk, name="reject", actor=reviewer, note="No.")
    later = Delivery.objects.order_by("pk").last()
    deliveries_send(delivery_ids=[later.pk])

    # then: not through the proxy
    assert len(receiver.received) == 1
    later.refresh_from_db()
    assert later.status == Delivery.Status.PENDING
    assert later.last_status_code is None
    assert later.last_error


def test_staff_subscribe_a_url_in_admin_and_see_its_secret_once(admin_client):
    # when
    response = admin_client.post(
        "/admin/webhooks/subscription/add/",
        {
            "url": "https://crm.example.com/hooks",
            "event_types": ["case.completed", "case.failed"],
            "is_active": "on",
        },
        follow=True,
    )

    # then
    subscription = Subscription.objects.get()
    assert subscription.event_types == ["case.completed", "case.failed"]
    shown = " ".join(str(m) for m in response.context["messages"])
    assert subscription.secret in shown
    page = admin_client.get(f"/admin/webhooks/subscription/{subscription.pk}/change/")
    assert subscription.secret not in page.content.decode()


def test_an_unknown_event_type_is_refused_in_admin(admin_client):
    response = admin_client.post(
        "/admin/webhooks/subscription/add/",
        {"url": "https://crm.example.com/hooks", "event_types": ["case.nope"]},
    )

    assert response.status_code == 200
    assert Subscription.objects.count() == 0


@pytest.fixture
def shared_cache(settings, tmp_path):
    """A cache every process shares (files here; Redis in production)."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path / "cache"),
        }
    }
    yield
    from django.core.cache import cache

    cache.clear()


def _subscription_reads(queries) -> int:
    return sum('"webhooks_subscription"' in q["sql"] for q in queries)


def test_with_a_shared_cache_the_subscriptions_are_read_once_and_news_seen_at_once(
    shared_cache, reviewer, on_commit, receiver
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    first, second, third = [
        factories.CaseFactory(state=CaseState.SUBMITTED) for _ in range(3)
    ]

    # when: two transitions with no subscription
    with CaptureQueriesContext(connection) as queries:
        start_review(first, reviewer, on_commit)
        start_review(second, reviewer, on_commit)

    # then: the (empty) list is read once, nothing announced
    assert _subscription_reads(queries) == 1
    assert not Delivery.objects.exists()

    # when: a URL subscribes (in another process it would be the same cache)
    subscription = subscription_create(url=receiver.url)
    start_review(third, reviewer, on_commit)

    # then: the next transition announces itself
    assert Delivery.objects.get().case_id == third.pk
    assert len(receiver.delivered()) == 1

    # when: it is switched off
    subscription.is_active = False
    subscription.save()
    reject(third, reviewer, on_commit)

    # then
    assert Delivery.objects.count() == 1
