"""Execution of approved cases, in process: the steps, resuming, idempotency."""

import csv
import io
from decimal import Decimal

import pytest
from django.core import mail
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from cases.models import (
    CaseEvent,
    CaseState,
    DeviceReturn,
    Document,
    ExecutionStep,
    Notification,
)
from cases.services import execution
from cases.services.execution import ExecutionOutcome, case_execute
from terminals.models import Binding, Merchant, SettlementBatch, Terminal, Transaction
from tests import factories

Step = ExecutionStep.Step
DEPARTMENTS = {"finance": "fin@example.com", "sales": "sales@example.com"}


@pytest.fixture(autouse=True)
def _departments(settings):
    settings.DEPARTMENT_EMAILS = dict(DEPARTMENTS)


def approved_case(*, terminals: int = 2, **kwargs):
    """An approved case of ``terminals`` bound terminals with some transactions."""
    merchant = kwargs.pop("merchant", None) or factories.MerchantFactory()
    bound = [
        factories.BindingFactory(merchant=merchant).terminal for _ in range(terminals)
    ]
    for terminal in bound:
        factories.TransactionFactory(terminal=terminal, amount=Decimal("100.00"))
        factories.TransactionFactory(terminal=terminal, amount=Decimal("28.50"))
        factories.TransactionFactory(
            terminal=terminal, amount=Decimal("999.00"), settled=True
        )
    now = timezone.now()
    return factories.CaseFactory(
        merchant=merchant,
        terminals=bound,
        state=CaseState.APPROVED,
        approved_at=now,
        execution_queued_at=now,
        **kwargs,
    )


def step_statuses(case) -> dict[str, str]:
    return dict(case.steps.values_list("step", "status"))


@pytest.mark.django_db
def test_approved_case_runs_every_step_in_order_and_completes(
    django_capture_on_commit_callbacks,
):
    # given
    case = approved_case()
    terminal_ids = list(case.case_terminals.values_list("terminal_id", flat=True))

    # when
    with django_capture_on_commit_callbacks(execute=True):
        outcome = case_execute(case_id=case.pk)

    # then
    case.refresh_from_db()
    assert outcome == ExecutionOutcome.COMPLETED
    assert case.state == CaseState.COMPLETED
    assert list(case.steps.values_list("step", "status")) == [
        (Step.VERIFY_BINDINGS, "done"),
        (Step.SETTLE, "done"),
        (Step.EXPORT, "done"),
        (Step.UNBIND, "done"),
        (Step.DEACTIVATE_SIM, "done"),
        (Step.BIND_REPLACEMENT, "skipped"),
        (Step.CLOSE_ACCOUNT, "skipped"),
        (Step.NOTIFY, "done"),
    ]
    # bindings ended, history kept
    assert not Binding.objects.active().filter(terminal_id__in=terminal_ids).exists()
    assert Binding.objects.filter(terminal_id__in=terminal_ids).count() == 2
    assert set(
        Terminal.objects.filter(pk__in=terminal_ids).values_list("status", flat=True)
    ) == {Terminal.Status.UNBOUND}
    # one settlement batch with the unsettled amounts only
    batch = SettlementBatch.objects.get()
    assert batch.total == Decimal("257.00")
    assert batch.transaction_count == 4
    assert case.settlement_total == Decimal("257.00")
    assert case.settlement_batch == batch
    assert not Transaction.objects.filter(settled=False).exists()
    # the export holds the whole history
    export = Document.objects.get(case=case, kind=Document.Kind.DATA_EXPORT)
    rows = list(csv.reader(io.StringIO(export.file.open("rb").read().decode())))
    assert rows[0] == list(execution.EXPORT_HEADER)
    assert len(rows) == 1 + 6
    assert export.size == export.file.size
    # events: started and completed by the system
    transitions = list(
        CaseEvent.objects.filter(case=case, type=CaseEvent.Type.TRANSITION)
        .order_by("pk")
        .values_list("transition", "actor_kind")
    )
    assert transitions == [("start_execution", "system"), ("complete", "system")]
    assert case.closed_at is not None
    assert not case.case_terminals.filter(is_open=True).exists()


@pytest.mark.django_db
def test_completion_is_e_mailed_to_merchant_applicant_and_each_department(
    django_capture_on_commit_callbacks,
):
    # given
    case = approved_case()

    # when
    with django_capture_on_commit_callbacks(execute=True):
        case_execute(case_id=case.pk)

    # then
    notices = Notification.objects.filter(case=case)
    assert sorted(notices.values_list("kind", flat=True)) == [
        "completed",
        "completed",
        "department_completed",
        "department_completed",
    ]
    assert set(notices.values_list("status", flat=True)) == {"sent"}
    assert sorted(
        r for n in notices.filter(kind="completed") for r in n.recipients
    ) == sorted([case.merchant.contact_email, case.applicant_email])
    assert sorted(
        r for n in notices.filter(kind="department_completed") for r in n.recipients
    ) == sorted(DEPARTMENTS.values())
    assert len(mail.outbox) == 4
    # the export and the amounts only for the contact on file and finance
    with_data = {case.merchant.contact_email, DEPARTMENTS["finance"]}
    for message in mail.outbox:
        assert case.reference in message.subject
        assert message.alternatives[0].mimetype == "text/html"
        (to,) = message.to
        attachments = [a[0] for a in message.attachments]
        if to in with_data:
            assert attachments == [f"{case.reference}-transactions.csv"], to
            assert "257.00" in message.body, to
        else:
            assert attachments == [], to
            assert "257.00" not in message.body, to


@pytest.mark.django_db
def test_executing_twice_repeats_no_effect(django_capture_on_commit_callbacks):
    # given
    case = approved_case()
    with django_capture_on_commit_callbacks(execute=True):
        case_execute(case_id=case.pk)

    # when
    with django_capture_on_commit_callbacks(execute=True):
        second = case_execute(case_id=case.pk)

    # then
    assert second == ExecutionOutcome.SKIPPED
    assert SettlementBatch.objects.count() == 1
    assert Document.objects.filter(kind=Document.Kind.DATA_EXPORT).count() == 1
    assert Notification.objects.count() == 4
    assert len(mail.outbox) == 4
    assert set(case.steps.values_list("attempts", flat=True)) <= {0, 1}


@pytest.mark.django_db
def test_a_step_called_twice_does_its_effect_once():
    # given
    replacement = factories.TerminalFactory()
    case = approved_case(replacement_terminal=replacement, close_account=True)
    terminals = [link.terminal for link in case.case_terminals.all()]
    results: dict = {}
    now = timezone.now()

    # when: every step run twice in a row
    for name in execution.STEP_ORDER:
        if name == Step.CLOSE_ACCOUNT:
            continue  # the replacement keeps the account open; tested below
        for _ in range(2):
            results[name] = execution.STEP_FUNCTIONS[name](
                case=case, terminals=terminals, results=results, now=now
            )

    # then
    assert SettlementBatch.objects.count() == 1
    assert SettlementBatch.objects.get().total == Decimal("257.00")
    assert Document.objects.filter(kind=Document.Kind.DATA_EXPORT).count() == 1
    assert results[Step.UNBIND]["released"] == []  # nothing left on the 2nd call
    assert DeviceReturn.objects.filter(case=case).count() == 2  # not 4
    assert results[Step.DEACTIVATE_SIM] == {"deactivated": []}  # done the 1st time
    assert Binding.objects.filter(terminal=replacement).count() == 1
    assert Binding.objects.active().filter(merchant=case.merchant).count() == 1
    assert (
        Notification.objects.filter(case=case).count() == 4
    )  # contact, applicant, two departments


@pytest.mark.django_db
def test_closing_the_account_twice_closes_it_once():
    # given
    case = approved_case(close_account=True)
    with pytest.raises(Exception, match="still bound"):
        execution.STEP_FUNCTIONS[Step.CLOSE_ACCOUNT](
            case=case, terminals=[], results={}, now=timezone.now()
        )
    Binding.objects.filter(merchant=case.merchant).update(ended_at=timezone.now())
    first_at = timezone.now()

    # when
    for _ in range(2):
        execution.STEP_FUNCTIONS[Step.CLOSE_ACCOUNT](
            case=case, terminals=[], results={}, now=timezone.now()
        )

    # then
    merchant = Merchant.objects.get(pk=case.merchant_id)
    assert merchant.status == Merchant.Status.CLOSED
    assert first_at <= merchant.closed_at <= timezone.now()


@pytest.mark.django_db
def test_replacement_and_account_steps_run_when_asked(
    django_capture_on_commit_callbacks,
):
    # given
    replacement = factories.TerminalFactory()
    case = approved_case(replacement_terminal=replacement)

    # when
    with django_capture_on_commit_callbacks(execute=True):
        case_execute(case_id=case.pk)

    # then
    case.refresh_from_db()
    assert case.state == CaseState.COMPLETED
    assert step_statuses(case)[Step.BIND_REPLACEMENT] == "done"
    assert step_statuses(case)[Step.CLOSE_ACCOUNT] == "skipped"
    replacement.refresh_from_db()
    assert replacement.status == Terminal.Status.ACTIVE
    assert Binding.objects.active().get(terminal=replacement).merchant == case.merchant


@pytest.mark.django_db
def test_closing_the_account_after_unbinding_all_terminals(
    django_capture_on_commit_callbacks,
):
    # given
    case = approved_case(close_account=True)

    # when
    with django_capture_on_commit_callbacks(execute=True):
        case_execute(case_id=case.pk)

    # then
    case.refresh_from_db()
    assert case.state == CaseState.COMPLETED
    assert Merchant.objects.get(pk=case.merchant_id).status == Merchant.Status.CLOSED


@pytest.mark.django_db
def test_terminal_rebound_elsewhere_fails_the_case_and_e_mails_operations(
    operations, django_capture_on_commit_callbacks
):
    # given
    case = approved_case(terminals=1)
    terminal = case.case_terminals.get().terminal
    Binding.objects.filter(terminal=terminal).update(ended_at=timezone.now())
    factories.BindingFactory(terminal=terminal, started_at=timezone.now())

    # when
    with django_capture_on_commit_callbacks(execute=True):
        outcome = case_execute(case_id=case.pk)

    # then
    case.refresh_from_db()
    assert outcome == ExecutionOutcome.FAILED
    assert case.state == CaseState.FAILED
    assert case.failure_step == Step.VERIFY_BINDINGS
    assert "bound to another merchant" in case.failure_reason
    step = case.steps.get(step=Step.VERIFY_BINDINGS)
    assert (step.status, step.attempts) == ("failed", 1)
    assert step.error == case.failure_reason
    assert step_statuses(case)[Step.SETTLE] == "pending"
    event = CaseEvent.objects.get(case=case, type=CaseEvent.Type.STEP)
    assert event.payload == {"step": "verify_bindings", "status": "failed"}
    notice = Notification.objects.get(case=case)
    assert notice.kind == Notification.Kind.EXECUTION_FAILED
    assert notice.recipients == [operations.email]
    assert [m.to for m in mail.outbox] == [[operations.email]]
    assert case.reference in mail.outbox[0].subject
    assert not SettlementBatch.objects.exists()


@pytest.mark.django_db
def test_retry_after_fixing_resumes_at_the_failed_step(
    operations, django_capture_on_commit_callbacks
):
    # given: failed at closing the account, a terminal outside the case still bound
    case = approved_case(terminals=1, close_account=True)
    other = factories.BindingFactory(merchant=case.merchant)
    with django_capture_on_commit_callbacks(execute=True):
        case_execute(case_id=case.pk)
    case.refresh_from_db()
    assert (case.state, case.failure_step) == ("failed", Step.CLOSE_ACCOUNT)
    assert step_statuses(case)[Step.UNBIND] == "done"
    Binding.objects.filter(pk=other.pk).update(ended_at=timezone.now())

    # when
    from cases.services.review import case_transition

    with django_capture_on_commit_callbacks(execute=True):
        case_transition(case_id=case.pk, name="retry", actor=operations)

    # then
    case.refresh_from_db()
    assert case.state == CaseState.COMPLETED
    assert case.failure_step == ""
    assert set(step_statuses(case).values()) == {"done", "skipped"}
    attempts = dict(case.steps.values_list("step", "attempts"))
    assert attempts[Step.SETTLE] == 1  # not repeated
    assert attempts[Step.CLOSE_ACCOUNT] == 2
    assert SettlementBatch.objects.count() == 1
    assert Document.objects.filter(kind=Document.Kind.DATA_EXPORT).count() == 1


@pytest.mark.django_db
def test_a_transient_error_propagates_and_the_next_run_resumes(
    monkeypatch, django_capture_on_commit_callbacks
):
    # given: the export step loses the database once
    case = approved_case()
    real_export = execution.STEP_FUNCTIONS[Step.EXPORT]

    def lost_connection(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setitem(execution.STEP_FUNCTIONS, Step.EXPORT, lost_connection)
    with pytest.raises(OperationalError):
        case_execute(case_id=case.pk)
    case.refresh_from_db()
    assert case.state == CaseState.EXECUTING
    export = case.steps.get(step=Step.EXPORT)
    assert (export.status, export.attempts) == ("pending", 1)
    assert "server closed" in export.error

    # when
    monkeypatch.setitem(execution.STEP_FUNCTIONS, Step.EXPORT, real_export)
    with django_capture_on_commit_callbacks(execute=True):
        outcome = case_execute(case_id=case.pk)

    # then
    assert outcome == ExecutionOutcome.COMPLETED
    attempts = dict(case.steps.values_list("step", "attempts"))
    assert attempts[Step.SETTLE] == 1
    assert attempts[Step.EXPORT] == 2
    assert SettlementBatch.objects.count() == 1


@pytest.mark.django_db
def test_export_left_by_a_crash_before_commit_is_replaced_not_duplicated():
    # given: a file written by a run that died before committing its row
    case = approved_case(terminals=1)
    storage = Document._meta.get_field("file").storage
    name = execution.case_export_storage_name(case)
    storage.save(name, io.BytesIO(b"partial"))
    terminals = [link.terminal for link in case.case_terminals.all()]

    # when
    result = execution.STEP_FUNCTIONS[Step.EXPORT](
        case=case, terminals=terminals, results={}, now=timezone.now()
    )

    # then
    document = Document.objects.get(pk=result["document"])
    assert document.file.name == name
    assert document.file.open("rb").read().startswith(b"serial_number,")
    assert storage.listdir(f"cases/exports/{case.pk}")[1] == [name.rsplit("/")[-1]]


@pytest.mark.django_db
def test_cases_not_approved_are_left_alone():
    # given
    case = factories.CaseFactory(state=CaseState.IN_REVIEW)

    # when
    outcome = case_execute(case_id=case.pk)

    # then
    assert outcome == ExecutionOutcome.SKIPPED
    assert not ExecutionStep.objects.exists()


@pytest.mark.django_db
def test_queries_per_case_stay_bounded(django_capture_on_commit_callbacks):
    # given
    case = approved_case(terminals=2)

    # when
    with CaptureQueriesContext(connection) as queries:
        outcome = case_execute(case_id=case.pk)

    # then: savepoints only exist because the test runs inside a transaction
    statements = [
        q["sql"] for q in queries if "SAVEPOINT" not in q["sql"].split(" ", 2)[:2]
    ]
    assert outcome == ExecutionOutcome.COMPLETED
    # 40 before chains ran in batches (a batch adds its progress and its
    # event: 4) and before the SIM step and the device returns (a fixed 8).
    assert len(statements) <= 52, "\n".join(statements)


class RetryCalled(Exception):
    pass


def run_task(task, *, retries: int, **kwargs):
    """Run a bound task's body as its ``retries``-th delivery."""
    task.push_request(retries=retries, is_eager=False)
    try:
        return task.run(**kwargs)
    finally:
        task.pop_request()


@pytest.mark.django_db
def test_task_retries_transient_errors_with_backoff_then_fails_the_case(
    settings, monkeypatch, operations
):
    # given
    from cases.tasks import case_execute_task

    case = approved_case(terminals=1)
    retried = []

    def flaky(*, case_id):
        raise OperationalError("lock timeout")

    def fake_retry(*, exc, countdown):
        retried.append(countdown)
        return RetryCalled()

    monkeypatch.setattr(execution, "case_execute", flaky)
    monkeypatch.setattr(case_execute_task, "retry", fake_retry)
    settings.EXECUTION_MAX_RETRIES = 3
    settings.EXECUTION_RETRY_BACKOFF = 2
    settings.EXECUTION_RETRY_BACKOFF_MAX = 300

    # when: a retry is still allowed
    before = timezone.now()
    with pytest.raises(RetryCalled):
        run_task(case_execute_task, retries=2, case_id=case.pk)

    # then: backoff with jitter within 2 * 2**2 seconds, sweeper pushed back
    assert 1 <= retried[0] <= 8
    case.refresh_from_db()
    assert case.state == CaseState.APPROVED
    assert case.execution_queued_at > before

    # when: the retries ran out
    result = run_task(case_execute_task, retries=3, case_id=case.pk)

    # then
    case.refresh_from_db()
    assert result == "failed"
    assert case.state == CaseState.FAILED
    assert case.failure_step == Step.VERIFY_BINDINGS
    assert "lock timeout" in case.failure_reason


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_second_worker_finds_the_case_busy_and_exits():
    # given: another session holds the case's advisory lock
    import psycopg

    case = approved_case(terminals=1)
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as other:
        other.execute(
            "SELECT pg_advisory_lock(%s)", [execution.LOCK_NAMESPACE + case.pk]
        )

        # when
        outcome = case_execute(case_id=case.pk)

    # then
    assert outcome == ExecutionOutcome.BUSY
    case.refresh_from_db()
    assert case.state == CaseState.APPROVED
    assert not ExecutionStep.objects.filter(case=case).exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_local_connector_commits_a_case_in_at_most_two_transactions(monkeypatch):
    # given: a case whose every step runs on the local registry; the e-mails
    # go to the broker (not sent in this process, as on a real worker)
    from cases import tasks

    queued = []
    for task in (tasks.notification_send_task, tasks.notifications_send_batch_task):
        monkeypatch.setattr(task, "delay", lambda **kw: queued.append(kw))
    case = approved_case(terminals=2)

    # when
    with CaptureQueriesContext(connection) as queries:
        outcome = case_execute(case_id=case.pk)

    # then: the start, then every step together
    assert outcome == ExecutionOutcome.COMPLETED
    commits = [q["sql"] for q in queries if q["sql"].startswith("COMMIT")]
    assert len(commits) <= 2, len(commits)
    assert set(step_statuses(case).values()) <= {"done", "skipped"}
    assert CaseEvent.objects.filter(case=case, transition="complete").exists()
    assert Notification.objects.filter(case=case).count() >= 3


@pytest.mark.postgres
@pytest.mark.django_db
def test_grouped_the_step_rows_are_written_by_one_update_and_the_notice_lists_them(
    monkeypatch, settings
):
    # given: the e-mails go to the broker; Operations gets the steps
    from cases import tasks

    for task in (tasks.notification_send_task, tasks.notifications_send_batch_task):
        monkeypatch.setattr(task, "delay", lambda **kw: None)
    settings.DEPARTMENT_EMAILS = {"operations": "ops@example.com"}
    case = approved_case(terminals=2)

    # when
    with CaptureQueriesContext(connection) as queries:
        outcome = case_execute(case_id=case.pk)

    # then: every step row done, written together in one statement
    assert outcome == ExecutionOutcome.COMPLETED
    sql = [q["sql"] for q in queries]
    step_writes = [q for q in sql if q.startswith('UPDATE "cases_executionstep"')]
    assert len(step_writes) == 1
    rows = list(
        case.steps.order_by("position").values_list("step", "status", "attempts")
    )
    assert {status for _, status, _ in rows} == {"done", "skipped"}
    assert all(attempts == 1 for _, status, attempts in rows if status == "done")
    # and the Operations notice tells each step's end as the rows say
    notice = Notification.objects.get(
        case=case, kind=Notification.Kind.DEPARTMENT_COMPLETED
    )
    assert notice.context["steps"] == [
        [step, status] for step, status, _ in rows if step != Step.NOTIFY
    ]
    # and the statements stay few: two terminals, no webhook subscription
    # (read each time: the test cache is per process)
    control = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")
    statements = [q for q in sql if not q.startswith(control)]
    assert len(statements) <= 36, "\n".join(statements)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_failing_step_keeps_the_steps_before_it_done_when_grouped():
    # given: the terminal is rebound elsewhere after the settle step's check
    case = approved_case(terminals=1)

    def refused(**kwargs):
        raise execution.ExecutionError("refused by the registry")

    # when
    real = execution.STEP_FUNCTIONS[Step.UNBIND]
    execution.STEP_FUNCTIONS[Step.UNBIND] = refused
    try:
        outcome = case_execute(case_id=case.pk)
    finally:
        execution.STEP_FUNCTIONS[Step.UNBIND] = real

    # then: the steps before it committed, the case failed at it, with its audit
    case.refresh_from_db()
    assert outcome == ExecutionOutcome.FAILED
    assert case.state == CaseState.FAILED
    assert case.failure_step == Step.UNBIND
    statuses = step_statuses(case)
    assert statuses[Step.SETTLE] == statuses[Step.EXPORT] == "done"
    assert statuses[Step.UNBIND] == "failed"
    assert SettlementBatch.objects.count() == 1
    assert CaseEvent.objects.filter(case=case, transition="fail").exists()
    assert Binding.objects.active().filter(merchant=case.merchant).count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_crash_in_the_grouped_steps_leaves_nothing_half_done_and_resumes():
    # given: the database is lost at the export step
    case = approved_case(terminals=1)

    def lost(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    real = execution.STEP_FUNCTIONS[Step.EXPORT]
    execution.STEP_FUNCTIONS[Step.EXPORT] = lost
    try:
        with pytest.raises(OperationalError):
            case_execute(case_id=case.pk)
    finally:
        execution.STEP_FUNCTIONS[Step.EXPORT] = real

    # then: the settle step rolled back with it, the error is on the step
    case.refresh_from_db()
    assert case.state == CaseState.EXECUTING
    assert SettlementBatch.objects.count() == 0
    export = case.steps.get(step=Step.EXPORT)
    assert (export.status, export.attempts) == ("pending", 1)
    assert "server closed" in export.error

    # when: the task runs again
    outcome = case_execute(case_id=case.pk)

    # then: everything done once
    case.refresh_from_db()
    assert outcome == ExecutionOutcome.COMPLETED
    assert case.state == CaseState.COMPLETED
    assert SettlementBatch.objects.count() == 1
