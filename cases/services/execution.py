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

Known transient errors (lost database connection, lock timeouts, the
provider's core out of reach) propagate to the task, which retries with
backoff; any other error fails the case at its step and e-mails the Operations
group. The settle, export, unbind, SIM, rebind and close steps go through the
connector of ``CORE_CONNECTOR`` (``cases.connectors``); a step the core
answered "pending" waits (``ExecutionStep.Status.WAITING``) until the core's
callback or a poll by the outbox sweeper ends it.
"""

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime, timedelta
from enum import StrEnum

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    transaction,
)
from django.db.models import Count, F, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone, translation
from django.utils.translation import gettext, ngettext

from cases import connectors, events, roles, tasks
from cases.connectors.local import (  # noqa: F401 (re-exported for callers)
    EXPORT_CHUNK_SIZE,
    EXPORT_HEADER,
    case_export_storage_name,
)
from cases.models import (
    Case,
    CaseEvent,
    CaseState,
    CaseTerminal,
    ExecutionStep,
    Notification,
    rows_update,
)
from cases.notifications import (
    department_share,
    notification_queue_many,
)
from cases.services import finance
from cases.services.common import case_apply_transition
from terminals import services as registry
from terminals.masking import mask_email, mask_phone
from terminals.models import Binding, Merchant, Terminal

logger = logging.getLogger(__name__)

# Errors worth retrying: the database went away, a lock wait timed out, the
# provider's core is out of reach.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    SoftTimeLimitExceeded,
    connectors.ConnectorUnavailable,
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
    Step.DEACTIVATE_SIM,
    Step.BIND_REPLACEMENT,
    Step.CLOSE_ACCOUNT,
    Step.NOTIFY,
)

# Cases re-queued per sweep; the rest wait for the next sweep.
SWEEP_BATCH_SIZE = 500


class ExecutionOutcome(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    # Another worker holds the case; this delivery did nothing.
    BUSY = "busy"
    # The case is not approved or executing (already done, failed, ...).
    SKIPPED = "skipped"
    # A step waits for the provider's core (its callback or a poll).
    WAITING = "waiting"


class ExecutionError(Exception):
    """A step cannot be carried out; the case fails at that step."""


class StepPending(Exception):
    """The core accepted the step and will answer later; the case waits."""

    def __init__(self, reference: str) -> None:
        super().__init__(reference)
        self.reference = reference


def case_execution_dispatch(*, case_id: int) -> None:
    """Queue the execution of an approved case after the current transaction commits.

    If the broker is unreachable the case stays ``approved`` and its
    ``execution_queued_at`` is cleared: it was never queued, so the next
    sweep (every minute) picks it up at once instead of waiting out
    ``OUTBOX_SWEEP_AFTER`` as if a worker had it.
    """

    def _queue() -> None:
        try:
            tasks.case_execute_task.delay(case_id=case_id)
        except Exception:  # broker down: the sweeper picks the case up later
            logger.warning("broker unavailable; case %s left for the sweeper", case_id)
            case_execution_unqueued(case_id=case_id)

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
            # Counted once per run, with the lock: every step's idempotency
            # key carries it.
            .annotate(execution_retry_round=_retry_round_subquery())
            .filter(pk=case_id)
            .first()
        )
        if case is None:
            return ExecutionOutcome.SKIPPED
        retry_round = case.execution_retry_round
        if case.state == CaseState.APPROVED:
            case.failure_step = ""
            case.failure_reason = ""
            if retry_round:
                # After Operations' retry the refused terminals are sent
                # again; the ones done are never touched again. (Before the
                # first retry no terminal has failed: a failure fails the case.)
                CaseTerminal.objects.filter(
                    case=case, execution_status=CaseTerminal.ExecutionStatus.FAILED
                ).update(execution_status=CaseTerminal.ExecutionStatus.PENDING)
            case_apply_transition(
                case=case,
                name="start_execution",
                actor=None,
                update_fields=("failure_step", "failure_reason"),
            )
        elif case.state != CaseState.EXECUTING:
            return ExecutionOutcome.SKIPPED
        steps = _steps_prepare(case=case)
    # With no remote call between them (the local connector), the steps commit
    # together: one transaction for the start, one for every step. Each step
    # still runs in its own savepoint, so a failing step is rolled back alone
    # and the case fails at it with the steps before it done; a crash or a
    # transient error rolls the whole group back and the next run starts it
    # again (every effect is idempotent). A remote connector keeps one
    # committed transaction per step, so a step the core did is never lost.
    grouped = not getattr(connectors.connector_get(), "remote", True)
    links = list(
        CaseTerminal.objects.filter(case=case)
        .select_related("terminal")
        .order_by("terminal__serial_number")
    )
    terminals = [link.terminal for link in links]
    # Read with the terminals, after the retry's reset: the unbind step's
    # starting point (nothing before it changes them).
    statuses = {link.terminal_id: link.execution_status for link in links}
    results = {s.step: s.result for s in steps}
    delay = float(getattr(settings, "EXECUTION_STEP_DELAY", 0) or 0)
    current: ExecutionStep | None = None
    # Grouped, the step rows done are written together before the commit.
    done_rows: list[ExecutionStep] | None = [] if grouped else None
    outcome = ExecutionOutcome.COMPLETED
    try:
        with transaction.atomic() if grouped else nullcontext():
            for step in steps:
                if step.status in (
                    ExecutionStep.Status.DONE,
                    ExecutionStep.Status.SKIPPED,
                ):
                    continue
                if delay:  # test hook: widen the window for crash tests
                    time.sleep(delay)
                current = step
                stopped = _step_run(
                    case=case,
                    step=step,
                    terminals=terminals,
                    results=results,
                    retry_round=retry_round,
                    grouped=grouped,
                    steps=steps,
                    statuses=statuses,
                    done_rows=done_rows,
                )
                if stopped is not None:
                    outcome = stopped
                    break
            if done_rows:
                rows_update(done_rows, STEP_ROW_FIELDS)
    except TRANSIENT_ERRORS as exc:
        if grouped and current is not None:
            # Recorded after the group rolled back, so the note stays.
            _step_note_error(step=current, error=exc)
        raise
    return outcome


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


STEP_ROW_FIELDS = (
    "status",
    "result",
    "error",
    "attempts",
    "finished_at",
    "idempotency_key",
    "remote_reference",
)


def _step_run(
    *,
    case: Case,
    step: ExecutionStep,
    terminals: list[Terminal],
    results: dict[str, dict],
    retry_round: int = 0,
    grouped: bool = False,
    steps: list[ExecutionStep] | None = None,
    statuses: dict[int, str] | None = None,
    done_rows: list[ExecutionStep] | None = None,
) -> ExecutionOutcome | None:
    """Run one step with its row in one transaction; return why the run stops, if it does.

    ``grouped``: the step runs inside the run's transaction (a savepoint,
    none for a step that only reads); a transient error is recorded by the
    caller once that rolled back. ``done_rows``: the step's row is added there
    once done, for the caller to write with the others, instead of saved now.
    ``steps`` (the run's rows, as they are now) and ``statuses`` (the case's
    terminals' execution status) spare the steps reading them again.
    """
    now = timezone.now()
    try:
        run = STEP_FUNCTIONS[step.step]
        kwargs = {
            "case": case,
            "terminals": terminals,
            "results": results,
            "now": now,
            "step": step,
            "retry_round": retry_round,
        }
        if step.step == Step.UNBIND and statuses is not None:
            kwargs["statuses"] = statuses
        if step.step == Step.NOTIFY and steps is not None:
            kwargs["step_rows"] = [
                [s.step, s.status] for s in steps if s.step != Step.NOTIFY
            ]
        batched = step.step in BATCHED_STEPS
        if batched:
            # Chains: each batch commits on its own, before the step row.
            result = run(**kwargs)
        deferred = done_rows is not None
        read_only = grouped and step.step in READ_ONLY_STEPS
        savepoint = not (read_only or (batched and deferred))
        with transaction.atomic() if savepoint else nullcontext():
            if not batched:
                result = run(**kwargs)
            step.status = ExecutionStep.Status.DONE
            step.result = result
            step.error = ""
            step.attempts += 1
            step.finished_at = now
            if not deferred:
                step.save(update_fields=list(STEP_ROW_FIELDS))
            results[step.step] = result
            if step.step == Step.NOTIFY:
                case_apply_transition(case=case, name="complete", actor=None)
                finance.finance_items_create(case=case)
            if deferred:  # written by the caller, once the step is wholly done
                done_rows.append(step)
    except StepPending as pending:
        _step_wait(case=case, step=step, reference=pending.reference)
        return ExecutionOutcome.WAITING
    except TRANSIENT_ERRORS as exc:
        if not grouped:
            _step_note_error(step=step, error=exc)
        raise
    except Exception as exc:
        logger.warning("case %s failed at step %s: %s", case.pk, step.step, exc)
        case_execution_fail(case_id=case.pk, step=step.step, reason=_describe(exc))
        return ExecutionOutcome.FAILED
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(
        exc,
        registry.RegistryError
        | ExecutionError
        | connectors.ConnectorRefused
        | connectors.ConnectorUnavailable,
    ):
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
    *,
    case: Case,
    terminals: list[Terminal],
    results: dict,
    now: datetime,
    step: ExecutionStep | None = None,
    retry_round: int = 0,
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
    # Then the system of record (the core, with the HTTP connector) agrees.
    remote = _connector_run(
        name=Step.VERIFY_BINDINGS,
        case=case,
        terminals=terminals,
        results=results,
        now=now,
        step=step,
        retry_round=retry_round,
    )
    return {"terminals": [t.serial_number for t in terminals], **remote}


def _step_settle(**kwargs) -> dict:
    """Settle the terminals' unsettled transactions in the case's one batch."""
    return _connector_run(name=Step.SETTLE, **kwargs)


def _step_export(**kwargs) -> dict:
    """Keep the terminals' transaction history (a CSV stored with the case)."""
    return _connector_run(name=Step.EXPORT, **kwargs)


def _step_unbind(
    *,
    case: Case,
    terminals: list[Terminal],
    step: ExecutionStep | None = None,
    retry_round: int = 0,
    statuses: dict[int, str] | None = None,
    **kwargs,
) -> dict:
    """End the bindings of the case's terminals (history kept), batch by batch."""
    released = _terminals_unbind_in_batches(
        case=case,
        step=step,
        terminals=terminals,
        retry_round=retry_round,
        statuses=statuses,
    )
    return {"released": released}


def execution_batch_size() -> int:
    return max(1, int(getattr(settings, "EXECUTION_BATCH_SIZE", 100) or 100))


def terminal_batch_key(*, base: str, terminals: list[Terminal]) -> str:
    """The idempotency key of one batch: the step's key and the batch's serials.

    Batches are cut from the terminals still pending, in serial order, and a
    batch commits whole, so a run resumed after a crash cuts the same batches
    and sends the same keys; a retry round (``base`` ends in ``.rN``) sends
    only the terminals refused before, under new keys.
    """
    digest = hashlib.sha256(
        "\n".join(t.serial_number for t in terminals).encode()
    ).hexdigest()[:16]
    return f"{base}.b{digest}"


def _terminals_unbind_in_batches(
    *,
    case: Case,
    step: ExecutionStep | None,
    terminals: list[Terminal],
    retry_round: int,
    statuses: dict[int, str] | None = None,
) -> list[str]:
    """Unbind the case's pending terminals, a batch per transaction.

    Return the serial numbers whose binding this call ended. A terminal the
    core or the registry refuses is marked failed with the reason and the
    other batches go on; at the end the step fails naming the refused
    terminals (Operations' retry sends only them again).
    """
    Status = CaseTerminal.ExecutionStatus
    status = (
        statuses
        if statuses is not None
        else dict(
            CaseTerminal.objects.filter(case=case).values_list(
                "terminal_id", "execution_status"
            )
        )
    )
    pending = [t for t in terminals if status.get(t.pk) == Status.PENDING]
    base = connectors.idempotency_key(case=case, step=Step.UNBIND, round=retry_round)
    size = execution_batch_size()
    connector = connectors.connector_get()
    released: list[str] = []
    refused_now: set[str] = set()
    for start in range(0, len(pending), size):
        batch = pending[start : start + size]
        key = terminal_batch_key(base=base, terminals=batch)
        waiting = (
            step is not None
            and step.status == ExecutionStep.Status.WAITING
            and step.idempotency_key == key
        )
        now = timezone.now()
        with transaction.atomic():
            operation = connectors.Operation(
                step=Step.UNBIND,
                key=key,
                case=case,
                terminals=batch,
                now=now,
                answer=(step.result or {}).get("core_answer") if waiting else None,
            )
            outcome = (
                connector.poll(operation) if waiting else connector.unbind(operation)
            )
            if step is not None:
                step.idempotency_key = key
                step.remote_reference = outcome.reference or step.remote_reference
            if outcome.pending:
                raise StepPending(outcome.reference)
            released += outcome.result.get("released") or []
            names = {t.serial_number for t in batch}
            refused = {
                str(sn): str(why)
                for sn, why in (outcome.result.get("refused") or {}).items()
                if str(sn) in names
            }
            done_ids = [t.pk for t in batch if t.serial_number not in refused]
            CaseTerminal.objects.filter(case=case, terminal_id__in=done_ids).update(
                execution_status=Status.DONE, execution_error="", executed_at=now
            )
            for terminal in batch:
                if terminal.serial_number in refused:
                    CaseTerminal.objects.filter(case=case, terminal=terminal).update(
                        execution_status=Status.FAILED,
                        execution_error=refused[terminal.serial_number][:2000],
                    )
            events.terminal_batch_event(
                case=case,
                step=Step.UNBIND,
                key=key,
                done=len(done_ids),
                refused=refused,
            )
        refused_now |= set(refused)
        if step is not None and step.status == ExecutionStep.Status.WAITING:
            step.status = ExecutionStep.Status.PENDING
            step.result = {}
    # Refused earlier in this round (before a crash) or by this call.
    failed = sorted(
        {t.serial_number for t in terminals if status.get(t.pk) == Status.FAILED}
        | refused_now
    )
    if failed:
        raise ExecutionError(
            ngettext(
                "%(count)s terminal was refused: %(serials)s",
                "%(count)s terminals were refused: %(serials)s",
                len(failed),
            )
            % {"count": len(failed), "serials": ", ".join(failed)}
        )
    return released


def _step_deactivate_sim(**kwargs) -> dict:
    """Deactivate the SIM / data cards of the unbound terminals."""
    return _connector_run(name=Step.DEACTIVATE_SIM, **kwargs)


def _step_bind_replacement(**kwargs) -> dict:
    """Bind and activate the replacement device."""
    return _connector_run(name=Step.BIND_REPLACEMENT, **kwargs)


def _step_close_account(**kwargs) -> dict:
    """Close the merchant account (refused while a terminal is still bound)."""
    return _connector_run(name=Step.CLOSE_ACCOUNT, **kwargs)


def _connector_run(
    *,
    name: str,
    case: Case,
    terminals: list[Terminal],
    results: dict,
    now: datetime,
    step: ExecutionStep | None = None,
    retry_round: int = 0,
) -> dict:
    """Do step ``name`` through the connector; raise StepPending if the core said so.

    A step already waiting for the core is polled (or finished with the answer
    its callback stored) under the key it was sent with, never sent again.
    """
    waiting = step is not None and step.status == ExecutionStep.Status.WAITING
    key = (
        step.idempotency_key
        if waiting and step.idempotency_key
        else connectors.idempotency_key(case=case, step=name, round=retry_round)
    )
    operation = connectors.Operation(
        step=name,
        key=key,
        case=case,
        terminals=terminals,
        now=now,
        answer=(step.result or {}).get("core_answer") if waiting else None,
    )
    connector = connectors.connector_get()
    outcome = (
        connector.poll(operation) if waiting else getattr(connector, name)(operation)
    )
    if step is not None:
        step.idempotency_key = key
        step.remote_reference = outcome.reference or step.remote_reference
    if outcome.pending:
        raise StepPending(outcome.reference)
    return outcome.result


def _retry_round(case: Case) -> int:
    """How many times Operations retried the failed case (a new key each time)."""
    return CaseEvent.objects.filter(
        case=case, type=CaseEvent.Type.TRANSITION, transition="retry"
    ).count()


def _retry_round_subquery() -> Subquery:
    """``_retry_round`` as a subquery of the case's own row."""
    return Coalesce(
        Subquery(
            CaseEvent.objects.filter(
                case=OuterRef("pk"), type=CaseEvent.Type.TRANSITION, transition="retry"
            )
            .order_by()
            .values("case")
            .annotate(n=Count("pk"))
            .values("n")
        ),
        0,
    )


def _step_wait(*, case: Case, step: ExecutionStep, reference: str) -> None:
    """Record that the core will answer the step later; the sweeper polls it."""
    with transaction.atomic():
        first = step.status != ExecutionStep.Status.WAITING
        step.status = ExecutionStep.Status.WAITING
        step.remote_reference = reference or step.remote_reference
        step.error = ""
        step.attempts += 1
        step.save(
            update_fields=[
                "status",
                "idempotency_key",
                "remote_reference",
                "error",
                "attempts",
            ]
        )
        Case.objects.filter(pk=case.pk).update(execution_queued_at=timezone.now())
        if first:
            events.step_waiting_event(
                case=case,
                step=step.step,
                status=ExecutionStep.Status.WAITING,
                key=step.idempotency_key,
                reference=step.remote_reference,
                note=gettext("Waiting for the core (reference %(ref)s).")
                % {"ref": step.remote_reference or "-"},
            )


def execution_step_answer(*, key: str, answer: dict) -> bool:
    """Take the core's final answer to a waiting step and resume the case.

    Called by the core's callback. Return False when there is nothing to do:
    the step is no longer waiting (a duplicate or late callback, or a poll got
    there first). Raise ExecutionStep.DoesNotExist for an unknown key.
    """
    with transaction.atomic():
        step = (
            ExecutionStep.objects.select_for_update()
            .select_related("case")
            .get(idempotency_key=key)
        )
        if (
            step.status != ExecutionStep.Status.WAITING
            or answer.get("status") not in ("done", "refused")
            or step.case.state != CaseState.EXECUTING
        ):
            return False
        step.result = {**(step.result or {}), "core_answer": answer}
        step.save(update_fields=["result"])
        events.step_answered_event(
            case=step.case,
            step=step.step,
            key=key,
            reference=answer.get("reference", ""),
            answer=answer["status"],
            note=gettext("The core answered: %(status)s.")
            % {"status": answer["status"]},
        )
        Case.objects.filter(pk=step.case_id).update(execution_queued_at=timezone.now())
        case_execution_dispatch(case_id=step.case_id)
    return True


def _step_notify(
    *,
    case: Case,
    terminals: list[Terminal],
    results: dict,
    now: datetime,
    step=None,
    retry_round: int = 0,
    step_rows: list[list[str]] | None = None,
) -> dict:
    """Queue the completion notices: the merchant, the applicant, each department.

    The transaction export and the amounts go to the merchant's contact on
    file only: the applicant's address was typed into the form and nobody
    verified it, so the applicant gets the notice without them. Each
    department gets what its work needs (``DEPARTMENT_SHARES``).
    """
    document_id = (results.get(Step.EXPORT) or {}).get("document")
    attachments = [document_id] if document_id else []
    merchant = case.merchant
    common = {
        "terminals": [t.serial_number for t in terminals],
        "replacement": (
            case.replacement_terminal.serial_number if case.replacement_terminal else ""
        ),
        "account_closed": case.close_account,
    }
    amounts = {
        "settlement_total": (
            "" if case.settlement_total is None else str(case.settlement_total)
        ),
        "settlement_reference": case.settlement_reference,
    }
    notices = []
    if merchant.contact_email:
        notices.append(
            Notification(
                case=case,
                kind=Notification.Kind.COMPLETED,
                recipients=[merchant.contact_email],
                dedupe_key=f"case:{case.pk}:completed",
                context={
                    **common,
                    **amounts,
                    "merchant_name": merchant.name,
                    "attachments": attachments,
                },
                language=case.language,
                queued_at=now,
            )
        )
    applicant = case.applicant_email
    if applicant and applicant.lower() != (merchant.contact_email or "").lower():
        notices.append(
            Notification(
                case=case,
                kind=Notification.Kind.COMPLETED,
                recipients=[applicant],
                dedupe_key=f"case:{case.pk}:completed:applicant",
                context={
                    **common,
                    "merchant_name": merchant.name,
                    "applicant_copy": True,
                },
                language=case.language,
                queued_at=now,
            )
        )
    steps = (
        step_rows
        if step_rows is not None
        else [
            list(row)
            for row in case.steps.exclude(step=Step.NOTIFY)
            .order_by("position")
            .values_list("step", "status")
        ]
    )
    for department, address in sorted(settings.DEPARTMENT_EMAILS.items()):
        share = department_share(department)
        context = {
            **common,
            "department": department,
            "merchant_id": merchant.merchant_id,
            "merchant_name": merchant.name,
        }
        if share.amounts:
            context.update(amounts)
        if share.export:
            context["attachments"] = attachments
        if share.contact:
            context["contact_phone"] = mask_phone(merchant.contact_phone)
            context["contact_email"] = mask_email(merchant.contact_email)
        if share.steps:
            context["steps"] = [list(row) for row in steps]
        notices.append(
            Notification(
                case=case,
                kind=Notification.Kind.DEPARTMENT_COMPLETED,
                recipients=[address],
                dedupe_key=f"case:{case.pk}:department_completed:{department}",
                context=context,
                language=case.language,
                queued_at=now,
            )
        )
    queued = notification_queue_many(notifications=notices)
    return {"notifications": [n.pk for n in queued]}


# Steps that commit their own work in batches (chains), outside the step row's
# transaction.
BATCHED_STEPS = frozenset({Step.UNBIND})
# Steps that write nothing (a failure raises before any write): grouped, they
# need no savepoint of their own.
READ_ONLY_STEPS = frozenset({Step.VERIFY_BINDINGS})

STEP_FUNCTIONS: dict[str, Callable[..., dict]] = {
    Step.VERIFY_BINDINGS: _step_verify_bindings,
    Step.SETTLE: _step_settle,
    Step.EXPORT: _step_export,
    Step.UNBIND: _step_unbind,
    Step.DEACTIVATE_SIM: _step_deactivate_sim,
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
    """Fail the case after the transient retries ran out, at its first step not done.

    While the provider's core is out of reach the case is not failed: it stays
    executing and the outbox sweeper queues it again until the core is back.
    """
    if isinstance(error, connectors.ConnectorUnavailable):
        logger.warning("case %s waits for the core: %s", case_id, error)
        return False
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


def case_execution_unqueued(*, case_id: int) -> None:
    """Mark a case whose dispatch failed as not queued, so the next sweep takes it."""
    try:
        Case.objects.filter(
            pk=case_id, state__in=[CaseState.APPROVED, CaseState.EXECUTING]
        ).update(execution_queued_at=None)
    except DatabaseError:  # the stamp stays; the sweeper still comes, later
        logger.warning("could not clear the queue stamp of case %s", case_id)


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
