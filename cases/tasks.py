"""Celery tasks: thin entry points that load rows by id and call one service.

Every task is safe to deliver twice (``acks_late`` means a task whose worker
died is delivered again): the services check the database before acting.
"""

from celery import shared_task
from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings


def _backoff(*, base: int, maximum: int, retries: int) -> int:
    """Exponential backoff with full jitter, at least one second."""
    return max(
        1,
        get_exponential_backoff_interval(
            factor=base, retries=retries, maximum=maximum, full_jitter=True
        ),
    )


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,  # counted against settings.NOTIFICATION_MAX_RETRIES below
    soft_time_limit=60,
    time_limit=90,
)
def notification_send_task(self, *, notification_id: int) -> bool:
    from cases.notifications import (
        NotificationDeliveryError,
        notification_give_up,
        notification_retry_scheduled,
        notification_send,
    )

    try:
        return notification_send(notification_id=notification_id)
    except (NotificationDeliveryError, ConnectionError, TimeoutError) as exc:
        if self.request.retries >= settings.NOTIFICATION_MAX_RETRIES:
            notification_give_up(notification_id=notification_id)
            return False
        countdown = _backoff(
            base=settings.NOTIFICATION_RETRY_BACKOFF,
            maximum=settings.NOTIFICATION_RETRY_BACKOFF_MAX,
            retries=self.request.retries,
        )
        notification_retry_scheduled(
            notification_id=notification_id, countdown=countdown
        )
        raise self.retry(exc=exc, countdown=countdown) from exc


@shared_task(
    acks_late=True, reject_on_worker_lost=True, soft_time_limit=120, time_limit=150
)
def notifications_send_batch_task(*, notification_ids: list[int]) -> dict:
    """Send a batch of notices over one SMTP connection; retry the refused one by one."""
    from cases.notifications import (
        notification_retry_scheduled,
        notifications_send_batch,
    )

    done = notifications_send_batch(notification_ids=notification_ids)
    for notification_id in done["failed"]:
        countdown = _backoff(
            base=settings.NOTIFICATION_RETRY_BACKOFF,
            maximum=settings.NOTIFICATION_RETRY_BACKOFF_MAX,
            retries=0,
        )
        notification_retry_scheduled(
            notification_id=notification_id, countdown=countdown
        )
        notification_send_task.apply_async(
            kwargs={"notification_id": notification_id}, countdown=countdown
        )
    return done


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,  # counted against settings.EXECUTION_MAX_RETRIES below
    soft_time_limit=300,
    time_limit=360,
)
def case_execute_task(self, *, case_id: int) -> str:
    from cases.services.execution import (
        TRANSIENT_ERRORS,
        case_execute,
        case_execution_give_up,
        case_execution_retry_scheduled,
    )

    try:
        return str(case_execute(case_id=case_id))
    except TRANSIENT_ERRORS as exc:
        if self.request.retries >= settings.EXECUTION_MAX_RETRIES:
            case_execution_give_up(case_id=case_id, error=exc)
            return "failed"
        countdown = _backoff(
            base=settings.EXECUTION_RETRY_BACKOFF,
            maximum=settings.EXECUTION_RETRY_BACKOFF_MAX,
            retries=self.request.retries,
        )
        case_execution_retry_scheduled(case_id=case_id, countdown=countdown)
        raise self.retry(exc=exc, countdown=countdown) from exc


@shared_task(acks_late=True)
def outbox_sweep_task() -> dict:
    from cases.services.housekeeping import outbox_sweep

    return outbox_sweep()


@shared_task(acks_late=True)
def cases_expire_unverified_task() -> int:
    from cases.services.housekeeping import cases_expire_unverified

    return cases_expire_unverified()


@shared_task(acks_late=True)
def info_requests_follow_up_task() -> dict:
    from cases.services.housekeeping import info_requests_follow_up

    return info_requests_follow_up()


@shared_task(acks_late=True)
def overdue_digest_send_task() -> int:
    from cases.services.housekeeping import overdue_digest_send

    return overdue_digest_send()


@shared_task(acks_late=True, soft_time_limit=1800, time_limit=1900)
def documents_purge_expired_task() -> int:
    from cases.services.housekeeping import documents_purge_expired

    return documents_purge_expired()


@shared_task(acks_late=True)
def device_returns_remind_task() -> int:
    from cases.services.returns import device_returns_remind

    return device_returns_remind()


@shared_task(
    acks_late=True, reject_on_worker_lost=True, soft_time_limit=60, time_limit=90
)
def document_preview_render_task(*, document_id: int) -> str:
    from celery.exceptions import SoftTimeLimitExceeded

    from cases.services.previews import document_preview_fail, document_preview_render

    try:
        return document_preview_render(document_id=document_id)
    except SoftTimeLimitExceeded:
        document_preview_fail(document_id=document_id, error="time limit")
        return "failed"


@shared_task(acks_late=True, reject_on_worker_lost=True)
def document_previews_render_task(*, document_ids: list[int]) -> int:
    """Queue one rendering task per document: a filing publishes one message."""
    from cases.services.previews import documents_preview_fan_out

    return documents_preview_fan_out(document_ids=document_ids)
