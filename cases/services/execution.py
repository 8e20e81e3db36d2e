"""Carry out an approved case in the background (see issue: execution)."""

import logging

from django.db import transaction

logger = logging.getLogger(__name__)


def execution_dispatch(*, case_id: int) -> None:
    """Queue the execution of an approved case after the current transaction commits.

    If the broker is unreachable the case stays ``approved`` with
    ``execution_queued_at`` set, and the outbox sweeper queues it again.
    """
    from cases.tasks import execute_case_task

    def _queue() -> None:
        try:
            execute_case_task.delay(case_id=case_id)
        except Exception:  # broker down: the sweeper picks the case up later
            logger.warning("broker unavailable; case %s left for the sweeper", case_id)

    transaction.on_commit(_queue)
