"""The beat jobs: sweeper, expiry, info follow-up, overdue digest, purge."""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from cases import tasks
from cases.models import Case, CaseEvent, CaseState, Document, Notification
from cases.notifications import notification_queue
from cases.services import housekeeping
from tests import factories


def backdate(obj, **fields) -> None:
    type(obj).objects.filter(pk=obj.pk).update(**fields)
    obj.refresh_from_db()


@pytest.mark.django_db
def test_sweeper_requeues_old_pending_notices_only(
    settings, django_capture_on_commit_callbacks
):
    # given: two notices whose dispatch the broker lost
    settings.OUTBOX_SWEEP_AFTER = timedelta(minutes=2)
    case = factories.CaseFactory(state="completed")
    old = notification_queue(
        kind="completed", recipients=["a@example.com"], dedupe_key="t:old", case=case
    )
    recent = notification_queue(
        kind="completed", recipients=["b@example.com"], dedupe_key="t:new", case=case
    )
    backdate(old, queued_at=timezone.now() - timedelta(minutes=5))
    before = timezone.now()

    # when
    with django_capture_on_commit_callbacks(execute=True):
        swept = tasks.outbox_sweep_task.apply().get()

    # then
    old.refresh_from_db()
    recent.refresh_from_db()
    assert swept == {"notifications": 1, "cases": 0}
    assert old.status == Notification.Status.SENT
    assert old.queued_at >= before
    assert recent.status == Notification.Status.PENDING
    assert [m.to for m in mail.outbox] == [["a@example.com"]]


@pytest.mark.django_db
def test_sweeper_requeues_approved_and_stalled_executing_cases(
    settings, django_capture_on_commit_callbacks
):
    # given
    settings.OUTBOX_SWEEP_AFTER = timedelta(minutes=2)
    long_ago = timezone.now() - timedelta(minutes=10)
    lost = factories.CaseFactory(state="approved", execution_queued_at=long_ago)
    stalled = factories.CaseFactory(state="executing", execution_queued_at=long_ago)
    fresh = factories.CaseFactory(state="approved", execution_queued_at=timezone.now())

    # when
    with django_capture_on_commit_callbacks(execute=True):
        swept = housekeeping.outbox_sweep()

    # then
    assert swept == {"notifications": 0, "cases": 2}
    for case in (lost, stalled):
        case.refresh_from_db()
        assert case.state == CaseState.COMPLETED
    fresh.refresh_from_db()
    assert fresh.state == CaseState.APPROVED


@pytest.mark.django_db
def test_unverified_cases_expire_after_the_limit(settings):
    # given
    settings.CASE_PENDING_VERIFICATION_EXPIRY = timedelta(hours=48)
    stale = factories.CaseFactory(state="pending_verification")
    backdate(stale, created_at=timezone.now() - timedelta(hours=49))
    fresh = factories.CaseFactory(state="pending_verification")

    # when
    expired = tasks.cases_expire_unverified_task.apply().get()
    again = housekeeping.cases_expire_unverified()

    # then
    assert (expired, again) == (1, 0)
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert stale.state == CaseState.EXPIRED
    assert stale.closed_at is not None
    assert not stale.case_terminals.filter(is_open=True).exists()
    assert fresh.state == CaseState.PENDING_VERIFICATION
    event = CaseEvent.objects.get(case=stale, transition="expire")
    assert event.actor_kind == CaseEvent.Actor.SYSTEM


@pytest.mark.django_db
def test_info_request_reminded_once_after_three_days(
    settings, django_capture_on_commit_callbacks
):
    # given
    settings.CASE_INFO_REMINDER_AFTER = timedelta(days=3)
    settings.CASE_INFO_WITHDRAW_AFTER = timedelta(days=14)
    waiting = factories.CaseFactory(
        state="info_requested", info_requested_at=timezone.now() - timedelta(days=4)
    )
    recent = factories.CaseFactory(
        state="info_requested", info_requested_at=timezone.now() - timedelta(days=1)
    )

    # when
    with django_capture_on_commit_callbacks(execute=True):
        first = tasks.info_requests_follow_up_task.apply().get()
        second = housekeeping.info_requests_follow_up()

    # then
    assert first == {"reminded": 1, "withdrawn": 0}
    assert second == {"reminded": 0, "withdrawn": 0}
    reminder = Notification.objects.get(kind=Notification.Kind.INFO_REMINDER)
    assert reminder.case == waiting
    assert reminder.status == Notification.Status.SENT
    waiting.refresh_from_db()
    assert waiting.info_reminded_at is not None
    assert waiting.state == CaseState.INFO_REQUESTED
    assert not Notification.objects.filter(case=recent).exists()
    assert waiting.reference in mail.outbox[0].subject


@pytest.mark.django_db
def test_a_new_info_request_gets_its_own_reminder(settings):
    # given: reminded about an earlier request, then asked again
    settings.CASE_INFO_REMINDER_AFTER = timedelta(days=3)
    now = timezone.now()
    case = factories.CaseFactory(
        state="info_requested",
        info_requested_at=now - timedelta(days=4),
        info_reminded_at=now - timedelta(days=6),
    )

    # when
    result = housekeeping.info_requests_follow_up()

    # then
    assert result["reminded"] == 1
    assert Notification.objects.filter(case=case, kind="info_reminder").count() == 1


@pytest.mark.django_db
def test_unanswered_info_request_is_withdrawn_after_fourteen_days(
    settings, django_capture_on_commit_callbacks
):
    # given
    settings.CASE_INFO_WITHDRAW_AFTER = timedelta(days=14)
    case = factories.CaseFactory(
        state="info_requested", info_requested_at=timezone.now() - timedelta(days=15)
    )

    # when
    with django_capture_on_commit_callbacks(execute=True):
        result = housekeeping.info_requests_follow_up()

    # then
    case.refresh_from_db()
    assert result == {"reminded": 0, "withdrawn": 1}
    assert case.state == CaseState.WITHDRAWN
    event = CaseEvent.objects.get(case=case, transition="withdraw")
    assert event.actor_kind == CaseEvent.Actor.SYSTEM
    assert "14" in event.note
    notice = Notification.objects.get(case=case)
    assert notice.kind == Notification.Kind.WITHDRAWN
    assert notice.status == Notification.Status.SENT


@pytest.mark.django_db
def test_overdue_digest_goes_once_a_day_to_reviewers_and_approvers(
    reviewer, approver, operations, django_capture_on_commit_callbacks
):
    # given
    overdue = factories.CaseFactory(
        state="in_review", review_due_at=timezone.now() - timedelta(days=1)
    )
    factories.CaseFactory(
        state="in_review", review_due_at=timezone.now() + timedelta(days=1)
    )
    factories.CaseFactory(
        state="completed", review_due_at=timezone.now() - timedelta(days=5)
    )

    # when
    with django_capture_on_commit_callbacks(execute=True):
        listed = tasks.overdue_digest_send_task.apply().get()
        housekeeping.overdue_digest_send()

    # then
    assert listed == 1
    digest = Notification.objects.get(kind=Notification.Kind.OVERDUE_DIGEST)
    assert sorted(digest.recipients) == sorted([reviewer.email, approver.email])
    assert digest.context["case_ids"] == [overdue.pk]
    assert len(mail.outbox) == 1
    assert overdue.reference in mail.outbox[0].body
    assert overdue.reference in mail.outbox[0].alternatives[0].content


@pytest.mark.django_db
def test_no_digest_when_nothing_is_overdue(reviewer):
    # given
    factories.CaseFactory(
        state="in_review", review_due_at=timezone.now() + timedelta(days=1)
    )

    # when
    listed = housekeeping.overdue_digest_send()

    # then
    assert listed == 0
    assert not Notification.objects.exists()


@pytest.mark.django_db
def test_documents_purged_after_retention_keep_metadata_and_audit(settings):
    # given
    settings.CASE_DOCUMENT_RETENTION = timedelta(days=180)
    old = factories.CaseFactory(state="completed")
    backdate(old, closed_at=timezone.now() - timedelta(days=181))
    recent = factories.CaseFactory(state="rejected")
    backdate(recent, closed_at=timezone.now() - timedelta(days=10))
    still_open = factories.CaseFactory(state="failed")
    old_doc = factories.DocumentFactory(case=old)
    recent_doc = factories.DocumentFactory(case=recent)
    open_doc = factories.DocumentFactory(case=still_open)
    storage = old_doc.file.storage
    old_name = old_doc.file.name

    # when
    purged = tasks.documents_purge_expired_task.apply().get()
    again = housekeeping.documents_purge_expired()

    # then
    assert (purged, again) == (1, 0)
    old_doc.refresh_from_db()
    assert old_doc.purged_at is not None
    assert not old_doc.file
    assert not storage.exists(old_name)
    assert (old_doc.original_name, old_doc.size) == ("licence.pdf", 15)
    for kept in (recent_doc, open_doc):
        kept.refresh_from_db()
        assert kept.purged_at is None
        assert storage.exists(kept.file.name)
    event = CaseEvent.objects.get(case=old, type=CaseEvent.Type.DOCUMENTS_PURGED)
    assert event.payload == {"documents": [old_doc.pk]}
    assert Case.objects.get(pk=old.pk).state == CaseState.COMPLETED
    assert Document.objects.count() == 3
