"""The HTTP connector and SMS through a real worker, Redis and PostgreSQL.

A stub core and a stub SMS gateway listen on loopback ports; the worker is a
separate process configured from the environment, as in production.
"""

import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from cases.models import CaseState, ExecutionStep, Notification
from cases.services import housekeeping
from cases.services.execution import terminal_batch_key
from cases.services.review import case_transition
from terminals.models import Binding
from tests.httpstub import StubServer
from tests.integration.harness import wait_for
from tests.integration.test_execution_worker import (
    case_awaiting_approval,
    state_of,
    wait_state,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(120),
]

Step = ExecutionStep.Step


@pytest.fixture
def stub():
    servers = []

    def start(handler) -> StubServer:
        servers.append(StubServer(handler))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_core_down_then_back_the_case_waits_then_completes_and_the_sms_goes_once(
    start_worker, stub, reviewer, approver, settings
):
    # given: the core is down; a worker with the HTTP connector and SMS on
    up = {"up": False}

    def core_handler(request):
        if not up["up"]:
            return 503, {"detail": "maintenance"}
        return 200, {"status": "done", "reference": f"C-{request.json()['operation']}"}

    core = stub(core_handler)
    gateway = stub(lambda r: (200, {"Code": "OK", "BizId": "b"}))
    start_worker(
        CORE_CONNECTOR="http",
        CORE_URL=core.url,
        CORE_RETRIES="0",
        CORE_BREAKER_THRESHOLD="2",
        CORE_BREAKER_RESET_SECONDS="6",
        EXECUTION_MAX_RETRIES="3",
        EXECUTION_RETRY_BACKOFF_MAX_SECONDS="1",
        NOTIFICATION_CHANNELS="email,sms",
        SMS_BACKEND="aliyun",
        SMS_URL=f"{gateway.url}/",
        SMS_TEMPLATES="completed=SMS_5",
        SMS_SIGN_NAME="收单服务",
    )
    case = case_awaiting_approval(reviewer)

    # when: approved; the task fails, retries (fast-failing once the circuit
    # opens) and gives up
    case_transition(case_id=case.pk, name="approve", actor=approver)
    wait_for(
        lambda: case.steps.filter(step=Step.VERIFY_BINDINGS, attempts=4).exists(),
        timeout=30,
        what="four tries of the first step",
    )

    # then: two calls reached the core, the case waits
    assert len(core.requests) == 2
    assert state_of(case) == CaseState.EXECUTING
    assert "circuit open" in case.steps.get(step=Step.VERIFY_BINDINGS).error

    # when: the core is back, the circuit's pause ends, the sweeper passes
    up["up"] = True
    time.sleep(6)
    settings.OUTBOX_SWEEP_AFTER = timedelta(0)
    swept = housekeeping.outbox_sweep(now=timezone.now() + timedelta(seconds=5))

    # then
    assert swept["cases"] == 1
    wait_state(case, CaseState.COMPLETED)
    assert not Binding.objects.active().filter(merchant=case.merchant).exists()
    keys = {r.headers["idempotency-key"] for r in core.requests}
    steps = ("verify_bindings", "settle", "export", "deactivate_sim")
    terminals = [link.terminal for link in case.case_terminals.all()]
    unbind = terminal_batch_key(base=f"{case.reference}.unbind", terminals=terminals)
    assert keys == {f"{case.reference}.{s}" for s in steps} | {unbind}
    wait_for(
        lambda: Notification.objects.filter(
            channel="sms", status=Notification.Status.SENT
        ).exists(),
        what="the completion SMS",
    )
    [sms] = [r.form() for r in gateway.requests]
    assert sms["PhoneNumbers"] == case.merchant.contact_phone
    assert sms["TemplateCode"] == "SMS_5"
    assert json.loads(sms["TemplateParam"]) == {"reference": case.reference}
