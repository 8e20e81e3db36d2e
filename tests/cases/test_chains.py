"""Chains: hundreds of terminals executed in batches, with per-terminal progress.

The provider's core is the one thing not run here: ``RecordingCore`` stands
in for it (``CORE_CONNECTOR`` takes a dotted path). It does the real effects
on the local registry, records every call with its idempotency key and
terminals, and refuses the serial numbers it is told to.
"""

import pytest
from django.utils import timezone

from cases.connectors import StepOutcome
from cases.connectors.local import LocalConnector
from cases.models import CaseEvent, CaseState, CaseTerminal, ExecutionStep
from cases.services.review import case_transition
from terminals.models import Binding, Merchant
from tests import factories

Status = CaseTerminal.ExecutionStatus


class RecordingCore(LocalConnector):
    """The core, as far as these tests need it: records calls, refuses on demand."""

    calls: list[tuple[str, str, list[str]]] = []
    refuse: set[str] = set()
    # A remote core: each batch commits on its own (the local connector
    # commits the steps together).
    remote = True

    def unbind(self, operation) -> StepOutcome:
        serials = [t.serial_number for t in operation.terminals]
        RecordingCore.calls.append((operation.step, operation.key, serials))
        refused = {sn: "frozen by the core" for sn in serials if sn in self.refuse}
        accepted = [t for t in operation.terminals if t.serial_number not in refused]
        outcome = super().unbind(
            type(operation)(**{**operation.__dict__, "terminals": accepted})
        )
        return StepOutcome(
            result={**outcome.result, "refused": {**refused}},
            reference=outcome.reference,
        )


@pytest.fixture
def core(settings):
    settings.CORE_CONNECTOR = f"{__name__}.RecordingCore"
    settings.EXECUTION_BATCH_SIZE = 100
    RecordingCore.calls = []
    RecordingCore.refuse = set()
    yield RecordingCore
    RecordingCore.calls = []
    RecordingCore.refuse = set()


def chain_awaiting_approval(*, terminals: int, reviewer, **kwargs):
    """A chain's case recommended by ``reviewer``, its terminals bound to it."""
    merchant = factories.MerchantFactory()
    bound = [
        factories.BindingFactory(merchant=merchant).terminal for _ in range(terminals)
    ]
    return factories.CaseFactory(
        merchant=merchant,
        terminals=bound,
        state=CaseState.AWAITING_APPROVAL,
        recommended_by=reviewer,
        **kwargs,
    )


def progress(case) -> dict[str, int]:
    rows = CaseTerminal.objects.filter(case=case).values_list(
        "execution_status", flat=True
    )
    counts: dict[str, int] = {}
    for status in rows:
        counts[status] = counts.get(status, 0) + 1
    return counts


@pytest.mark.django_db
def test_approving_a_chain_of_300_unbinds_it_in_batches_of_100(
    core, reviewer, approver, django_capture_on_commit_callbacks
):
    # given
    case = chain_awaiting_approval(terminals=300, reviewer=reviewer)

    # when: the approver approves; the (eager) worker executes
    with django_capture_on_commit_callbacks(execute=True):
        case_transition(case_id=case.pk, name="approve", actor=approver)

    # then
    case.refresh_from_db()
    assert case.state == CaseState.COMPLETED
    assert progress(case) == {Status.DONE: 300}
    unbinds = [call for call in core.calls if call[0] == "unbind"]
    assert [len(serials) for _, _, serials in unbinds] == [100, 100, 100]
    assert len({key for _, key, _ in unbinds}) == 3
    assert not Binding.objects.active().filter(merchant=case.merchant).exists()
    batches = CaseEvent.objects.filter(
        case=case, type=CaseEvent.Type.STEP, payload__step="unbind"
    ).order_by("pk")
    assert [e.payload["done"] for e in batches] == [100, 100, 100]


@pytest.mark.django_db
def test_core_refusing_3_of_300_fails_the_case_naming_them_and_retry_sends_only_them(
    core, reviewer, approver, operations, django_capture_on_commit_callbacks
):
    # given: the core refuses three terminals of the chain
    case = chain_awaiting_approval(terminals=300, reviewer=reviewer)
    serials = list(
        case.case_terminals.order_by("terminal__serial_number").values_list(
            "terminal__serial_number", flat=True
        )
    )
    refused = {serials[5], serials[150], serials[299]}
    core.refuse = set(refused)

    # when
    with django_capture_on_commit_callbacks(execute=True):
        case_transition(case_id=case.pk, name="approve", actor=approver)

    # then: failed at the unbinding, the three named, the rest done
    case.refresh_from_db()
    assert case.state == CaseState.FAILED
    assert case.failure_step == ExecutionStep.Step.UNBIND
    for sn in refused:
        assert sn in case.failure_reason
    assert progress(case) == {Status.DONE: 297, Status.FAILED: 3}
    failed = CaseTerminal.objects.filter(case=case, execution_status=Status.FAILED)
    assert {ct.terminal.serial_number for ct in failed} == refused
    assert {ct.execution_error for ct in failed} == {"frozen by the core"}
    assert (
        set(
            Binding.objects.active()
            .filter(merchant=case.merchant)
            .values_list("terminal__serial_number", flat=True)
        )
        == refused
    )

    # when: the core accepts them now; Operations retries
    core.refuse = set()
    core.calls = []
    with django_capture_on_commit_callbacks(execute=True):
        case_transition(case_id=case.pk, name="retry", actor=operations)

    # then: one call, for those three only, under a key of the retry round
    case.refresh_from_db()
    assert case.state == CaseState.COMPLETED
    assert [(step, sorted(sns)) for step, _, sns in core.calls] == [
        ("unbind", sorted(refused))
    ]
    assert ".unbind.r1." in core.calls[0][1]
    assert progress(case) == {Status.DONE: 300}
    assert not Binding.objects.active().filter(merchant=case.merchant).exists()


@pytest.mark.django_db
def test_a_crash_between_batches_resumes_without_sending_a_done_batch_again(
    core, reviewer, approver, settings, django_capture_on_commit_callbacks
):
    # given: the worker dies (a transient error) during the second batch
    from django.db import OperationalError

    from cases.services.execution import case_execute

    case = chain_awaiting_approval(terminals=250, reviewer=reviewer)
    original = RecordingCore.unbind
    state = {"n": 0}

    def dying(self, operation):
        state["n"] += 1
        if state["n"] == 2:
            raise OperationalError("worker lost")
        return original(self, operation)

    RecordingCore.unbind = dying
    try:
        with django_capture_on_commit_callbacks(execute=False):
            case_transition(case_id=case.pk, name="approve", actor=approver)
        with pytest.raises(OperationalError):
            case_execute(case_id=case.pk)
        first_keys = [key for _, key, _ in core.calls]

        # when: the task runs again
        outcome = case_execute(case_id=case.pk)
    finally:
        RecordingCore.unbind = original

    # then: batch one not sent again; batches two and three sent once each
    case.refresh_from_db()
    assert outcome == "completed"
    keys = [key for _, key, _ in core.calls]
    assert keys[0] == first_keys[0]
    assert keys.count(first_keys[0]) == 1
    assert [len(sns) for _, _, sns in core.calls] == [100, 100, 50]
    assert progress(case) == {Status.DONE: 250}


@pytest.mark.django_db
def test_closing_the_account_of_a_chain_works_whatever_its_terminal_count(
    core, reviewer, approver, django_capture_on_commit_callbacks
):
    # given: a chain of 300 terminals asking to close the account
    case = chain_awaiting_approval(terminals=300, reviewer=reviewer, close_account=True)

    # when
    with django_capture_on_commit_callbacks(execute=True):
        case_transition(case_id=case.pk, name="approve", actor=approver)

    # then
    case.refresh_from_db()
    case.merchant.refresh_from_db()
    assert case.state == CaseState.COMPLETED
    assert case.merchant.status == Merchant.Status.CLOSED
    assert case.merchant.closed_at <= timezone.now()
