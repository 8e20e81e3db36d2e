"""Webhooks sent by a real Celery worker after commit, retried by the worker."""

import pytest

from cases.models import CaseState
from cases.services.review import case_transition
from tests import factories
from tests.integration.harness import wait_for
from tests.webhooks.test_deliveries import Receiver
from webhooks.models import Delivery
from webhooks.services import subscription_create

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(120),
]


def test_the_worker_sends_after_commit_and_retries_a_500_with_the_same_id(
    start_worker, reviewer
):
    # given: a receiver that fails once, a worker retrying after ~1 s
    receiver = Receiver()
    receiver.answers = [500]
    try:
        start_worker(WEBHOOK_RETRY_BASE_SECONDS="1")
        subscription_create(url=receiver.url)
        case = factories.CaseFactory(state=CaseState.SUBMITTED)

        # when
        case_transition(case_id=case.pk, name="start_review", actor=reviewer)

        # then
        wait_for(
            lambda: Delivery.objects.filter(status=Delivery.Status.DELIVERED).exists(),
            timeout=60,
            what="the delivery to succeed",
        )
    finally:
        receiver.stop()
    delivery = Delivery.objects.get()
    assert [r["status"] for r in receiver.received] == [500, 200]
    assert {r["headers"]["webhook-id"] for r in receiver.received} == {
        delivery.webhook_id
    }
    assert delivery.attempts == 2
