"""Periodic work run by Celery beat (see settings.CELERY_BEAT_SCHEDULE).

Each service is safe to run twice or at the same time on two machines: it
selects candidates, then re-checks each one under its row lock, and e-mails
are deduplicated by their outbox key.
"""

import logging
from datetime import datetime

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext

from cases import events, roles
from cases.models import (
    CLOSED_STATES,
    Case,
    CaseEvent,
    CaseState,
    Document,
    Notification,
)
from cases.notifications import (
    case_recipients,
    notification_queue,
    notification_requeue,
    notifications_due,
)
from cases.services import previews, retention
from cases.services.common import CaseActionError, case_apply_transition, case_lock
from cases.services.execution import case_execution_requeue, cases_due
from cases.services.intake import case_withdraw

logger = logging.getLogger(__name__)

# Candidates handled per run; the rest wait for the next run.
BATCH_SIZE = 500
# Cases listed in one overdue digest.
DIGEST_MAX_CASES = 200


def outbox_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """Re-queue pending notices and approved cases the broker may have lost.

    A notice or case whose ``queued_at`` / ``execution_queued_at`` is older
    than ``OUTBOX_SWEEP_AFTER`` is stamped again and dispatched. Sending and
    execution are idempotent, so re-queuing one that is merely slow is harmless.
    """
    now = now or timezone.now()
    cutoff = now - settings.OUTBOX_SWEEP_AFTER
    notices = sum(
        notification_requeue(notification_id=pk)
        for pk in notifications_due(older_than=cutoff)
    )
    cases = sum(
        case_execution_requeue(case_id=pk) for pk in cases_due(older_than=cutoff)
    )
    if notices or cases:
        logger.info("sweeper re-queued %s notices and %s cases", notices, cases)
    return {"notifications": notices, "cases": cases}


def cases_expire_unverified(*, now: datetime | None = None) -> int:
    """Expire cases whose identity code was not entered in time; return how many."""
    now = now or timezone.now()
    cutoff = now - settings.CASE_PENDING_VERIFICATION_EXPIRY
    ids = list(
        Case.objects.filter(
            state=CaseState.PENDING_VERIFICATION, created_at__lt=cutoff
        ).values_list("pk", flat=True)[:BATCH_SIZE]
    )
    expired = 0
    for case_id in ids:
        with transaction.atomic():
            case = case_lock(case_id=case_id)
            if case.state != CaseState.PENDING_VERIFICATION:
                continue
            case_apply_transition(
                case=case,
                name="expire",
                actor=None,
                note=gettext("The identity code was not entered in time."),
            )
            expired += 1
    return expired


def info_requests_follow_up(*, now: datetime | None = None) -> dict[str, int]:
    """Remind merchants who have not answered, then withdraw the forgotten cases.

    A reminder goes once per information request, ``CASE_INFO_REMINDER_AFTER``
    after it; the case is withdrawn ``CASE_INFO_WITHDRAW_AFTER`` after it,
    with an event and the withdrawn notice.
    """
    now = now or timezone.now()
    waiting = Case.objects.filter(state=CaseState.INFO_REQUESTED)
    withdraw_ids = list(
        waiting.filter(
            info_requested_at__lt=now - settings.CASE_INFO_WITHDRAW_AFTER
        ).values_list("pk", flat=True)[:BATCH_SIZE]
    )
    withdrawn = 0
    days = settings.CASE_INFO_WITHDRAW_AFTER.days
    for case_id in withdraw_ids:
        try:
            case_withdraw(
                case_id=case_id,
                actor=None,
                note=gettext(
                    "Withdrawn automatically: the requested information did not "
                    "arrive within %(days)s days."
                )
                % {"days": days},
            )
        except CaseActionError:
            continue  # answered or withdrawn meanwhile
        withdrawn += 1

    remind_ids = list(
        waiting.filter(
            Q(info_reminded_at__isnull=True)
            | Q(info_reminded_at__lt=F("info_requested_at")),
            info_requested_at__lt=now - settings.CASE_INFO_REMINDER_AFTER,
        )
        .exclude(pk__in=withdraw_ids)
        .values_list("pk", flat=True)[:BATCH_SIZE]
    )
    reminded = sum(info_reminder_send(case_id=pk, now=now) for pk in remind_ids)
    return {"reminded": reminded, "withdrawn": withdrawn}


def info_reminder_send(*, case_id: int, now: datetime) -> bool:
    """Queue the reminder of the case's current information request, once."""
    with transaction.atomic():
        case = case_lock(case_id=case_id)
        requested_at = case.info_requested_at
        if case.state != CaseState.INFO_REQUESTED or requested_at is None:
            return False
        if case.info_reminded_at and case.info_reminded_at >= requested_at:
            return False
        request = (
            CaseEvent.objects.filter(case=case, transition="request_info")
            .order_by("-pk")
            .first()
        )
        notification_queue(
            kind=Notification.Kind.INFO_REMINDER,
            recipients=case_recipients(case),
            case=case,
            dedupe_key=f"case:{case.pk}:info_reminder:{requested_at:%Y%m%d%H%M%S}",
            context={
                "note": request.note if request else "",
                "withdraw_on": (
                    timezone.localdate(requested_at + settings.CASE_INFO_WITHDRAW_AFTER)
                ).isoformat(),
            },
        )
        case.info_reminded_at = now
        case.save(update_fields=["info_reminded_at", "updated_at"])
    return True


def overdue_digest_recipients() -> list[str]:
    """E-mail addresses of the active Reviewer and Approver users."""
    return list(
        get_user_model()
        .objects.filter(
            groups__name__in=[roles.REVIEWER, roles.APPROVER], is_active=True
        )
        .exclude(email="")
        .order_by("email")
        .values_list("email", flat=True)
        .distinct()
    )


def overdue_digest_send(*, now: datetime | None = None) -> int:
    """Queue today's digest of overdue cases for reviewers and approvers.

    One notice per day (deduplicated by the date); nothing when no case is
    overdue. Return the number of cases listed.
    """
    now = now or timezone.now()
    ids = list(
        Case.objects.overdue(now=now)
        .order_by("review_due_at", "pk")
        .values_list("pk", flat=True)[: DIGEST_MAX_CASES + 1]
    )
    recipients = overdue_digest_recipients()
    if not ids or not recipients:
        return 0
    with transaction.atomic():
        notification_queue(
            kind=Notification.Kind.OVERDUE_DIGEST,
            recipients=recipients,
            dedupe_key=f"overdue_digest:{timezone.localdate(now):%Y-%m-%d}",
            context={
                "case_ids": ids[:DIGEST_MAX_CASES],
                "more": len(ids) > DIGEST_MAX_CASES,
                "date": timezone.localdate(now).isoformat(),
            },
            language=settings.LANGUAGE_CODE,
        )
    return min(len(ids), DIGEST_MAX_CASES)


def documents_purge_expired(*, now: datetime | None = None) -> int:
    """Delete the stored files of cases closed longer than the retention period.

    Merchant documents go ``CASE_DOCUMENT_RETENTION`` after the case closed;
    transaction exports are records and go only after
    ``RECORDS_RETENTION_YEARS``. Cases under an active legal hold (their own
    or their merchant's) are skipped. The document rows (name, size,
    checksum) and the audit trail stay; each purged document gets
    ``purged_at`` (its preview images go with it) and each case one event.
    Return the number of documents purged.
    """
    now = now or timezone.now()
    case_ids = list(
        Case.objects.filter(state__in=CLOSED_STATES)
        .filter(_purgeable_documents_q(now=now, prefix="documents__"))
        .exclude(pk__in=retention.cases_on_hold().values("pk"))
        .order_by("pk")
        .values_list("pk", flat=True)
        .distinct()[:BATCH_SIZE]
    )
    purged = 0
    for case_id in case_ids:
        purged += case_documents_purge(case_id=case_id, now=now)
    return purged


def _purgeable_documents_q(*, now: datetime, prefix: str = "") -> Q:
    """Documents past their period, relative to the case (``prefix`` from a case).

    Both branches are positive conditions on the same document, so that from
    a case (``documents__``) they match one document, not any two.
    """
    closed = "closed_at__lt" if prefix else "case__closed_at__lt"
    merchant_kinds = [k for k in Document.Kind.values if k != Document.Kind.DATA_EXPORT]
    return Q(
        **{
            f"{prefix}purged_at__isnull": True,
            f"{prefix}kind__in": merchant_kinds,
            closed: now - settings.CASE_DOCUMENT_RETENTION,
        }
    ) | Q(
        **{
            f"{prefix}purged_at__isnull": True,
            f"{prefix}kind": Document.Kind.DATA_EXPORT,
            closed: retention.records_retention_cutoff(now=now),
        }
    )


def case_documents_purge(*, case_id: int, now: datetime) -> int:
    """Delete the stored files of one closed case's expired documents; keep the rows."""
    with transaction.atomic():
        case = case_lock(case_id=case_id)
        if case.state not in CLOSED_STATES or retention.case_is_on_hold(case=case):
            return 0
        documents = list(
            Document.objects.select_for_update()
            .filter(case=case)
            .filter(_purgeable_documents_q(now=now))
        )
        for document in documents:
            if document.file:
                # Deleting a file already gone (a run that crashed) is a no-op.
                document.file.storage.delete(document.file.name)
            previews.document_preview_purge(document=document)
            document.file = ""
            document.purged_at = now
        Document.objects.bulk_update(documents, ["file", "purged_at"])
        if documents:
            events.documents_purged_event(
                case=case,
                document_ids=[d.pk for d in documents],
                note=gettext(
                    "Stored files of %(count)s documents deleted after the "
                    "retention period; their details are kept."
                )
                % {"count": len(documents)},
            )
    return len(documents)
