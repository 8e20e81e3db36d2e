"""Invariants every case must satisfy after faults or load, as lists of problems.

Each function returns human-readable problems; an empty list means the data
is consistent. The fault tests and the load test (``bench/load.py``) share them.
"""

from collections import Counter
from collections.abc import Iterable

from cases.models import (
    Case,
    CaseEvent,
    CaseState,
    ExecutionStep,
    Notification,
)
from terminals.models import Binding, Terminal

Step = ExecutionStep.Step
FINISHED = {ExecutionStep.Status.DONE, ExecutionStep.Status.SKIPPED}
# States in which no execution step may exist yet.
BEFORE_EXECUTION = {
    CaseState.PENDING_VERIFICATION,
    CaseState.SUBMITTED,
    CaseState.IN_REVIEW,
    CaseState.INFO_REQUESTED,
    CaseState.AWAITING_APPROVAL,
    CaseState.REJECTED,
    CaseState.WITHDRAWN,
    CaseState.EXPIRED,
}


def case_problems(case: Case) -> list[str]:
    """Problems of one case: its state against its steps, registry and audit trail."""
    problems: list[str] = []
    label = case.reference or f"case {case.pk}"
    steps = {s.step: s for s in ExecutionStep.objects.filter(case=case)}
    terminal_ids = list(case.case_terminals.values_list("terminal_id", flat=True))
    active = set(
        Binding.objects.active()
        .filter(terminal_id__in=terminal_ids, merchant=case.merchant)
        .values_list("terminal_id", flat=True)
    )
    ended_by_case = Binding.objects.filter(
        terminal_id__in=terminal_ids, ended_reason__startswith=f"case {label}:"
    )

    if case.state in BEFORE_EXECUTION:
        if steps:
            problems.append(f"{label}: {case.state} but has execution steps")
        if active != set(terminal_ids):
            problems.append(f"{label}: {case.state} but a terminal lost its binding")
        if ended_by_case.exists():
            problems.append(f"{label}: {case.state} but ended a binding")
    elif case.state == CaseState.COMPLETED:
        if set(steps) != set(Step.values):
            problems.append(f"{label}: completed without every step row")
        if any(s.status not in FINISHED for s in steps.values()):
            problems.append(f"{label}: completed with a step not done")
        if active:
            problems.append(f"{label}: completed but a terminal is still bound")
        statuses = set(
            Terminal.objects.filter(pk__in=terminal_ids).values_list(
                "status", flat=True
            )
        )
        if statuses != {Terminal.Status.UNBOUND}:
            problems.append(f"{label}: completed but terminals are {statuses}")
        ended = Counter(ended_by_case.values_list("terminal_id", flat=True))
        if ended != Counter(terminal_ids):
            problems.append(f"{label}: each terminal's binding not ended exactly once")
        released = steps.get(Step.UNBIND)
        serials = set(
            case.case_terminals.values_list("terminal__serial_number", flat=True)
        )
        if released is None or set(released.result.get("released", [])) != serials:
            problems.append(f"{label}: the unbind step does not list its terminals")
        returning = Counter(
            case.device_returns.values_list("terminal__serial_number", flat=True)
        )
        if returning != Counter(serials):
            problems.append(f"{label}: its devices are not each expected back once")
        if Terminal.objects.filter(
            pk__in=terminal_ids, sim_deactivated_at__isnull=True
        ).exists():
            problems.append(f"{label}: completed but a SIM is still active")
    elif case.state == CaseState.FAILED:
        failed = steps.get(case.failure_step)
        if failed is None or failed.status == ExecutionStep.Status.DONE:
            problems.append(f"{label}: failed at a step that is not failed")
    problems += audit_problems(case)
    return problems


def audit_problems(case: Case) -> list[str]:
    """Problems of the audit trail: filed first, then each state change in order."""
    label = case.reference or f"case {case.pk}"
    events = list(CaseEvent.objects.filter(case=case).order_by("created_at", "pk"))
    if not events or events[0].type != CaseEvent.Type.FILED:
        return [f"{label}: the audit trail does not start with the filing"]
    state = CaseState.PENDING_VERIFICATION
    problems = []
    for event in events:
        if event.type != CaseEvent.Type.TRANSITION:
            continue
        if event.from_state != state:
            problems.append(
                f"{label}: {event.transition} from {event.from_state}, "
                f"but the case was {state}"
            )
        state = event.to_state
    if state != case.state:
        problems.append(f"{label}: the audit trail ends at {state}, not {case.state}")
    return problems


def binding_problems(terminal_ids: Iterable[int]) -> list[str]:
    """Every ended binding of these terminals is matched by a completed case's step."""
    problems = []
    for binding in Binding.objects.filter(
        terminal_id__in=list(terminal_ids), ended_at__isnull=False
    ).select_related("terminal"):
        reference = binding.ended_reason.removeprefix("case ").split(":", 1)[0]
        step = ExecutionStep.objects.filter(
            case__reference=reference, step=Step.UNBIND, status="done"
        ).first()
        if step is None or binding.terminal.serial_number not in step.result.get(
            "released", []
        ):
            problems.append(
                f"binding {binding.pk} of {binding.terminal.serial_number} ended "
                f"without a matching case step ({binding.ended_reason!r})"
            )
    return problems


def mail_problems(
    messages: Iterable, notifications: Iterable[Notification]
) -> list[str]:
    """Each sent notice reached the mail server exactly once, and nothing else did."""
    received = Counter(m["X-Notification-Id"] for m in messages)
    problems = [
        f"notification {pk} e-mailed {count} times"
        for pk, count in received.items()
        if count > 1
    ]
    sent = {str(n.pk) for n in notifications if n.status == Notification.Status.SENT}
    problems += [
        f"notification {pk} sent but never received" for pk in sent - set(received)
    ]
    problems += [
        f"message {pk} received but its notification is not sent"
        for pk in set(received) - sent
    ]
    return problems
