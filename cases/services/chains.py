"""Chains: the per-terminal progress of a case's execution, and what abandoning leaves.

A chain's case names hundreds or thousands of terminals; the unbind step
sends them to the core in batches (``cases.services.execution``) and records
each terminal's outcome on its ``CaseTerminal`` row. The pages read that
progress here with one query whatever the number of terminals.
"""

from dataclasses import dataclass, field

from cases.models import Case, CaseTerminal, ExecutionStep

Status = CaseTerminal.ExecutionStatus


@dataclass
class TerminalProgress:
    """How far the unbinding of a case's terminals went."""

    total: int = 0
    done: int = 0
    failed: int = 0
    # Serial numbers, in order.
    done_serials: list[str] = field(default_factory=list)
    pending_serials: list[str] = field(default_factory=list)
    # (serial number, the core's or the registry's reason)
    failed_terminals: list[tuple[str, str]] = field(default_factory=list)

    @property
    def pending(self) -> int:
        return self.total - self.done - self.failed

    @property
    def percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 0

    @property
    def started(self) -> bool:
        return bool(self.done or self.failed)


def case_terminal_progress(*, case: Case, links=None) -> TerminalProgress:
    """Read the per-terminal progress of ``case`` (one query).

    ``links``: the case's CaseTerminal rows with their terminals, when the
    caller has read them already (no query then).
    """
    progress = TerminalProgress()
    if links is not None:
        rows = sorted(
            (link.terminal.serial_number, link.execution_status, link.execution_error)
            for link in links
        )
    else:
        rows = (
            CaseTerminal.objects.filter(case=case)
            .order_by("terminal__serial_number")
            .values_list(
                "terminal__serial_number", "execution_status", "execution_error"
            )
        )
    for serial, status, error in rows:
        progress.total += 1
        if status == Status.DONE:
            progress.done += 1
            progress.done_serials.append(serial)
        elif status == Status.FAILED:
            progress.failed += 1
            progress.failed_terminals.append((serial, error))
        else:
            progress.pending_serials.append(serial)
    return progress


@dataclass
class AbandonSummary:
    """What abandoning a failed case leaves: the steps done, each terminal's fate."""

    # (step, status) codes of the steps already done, in order.
    steps_done: list[tuple[str, str]]
    # Unbound by the steps already done: they stay unbound.
    released: list[str]
    # Never unbound (pending or refused): they stay bound to the merchant.
    kept_bound: list[str]

    @property
    def step_labels(self) -> list[str]:
        return [str(ExecutionStep.Step(step).label) for step, _ in self.steps_done]

    def notice_context(self) -> dict:
        """The part of the merchant's notice that says what stays as it is."""
        return {
            "steps": [list(row) for row in self.steps_done],
            "released": self.released,
            "kept_bound": self.kept_bound,
        }


def case_abandon_summary(*, case: Case) -> AbandonSummary:
    """Say what abandoning ``case`` leaves in place (two queries)."""
    steps = list(
        case.steps.filter(status=ExecutionStep.Status.DONE)
        .order_by("position")
        .values_list("step", "status")
    )
    progress = case_terminal_progress(case=case)
    released = progress.done_serials
    kept = sorted(
        progress.pending_serials + [sn for sn, _ in progress.failed_terminals]
    )
    if any(step == ExecutionStep.Step.UNBIND for step, _ in steps):
        # The whole unbinding step is done (also for a case run before
        # per-terminal progress existed): every terminal is unbound.
        released, kept = sorted(released + kept), []
    return AbandonSummary(steps_done=steps, released=released, kept_bound=kept)
