"""A case whose dispatch failed is taken by the very next sweep.

The approval used to stamp the case as queued even when the broker refused
the task, so the sweeper skipped it for another OUTBOX_SWEEP_AFTER (two
minutes) after the broker came back.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from cases.models import Case, CaseState, Notification
from cases.notifications import notification_queue
from cases.services import housekeeping, review
from tests import factories
from tests.integration.harness import celery_broker

pytestmark = pytest.mark.django_db

# Nothing listens on port 1: publishing fails like a stopped Redis.
BROKER_DOWN = "redis://127.0.0.1:1/0"


def recommended(reviewer) -> Case:
    case = factories.CaseFactory(
        state=CaseState.AWAITING_APPROVAL,
        assigned_to=reviewer,
        recommended_by=reviewer,
    )
    factories.accepted_documents_for(case, reviewer=reviewer)
    return case


@pytest.mark.timeout(60)
def test_an_approval_whose_dispatch_failed_is_executed_by_the_next_sweep(
    reviewer, approver, settings, django_capture_on_commit_callbacks
):
    # given: the broker is down while the approver approves
    settings.OUTBOX_SWEEP_AFTER = timedelta(minutes=2)
    case = recommended(reviewer)
    with (
        celery_broker(BROKER_DOWN),
        django_capture_on_commit_callbacks(execute=True),
    ):
        review.case_transition(case_id=case.pk, name="approve", actor=approver)
    case.refresh_from_db()
    assert case.state == CaseState.APPROVED

    # when: the broker is back (tasks run in-process here) and the sweeper
    # passes a minute later, well inside OUTBOX_SWEEP_AFTER
    with django_capture_on_commit_callbacks(execute=True):
        swept = housekeeping.outbox_sweep(now=timezone.now() + timedelta(minutes=1))

    # then: picked up and executed now, not two minutes later
    case.refresh_from_db()
    assert swept["cases"] == 1
    assert case.state == CaseState.COMPLETED


@pytest.mark.timeout(60)
def test_a_sweep_whose_dispatch_failed_leaves_the_case_for_the_next_sweep(
    settings, django_capture_on_commit_callbacks
):
    # given: an approved case the broker lost, swept while the broker is down
    settings.OUTBOX_SWEEP_AFTER = timedelta(minutes=2)
    long_ago = timezone.now() - timedelta(minutes=10)
    case = factories.CaseFactory(state=CaseState.APPROVED, execution_queued_at=long_ago)
    with (
        celery_broker(BROKER_DOWN),
        django_capture_on_commit_callbacks(execute=True),
    ):
        first = housekeeping.outbox_sweep()

    # when: the broker is back at the next run, one minute later
    with django_capture_on_commit_callbacks(execute=True):
        second = housekeeping.outbox_sweep(now=timezone.now() + timedelta(minutes=1))

    # then
    case.refresh_from_db()
    assert first["cases"] == 1
    assert second["cases"] == 1
    assert case.state == CaseState.COMPLETED


@pytest.mark.timeout(60)
def test_a_dispatched_approval_is_not_swept_again_within_the_grace_period(
    reviewer, approver, settings, django_capture_on_commit_callbacks
):
    # given: the broker takes the task (in-process here)
    settings.OUTBOX_SWEEP_AFTER = timedelta(minutes=2)
    case = recommended(reviewer)
    with django_capture_on_commit_callbacks(execute=False):
        review.case_transition(case_id=case.pk, name="approve", actor=approver)

    # when: the sweeper passes a minute later
    swept = housekeeping.outbox_sweep(now=timezone.now() + timedelta(minutes=1))

    # then: a case that was queued is left to its worker
    assert swept["cases"] == 0


@pytest.mark.timeout(60)
def test_a_notice_the_broker_refused_is_sent_by_the_next_sweep(
    settings, mailoutbox, django_capture_on_commit_callbacks
):
    # given: a notice queued while the broker is down
    settings.OUTBOX_SWEEP_AFTER = timedelta(minutes=2)
    settings.NOTIFICATION_CHANNELS = ["email"]
    case = factories.CaseFactory(state=CaseState.SUBMITTED)
    with (
        celery_broker(BROKER_DOWN),
        django_capture_on_commit_callbacks(execute=True),
    ):
        notice = notification_queue(
            kind=Notification.Kind.RECEIPT,
            recipients=["shop@example.com"],
            dedupe_key=f"receipt:{case.pk}",
            case=case,
        )
    notice.refresh_from_db()
    assert notice.status == Notification.Status.PENDING
    assert notice.queued_at is None  # refused, so not waiting on a worker
    assert mailoutbox == []

    # when: the broker is back (in-process here) and the sweeper passes a
    # minute later, well inside OUTBOX_SWEEP_AFTER
    with django_capture_on_commit_callbacks(execute=True):
        swept = housekeeping.outbox_sweep(now=timezone.now() + timedelta(minutes=1))

    # then: sent now, once
    notice.refresh_from_db()
    assert swept["notifications"] == 1
    assert notice.status == Notification.Status.SENT
    assert [m.to for m in mailoutbox] == [["shop@example.com"]]


@pytest.mark.timeout(60)
def test_a_notice_handed_to_the_broker_is_not_swept_within_the_grace_period(
    settings, django_capture_on_commit_callbacks
):
    settings.OUTBOX_SWEEP_AFTER = timedelta(minutes=2)
    settings.NOTIFICATION_CHANNELS = ["email"]
    case = factories.CaseFactory(state=CaseState.SUBMITTED)
    with django_capture_on_commit_callbacks(execute=False):
        notification_queue(
            kind=Notification.Kind.RECEIPT,
            recipients=["shop@example.com"],
            dedupe_key=f"receipt:{case.pk}",
            case=case,
        )

    swept = housekeeping.outbox_sweep(now=timezone.now() + timedelta(minutes=1))

    assert swept["notifications"] == 0
