"""Celery tasks: thin entry points that load rows by id and call one service."""

from celery import shared_task

from cases.notifications import NotificationDeliveryError


@shared_task(
    bind=True,
    autoretry_for=(NotificationDeliveryError, ConnectionError, TimeoutError),
    retry_backoff=5,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=12,
    acks_late=True,
)
def send_notification_task(self, *, notification_id: int) -> bool:
    from cases.notifications import notification_send

    return notification_send(notification_id=notification_id)


@shared_task(acks_late=True)
def execute_case_task(*, case_id: int) -> None:
    """Placeholder until the execution lands: it does nothing yet."""
