"""Redis and the mail server go away while merchants file and staff approve.

The form, the code page and the staff actions write to the database only;
the broker and the mail server are reached after commit, and the outbox
sweeper re-queues whatever did not get through.
"""

import secrets
import time
from datetime import timedelta
from http import HTTPStatus

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from cases.models import Case, CaseEvent, CaseState, Notification
from cases.services import housekeeping
from cases.services.review import case_transition
from tests import factories
from tests.faults.harness import filing_form, review_to_approval, wait_code
from tests.faults.invariants import binding_problems, case_problems, mail_problems
from tests.integration.harness import celery_broker, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(120),
]

# A request must not hang on a dead broker (publishing gives up within ~2 s).
MAX_SECONDS_WITHOUT_BROKER = 10


def registry():
    merchant = factories.MerchantFactory(contact_email="contact@onfile.example.com")
    terminals = [factories.BindingFactory(merchant=merchant).terminal for _ in range(2)]
    for terminal in terminals:
        factories.TransactionFactory(terminal=terminal)
    return merchant, terminals


def file_request(client: Client, merchant, terminals) -> tuple[Case, str]:
    response = client.post(
        reverse("cases:new"),
        filing_form(merchant, terminals, key=secrets.token_hex(16)),
    )
    assert response.status_code == HTTPStatus.FOUND, response.content[:500]
    token = response.url.split("/")[2]
    return Case.objects.get(case_terminals__terminal=terminals[0]), token


def sweep(settings) -> dict[str, int]:
    settings.OUTBOX_SWEEP_AFTER = timedelta(0)
    return housekeeping.outbox_sweep(now=timezone.now() + timedelta(seconds=1))


def all_sent(case, count: int) -> bool:
    notices = Notification.objects.filter(case=case)
    return (
        notices.count() == count
        and not notices.exclude(status=Notification.Status.SENT).exists()
    )


def test_redis_down_while_filing_and_while_approving_loses_nothing(
    start_worker, smtp, departments, own_redis, reviewer, approver, settings
):
    """Redis stops before the merchant files, and again before the approval.

    Lost: nothing. The form is filed at once with its code e-mail pending in
    the outbox; the approval is recorded with its event. When Redis is back
    the sweeper re-queues both; the code, the receipt and the completion
    notices each arrive once and the case is executed once.
    """
    # given: this process and the worker publish to a Redis the test stops
    merchant, terminals = registry()
    client = Client()
    with celery_broker(own_redis.url):
        own_redis.stop()

        # when: the merchant files while Redis is down
        started = time.monotonic()
        case, token = file_request(client, merchant, terminals)

        # then: filed promptly, the code waits in the outbox
        assert time.monotonic() - started < MAX_SECONDS_WITHOUT_BROKER
        assert case.state == CaseState.PENDING_VERIFICATION
        code_notice = Notification.objects.get(case=case)
        assert code_notice.status == Notification.Status.PENDING
        assert code_notice.attempts == 0

        # when: Redis is back, a worker runs and the sweeper passes
        own_redis.start()
        start_worker(broker=own_redis.url)
        assert sweep(settings) == {"notifications": 1, "cases": 0}

        # then: the code arrives and works
        code = wait_code(smtp, merchant.contact_email)
        response = client.post(
            reverse("cases:verify", kwargs={"token": token}), {"code": code}
        )
        assert response.status_code == HTTPStatus.FOUND
        wait_for(lambda: all_sent(case, 2), what="the code and the receipt sent")
        review_to_approval(case, reviewer=reviewer)

        # when: Redis stops again and the approver approves
        own_redis.stop()
        started = time.monotonic()
        case_transition(case_id=case.pk, name="approve", actor=approver)

        # then: the approval is recorded, the execution waits for the sweeper
        assert time.monotonic() - started < MAX_SECONDS_WITHOUT_BROKER
        case.refresh_from_db()
        assert case.state == CaseState.APPROVED
        # never queued, so the next sweep takes it without waiting
        assert case.execution_queued_at is None
        assert CaseEvent.objects.filter(case=case, transition="approve").count() == 1

        # when: Redis is back (empty: it keeps nothing) and the sweeper passes
        own_redis.start()
        assert sweep(settings) == {"notifications": 0, "cases": 1}

        # then: executed once, every notice sent once
        wait_for(
            lambda: (
                all_sent(case, 4 + len(departments))  # code, receipt, 2 completed
                and Case.objects.get(pk=case.pk).state == CaseState.COMPLETED
            ),
            timeout=60,
            what="the case completed and every notice sent",
        )
    case.refresh_from_db()
    assert case_problems(case) == []
    assert binding_problems(t.pk for t in terminals) == []
    assert mail_problems(smtp.received(), Notification.objects.all()) == []
    assert CaseEvent.objects.filter(case=case, transition="complete").count() == 1


def test_mail_server_down_then_back_delivers_each_mail_once(
    start_worker, smtp, departments
):
    """The mail server is down (connection refused) when the code is sent.

    Lost: nothing. The worker records each failed attempt and retries; when
    the server is back the code arrives once and still works, and the
    receipt follows.
    """
    # given: no mail server listening
    merchant, terminals = registry()
    smtp.down()
    start_worker()
    client = Client()

    # when
    case, token = file_request(client, merchant, terminals)

    # then: the notice is retried while the server is down
    notice = Notification.objects.get(case=case)
    wait_for(
        lambda: Notification.objects.get(pk=notice.pk).attempts >= 2,
        what="two failed attempts",
    )
    notice.refresh_from_db()
    assert notice.status == Notification.Status.PENDING
    assert "refused" in notice.last_error.lower()
    assert smtp.received() == []

    # when: the mail server is back
    smtp.up()

    # then: the code arrives once and works
    code = wait_code(smtp, merchant.contact_email)
    response = client.post(
        reverse("cases:verify", kwargs={"token": token}), {"code": code}
    )
    assert response.status_code == HTTPStatus.FOUND
    wait_for(lambda: all_sent(case, 2), what="the receipt sent")
    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTED
    assert len(smtp.received()) == 2
    assert mail_problems(smtp.received(), Notification.objects.all()) == []
    assert case_problems(case) == []
