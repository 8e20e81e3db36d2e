"""Execution and e-mail through a real Celery worker, Redis, PostgreSQL and SMTP.

Celery delivers at least once; these tests check that the effects on the
registry and in the inboxes happen exactly once when tasks are duplicated,
workers die, Redis goes away or the mail server refuses mail for a while.
"""

import time
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from cases.models import (
    Case,
    CaseEvent,
    CaseState,
    Document,
    ExecutionStep,
    Notification,
)
from cases.services import housekeeping
from cases.services.review import case_transition
from cases.tasks import case_execute_task
from terminals.models import Binding, SettlementBatch, Terminal
from tests import factories
from tests.integration.harness import celery_broker, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(120),
]

Step = ExecutionStep.Step


def case_awaiting_approval(reviewer, *, terminals: int = 2):
    """A recommended case of bound terminals with unsettled transactions."""
    merchant = factories.MerchantFactory()
    bound = [
        factories.BindingFactory(merchant=merchant).terminal for _ in range(terminals)
    ]
    for terminal in bound:
        factories.TransactionFactory(terminal=terminal, amount=Decimal("100.00"))
        factories.TransactionFactory(terminal=terminal, amount=Decimal("20.50"))
    return factories.CaseFactory(
        merchant=merchant,
        terminals=bound,
        state=CaseState.AWAITING_APPROVAL,
        recommended_by=reviewer,
        assigned_to=reviewer,
    )


def state_of(case) -> str:
    return Case.objects.values_list("state", flat=True).get(pk=case.pk)


def wait_state(case, state: str, *, timeout: float = 40) -> None:
    wait_for(lambda: state_of(case) == state, timeout=timeout, what=f"{state}")


def wait_all_sent(case, smtp, *, count: int, timeout: float = 40) -> None:
    def done() -> bool:
        notices = Notification.objects.filter(case=case)
        return (
            notices.count() == count
            and not notices.exclude(status=Notification.Status.SENT).exists()
            and len(smtp.received()) >= count
        )

    wait_for(done, timeout=timeout, what=f"{count} notices sent")


# Completion notices to the merchant's side: the contact on file and the applicant.
MERCHANT_NOTICES = 2


def assert_effects_once(case, smtp, departments) -> None:
    """Every effect of a completed case exactly once, every e-mail exactly once."""
    case.refresh_from_db()
    assert case.state == CaseState.COMPLETED
    terminal_ids = list(case.case_terminals.values_list("terminal_id", flat=True))
    assert not Binding.objects.active().filter(terminal_id__in=terminal_ids).exists()
    assert Binding.objects.filter(terminal_id__in=terminal_ids).count() == len(
        terminal_ids
    )
    assert set(
        Terminal.objects.filter(pk__in=terminal_ids).values_list("status", flat=True)
    ) == {Terminal.Status.UNBOUND}
    batch = SettlementBatch.objects.get(merchant=case.merchant)
    assert batch.total == Decimal("120.50") * len(terminal_ids)
    assert case.settlement_total == batch.total
    assert Document.objects.filter(case=case, kind="data_export").count() == 1
    assert set(case.steps.values_list("status", flat=True)) == {"done", "skipped"}
    assert CaseEvent.objects.filter(case=case, transition="complete").count() == 1, (
        "completed twice"
    )
    # mail: the merchant's contact, the applicant and each department, each
    # received once; the export only for the contact on file and finance
    messages = [m for m in smtp.received() if case.reference in m["Subject"]]
    envelopes = Counter(m["X-Envelope-To"] for m in messages)
    expected = Counter(
        [case.merchant.contact_email, case.applicant_email, *departments.values()]
    )
    assert envelopes == expected
    with_export = {case.merchant.contact_email, departments["finance"]}
    for message in messages:
        assert message.get_body(("plain",)) is not None
        assert message.get_body(("html",)) is not None
        attachments = [a.get_filename() for a in message.iter_attachments()]
        if message["X-Envelope-To"] in with_export:
            assert attachments == [f"{case.reference}-transactions.csv"]
        else:
            assert attachments == [], message["X-Envelope-To"]


def test_approved_case_completes_with_every_effect_and_email_once(
    start_worker, smtp, departments, reviewer, approver
):
    # given
    start_worker()
    case = case_awaiting_approval(reviewer)

    # when
    case_transition(case_id=case.pk, name="approve", actor=approver)

    # then
    wait_state(case, CaseState.COMPLETED)
    wait_all_sent(case, smtp, count=MERCHANT_NOTICES + len(departments))
    assert_effects_once(case, smtp, departments)


def test_execution_task_delivered_twice_has_its_effects_once(
    start_worker, smtp, departments, reviewer, approver
):
    # given: two workers, slow steps so that the deliveries overlap
    workers = [
        start_worker("w1", EXECUTION_STEP_DELAY="0.3"),
        start_worker("w2", EXECUTION_STEP_DELAY="0.3"),
    ]
    case = case_awaiting_approval(reviewer)

    # when: approval queues it once, and it is sent twice more on purpose
    case_transition(case_id=case.pk, name="approve", actor=approver)
    case_execute_task.delay(case_id=case.pk)
    case_execute_task.delay(case_id=case.pk)

    # then
    wait_state(case, CaseState.COMPLETED)
    wait_all_sent(case, smtp, count=MERCHANT_NOTICES + len(departments))
    wait_for(
        lambda: sum(w.log().count(b"case_execute_task") for w in workers) >= 6,
        what="all three deliveries to finish",
    )
    logs = b"".join(w.log() for w in workers)
    assert logs.count(b"'completed'") == 1
    assert logs.count(b"'busy'") + logs.count(b"'skipped'") == 2
    assert_effects_once(case, smtp, departments)
    assert set(case.steps.values_list("attempts", flat=True)) <= {0, 1}


def test_worker_killed_mid_case_is_completed_by_a_new_worker(
    start_worker, smtp, departments, reviewer, approver, settings
):
    # given: a worker slow enough to be killed between two steps (with the
    # local connector the steps commit together: killed once it started them)
    doomed = start_worker("doomed", EXECUTION_STEP_DELAY="1.0")
    case = case_awaiting_approval(reviewer)
    case_transition(case_id=case.pk, name="approve", actor=approver)
    wait_for(
        lambda: case.steps.filter(step=Step.VERIFY_BINDINGS).exists(),
        what="the start of the execution",
    )
    time.sleep(1.5)  # inside the steps' transaction, between two steps

    # when: SIGKILL the worker and its pool child, start another, sweep
    doomed.kill()
    assert state_of(case) == CaseState.EXECUTING
    start_worker("rescuer")
    settings.OUTBOX_SWEEP_AFTER = timedelta(0)
    swept = housekeeping.outbox_sweep(now=timezone.now() + timedelta(seconds=1))

    # then
    assert swept["cases"] == 1
    wait_state(case, CaseState.COMPLETED)
    wait_all_sent(case, smtp, count=MERCHANT_NOTICES + len(departments))
    assert_effects_once(case, smtp, departments)
    assert case.steps.get(step=Step.SETTLE).attempts == 1


def test_redis_down_at_approval_loses_nothing(
    start_worker, smtp, departments, reviewer, approver, spare_redis, settings
):
    # given: this process and the worker use a Redis the test can stop
    case = case_awaiting_approval(reviewer)
    with celery_broker(spare_redis.url):
        spare_redis.stop()

        # when: approved while Redis is down
        case_transition(case_id=case.pk, name="approve", actor=approver)

        # then: the approval is recorded, the case waits for the sweeper
        case.refresh_from_db()
        assert case.state == CaseState.APPROVED
        # never queued, so the next sweep takes it without waiting
        assert case.execution_queued_at is None
        assert CaseEvent.objects.filter(case=case, transition="approve").exists()

        # when: Redis is back, a worker runs and the sweeper passes
        spare_redis.start()
        start_worker(broker=spare_redis.url)
        settings.OUTBOX_SWEEP_AFTER = timedelta(0)
        swept = housekeeping.outbox_sweep(now=timezone.now() + timedelta(seconds=1))

        # then
        assert swept["cases"] == 1
        wait_state(case, CaseState.COMPLETED)
        wait_all_sent(case, smtp, count=MERCHANT_NOTICES + len(departments))
    assert_effects_once(case, smtp, departments)


def test_mail_refused_for_a_while_arrives_once_accepted(
    start_worker, smtp, departments, reviewer, approver
):
    # given: the mail server answers 451 to everything
    smtp.refusing = True
    start_worker()
    case = case_awaiting_approval(reviewer)

    # when
    case_transition(case_id=case.pk, name="approve", actor=approver)
    wait_state(case, CaseState.COMPLETED)
    wait_for(
        lambda: (
            Notification.objects.filter(case=case, attempts__gte=2).count()
            == MERCHANT_NOTICES + len(departments)
        ),
        what="retried notices",
    )
    failing = Notification.objects.filter(case=case).first()
    assert failing.status == Notification.Status.PENDING
    assert "451" in failing.last_error
    smtp.refusing = False

    # then
    wait_all_sent(case, smtp, count=MERCHANT_NOTICES + len(departments))
    assert smtp.refused >= 2 * (MERCHANT_NOTICES + len(departments))
    assert_effects_once(case, smtp, departments)


def test_terminal_rebound_elsewhere_fails_then_retry_completes(
    start_worker, smtp, departments, reviewer, approver, operations, admin_client
):
    # given: approved, then a terminal is rebound elsewhere before execution
    case = case_awaiting_approval(reviewer, terminals=1)
    terminal = case.case_terminals.get().terminal
    case_transition(case_id=case.pk, name="approve", actor=approver)
    mine = Binding.objects.active().get(terminal=terminal)
    Binding.objects.filter(pk=mine.pk).update(ended_at=timezone.now())
    foreign = factories.BindingFactory(terminal=terminal, started_at=timezone.now())

    # when
    start_worker()

    # then: failed at the first step, Operations e-mailed
    wait_state(case, CaseState.FAILED)
    case.refresh_from_db()
    assert case.failure_step == Step.VERIFY_BINDINGS
    assert terminal.serial_number in case.failure_reason
    wait_for(
        lambda: [m for m in smtp.received() if operations.email in m["X-Envelope-To"]],
        what="the Operations e-mail",
    )
    page = admin_client.get(f"/admin/cases/case/{case.pk}/change/").content.decode()
    assert case.failure_reason in page
    assert not SettlementBatch.objects.exists()

    # when: fixed, then retried by Operations
    Binding.objects.filter(pk=foreign.pk).update(ended_at=timezone.now())
    factories.BindingFactory(
        terminal=terminal, merchant=case.merchant, started_at=timezone.now()
    )
    case_transition(case_id=case.pk, name="retry", actor=operations)

    # then
    wait_state(case, CaseState.COMPLETED)
    wait_all_sent(case, smtp, count=1 + MERCHANT_NOTICES + len(departments))
    case.refresh_from_db()
    assert case.steps.get(step=Step.VERIFY_BINDINGS).attempts == 2
    operations_mails = [
        m for m in smtp.received() if operations.email in m["X-Envelope-To"]
    ]
    assert len(operations_mails) == 1
    assert case.reference in operations_mails[0]["Subject"]
