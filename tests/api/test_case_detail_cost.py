"""What the case detail costs (issue 15) and what its shortcuts must not change:
the queries it takes, the API key kept per process, the statement read along."""

import time
from datetime import date
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from api.models import APIKey, Scope
from api.services import api_key_revoke
from cases.models import Case, CaseState
from cases.services import finance
from cases.statements import case_statement
from tests import factories
from tests.api.test_api import assert_problem, keyed_client
from tests.api.test_money_and_returns_api import _chain_case

pytestmark = pytest.mark.django_db


def _get(client, case):
    return client.get(f"/api/v1/cases/{case.reference}/")


def test_the_case_detail_takes_four_queries_with_a_known_key(
    django_assert_num_queries,
):
    # given: a live statement (not frozen), 5 terminals, each expected back;
    # the key was used once (its lookup and last use are recorded then)
    client, _ = keyed_client(Scope.READ_CASES)
    case = _chain_case(5)
    first = _get(client, case)
    assert first.status_code == 200

    # when read again: the case with its latest frozen statement, its
    # terminals, their transaction volumes, the device returns
    with django_assert_num_queries(4):
        response = _get(client, case)

    # then the same answer
    assert response.status_code == 200
    assert response.content == first.content
    assert response.json()["statement"]["version"] is None


def test_a_frozen_statement_is_read_with_the_case(django_assert_num_queries):
    # given a case whose statement was frozen at approval
    client, _ = keyed_client(Scope.READ_CASES)
    case = _chain_case(3)
    frozen = finance.case_statement_freeze(case=case, actor=None)
    _get(client, case)

    # when: no statement or volume query, the frozen version as it was stored
    with django_assert_num_queries(3):
        response = _get(client, case)

    # then
    statement = response.json()["statement"]
    assert statement["version"] == frozen.version
    assert statement["frozen"] is True
    assert statement["net"] == frozen.data["net"]


def test_the_live_statement_from_the_read_terminals_is_the_queried_one():
    # given terminals whose serial order is not their creation order, with
    # their own money terms and volumes
    merchant = factories.MerchantFactory()
    terminals = []
    for serial, deposit in (("SN-C", "299.00"), ("SN-A", "150.00"), ("SN-B", None)):
        terminal = factories.BindingFactory(
            merchant=merchant,
            terminal__serial_number=serial,
            terminal__deposit=Decimal(deposit) if deposit else None,
            terminal__service_fee_annual=Decimal("365.00"),
            terminal__service_fee_paid_until=date(2030, 1, 1),
        ).terminal
        factories.TransactionFactory(terminal=terminal, amount=Decimal("10.00"))
        terminals.append(terminal)
    case = factories.CaseFactory(
        merchant=merchant, terminals=terminals, state=CaseState.IN_REVIEW
    )
    case = finance.cases_with_latest_statement(
        Case.objects.filter(pk=case.pk).select_related("merchant")
    ).get()

    # when
    shown = finance.case_statement_shown(case=case, terminals=terminals)

    # then: the statement the queries build, line for line
    assert shown.as_dict() == case_statement(case=case).as_dict()
    assert [line.serial_number for line in shown.lines if line.serial_number][:1] == [
        "SN-A"
    ]


def test_a_revoked_key_is_refused_at_once_although_it_was_kept():
    # given a key used once (kept by this process)
    client, api_key = keyed_client(Scope.READ_CASES)
    case = factories.CaseFactory(state=CaseState.SUBMITTED)
    assert _get(client, case).status_code == 200

    # when it is revoked
    api_key_revoke(api_key_id=api_key.pk)

    # then
    assert_problem(_get(client, case), 401)


def test_a_key_revoked_in_the_admin_or_its_user_deactivated_is_refused_at_once():
    # given two keys used once, one acting as a staff user
    user = _staff_user()
    saved_client, saved_key = keyed_client(Scope.READ_CASES)
    user_client, _ = keyed_client(Scope.READ_CASES, staff_user=user)
    case = factories.CaseFactory(state=CaseState.SUBMITTED)
    assert _get(saved_client, case).status_code == 200
    assert _get(user_client, case).status_code == 200

    # when the key is saved revoked (as the admin does) and the user deactivated
    saved_key.revoked = True
    saved_key.save()
    user.is_active = False
    user.save()

    # then
    assert_problem(_get(saved_client, case), 401)
    assert_problem(_get(user_client, case), 401)


def test_a_revocation_in_another_process_holds_within_the_cache_bound(settings):
    # given a key kept for at most 0.3 s
    settings.API_KEY_CACHE_SECONDS = 0.3
    client, api_key = keyed_client(Scope.READ_CASES)
    case = factories.CaseFactory(state=CaseState.SUBMITTED)
    assert _get(client, case).status_code == 200

    # when another process revokes it (no signal reaches this one)
    APIKey.objects.filter(pk=api_key.pk).update(revoked=True)
    kept = _get(client, case).status_code
    time.sleep(0.35)

    # then: refused once the bound has passed
    assert kept == 200
    assert_problem(_get(client, case), 401)


def test_an_expiry_passing_is_checked_on_each_request():
    # given a key used once, kept by this process
    client, _api_key = keyed_client(
        Scope.READ_CASES, expiry_date=timezone.now() + timezone.timedelta(seconds=1)
    )
    case = factories.CaseFactory(state=CaseState.SUBMITTED)
    assert _get(client, case).status_code == 200

    # when its expiry date passes
    time.sleep(1.05)

    # then
    assert_problem(_get(client, case), 401)


def test_the_throttle_answers_429_with_the_rest_of_its_window(monkeypatch):
    # given a key allowed 2 requests a minute
    from api.auth import APIKeyRateThrottle

    monkeypatch.setattr(APIKeyRateThrottle, "rate", "2/min", raising=False)
    client, _ = keyed_client(Scope.READ_CASES)
    case = factories.CaseFactory(state=CaseState.SUBMITTED)

    # when
    answers = [_get(client, case) for _ in range(3)]

    # then
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert 1 <= int(answers[2]["Retry-After"]) <= 60


def _staff_user():
    from django.contrib.auth.models import User

    return User.objects.create_user("api-staff", password="x", is_staff=True)


def test_the_key_query_carries_the_staff_user():
    # given a key acting as a staff user, not used yet in this process
    client, _ = keyed_client(Scope.READ_CASES, staff_user=_staff_user())
    case = factories.CaseFactory(state=CaseState.SUBMITTED)

    # when
    with CaptureQueriesContext(connection) as queries:
        response = _get(client, case)

    # then: one query for the key and its user, none for the user alone
    assert response.status_code == 200
    key_queries = [q["sql"] for q in queries if 'FROM "api_apikey"' in q["sql"]]
    assert len(key_queries) == 1
    assert not [
        q for q in queries if q["sql"].lstrip().startswith('SELECT "auth_user"')
    ]


def _serializer_answer(case) -> dict:
    """What CaseDetailSerializer (the schema's description) makes of ``case``."""
    from api.serializers import CaseDetailSerializer
    from api.views import _cases
    from cases.models import DeviceReturn
    from cases.services.chains import case_terminal_progress

    full = _cases().get(pk=case.pk)
    statement, _frozen = finance.case_statement_current(case=full)
    context = {
        "statement": statement,
        "progress": case_terminal_progress(case=full, links=full.prefetched_links),
        "device_returns": list(
            DeviceReturn.objects.filter(case=full).select_related("terminal", "case")
        ),
    }
    return CaseDetailSerializer(full, context=context).data


def _shipped_replacement_case():
    from tests.cases.test_device_returns import completed_case_with_returns

    case = completed_case_with_returns(terminals=2)
    case.replacement_terminal = factories.TerminalFactory()
    case.closed_at = timezone.now()
    case.failure_step = "settlement"
    case.save(update_fields=["replacement_terminal", "closed_at", "failure_step"])
    case.device_returns.filter(pk=case.device_returns.order_by("pk")[0].pk).update(
        courier="SF", tracking_number="SF1234567890", shipped_at=timezone.now()
    )
    return case


@pytest.mark.parametrize(
    "make",
    [
        lambda: factories.CaseFactory(state=CaseState.SUBMITTED),
        lambda: _chain_case(4),
        _shipped_replacement_case,
    ],
    ids=["submitted", "chain-live-statement", "replacement-shipped-closed"],
)
def test_the_written_out_answer_is_the_serializers_byte_for_byte(make):
    from rest_framework.renderers import JSONRenderer

    # given
    client, _ = keyed_client(Scope.READ_CASES)
    case = make()

    # when
    response = _get(client, case)

    # then: the same JSON as CaseDetailSerializer's, key order included
    assert response.status_code == 200
    assert response.content == JSONRenderer().render(_serializer_answer(case))


def test_the_written_out_answer_of_a_frozen_statement_is_the_serializers():
    from rest_framework.renderers import JSONRenderer

    # given
    client, _ = keyed_client(Scope.READ_CASES)
    case = _chain_case(2)
    finance.case_statement_freeze(case=case, actor=None)

    # when
    response = _get(client, case)

    # then
    assert response.content == JSONRenderer().render(_serializer_answer(case))
    assert response.json()["statement"]["frozen"] is True
