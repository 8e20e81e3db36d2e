"""The notification outbox: queue e-mails with their cause, deliver them after commit.

A notice is a ``Notification`` row written in the same transaction as the
change that causes it. After commit a task sends it; the row records the
attempts, the last error and ``sent_at``, so a second delivery of the task
sends nothing and the outbox sweeper can re-queue what the broker lost.

Templates: ``templates/emails/<kind>.subject.txt``, ``<kind>.txt`` and
``<kind>.html``, rendered in the notice's language.
"""

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db import DatabaseError, connection, transaction
from django.db.models import F, Q
from django.template.loader import render_to_string
from django.utils import timezone, translation

from cases import tasks
from cases.models import Case, Document, ExecutionStep, Notification, rows_update
from cases.sms import SMS, SmsRefused, notices_by_channel, sms_fallback, sms_message

logger = logging.getLogger(__name__)

# Notices re-queued per sweep; the rest wait for the next sweep.
SWEEP_BATCH_SIZE = 500

# Context keys that must not outlive the delivery of the notice.
SECRET_CONTEXT_KEYS = ("code", "tracking_url")
# What a queued notice is made of, besides its dedupe key.
QUEUED_FIELDS = ("case", "kind", "channel", "recipients", "context", "language")


@dataclass(frozen=True)
class DepartmentShare:
    """What one department's completion notice carries beyond the case itself.

    Every department is told the case reference, the merchant number and name
    and the terminals: that is what names the case in its own systems.
    """

    amounts: bool = False  # the final settlement total and its batch
    export: bool = False  # the terminals' transaction history (CSV) attached
    contact: bool = False  # the merchant's contact on file, masked
    steps: bool = False  # the execution steps and how each ended


# Data minimisation (PIPL art. 6: personal information shared only to the
# extent the purpose needs). Finance makes the final settlement and confirms
# each refund or deduction, so it gets the amounts and the transaction
# history. Sales keeps the merchant relationship: who the merchant is, which
# terminals left, whether the account closed or a device replaced them, and
# how to reach the merchant (masked; the full contact is in the back office);
# no money. Operations runs the devices: collection, SIM deactivation and the
# replacement, so it gets the steps and the devices; no money. A department
# not named here gets the common part only.
DEPARTMENT_SHARES: dict[str, DepartmentShare] = {
    "finance": DepartmentShare(amounts=True, export=True),
    "sales": DepartmentShare(contact=True),
    "operations": DepartmentShare(steps=True),
}


def department_share(department: str) -> DepartmentShare:
    return DEPARTMENT_SHARES.get(department, DepartmentShare())


def _template_base(notification: Notification) -> str:
    """``emails/<kind>``, or the department's own templates for its notice."""
    base = f"emails/{notification.kind}"
    department = notification.context.get("department", "")
    if (
        notification.kind == Notification.Kind.DEPARTMENT_COMPLETED
        and department in DEPARTMENT_SHARES
    ):
        base = f"{base}_{department}"
    return base


def _step_rows(steps: list) -> list[tuple[str, str]]:
    """The (step, status) codes of a notice as labels in the current language."""

    labels = dict(ExecutionStep.Step.choices)
    statuses = dict(ExecutionStep.Status.choices)
    return [
        (str(labels.get(step, step)), str(statuses.get(status, status)))
        for step, status in steps
    ]


def case_recipients(case: Case) -> list[str]:
    """The merchant's contact on file and the applicant, without duplicates."""
    recipients: list[str] = []
    for address in (case.merchant.contact_email, case.applicant_email):
        if address and address.lower() not in {r.lower() for r in recipients}:
            recipients.append(address)
    return recipients


def tracking_url(case: Case) -> str:
    return settings.SITE_URL.rstrip("/") + case.get_tracking_path()


def notification_queue(
    *,
    kind: str,
    recipients: list[str],
    dedupe_key: str,
    case: Case | None = None,
    context: dict | None = None,
    language: str | None = None,
    channel: str | None = None,
    new_case: bool = False,
) -> Notification:
    """Record a notice in the outbox and dispatch it after commit.

    Idempotent by ``dedupe_key``: queuing the same notice twice returns the
    first row and sends nothing more. Without ``channel``, a merchant notice
    also gets its SMS row as NOTIFICATION_CHANNELS says (``cases.sms``).
    ``new_case``: ``case`` was created in this transaction and the key names
    it, so no row can hold the key yet: the rows are inserted in one statement
    without looking first (a clash would still fail on the unique key).
    """
    notice = Notification(
        case=case,
        kind=kind,
        channel=channel or Notification.Channel.EMAIL,
        recipients=recipients,
        context=context or {},
        language=language or (case.language if case else settings.LANGUAGE_CODE),
        queued_at=timezone.now(),
        dedupe_key=dedupe_key,
    )
    rows = []
    if new_case:
        rows = Notification.objects.bulk_create(
            [notice] if channel else notices_by_channel(notice)
        )
        for notification in rows:
            notification_dispatch(notification_id=notification.pk)
        return rows[0]
    for row in [notice] if channel else notices_by_channel(notice):
        notification, created = Notification.objects.get_or_create(
            dedupe_key=row.dedupe_key,
            defaults={f: getattr(row, f) for f in (*QUEUED_FIELDS, "queued_at")},
        )
        if created:
            notification_dispatch(notification_id=notification.pk)
        rows.append(notification)
    return rows[0]


def notification_queue_many(*, notifications: list[Notification]) -> list[Notification]:
    """Record several unsaved notices at once (one statement) and dispatch them.

    Idempotent by ``dedupe_key`` like ``notification_queue``: rows that
    already exist are kept as they are and dispatched again, which is
    harmless since a notice is sent at most once. The rows returned are the
    given ones with their pks, in pk order.
    """
    unique: dict[str, Notification] = {}
    for notice in notifications:
        for row in notices_by_channel(notice):
            unique.setdefault(row.dedupe_key, row)
    notifications = list(unique.values())
    if not notifications:
        return []
    if connection.features.can_return_rows_from_bulk_insert:
        # One statement: INSERT … ON CONFLICT (dedupe_key) DO UPDATE (a no-op,
        # the stored row unchanged) RETURNING id, so every row gets its pk,
        # new or not. A row already there is dispatched again, harmlessly:
        # ``notification_send`` sends only a pending notice, once.
        Notification.objects.bulk_create(
            notifications,
            update_conflicts=True,
            unique_fields=["dedupe_key"],
            update_fields=["dedupe_key"],
        )
        rows = sorted(notifications, key=lambda row: row.pk)
    else:
        Notification.objects.bulk_create(notifications, ignore_conflicts=True)
        rows = list(
            Notification.objects.filter(
                dedupe_key__in=[n.dedupe_key for n in notifications]
            ).order_by("pk")
        )
    pending = [row.pk for row in rows if row.status == Notification.Status.PENDING]
    if len(pending) == 1:
        notification_dispatch(notification_id=pending[0])
    elif pending:
        notifications_dispatch_batch(notification_ids=pending)
    return rows


def notifications_dispatch_batch(*, notification_ids: list[int]) -> None:
    """Queue one task sending these notices over one SMTP connection, after commit.

    If the broker is down the rows stay pending and the sweeper re-queues
    each of them.
    """
    ids = list(notification_ids)

    def _send() -> None:
        try:
            tasks.notifications_send_batch_task.delay(notification_ids=ids)
        except Exception:  # broker unreachable: the outbox sweeper re-queues
            logger.warning(
                "broker unavailable; notifications %s left for the sweeper",
                ids,
                exc_info=True,
            )
            notifications_unqueued(notification_ids=ids)

    transaction.on_commit(_send)


def notifications_unqueued(*, notification_ids: list[int]) -> None:
    """Mark pending notices whose dispatch failed as never queued.

    The broker refused them, so no worker has them: clearing ``queued_at``
    lets the next sweep (every minute) take them at once instead of waiting
    out ``OUTBOX_SWEEP_AFTER`` as if a worker were sending them.
    """
    try:
        Notification.objects.filter(
            pk__in=notification_ids, status=Notification.Status.PENDING
        ).update(queued_at=None)
    except DatabaseError:  # the stamp stays; the sweeper still comes, later
        logger.warning("could not clear the queue stamp of %s", notification_ids)


def notification_dispatch(*, notification_id: int) -> None:
    """Queue delivery after the current transaction commits.

    If the broker is down the row stays pending and the sweeper retries.
    """

    def _send() -> None:
        try:
            tasks.notification_send_task.delay(notification_id=notification_id)
        except Exception:  # broker unreachable: the outbox sweeper re-queues
            logger.warning(
                "broker unavailable; notification %s left for the sweeper",
                notification_id,
                exc_info=True,
            )
            notifications_unqueued(notification_ids=[notification_id])

    transaction.on_commit(_send)


def notification_render(notification: Notification) -> tuple[str, str, str]:
    """Return (subject, text, html) of a notice in its language."""
    context = {
        "notification": notification,
        "case": notification.case,
        "site_url": settings.SITE_URL.rstrip("/"),
        **notification.context,
    }
    if notification.kind == Notification.Kind.OVERDUE_DIGEST:
        context["overdue_cases"] = _overdue_cases(notification.context)
    base = _template_base(notification)
    with translation.override(notification.language):
        if "steps" in notification.context:
            context["step_rows"] = _step_rows(notification.context["steps"])
        subject = render_to_string(f"{base}.subject.txt", context).strip()
        subject = " ".join(subject.split())
        reference = notification.case.reference if notification.case else None
        if reference and reference not in subject:
            subject = f"[{reference}] {subject}"
        text = render_to_string(f"{base}.txt", context)
        html = render_to_string(f"{base}.html", context)
    return subject, text, html


def _overdue_cases(context: dict) -> list[Case]:
    """The digest's cases as they are now (states read in the digest's language)."""
    if "overdue_cases" in context:  # staff preview passes unsaved samples
        return context["overdue_cases"]
    return list(
        Case.objects.filter(pk__in=context.get("case_ids", []))
        .select_related("assigned_to")
        .order_by("review_due_at", "pk")
    )


def notification_message_build(
    notification: Notification,
    attachments: dict[int, tuple[str, bytes, str] | None] | None = None,
) -> EmailMultiAlternatives:
    """The notice's e-mail; ``attachments`` caches the documents read (a batch's)."""
    subject, text, html = notification_render(notification)
    message = EmailMultiAlternatives(
        subject=subject,
        body=text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=notification.recipients,
        headers={"X-Notification-Id": str(notification.pk)},
    )
    message.attach_alternative(html, "text/html")
    cache = {} if attachments is None else attachments
    for document_id in notification.context.get("attachments", []):
        if document_id not in cache:
            cache[document_id] = _document_read(document_id)
        if cache[document_id] is not None:
            message.attach(*cache[document_id])
    return message


def _document_read(document_id: int) -> tuple[str, bytes, str] | None:
    """(name, content, type) of a document to attach, None if it is gone."""
    document = Document.objects.filter(pk=document_id, purged_at__isnull=True).first()
    if document is None or not document.file:
        return None
    with document.file.open("rb") as fh:
        return document.original_name, fh.read(), document.content_type


def notification_send(*, notification_id: int, connection=None) -> bool:
    """Send one pending notice once; return True if it was sent by this call.

    The row is locked while sending so two deliveries of the task cannot both
    send it. SMTP errors are recorded and re-raised for the task to retry.
    ``connection``: an open e-mail backend to send over (a batch shares one).
    """
    error: Exception | None = None
    with transaction.atomic():
        notification = (
            Notification.objects.select_for_update(of=("self",))
            .select_related("case__merchant")
            .filter(pk=notification_id)
            .first()
        )
        if notification is None or notification.status != Notification.Status.PENDING:
            return False
        notification.attempts += 1
        try:
            if notification.channel == SMS:
                message = sms_message(notification)
            else:
                message = notification_message_build(notification)
                if connection is not None:
                    message.connection = connection
            message.send(fail_silently=False)
        except Exception as exc:  # SMTP, socket and template errors alike
            error = exc
            notification.last_error = f"{type(exc).__name__}: {exc}"[:2000]
            notification.save(update_fields=["attempts", "last_error"])
        else:
            notification.status = Notification.Status.SENT
            notification.sent_at = timezone.now()
            notification.subject = message.subject[:255]
            notification.last_error = ""
            for key in SECRET_CONTEXT_KEYS:
                notification.context.pop(key, None)
            notification.save(
                update_fields=[
                    "status",
                    "sent_at",
                    "subject",
                    "attempts",
                    "last_error",
                    "context",
                ]
            )
    if isinstance(error, SmsRefused):  # permanent: e-mail instead, no retry
        notification_give_up(notification_id=notification_id)
        return False
    if error is not None:
        # Raised after commit so the attempt and the error stay recorded.
        raise NotificationDeliveryError(str(error)) from error
    return True


class NotificationDeliveryError(Exception):
    """The mail server did not take the message; worth retrying."""


SENT_FIELDS = ("status", "sent_at", "subject", "attempts", "last_error", "context")


def notifications_send_batch(*, notification_ids: list[int]) -> dict[str, list[int]]:
    """Send several pending notices over one SMTP connection, each once.

    One transaction around the sends: the pending rows locked with one
    ``SELECT … FOR UPDATE SKIP LOCKED`` (a row another sender holds is its to
    send), each attachment read once for the batch (a case's notices attach
    the same export), every attempt written with one UPDATE at the end. A
    notice the server refuses is recorded with its error and left pending for
    its own retry (returned in ``failed``); the connection is opened afresh
    for the next one. A refused SMS goes to e-mail instead (no retry). Return
    the ids ``sent`` by this call and the ids that ``failed``. (A worker
    killed in the middle of a batch rolls back its rows: that batch's sent
    notices go again, as a single notice would after a kill between its send
    and its commit.)
    """
    sent: list[int] = []
    failed: list[int] = []
    refused_sms: list[int] = []
    attachments: dict[int, tuple[str, bytes, str] | None] = {}
    with transaction.atomic():
        rows = list(
            Notification.objects.select_for_update(of=("self",), skip_locked=True)
            .select_related("case__merchant")
            .filter(pk__in=notification_ids, status=Notification.Status.PENDING)
            .order_by("pk")
        )
        connection = None
        try:
            for notification in rows:
                notification.attempts += 1
                try:
                    if notification.channel == SMS:
                        message = sms_message(notification)
                    else:
                        if connection is None:
                            connection = get_connection(fail_silently=False)
                            # Opened here, so each send leaves it open.
                            connection.open()
                        message = notification_message_build(
                            notification, attachments=attachments
                        )
                        message.connection = connection
                    message.send(fail_silently=False)
                except Exception as exc:  # SMTP, socket and template errors alike
                    notification.last_error = f"{type(exc).__name__}: {exc}"[:2000]
                    if isinstance(exc, SmsRefused):
                        refused_sms.append(notification.pk)
                    else:
                        failed.append(notification.pk)
                    if connection is not None and notification.channel != SMS:
                        _close_quietly(connection)
                        connection = None
                else:
                    notification.status = Notification.Status.SENT
                    notification.sent_at = timezone.now()
                    notification.subject = message.subject[:255]
                    notification.last_error = ""
                    for key in SECRET_CONTEXT_KEYS:
                        notification.context.pop(key, None)
                    sent.append(notification.pk)
        finally:
            if connection is not None:
                _close_quietly(connection)
            # Every attempt is recorded, sent or not.
            rows_update(rows, SENT_FIELDS)
    for notification_id in refused_sms:  # permanent: e-mail instead, no retry
        notification_give_up(notification_id=notification_id)
    return {"sent": sent, "failed": failed}


def _close_quietly(connection) -> None:
    try:
        connection.close()
    except Exception:  # a dead connection is dropped all the same
        logger.debug("closing the e-mail connection failed", exc_info=True)


def notification_retry_scheduled(*, notification_id: int, countdown: float) -> None:
    """Push back the sweeper while a retry waits in the broker for ``countdown`` s."""
    try:
        Notification.objects.filter(
            pk=notification_id, status=Notification.Status.PENDING
        ).update(queued_at=timezone.now() + timedelta(seconds=countdown))
    except DatabaseError:  # the sweeper re-queues it later all the same
        logger.warning("could not stamp the retry of notification %s", notification_id)


def notification_give_up(*, notification_id: int) -> None:
    """Mark a notice failed after its retries ran out (staff can resend it).

    A failed SMS falls back to e-mail.
    """
    with transaction.atomic():
        if Notification.objects.filter(
            pk=notification_id, status=Notification.Status.PENDING
        ).update(status=Notification.Status.FAILED):
            sms_fallback(notification_id=notification_id)


def notification_resend(*, notification: Notification) -> Notification | None:
    """Send a notice again: re-queue a pending or failed one, copy a sent one.

    A sent verification code is not copied (the code is gone and a new one
    must be asked for on the verify page); return None then.
    """
    if notification.status in (
        Notification.Status.PENDING,
        Notification.Status.FAILED,
    ):
        with transaction.atomic():
            updated = Notification.objects.filter(
                pk=notification.pk,
                status__in=[Notification.Status.PENDING, Notification.Status.FAILED],
            ).update(status=Notification.Status.PENDING, queued_at=timezone.now())
            if updated:
                notification_dispatch(notification_id=notification.pk)
        notification.refresh_from_db()
        return notification
    if notification.kind == Notification.Kind.VERIFICATION_CODE:
        return None
    context = {
        k: v for k, v in notification.context.items() if k not in SECRET_CONTEXT_KEYS
    }
    if notification.case is not None and "tracking_url" in notification.context:
        context["tracking_url"] = tracking_url(notification.case)
    with transaction.atomic():
        copy = notification_queue(
            kind=notification.kind,
            recipients=list(notification.recipients),
            dedupe_key=f"resend:{notification.pk}:{uuid.uuid4().hex}",
            case=notification.case,
            context=context,
            language=notification.language,
            channel=notification.channel,
        )
    return copy


def notifications_due(*, older_than: datetime) -> list[int]:
    """Ids of pending notices handed to the broker before ``older_than``,
    or never handed to it (the broker refused them)."""
    return list(
        Notification.objects.filter(
            Q(queued_at__lt=older_than) | Q(queued_at__isnull=True),
            status=Notification.Status.PENDING,
        )
        .order_by(F("queued_at").asc(nulls_first=True), "pk")
        .values_list("pk", flat=True)[:SWEEP_BATCH_SIZE]
    )


def notification_requeue(*, notification_id: int) -> bool:
    """Stamp a pending notice as queued now and dispatch it again."""
    with transaction.atomic():
        updated = Notification.objects.filter(
            pk=notification_id, status=Notification.Status.PENDING
        ).update(queued_at=timezone.now())
        if updated:
            notification_dispatch(notification_id=notification_id)
    return bool(updated)
