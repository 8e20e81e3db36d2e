"""Issue 14 through the API: the case's statement, progress and device returns,
shipping a device back, and finance items paid with maker-checker."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from api.models import APIAuditEntry, Scope
from cases.models import (
    CaseEvent,
    CaseState,
    CaseTerminal,
    DeviceReturn,
    DeviceReturnState,
    FinanceItem,
)
from cases.services import finance
from tests import factories
from tests.api.test_api import assert_problem, keyed_client
from tests.cases.test_device_returns import completed_case_with_returns
from tests.cases.test_finance import _finance_user, _item, awaiting_case

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _money_settings(settings):
    settings.CHARGEBACK_RESERVE_RATE = Decimal("0.10")
    settings.CHARGEBACK_RESERVE_DAYS = 180
    settings.FINANCE_DUAL_CONTROL_ABOVE = Decimal("1000.00")
    settings.FINANCE_REFUND_OVERDUE_DAYS = 14
    settings.DEPOSIT_REFUND_WAITS_FOR_DEVICE = True
    settings.NOTIFICATION_CHANNELS = ["email"]


@pytest.fixture
def finance_user(db):
    return _finance_user("finance1")


@pytest.fixture
def second_finance_user(db):
    return _finance_user("finance2")


# --- case detail ----------------------------------------------------------------


def test_case_detail_shows_the_live_statement_then_the_frozen_version(
    reviewer, approver
):
    # given a case awaiting approval: a 299.00 deposit, a prorated fee, funds
    client, _ = keyed_client(Scope.READ_CASES)
    case = awaiting_case(reviewer)

    # when the caller reads it before approval
    live = client.get(f"/api/v1/cases/{case.reference}/").json()

    # then the live statement shows, not frozen, amounts as decimal strings
    assert live["channel"] == case.channel
    statement = live["statement"]
    assert statement["version"] is None
    assert statement["frozen"] is False
    deposit = next(line for line in statement["lines"] if line["kind"] == "deposit")
    assert deposit["amount"] == "299.00"
    assert deposit["direction"] == "to_merchant"
    assert deposit["rule"]
    for line in statement["lines"]:
        assert isinstance(line["amount"], str)
    assert isinstance(statement["net"], str)
    assert Decimal(statement["to_merchant"]) - Decimal(
        statement["by_merchant"]
    ) == Decimal(statement["net"])

    # when the statement is frozen and the registry changes afterwards
    finance.case_statement_freeze(case=case, actor=approver)
    terminal = case.case_terminals.get().terminal
    terminal.deposit = Decimal("999.00")
    terminal.save()
    frozen = client.get(f"/api/v1/cases/{case.reference}/").json()["statement"]

    # then the frozen version shows, with the amounts as they were frozen
    assert frozen["version"] == 1
    assert frozen["frozen"] is True
    assert [line["amount"] for line in frozen["lines"]] == [
        line["amount"] for line in statement["lines"]
    ]


def test_case_detail_shows_progress_and_device_returns_with_data_masked():
    # given a completed case whose execution unbound two devices
    client, _ = keyed_client(Scope.READ_CASES)
    case = completed_case_with_returns(terminals=2)
    case.applicant_phone = "13912345678"
    case.save(update_fields=["applicant_phone"])

    # when
    response = client.get(f"/api/v1/cases/{case.reference}/")

    # then progress counts the terminals and each device return is listed
    assert response.status_code == 200
    body = response.json()
    assert body["progress"] == {"total": 2, "done": 2, "failed": 0, "pending": 0}
    serials = sorted(
        case.case_terminals.values_list("terminal__serial_number", flat=True)
    )
    assert sorted(r["serial_number"] for r in body["device_returns"]) == serials
    first = body["device_returns"][0]
    assert first["state"] == DeviceReturnState.AWAITING_RETURN
    assert first["due_at"]
    assert first["courier"] == ""
    assert first["tracking_number"] == ""
    assert first["ship_url"].endswith(f"/returns/{first['id']}/ship/")
    # personal data stays masked
    assert body["applicant_phone"] == "139****5678"
    assert "13912345678" not in response.content.decode()
    assert case.merchant.legal_rep_id_number not in response.content.decode()


def _chain_case(terminals: int):
    """A completed chain case: terminals done, failed and pending, each expected back."""
    merchant = factories.MerchantFactory()
    bound = [
        factories.BindingFactory(merchant=merchant).terminal for _ in range(terminals)
    ]
    case = factories.CaseFactory(
        merchant=merchant, terminals=bound, state=CaseState.EXECUTING
    )
    links = list(case.case_terminals.order_by("pk"))
    links[0].execution_status = CaseTerminal.ExecutionStatus.FAILED
    links[0].execution_error = "core refused"
    for link in links[1:-1]:
        link.execution_status = CaseTerminal.ExecutionStatus.DONE
    CaseTerminal.objects.bulk_update(links, ["execution_status", "execution_error"])
    DeviceReturn.objects.bulk_create(
        DeviceReturn(case=case, terminal=t, due_at=timezone.now() + timedelta(days=14))
        for t in bound
    )
    return case


def _detail_queries(terminals: int) -> tuple[int, dict]:
    client, _ = keyed_client(Scope.READ_CASES)
    case = _chain_case(terminals)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(f"/api/v1/cases/{case.reference}/")
    assert response.status_code == 200
    return len(queries), response.json()


def test_case_detail_reads_a_chain_in_the_same_queries_whatever_its_size(
    django_assert_num_queries,
):
    # given the number of queries for a case of 2 terminals
    small, body = _detail_queries(2)
    assert body["progress"] == {"total": 2, "done": 0, "failed": 1, "pending": 1}

    # when a case of 50 terminals is read
    client, _ = keyed_client(Scope.READ_CASES)
    case = _chain_case(50)
    with django_assert_num_queries(small):
        response = client.get(f"/api/v1/cases/{case.reference}/")

    # then the same number of queries answered, for all 50
    body = response.json()
    assert body["progress"] == {"total": 50, "done": 48, "failed": 1, "pending": 1}
    assert len(body["device_returns"]) == 50
    assert len(body["serial_numbers"]) == 50


def test_the_case_list_carries_the_channel_but_not_the_costly_parts():
    # given
    client, _ = keyed_client(Scope.READ_CASES)
    case = factories.CaseFactory(state=CaseState.SUBMITTED)

    # when
    (row,) = client.get("/api/v1/cases/").json()["results"]

    # then
    assert row["reference"] == case.reference
    assert row["channel"] == case.channel
    assert not {"statement", "progress", "device_returns"} & set(row)


# --- shipping a device back -------------------------------------------------------


def test_the_caller_ships_a_device_for_the_merchant_once_per_idempotency_key():
    # given a device expected back
    client, _ = keyed_client(Scope.FILE_CASES, Scope.READ_CASES)
    case = completed_case_with_returns()
    device_return = DeviceReturn.objects.get(case=case)
    url = f"/api/v1/cases/{case.reference}/returns/{device_return.pk}/ship/"
    body = {"courier": "SF Express", "tracking_number": "SF1234567890"}

    # when it is posted twice with the same Idempotency-Key
    first = client.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="ship-1")
    again = client.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="ship-1")

    # then the device is shipped once, audited, and the answer replayed
    assert first.status_code == 200, first.content
    assert again.status_code == 200
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    device_return.refresh_from_db()
    assert device_return.state == DeviceReturnState.SHIPPED
    assert (device_return.courier, device_return.tracking_number) == (
        "SF Express",
        "SF1234567890",
    )
    (shown,) = first.json()["device_returns"]
    assert shown["state"] == DeviceReturnState.SHIPPED
    assert shown["tracking_number"] == "SF1234567890"
    shipped = case.events.filter(type=CaseEvent.Type.DEVICE_RETURN, transition="ship")
    assert shipped.count() == 1
    assert APIAuditEntry.objects.get(path=url).object_reference == case.reference


def test_shipping_refusals_are_problems_and_change_nothing():
    # given a device expected back and another case's device
    client, _ = keyed_client(Scope.FILE_CASES)
    case = completed_case_with_returns()
    other = completed_case_with_returns()
    device_return = DeviceReturn.objects.get(case=case)
    url = f"/api/v1/cases/{case.reference}/returns/{device_return.pk}/ship/"
    foreign = DeviceReturn.objects.get(case=other)
    good = {"courier": "SF Express", "tracking_number": "SF1234567890"}

    # then a bad tracking number is a 400 with the field's error
    bad = client.post(url, {**good, "tracking_number": "x"}, format="json")
    assert "tracking_number" in assert_problem(bad, 400)["errors"]
    # and another case's return is a 404
    assert_problem(
        client.post(
            f"/api/v1/cases/{case.reference}/returns/{foreign.pk}/ship/",
            good,
            format="json",
        ),
        404,
    )
    # and a key without cases:file is a 403
    reader, _ = keyed_client(Scope.READ_CASES)
    assert_problem(reader.post(url, good, format="json"), 403)
    device_return.refresh_from_db()
    assert device_return.state == DeviceReturnState.AWAITING_RETURN
    # and a device already shipped is a 409
    assert client.post(url, good, format="json").status_code == 200
    assert_problem(client.post(url, good, format="json"), 409)


# --- finance items ------------------------------------------------------------------


def test_finance_items_are_listed_filtered_and_paged_with_a_cursor():
    # given an open refund, a paid one, and an overdue one
    client, _ = keyed_client(Scope.READ_FINANCE)
    open_item = _item()
    paid = _item(state=FinanceItem.State.PAID, payment_reference="PAY-1")
    overdue = _item(due_on=timezone.localdate() - timedelta(days=30))

    # when the caller lists them
    everything = client.get("/api/v1/finance-items/").json()

    # then newest first, amounts as decimal strings
    assert [r["id"] for r in everything["results"]] == [
        overdue.pk,
        paid.pk,
        open_item.pk,
    ]
    assert everything["results"][0]["amount"] == "299.00"
    assert everything["results"][0]["case_reference"] == overdue.case.reference
    # filters: state, overdue, case reference
    by_state = client.get("/api/v1/finance-items/?state=paid").json()["results"]
    assert [r["id"] for r in by_state] == [paid.pk]
    late = client.get("/api/v1/finance-items/?overdue=true").json()["results"]
    assert [r["id"] for r in late] == [overdue.pk]
    by_case = client.get(
        f"/api/v1/finance-items/?case={open_item.case.reference}"
    ).json()["results"]
    assert [r["id"] for r in by_case] == [open_item.pk]
    # a cursor pages through them
    page = client.get("/api/v1/finance-items/?page_size=2").json()
    assert len(page["results"]) == 2
    rest = client.get(page["next"]).json()
    assert [r["id"] for r in rest["results"]] == [open_item.pk]
    assert_problem(client.get("/api/v1/finance-items/?state=nope"), 400)


def test_finance_items_need_the_finance_read_scope():
    client, _ = keyed_client(Scope.READ_CASES, Scope.ACT_ON_CASES)

    assert_problem(client.get("/api/v1/finance-items/"), 403)


def test_a_finance_key_pays_a_refund_below_the_limit(
    finance_user, django_capture_on_commit_callbacks
):
    # given an open refund and a key acting as a Finance user
    client, _ = keyed_client(Scope.ACT_ON_FINANCE, staff_user=finance_user)
    item = _item()

    # when the caller pays it
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            f"/api/v1/finance-items/{item.pk}/pay/",
            {"payment_reference": "PAY-2026-0001"},
            format="json",
            HTTP_IDEMPOTENCY_KEY="pay-1",
        )

    # then it is paid by that user, with its audit event
    assert response.status_code == 200, response.content
    assert response.json()["state"] == "paid"
    item.refresh_from_db()
    assert item.state == FinanceItem.State.PAID
    assert item.paid_by == finance_user
    event = item.case.events.get(type=CaseEvent.Type.FINANCE)
    assert (event.actor, event.payload["reference"]) == (finance_user, "PAY-2026-0001")
    assert APIAuditEntry.objects.filter(object_reference=item.case.reference).exists()


def test_maker_checker_holds_through_the_api(finance_user, second_finance_user):
    # given a refund above the limit
    maker, _ = keyed_client(Scope.ACT_ON_FINANCE, staff_user=finance_user)
    item = _item(amount=Decimal("1000.01"))
    pay = f"/api/v1/finance-items/{item.pk}/pay/"
    confirm = f"/api/v1/finance-items/{item.pk}/confirm/"

    # when the first Finance user pays it
    recorded = maker.post(pay, {"payment_reference": "PAY-9"}, format="json")

    # then it is only recorded; paying again or confirming it oneself is refused
    assert recorded.json()["state"] == "recorded"
    assert recorded.json()["needs_second_user"] is True
    assert_problem(maker.post(pay, {"payment_reference": "PAY-9"}, format="json"), 409)
    assert_problem(maker.post(confirm), 403)
    item.refresh_from_db()
    assert item.state == FinanceItem.State.RECORDED

    # when a second Finance user confirms it
    checker, _ = keyed_client(Scope.ACT_ON_FINANCE, staff_user=second_finance_user)
    confirmed = checker.post(confirm)

    # then it is paid by the second, recorded by the first
    assert confirmed.status_code == 200, confirmed.content
    item.refresh_from_db()
    assert item.state == FinanceItem.State.PAID
    assert (item.recorded_by, item.paid_by) == (finance_user, second_finance_user)


@pytest.mark.parametrize("who", ["reviewer", "approver", "auditor", None])
def test_only_a_key_of_a_finance_user_pays(request, who):
    # given an open refund and a key of a staff user outside Finance (or none)
    staff_user = request.getfixturevalue(who) if who else None
    client, _ = keyed_client(Scope.ACT_ON_FINANCE, staff_user=staff_user)
    item = _item()

    # when
    response = client.post(
        f"/api/v1/finance-items/{item.pk}/pay/",
        {"payment_reference": "PAY-1"},
        format="json",
    )

    # then
    assert_problem(response, 403)
    item.refresh_from_db()
    assert item.state == FinanceItem.State.OPEN


def test_paying_needs_the_finance_act_scope(finance_user):
    client, _ = keyed_client(
        Scope.READ_FINANCE, Scope.ACT_ON_CASES, staff_user=finance_user
    )
    item = _item()

    response = client.post(
        f"/api/v1/finance-items/{item.pk}/pay/",
        {"payment_reference": "PAY-1"},
        format="json",
    )

    assert_problem(response, 403)
    item.refresh_from_db()
    assert item.state == FinanceItem.State.OPEN


def test_an_unknown_finance_item_is_a_404(finance_user):
    client, _ = keyed_client(Scope.ACT_ON_FINANCE, staff_user=finance_user)

    response = client.post(
        "/api/v1/finance-items/999999/pay/", {"payment_reference": "X"}, format="json"
    )

    assert_problem(response, 404)


# --- schema ------------------------------------------------------------------------


def test_the_schema_has_the_new_endpoints_and_scopes():
    schema = APIClient().get("/api/schema/?format=json").json()

    paths = schema["paths"]
    assert "/api/v1/cases/{reference}/returns/{return_id}/ship/" in paths
    assert "/api/v1/finance-items/" in paths
    assert "/api/v1/finance-items/{item_id}/pay/" in paths
    assert "/api/v1/finance-items/{item_id}/confirm/" in paths
    detail = schema["components"]["schemas"]["CaseDetail"]["properties"]
    assert {"channel", "statement", "progress", "device_returns"} <= set(detail)
    assert {"finance:read", "finance:act"} <= set(Scope.values)
