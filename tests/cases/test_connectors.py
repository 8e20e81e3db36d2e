"""The HTTP connector against a stub core on loopback (real HTTP)."""

import json
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.utils import timezone

from cases.connectors.views import callback_signature
from cases.models import Case, CaseEvent, CaseState, ExecutionStep
from cases.services import execution
from cases.services.execution import ExecutionOutcome, case_execute
from cases.services.housekeeping import outbox_sweep
from cases.tasks import case_execute_task
from config.celery import app as celery_app
from terminals.models import Binding, SettlementBatch
from tests import factories
from tests.httpstub import StubServer

Step = ExecutionStep.Step
CORE_STEPS = [
    Step.VERIFY_BINDINGS,
    Step.SETTLE,
    Step.EXPORT,
    Step.UNBIND,
    Step.DEACTIVATE_SIM,
]
SECRET = "core-callback-secret"


def done(request):
    body = request.json()
    return 200, {"status": "done", "reference": f"CORE-{body['operation']}"}


@pytest.fixture
def core(settings):
    """A stub core answering "done" to everything until a test scripts it."""
    stub = StubServer(done)
    settings.CORE_CONNECTOR = "http"
    settings.CORE_URL = stub.url
    settings.CORE_API_KEY = "core-key"
    settings.CORE_CALLBACK_SECRET = SECRET
    settings.CORE_CONNECT_TIMEOUT = 1
    settings.CORE_READ_TIMEOUT = 1
    settings.CORE_RETRIES = 1
    settings.CORE_RETRY_BACKOFF = 0.01
    settings.CORE_BREAKER_THRESHOLD = 3
    settings.CORE_BREAKER_RESET_SECONDS = 30
    settings.DEPARTMENT_EMAILS = {}
    cache.clear()  # the circuit breaker lives in the cache
    yield stub
    stub.close()
    cache.clear()


def approved_case(**kwargs):
    merchant = factories.MerchantFactory()
    terminal = factories.BindingFactory(merchant=merchant).terminal
    factories.TransactionFactory(terminal=terminal, amount=Decimal("100.00"))
    now = timezone.now()
    return factories.CaseFactory(
        merchant=merchant,
        terminals=[terminal],
        state=CaseState.APPROVED,
        approved_at=now,
        execution_queued_at=now,
        **kwargs,
    )


def posts(core, operation=None):
    return [
        r
        for r in core.requests
        if r.method == "POST"
        and (operation is None or r.json()["operation"] == operation)
    ]


def signed_callback(client, payload: dict, *, secret: str = SECRET):
    body = json.dumps(payload).encode()
    timestamp = str(int(time.time()))
    return client.post(
        "/api/core/callback/",
        data=body,
        content_type="application/json",
        headers={
            "X-Core-Timestamp": timestamp,
            "X-Core-Signature": callback_signature(
                secret=secret, timestamp=timestamp, body=body
            ),
        },
    )


def sweep_later(django_capture_on_commit_callbacks) -> dict:
    """Run the outbox sweeper as if its delay had passed (executes what it queues)."""
    with django_capture_on_commit_callbacks(execute=True):
        return outbox_sweep(now=timezone.now() + timedelta(hours=1))


def expected_key(case, name: str, *, base: str = "") -> str:
    """The idempotency key of a step; the unbinding goes by batch of terminals."""
    base = base or f"{case.reference}.{name}"
    if name != Step.UNBIND:
        return base
    terminals = [
        link.terminal
        for link in case.case_terminals.select_related("terminal").order_by(
            "terminal__serial_number"
        )
    ]
    return execution.terminal_batch_key(base=base, terminals=terminals)


@pytest.mark.django_db
def test_core_does_each_step_and_its_references_are_recorded(
    core, django_capture_on_commit_callbacks
):
    # given
    replacement = factories.TerminalFactory()
    case = approved_case(replacement_terminal=replacement)

    # when
    with django_capture_on_commit_callbacks(execute=True):
        outcome = case_execute(case_id=case.pk)

    # then: one call per step, keyed by case and step, then mirrored locally
    assert outcome == ExecutionOutcome.COMPLETED
    assert [r.json()["operation"] for r in posts(core)] == [
        *CORE_STEPS,
        Step.BIND_REPLACEMENT,
    ]
    first = posts(core, "settle")[0]
    assert first.headers["authorization"] == "Bearer core-key"
    assert first.headers["idempotency-key"] == f"{case.reference}.settle"
    assert first.json()["merchant_id"] == case.merchant.merchant_id
    steps = {s.step: s for s in case.steps.all()}
    for name in [*CORE_STEPS, Step.BIND_REPLACEMENT]:
        assert steps[name].remote_reference == f"CORE-{name}"
        assert steps[name].idempotency_key == expected_key(case, name)
    assert (
        not Binding.objects.active()
        .filter(merchant=case.merchant)
        .exclude(terminal=replacement)
    )
    assert Binding.objects.active().filter(terminal=replacement).exists()


@pytest.mark.django_db
def test_a_timeout_is_retried_with_the_same_idempotency_key(
    core, settings, django_capture_on_commit_callbacks
):
    # given: the core answers the first settlement too late
    settings.CORE_READ_TIMEOUT = 0.3
    calls = {"settle": 0}

    def slow_first(request):
        if request.method == "POST" and request.json()["operation"] == "settle":
            calls["settle"] += 1
            if calls["settle"] == 1:
                return 200, {"status": "done", "reference": "LATE"}, 1.0
        return done(request)

    core.handler = slow_first
    case = approved_case()

    # when
    with django_capture_on_commit_callbacks(execute=True):
        outcome = case_execute(case_id=case.pk)

    # then
    assert outcome == ExecutionOutcome.COMPLETED
    keys = [r.headers["idempotency-key"] for r in posts(core, "settle")]
    assert keys == [f"{case.reference}.settle"] * 2
    assert case.steps.get(step=Step.SETTLE).remote_reference == "CORE-settle"
    assert SettlementBatch.objects.count() == 1


@pytest.mark.django_db
def test_a_duplicate_answer_is_taken_as_done(core, django_capture_on_commit_callbacks):
    # given: the core already unbound under this key (an earlier run's request)
    def already(request):
        if request.method == "POST" and request.json()["operation"] == "unbind":
            return 409, {"detail": "duplicate request", "reference": "CORE-FIRST"}
        return done(request)

    core.handler = already
    case = approved_case()

    # when
    with django_capture_on_commit_callbacks(execute=True):
        outcome = case_execute(case_id=case.pk)

    # then
    assert outcome == ExecutionOutcome.COMPLETED
    assert len(posts(core, "unbind")) == 1
    assert case.steps.get(step=Step.UNBIND).remote_reference == "CORE-FIRST"
    assert not Binding.objects.active().filter(merchant=case.merchant).exists()


@pytest.mark.django_db
def test_a_refusal_fails_the_case_with_the_cores_reason(
    core, django_capture_on_commit_callbacks
):
    # given
    def refuse_unbind(request):
        if request.method == "POST" and request.json()["operation"] == "unbind":
            return 422, {"reason": "terminal under chargeback dispute"}
        return done(request)

    core.handler = refuse_unbind
    case = approved_case()

    # when
    with django_capture_on_commit_callbacks(execute=True):
        outcome = case_execute(case_id=case.pk)

    # then: not retried, the reason in the case, the step and the event
    assert outcome == ExecutionOutcome.FAILED
    assert len(posts(core, "unbind")) == 1
    case.refresh_from_db()
    assert case.state == CaseState.FAILED
    assert "terminal under chargeback dispute" in case.failure_reason
    step = case.steps.get(step=Step.UNBIND)
    assert step.status == ExecutionStep.Status.FAILED
    assert "terminal under chargeback dispute" in step.error
    event = case.events.filter(type=CaseEvent.Type.STEP).last()
    assert "terminal under chargeback dispute" in event.note
    assert Binding.objects.active().filter(merchant=case.merchant).exists()


@pytest.mark.django_db
def test_a_retried_case_asks_the_core_again_under_a_new_key(
    core, operations, django_capture_on_commit_callbacks
):
    # given: a case failed on a refusal, retried by Operations
    from cases.services.review import case_transition

    answers = iter([(422, {"reason": "frozen"})])

    def refuse_once(request):
        if request.method == "POST" and request.json()["operation"] == "unbind":
            return next(answers, None) or done(request)
        return done(request)

    core.handler = refuse_once
    case = approved_case()
    with django_capture_on_commit_callbacks(execute=True):
        case_execute(case_id=case.pk)

    # when
    with django_capture_on_commit_callbacks(execute=True):
        case_transition(case_id=case.pk, name="retry", actor=operations)

    # then
    case.refresh_from_db()
    assert case.state == CaseState.COMPLETED
    keys = [r.headers["idempotency-key"] for r in posts(core, "unbind")]
    assert keys == [
        expected_key(case, "unbind"),
        expected_key(case, "unbind", base=f"{case.reference}.unbind.r1"),
    ]


@pytest.mark.django_db
def test_while_the_core_is_down_the_circuit_opens_and_the_case_waits_then_completes(
    core, settings, monkeypatch, django_capture_on_commit_callbacks
):
    # given: the core fails every call
    settings.EXECUTION_MAX_RETRIES = 4
    settings.CORE_BREAKER_RESET_SECONDS = 0.5
    up = {"up": False}

    def down(request):
        return done(request) if up["up"] else (503, {"detail": "maintenance"})

    core.handler = down
    case = approved_case()

    # when: the task runs with its retries (eagerly, without their backoff)
    monkeypatch.setitem(celery_app.conf, "task_eager_propagates", False)
    with django_capture_on_commit_callbacks(execute=True):
        result = case_execute_task.apply(kwargs={"case_id": case.pk})

    # then: 3 failures opened the circuit; later tries failed fast; no failure
    assert (result.state, result.result) == ("SUCCESS", "failed")  # gave up
    assert len(core.requests) == settings.CORE_BREAKER_THRESHOLD
    case.refresh_from_db()
    assert case.state == CaseState.EXECUTING
    verify = case.steps.get(step=Step.VERIFY_BINDINGS)
    assert verify.status == ExecutionStep.Status.PENDING
    assert "circuit open" in verify.error
    assert not case.events.filter(to_state=CaseState.FAILED).exists()

    # when: the core is back and the circuit's pause is over; the sweeper runs
    up["up"] = True
    time.sleep(0.6)
    swept = sweep_later(django_capture_on_commit_callbacks)

    # then
    assert swept["cases"] == 1
    case.refresh_from_db()
    assert case.state == CaseState.COMPLETED
    assert {r.headers["idempotency-key"] for r in posts(core, "settle")} == {
        f"{case.reference}.settle"
    }


@pytest.mark.django_db
def test_a_pending_step_is_completed_by_the_cores_callback(
    core, client, django_capture_on_commit_callbacks
):
    # given: the core answers the unbinding "pending"
    def pending_unbind(request):
        if request.method == "POST" and request.json()["operation"] == "unbind":
            return 202, {"status": "pending", "reference": "TMS-77"}
        return done(request)

    core.handler = pending_unbind
    case = approved_case()
    with django_capture_on_commit_callbacks(execute=True):
        outcome = case_execute(case_id=case.pk)
    assert outcome == ExecutionOutcome.WAITING
    step = case.steps.get(step=Step.UNBIND)
    assert (step.status, step.remote_reference) == ("waiting", "TMS-77")
    assert Binding.objects.active().filter(merchant=case.merchant).exists()

    # when
    payload = {"idempotency_key": step.idempotency_key, "status": "done"}
    with django_capture_on_commit_callbacks(execute=True):
        response = signed_callback(client, {**payload, "reference": "TMS-77"})
    with django_capture_on_commit_callbacks(execute=True):
        duplicate = signed_callback(client, {**payload, "reference": "TMS-77"})

    # then
    assert response.status_code == 200
    assert response.json() == {"accepted": True}
    assert duplicate.json() == {"accepted": False}
    case.refresh_from_db()
    assert case.state == CaseState.COMPLETED
    assert not Binding.objects.active().filter(merchant=case.merchant).exists()
    assert len(posts(core, "unbind")) == 1
    assert case.steps.get(step=Step.UNBIND).remote_reference == "TMS-77"


@pytest.mark.django_db
def test_a_callback_refusal_fails_the_case(
    core, client, django_capture_on_commit_callbacks
):
    # given
    def pending_unbind(request):
        if request.method == "POST" and request.json()["operation"] == "unbind":
            return 202, {"status": "pending", "reference": "TMS-78"}
        return done(request)

    core.handler = pending_unbind
    case = approved_case()
    with django_capture_on_commit_callbacks(execute=True):
        case_execute(case_id=case.pk)
    key = case.steps.get(step=Step.UNBIND).idempotency_key

    # when
    with django_capture_on_commit_callbacks(execute=True):
        signed_callback(
            client,
            {"idempotency_key": key, "status": "refused", "reason": "SIM active"},
        )

    # then
    case.refresh_from_db()
    assert case.state == CaseState.FAILED
    assert "SIM active" in case.failure_reason


@pytest.mark.django_db
def test_an_unsigned_or_stale_callback_is_refused_and_changes_nothing(
    core, client, django_capture_on_commit_callbacks
):
    # given
    core.handler = lambda r: (202, {"status": "pending", "reference": "P"})
    case = approved_case()
    with django_capture_on_commit_callbacks(execute=True):
        case_execute(case_id=case.pk)
    key = case.steps.get(step=Step.VERIFY_BINDINGS).idempotency_key
    body = json.dumps({"idempotency_key": key, "status": "done"}).encode()
    stale = str(int(time.time()) - 3600)

    # when
    forged = signed_callback(
        client, {"idempotency_key": key, "status": "done"}, secret="guess"
    )
    replayed = client.post(
        "/api/core/callback/",
        data=body,
        content_type="application/json",
        headers={
            "X-Core-Timestamp": stale,
            "X-Core-Signature": callback_signature(
                secret=SECRET, timestamp=stale, body=body
            ),
        },
    )
    unknown = signed_callback(client, {"idempotency_key": "nope", "status": "done"})

    # then
    assert (forged.status_code, replayed.status_code) == (403, 403)
    assert unknown.status_code == 404
    step = case.steps.get(step=Step.VERIFY_BINDINGS)
    assert step.status == ExecutionStep.Status.WAITING


@pytest.mark.django_db
def test_a_pending_step_is_completed_by_polling(
    core, django_capture_on_commit_callbacks
):
    # given: the unbinding is pending; the core's status answers pending, then done
    statuses = iter(["pending", "done"])

    def pending_then_done(request):
        if request.method == "GET":
            return 200, {"status": next(statuses), "reference": "TMS-9"}
        if request.json()["operation"] == "unbind":
            return 202, {"status": "pending", "reference": "TMS-9"}
        return done(request)

    core.handler = pending_then_done
    case = approved_case()
    with django_capture_on_commit_callbacks(execute=True):
        case_execute(case_id=case.pk)
    key = case.steps.get(step=Step.UNBIND).idempotency_key

    # when: the sweeper (a beat job) polls twice
    sweep_later(django_capture_on_commit_callbacks)
    still = Case.objects.get(pk=case.pk).state
    sweep_later(django_capture_on_commit_callbacks)

    # then
    assert still == CaseState.EXECUTING
    case.refresh_from_db()
    assert case.state == CaseState.COMPLETED
    polls = [r for r in core.requests if r.method == "GET"]
    assert [r.path for r in polls] == [f"/operations/{key}/"] * 2
    assert len(posts(core, "unbind")) == 1
    assert not Binding.objects.active().filter(merchant=case.merchant).exists()


@pytest.mark.django_db
def test_the_core_refusing_the_bindings_fails_the_case_before_any_money_moves(
    core, django_capture_on_commit_callbacks
):
    # given: the core has the terminal bound elsewhere (a later registry change)
    def rebound(request):
        if request.json()["operation"] == "verify_bindings":
            return 422, {"reason": "SN bound to merchant 898110000000999"}
        return done(request)

    core.handler = rebound
    case = approved_case()

    # when
    with django_capture_on_commit_callbacks(execute=True):
        outcome = case_execute(case_id=case.pk)

    # then
    assert outcome == ExecutionOutcome.FAILED
    assert [r.json()["operation"] for r in posts(core)] == ["verify_bindings"]
    case.refresh_from_db()
    assert case.failure_step == Step.VERIFY_BINDINGS
    assert "898110000000999" in case.failure_reason
    assert not SettlementBatch.objects.exists()


@pytest.mark.django_db
def test_the_core_refusing_some_terminals_of_a_batch_fails_only_those(
    core, settings, operations, django_capture_on_commit_callbacks
):
    # given: a chain of 5 in batches of 2; the core refuses one terminal
    from cases.models import CaseTerminal
    from cases.services.review import case_transition

    settings.EXECUTION_BATCH_SIZE = 2
    merchant = factories.MerchantFactory()
    bound = [factories.BindingFactory(merchant=merchant).terminal for _ in range(5)]
    refused = sorted(t.serial_number for t in bound)[2]
    answers = {"refuse": True}

    def refuse_one(request):
        body = request.json()
        if (
            body["operation"] == "unbind"
            and answers["refuse"]
            and refused in body["serial_numbers"]
        ):
            return 200, {
                "status": "done",
                "reference": "CORE-partial",
                "refused": {refused: "terminal under investigation"},
            }
        return done(request)

    core.handler = refuse_one
    now = timezone.now()
    case = factories.CaseFactory(
        merchant=merchant,
        terminals=bound,
        state=CaseState.APPROVED,
        approved_at=now,
        execution_queued_at=now,
    )

    # when
    with django_capture_on_commit_callbacks(execute=True):
        outcome = case_execute(case_id=case.pk)

    # then: three batches sent; the refused terminal alone stays bound
    case.refresh_from_db()
    assert outcome == ExecutionOutcome.FAILED
    assert [len(r.json()["serial_numbers"]) for r in posts(core, "unbind")] == [2, 2, 1]
    assert refused in case.failure_reason
    assert list(
        Binding.objects.active()
        .filter(merchant=merchant)
        .values_list("terminal__serial_number", flat=True)
    ) == [refused]
    link = CaseTerminal.objects.get(case=case, terminal__serial_number=refused)
    assert link.execution_error == "terminal under investigation"

    # when the core accepts it now and Operations retries
    answers["refuse"] = False
    core.requests.clear()
    with django_capture_on_commit_callbacks(execute=True):
        case_transition(case_id=case.pk, name="retry", actor=operations)

    # then: only that terminal is sent again
    case.refresh_from_db()
    assert case.state == CaseState.COMPLETED
    assert [r.json()["serial_numbers"] for r in posts(core, "unbind")] == [[refused]]
