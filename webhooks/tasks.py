"""Celery tasks of the webhooks: each calls the one service it is named after."""

from celery import shared_task


@shared_task(acks_late=True, soft_time_limit=60, time_limit=90)
def webhook_delivery_send_task(*, delivery_id: int) -> str:
    from webhooks.services import delivery_send

    return delivery_send(delivery_id=delivery_id)


@shared_task(acks_late=True, soft_time_limit=300, time_limit=360)
def webhook_deliveries_send_task(*, delivery_ids: list[int]) -> dict[int, str]:
    from webhooks.services import deliveries_send

    return deliveries_send(delivery_ids=delivery_ids)


@shared_task(acks_late=True, soft_time_limit=300, time_limit=360)
def webhook_sweep_task() -> int:
    from webhooks.services import delivery_sweep

    return delivery_sweep()
