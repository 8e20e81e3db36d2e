"""Carry out an approved case in the background, exactly once per effect.

Celery delivers a task at least once, so ``case_execute`` may run twice for
the same case, at the same time or after a crash. Three things make that safe:

- a PostgreSQL advisory lock per case: a second delivery finds the case busy
  and exits (the lock is tied to the database session, so a killed worker
  releases it);
- one ``ExecutionStep`` row per case and step, committed in the same
  transaction as the step's effect: a later run skips the steps done and
  resumes at the first one not done;
- each effect (``terminals.services``) checks the registry first and does
  nothing that is already done.

Known transient errors (lost database connection, lock timeouts) propagate to
the task, which retries with backoff; any other error fails the case at its
step and e-mails the Operations group.
"""

import csv
import hashlib
import io
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from enum import StrEnum

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files import File
from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    transaction,
)
from django.db.models import F, Q
from django.utils import timezone, translation
from django.utils.translation import gettext

from cases import events, roles, tasks
from cases.models import (
    Case,
    CaseState,
    CaseTerminal,
    Document,
    ExecutionStep,
    Notification,
)
from cases.notifications import case_recipients, notification_queue_many
from cases.services.common import case_apply_transition
from terminals import services as registry
from terminals.models import Binding, Merchant, Terminal, Transaction

logger = logging.getLogger(__name__)

# Errors worth retrying: the database went away or a lock wait timed out.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    SoftTimeLimitExceeded,
)

# High bits of the advisory lock keys of case executions ("UB"), so they do
# not collide with other users of pg_advisory_lock.
LOCK_NAMESPACE = 0x5542 << 48

Step = ExecutionStep.Step

# The steps of DOMAIN.md, in order.
STEP_ORDER: tuple[str, ...] = (
    Step.VERIFY_BINDINGS,
    Step.SETTLE,
    Step.EXPORT,
    Step.UNBIND,
    Step.BIND_REPLACEMENT,
    Step.CLOSE_ACCOUNT,
    Step.NOTIFY,
)

# Cases re-queued per sweep; the rest wait for the next sweep.
SWEEP_BATCH_SIZE = 500

EXPORT_HEADER = (
    "serial_number",
    "terminal_id",
    "occurred_at",
    "amount",
    "settled",
    "settlement_batch",
)
# Rows fetched per round trip while streaming the export (bounded memory).
EXPORT_CHUNK_SIZE = 2000


class ExecutionOutcome(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    # Another worker holds the case; this delivery did nothing.
    BUSY = "busy"
    # The case is not approved or executing (already done, failed, ...).
    SKIPPED = "skipped"


class ExecutionError(Exception):
    """A step cannot be carried out; the case fails at that step."""


def case_execution_dispatch(*, case_id: int) -> None:
    """Queue the execution of an approved case after the current transaction commits.

    If the broker is unreachable the case stays ``approved`` with
    ``execution_queued_at`` set, and the outbox sweeper queues it again.
    """

    def _queue() -> None:
        try:
            tasks.case_execute_task.delay(case_id=case_id)
        except Exception:  # broker down: the sweeper picks the case up later
            logger.warning("broker unavailable; case %s left for the sweeper", case_id)

    transaction.on_commit(_queue)


@contextmanager
def case_execution_lock(*, case_id: int) -> Iterator[bool]:
    """Hold the case's advisory lock for the block; yield whether it was free.

    Session-level, so it spans the steps' separate transactions. On SQLite
    (single process in tests and local runs) there is nothing to lock.
    """
    connection = transaction.get_connection()
    if connection.vendor != "postgresql":
        yield True
        return
    key = LOCK_NAMESPACE + case_id
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        acquired = bool(cursor.fetchone()[0])
    try:
        yield acquired
    finally:
        if acquired:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
            except DatabaseError:
                # Dropping the session releases every lock it holds.
                connection.close()


def case_execute(*, case_id: int) -> ExecutionOutcome:
    """Carry out an approved case: run its steps not yet done, in order.

    Return what happened. Transient database errors propagate (the task
    retries); a step that fails otherwise fails the case.
    """
    with case_execution_lock(case_id=case_id) as acquired:
        if not acquired:
            logger.info("case %s is being executed by another worker", case_id)
            return ExecutionOutcome.BUSY
        return _case_run(case_id=case_id)


def _case_run(*, case_id: int) -> ExecutionOutcome:
    with transaction.atomic():
        case = (
            Case.objects.select_for_update(of=("self",))
            .select_related("merchant", "replacement_terminal")
            .filter(pk=case_id)
            .first()
        )
        if case is None:
            return ExecutionOutcome.SKIPPED
        if case.state == CaseState.APPROVED:
            case.failure_step = ""
            case.failure_reason = ""
            case_apply_transition(
                case=case,
                name="start_execution",
                actor=None,
                update_fields=("failure_step", "failure_reason"),
            )
        elif case.state != CaseState.EXECUTING:
            return ExecutionOutcome.SKIPPED
        steps = _steps_prepare(case=case)
    terminals = [
        link.terminal
        for link in CaseTerminal.objects.filter(case=case)
        .select_related("terminal")
        .order_by("terminal__serial_number")
    ]
    results = {s.step: s.result for s in steps}
    delay = float(getattr(settings, "EXECUTION_STEP_DELAY", 0) or 0)
    for step in steps:
        if step.status in (ExecutionStep.Status.DONE, ExecutionStep.Status.SKIPPED):
            continue
        if delay:  # test hook: widen the window for crash tests
            time.sleep(delay)
        if not _step_run(case=case, step=step, terminals=terminals, results=results):
            return ExecutionOutcome.FAILED
    return ExecutionOutcome.COMPLETED


def _steps_prepare(*, case: Case) -> list[ExecutionStep]:
    """Create the case's step rows once (steps not asked for are skipped)."""
    needed = {
        Step.BIND_REPLACEMENT: case.replacement_terminal_id is not None,
        Step.CLOSE_ACCOUNT: case.close_account,
    }
    ExecutionStep.objects.bulk_create(
        [
            ExecutionStep(
                case=case,
                step=name,
                position=position,
                status=(
                    ExecutionStep.Status.PENDING
                    if needed.get(name, True)
                    else ExecutionStep.Status.SKIPPED
                ),
            )
            for position, name in enumerate(STEP_ORDER, start=1)
        ],
        ignore_conflicts=True,
    )
    return list(ExecutionStep.objects.filter(case=case).order_by("position"))


def _step_run(
    *,
    case: Case,
    step: ExecutionStep,
    terminals: list[Terminal],
    results: dict[str, dict],
) -> bool:
    """Run one step with its row in one transaction; return False if the case failed."""
    now = timezone.now()
    try:
        with transaction.atomic():
            result = STEP_FUNCTIONS[step.step](
                case=case, terminals=terminals, results=results, now=now
            )
            step.status = ExecutionStep.Status.DONE
            step.result = result
            step.error = ""
            step.attempts += 1
            step.finished_at = now
            step.save(
                update_fields=["status", "result", "error", "attempts", "finished_at"]
            )
            results[step.step] = result
            if step.step == Step.NOTIFY:
                case_apply_transition(case=case, name="complete", actor=None)
    except TRANSIENT_ERRORS as exc:
        _step_note_error(step=step, error=exc)
        raise
    except Exception as exc:
        logger.warning("case %s failed at step %s: %s", case.pk, step.step, exc)
        case_execution_fail(case_id=case.pk, step=step.step, reason=_describe(exc))
        return False
    return True


def _describe(exc: BaseException) -> str:
    if isinstance(exc, registry.RegistryError | ExecutionError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"[:2000]


def _step_note_error(*, step: ExecutionStep, error: BaseException) -> None:
    """Record a transient error on the step row, if the database lets us."""
    try:
        ExecutionStep.objects.filter(pk=step.pk).update(
            attempts=F("attempts") + 1, error=_describe(error)
        )
    except DatabaseError:
        logger.warning("could not record the error of step %s", step.pk)


# --- the steps ----------------------------------------------------------------


def _step_verify_bindings(
    *, case: Case, terminals: list[Terminal], results: dict, now: datetime
) -> dict:
    """Check every terminal is still actively bound to the merchant as filed."""
    if case.merchant.status != Merchant.Status.ACTIVE:
        raise ExecutionError(
            gettext("Merchant %(id)s is closed.") % {"id": case.merchant.merchant_id}
        )
    ids = [t.pk for t in terminals]
    if case.replacement_terminal_id:
        ids.append(case.replacement_terminal_id)
    bound_to = dict(
        Binding.objects.active()
        .filter(terminal_id__in=ids)
        .values_list("terminal_id", "merchant_id")
    )
    problems = []
    for terminal in terminals:
        owner = bound_to.get(terminal.pk)
        if owner is None:
            problems.append(
                gettext("%(sn)s is no longer bound") % {"sn": terminal.serial_number}
            )
        elif owner != case.merchant_id:
            problems.append(
                gettext("%(sn)s is bound to another merchant")
                % {"sn": terminal.serial_number}
            )
    replacement = case.replacement_terminal
    if replacement is not None and bound_to.get(replacement.pk) not in (
        None,
        case.merchant_id,
    ):
        problems.append(
            gettext("replacement %(sn)s is bound to another merchant")
            % {"sn": replacement.serial_number}
        )
    if problems:
        raise ExecutionError(
            gettext("Bindings changed since filing: %(problems)s")
            % {"problems": "; ".join(problems)}
        )
    return {"terminals": [t.serial_number for t in terminals]}


def settlement_reference(case: Case) -> str:
    """The settlement batch reference of a case: the same on every run."""
    return f"{case.reference or f'CASE{case.pk}'}-FINAL"


def _step_settle(
    *, case: Case, terminals: list[Terminal], results: dict, now: datetime
) -> dict:
    """Settle the terminals' unsettled transactions in the case's one batch."""
    batch = registry.transactions_settle(
        merchant=case.merchant,
        terminals=terminals,
        reference=settlement_reference(case),
    )
    Case.objects.filter(pk=case.pk).update(
        settlement_batch=batch, settlement_total=batch.total
    )
    case.settlement_batch = batch
    case.settlement_total = batch.total
    return {
        "batch": batch.reference,
        "total": str(batch.total),
        "transactions": batch.transaction_count,
    }


def case_export_storage_name(case: Case) -> str:
    """Deterministic storage name: a rerun after a crash overwrites, never duplicates."""
    return f"cases/exports/{case.pk}/transactions-{case.reference or case.pk}.csv"


def _step_export(
    *, case: Case, terminals: list[Terminal], results: dict, now: datetime
) -> dict:
    """Stream the terminals' transaction history to a CSV stored with the case."""
    existing = (
        Document.objects.filter(case=case, kind=Document.Kind.DATA_EXPORT)
        .order_by("pk")
        .first()
    )
    if existing is not None:
        return {"document": existing.pk, "size": existing.size}
    rows = (
        Transaction.objects.filter(terminal_id__in=[t.pk for t in terminals])
        .order_by("terminal__serial_number", "occurred_at", "pk")
        .values_list(
            "terminal__serial_number",
            "terminal__terminal_id",
            "occurred_at",
            "amount",
            "settled",
            "settlement_batch__reference",
        )
        .iterator(chunk_size=EXPORT_CHUNK_SIZE)
    )
    storage = Document._meta.get_field("file").storage
    name = case_export_storage_name(case)
    count = 0
    digest = hashlib.sha256()
    with tempfile.TemporaryFile() as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        writer = csv.writer(text)
        writer.writerow(EXPORT_HEADER)
        for sn, tid, occurred_at, amount, settled, batch in rows:
            writer.writerow(
                [sn, tid, occurred_at.isoformat(), amount, int(settled), batch or ""]
            )
            count += 1
        text.flush()
        size = raw.tell()
        raw.seek(0)
        for chunk in iter(lambda: raw.read(64 * 1024), b""):
            digest.update(chunk)
        raw.seek(0)
        # A file left by a run that crashed before its commit is replaced.
        if storage.exists(name):
            storage.delete(name)
        saved = storage.save(name, File(raw, name=name))
        text.detach()
    document = Document.objects.create(
        case=case,
        kind=Document.Kind.DATA_EXPORT,
        file=saved,
        original_name=f"{case.reference or case.pk}-transactions.csv",
        size=size,
        sha256=digest.hexdigest(),
        content_type="text/csv",
        review_status=Document.ReviewStatus.ACCEPTED,
    )
    return {"document": document.pk, "size": size, "rows": count}


def _step_unbind(
    *, case: Case, terminals: list[Terminal], results: dict, now: datetime
) -> dict:
    """End the bindings of the case's terminals (history kept)."""
    released = []
    for terminal in terminals:
        binding = registry.binding_release(
            terminal=terminal,
            merchant=case.merchant,
            reason=f"case {case.reference or case.pk}: {case.reason}",
            at=now,
        )
        if binding is not None:
            released.append(terminal.serial_number)
    return {"released": released}


def _step_bind_replacement(
    *, case: Case, terminals: list[Terminal], results: dict, now: datetime
) -> dict:
    """Bind and activate the replacement device."""
    binding = registry.binding_create(
        terminal=case.replacement_terminal, merchant=case.merchant, at=now
    )
    return {"binding": binding.pk, "terminal": case.replacement_terminal.serial_number}


def _step_close_account(
    *, case: Case, terminals: list[Terminal], results: dict, now: datetime
) -> dict:
    """Close the merchant account (refused while a terminal is still bound)."""
    merchant = registry.merchant_close(merchant=case.merchant, at=now)
    return {"closed_at": merchant.closed_at.isoformat()}


def _step_notify(
    *, case: Case, terminals: list[Terminal], results: dict, now: datetime
) -> dict:
    """Queue the completion notices: merchant and applicant, then each department."""
    document_id = (results.get(Step.EXPORT) or {}).get("document")
    attachments = [document_id] if document_id else []
    total = "" if case.settlement_total is None else str(case.settlement_total)
    common = {
        "settlement_total": total,
        "settlement_reference": settlement_reference(case),
        "terminals": [t.serial_number for t in terminals],
        "replacement": (
            case.replacement_terminal.serial_number if case.replacement_terminal else ""
        ),
        "account_closed": case.close_account,
        "attachments": attachments,
    }
    notices = [
        Notification(
            case=case,
            kind=Notification.Kind.COMPLETED,
            recipients=case_recipients(case),
            dedupe_key=f"case:{case.pk}:completed",
            context={**common, "merchant_name": case.merchant.name},
            language=case.language,
            queued_at=now,
        )
    ]
    for department, address in sorted(settings.DEPARTMENT_EMAILS.items()):
        notices.append(
            Notification(
                case=case,
                kind=Notification.Kind.DEPARTMENT_COMPLETED,
                recipients=[address],
                dedupe_key=f"case:{case.pk}:department_completed:{department}",
                context={
                    **common,
                    "department": department,
                    "merchant_id": case.merchant.merchant_id,
                    "merchant_name": case.merchant.name,
                },
                language=case.language,
                queued_at=now,
            )
        )
    queued = notification_queue_many(notifications=notices)
    return {"notifications": [n.pk for n in queued]}


STEP_FUNCTIONS: dict[str, Callable[..., dict]] = {
    Step.VERIFY_BINDINGS: _step_verify_bindings,
    Step.SETTLE: _step_settle,
    Step.EXPORT: _step_export,
    Step.UNBIND: _step_unbind,
    Step.BIND_REPLACEMENT: _step_bind_replacement,
    Step.CLOSE_ACCOUNT: _step_close_account,
    Step.NOTIFY: _step_notify,
}


# --- failure ------------------------------------------------------------------


def operations_recipients() -> list[str]:
    """E-mail addresses of the active users of the Operations group."""
    addresses = (
        get_user_model()
        .objects.filter(groups__name=roles.OPERATIONS, is_active=True)
        .exclude(email="")
        .order_by("email")
        .values_list("email", flat=True)
        .distinct()
    )
    found = list(addresses)
    if not found and settings.DEPARTMENT_EMAILS.get("operations"):
        found = [settings.DEPARTMENT_EMAILS["operations"]]
    return found


def case_execution_fail(*, case_id: int, step: str, reason: str) -> bool:
    """Fail the case at ``step`` with ``reason``; e-mail Operations.

    Return False when the case is no longer approved or executing (another
    run already decided), so a failure is recorded and e-mailed once.
    """
    now = timezone.now()
    with transaction.atomic():
        case = (
            Case.objects.select_for_update(of=("self",))
            .select_related("merchant")
            .get(pk=case_id)
        )
        if case.state not in (CaseState.APPROVED, CaseState.EXECUTING):
            return False
        ExecutionStep.objects.filter(case=case, step=step).update(
            status=ExecutionStep.Status.FAILED,
            error=reason,
            attempts=F("attempts") + 1,
            finished_at=now,
        )
        case.failure_step = step
        case.failure_reason = reason
        case_apply_transition(
            case=case,
            name="fail",
            actor=None,
            payload={"step": step},
            update_fields=("failure_step", "failure_reason"),
        )
        event = events.step_failed_event(
            case=case, step=step, status=ExecutionStep.Status.FAILED, reason=reason
        )
        recipients = operations_recipients()
        if recipients:
            notification_queue_many(
                notifications=[
                    Notification(
                        case=case,
                        kind=Notification.Kind.EXECUTION_FAILED,
                        recipients=recipients,
                        dedupe_key=f"case:{case.pk}:execution_failed:{event.pk}",
                        context={
                            "step": step,
                            "step_label": _step_label(step, case.language),
                            "reason": reason,
                            "admin_path": f"/admin/cases/case/{case.pk}/change/",
                        },
                        language=case.language,
                        queued_at=now,
                    )
                ]
            )
        else:
            logger.error("case %s failed and no Operations user has an e-mail", case_id)
    return True


def _step_label(step: str, language: str) -> str:
    """The step's name in the language of the e-mail it goes into."""
    with translation.override(language):
        return str(Step(step).label)


def case_execution_give_up(*, case_id: int, error: BaseException) -> bool:
    """Fail the case after the transient retries ran out, at its first step not done."""
    pending = (
        ExecutionStep.objects.filter(case_id=case_id)
        .exclude(status__in=[ExecutionStep.Status.DONE, ExecutionStep.Status.SKIPPED])
        .order_by("position")
        .values_list("step", flat=True)
        .first()
    )
    return case_execution_fail(
        case_id=case_id,
        step=pending or Step.VERIFY_BINDINGS,
        reason=gettext("Gave up after repeated temporary errors: %(error)s")
        % {"error": _describe(error)},
    )


def case_execution_retry_scheduled(*, case_id: int, countdown: float) -> None:
    """Push back the sweeper while a retry waits in the broker for ``countdown`` s."""
    try:
        Case.objects.filter(
            pk=case_id, state__in=[CaseState.APPROVED, CaseState.EXECUTING]
        ).update(execution_queued_at=timezone.now() + timedelta(seconds=countdown))
    except DatabaseError:  # the database is what failed; the sweeper still works
        logger.warning("could not stamp the retry of case %s", case_id)


def cases_due(*, older_than: datetime) -> list[int]:
    """Ids of approved or executing cases last queued before ``older_than``.

    An executing case is included: its worker may have died without the
    broker redelivering (Redis redelivers only after its visibility timeout).
    A live worker still holds the case's lock, so the extra delivery exits.
    """
    return list(
        Case.objects.filter(
            Q(execution_queued_at__lt=older_than) | Q(execution_queued_at__isnull=True),
            state__in=[CaseState.APPROVED, CaseState.EXECUTING],
        )
        .order_by("execution_queued_at", "pk")
        .values_list("pk", flat=True)[:SWEEP_BATCH_SIZE]
    )


def case_execution_requeue(*, case_id: int) -> bool:
    """Stamp an approved or executing case as queued now and dispatch it again."""
    with transaction.atomic():
        updated = Case.objects.filter(
            pk=case_id, state__in=[CaseState.APPROVED, CaseState.EXECUTING]
        ).update(execution_queued_at=timezone.now())
        if updated:
            case_execution_dispatch(case_id=case_id)
    return bool(updated)
