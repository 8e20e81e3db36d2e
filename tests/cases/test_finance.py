"""Money after approval: the statement frozen at approval, finance's work items,
maker-checker payments in the admin, the merchant told, overdue refunds shown."""

import json
from datetime import timedelta
from decimal import Decimal
from http import HTTPStatus

import pytest
from django.contrib.auth.models import Group
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from cases import roles
from cases.models import CaseEvent, CaseState, CaseStatement, FinanceItem, Notification
from cases.services import finance, review
from tests import factories
from tests.fixtures import _staff

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _money_settings(settings):
    settings.CHARGEBACK_RESERVE_RATE = Decimal("0.10")
    settings.CHARGEBACK_RESERVE_DAYS = 180
    settings.FINANCE_DUAL_CONTROL_ABOVE = Decimal("1000.00")
    settings.FINANCE_REFUND_OVERDUE_DAYS = 14
    settings.DEPOSIT_REFUND_WAITS_FOR_DEVICE = True
    settings.NOTIFICATION_CHANNELS = ["email", "sms"]


def _finance_user(username: str):
    if not Group.objects.filter(name=roles.FINANCE).exists():
        pytest.fail("the Finance group is created by a migration")
    return _staff(username, roles.FINANCE)


@pytest.fixture
def finance_user(db):
    return _finance_user("finance1")


@pytest.fixture
def second_finance_user(db):
    return _finance_user("finance2")


def awaiting_case(reviewer, *, deposit="299.00", condition="device_returned"):
    """A case awaiting approval: one terminal with a deposit, a prorated fee, funds."""
    merchant = factories.MerchantFactory()
    terminal = factories.BindingFactory(merchant=merchant).terminal
    terminal.deposit = Decimal(deposit)
    terminal.deposit_refund_condition = condition
    terminal.service_fee_annual = Decimal("365.00")
    terminal.service_fee_paid_until = timezone.localdate() + timedelta(days=100)
    terminal.service_fee_prorated = True
    terminal.save()
    factories.TransactionFactory(terminal=terminal, amount=Decimal("1500.00"))
    return factories.CaseFactory(
        merchant=merchant,
        terminals=[terminal],
        state=CaseState.AWAITING_APPROVAL,
        recommended_by=reviewer,
        language="en",
    )


def _approve(client, approver, case, django_capture_on_commit_callbacks):
    client.force_login(approver)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:cases_case_transition", args=[case.pk, "approve"]),
            {"note": ""},
        )
    assert response.status_code == HTTPStatus.FOUND
    case.refresh_from_db()
    return case


def _no_float(value) -> bool:
    if isinstance(value, float):
        return False
    if isinstance(value, dict):
        return all(_no_float(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_no_float(v) for v in value)
    return True


# --- user level: approval, tracking page, e-mails, finance in the admin -------------


def test_approving_freezes_the_statement_and_completion_creates_finance_items(
    client, reviewer, approver, django_capture_on_commit_callbacks
):
    # given a case awaiting approval
    case = awaiting_case(reviewer)

    # when the approver approves it in the admin (execution runs after commit)
    case = _approve(client, approver, case, django_capture_on_commit_callbacks)

    # then the statement is frozen as version 1 with its audit event
    assert case.state == CaseState.COMPLETED
    frozen = CaseStatement.objects.get(case=case)
    assert frozen.version == 1
    assert _no_float(json.loads(json.dumps(frozen.data)))
    event = case.events.get(type=CaseEvent.Type.STATEMENT_FROZEN)
    assert event.payload["version"] == 1
    assert event.actor == approver
    # and finance has one item per refund or deduction line
    items = {item.kind: item for item in case.finance_items.all()}
    assert set(items) == {"deposit", "service_fee", "chargeback_reserve"}
    # the deposit refund waits for the device
    assert items["deposit"].state == FinanceItem.State.WAITING
    assert items["deposit"].amount == Decimal("299.00")
    # 365.00 × 100 / 365
    assert items["service_fee"].amount == Decimal("100.00")
    assert items["service_fee"].state == FinanceItem.State.OPEN
    # the reserve (10% of 1500.00) is paid out on its release date
    reserve = items["chargeback_reserve"]
    assert reserve.amount == Decimal("150.00")
    assert reserve.direction == "to_merchant"
    assert reserve.due_on == timezone.localdate() + timedelta(days=180)
    # the merchant's completion e-mail carries the frozen statement
    notice = Notification.objects.get(
        case=case,
        kind=Notification.Kind.COMPLETED,
        channel="email",
        recipients=[case.merchant.contact_email],
    )
    (completed,) = [
        m for m in mail.outbox if m.extra_headers["X-Notification-Id"] == str(notice.pk)
    ]
    html = completed.alternatives[0][0]
    assert 'data-amount="299.00"' in html
    assert "held back until" in completed.body
    assert "version 1" in completed.body


def test_the_completion_e_mail_in_chinese_carries_the_statement_in_chinese(
    client, reviewer, approver, django_capture_on_commit_callbacks
):
    # given a case filed in Chinese
    case = awaiting_case(reviewer)
    type(case).objects.filter(pk=case.pk).update(language="zh-hans")

    # when it is approved and completes
    case = _approve(client, approver, case, django_capture_on_commit_callbacks)

    # then the frozen rules and the e-mail's statement are in Chinese
    notice = Notification.objects.get(
        case=case,
        kind=Notification.Kind.COMPLETED,
        channel="email",
        recipients=[case.merchant.contact_email],
    )
    (message,) = [
        m for m in mail.outbox if m.extra_headers["X-Notification-Id"] == str(notice.pk)
    ]
    assert "最终结算单" in message.body
    assert "拒付保证金" in message.body
    assert "暂扣至" in message.body


def test_the_tracking_page_shows_the_frozen_version_not_the_live_registry(
    client, reviewer, approver, django_capture_on_commit_callbacks
):
    # given an approved case whose deposit is changed in the registry afterwards
    case = awaiting_case(reviewer, condition="none")
    case = _approve(client, approver, case, django_capture_on_commit_callbacks)
    terminal = case.case_terminals.get().terminal
    terminal.deposit = Decimal("1.00")
    terminal.save()
    client.logout()

    # when the merchant opens the tracking page (in Chinese)
    page = client.get(case.get_tracking_path(), HTTP_ACCEPT_LANGUAGE="zh-hans")

    # then the amounts are the approved ones, marked as frozen
    html = page.content.decode()
    assert 'data-statement-version="1"' in html
    assert 'data-amount="299.00"' in html
    assert 'data-amount="1.00"' not in html
    # and no float reached the template
    for line in page.context["statement"].lines:
        assert isinstance(line.amount, Decimal)


def test_sent_back_and_approved_again_gets_a_new_version(reviewer, approver):
    # given a case approved once, then (its execution not started) frozen again
    case = awaiting_case(reviewer)
    review.case_transition(case_id=case.pk, name="approve", actor=approver)

    # when a second approval freezes it again
    finance.case_statement_freeze(case=case, actor=approver)

    # then versions 1 and 2 exist, and a frozen row cannot be changed
    versions = list(case.statements.values_list("version", flat=True))
    assert sorted(versions) == [1, 2]
    frozen = case.statements.get(version=1)
    frozen.data = {}
    with pytest.raises(ValueError, match="never changed"):
        frozen.save()


def _item(case_kwargs=None, **kwargs):
    case = factories.CaseFactory(
        state=CaseState.COMPLETED, **{"language": "en", **(case_kwargs or {})}
    )
    statement = CaseStatement.objects.create(
        case=case, version=1, data={"lines": [], "to_merchant": "0", "by_merchant": "0"}
    )
    defaults = {
        "case": case,
        "statement": statement,
        "line": 0,
        "kind": "deposit",
        "direction": "to_merchant",
        "amount": Decimal("299.00"),
        "due_on": timezone.localdate(),
    }
    return FinanceItem.objects.create(**{**defaults, **kwargs})


def _pay_url(item, action="pay"):
    return reverse(f"admin:cases_financeitem_{action}", args=[item.pk])


def test_a_finance_user_marks_a_refund_paid_and_the_merchant_is_told(
    client, finance_user, django_capture_on_commit_callbacks
):
    # given an open refund below the dual-control limit
    item = _item()
    client.force_login(finance_user)
    page = client.get(reverse("admin:cases_financeitem_change", args=[item.pk]))
    assert 'id="pay-form"' in page.content.decode()

    # when the finance user posts the payment reference
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(_pay_url(item), {"reference": "PAY-2026-0001"})

    # then it is paid, audited, and the merchant gets an e-mail and an SMS
    assert response.status_code == HTTPStatus.FOUND
    item.refresh_from_db()
    assert item.state == FinanceItem.State.PAID
    assert item.payment_reference == "PAY-2026-0001"
    assert item.paid_by == finance_user
    event = item.case.events.get(type=CaseEvent.Type.FINANCE)
    assert event.payload["to"] == "paid"
    assert event.payload["reference"] == "PAY-2026-0001"
    channels = set(
        Notification.objects.filter(
            case=item.case, kind=Notification.Kind.MONEY_MOVED
        ).values_list("channel", flat=True)
    )
    assert channels == {"email", "sms"}
    (message,) = [m for m in mail.outbox if "refund" in m.subject.lower()]
    assert "299.00" in message.body
    assert "PAY-2026-0001" in message.body


def test_above_the_limit_one_finance_user_records_and_another_confirms(
    client, finance_user, second_finance_user
):
    # given an open refund above the limit
    item = _item(amount=Decimal("1000.01"))
    client.force_login(finance_user)

    # when the first finance user records it
    client.post(_pay_url(item), {"reference": "PAY-9"})
    item.refresh_from_db()

    # then it waits for a second user; the same user cannot confirm it
    assert item.state == FinanceItem.State.RECORDED
    refused = client.post(_pay_url(item, "confirm"))
    assert refused.status_code == HTTPStatus.FORBIDDEN
    item.refresh_from_db()
    assert item.state == FinanceItem.State.RECORDED

    # when a second finance user confirms
    client.force_login(second_finance_user)
    client.post(_pay_url(item, "confirm"))

    # then it is paid by the second user, recorded by the first
    item.refresh_from_db()
    assert item.state == FinanceItem.State.PAID
    assert (item.recorded_by, item.paid_by) == (finance_user, second_finance_user)
    assert [e.payload["to"] for e in item.case.events.order_by("pk")] == [
        "recorded",
        "paid",
    ]


@pytest.mark.parametrize("who", ["reviewer", "approver", "auditor"])
def test_only_finance_pays(client, request, who):
    # given an open refund and a staff user outside Finance
    item = _item()
    client.force_login(request.getfixturevalue(who))

    # when they post a payment
    response = client.post(_pay_url(item), {"reference": "X"})

    # then it is refused and nothing changes
    assert response.status_code == HTTPStatus.FORBIDDEN
    item.refresh_from_db()
    assert item.state == FinanceItem.State.OPEN


def test_a_refund_cannot_be_paid_before_its_due_date_or_without_reference(
    finance_user,
):
    # given the chargeback reserve, due in 180 days
    item = _item(
        kind="chargeback_reserve", due_on=timezone.localdate() + timedelta(days=180)
    )

    # when / then
    with pytest.raises(review.CaseActionError):
        finance.finance_item_pay(item_id=item.pk, actor=finance_user, reference="R")
    other = _item(line=1)
    with pytest.raises(review.CaseActionError):
        finance.finance_item_pay(item_id=other.pk, actor=finance_user, reference=" ")


def test_a_waived_item_keeps_its_reason(finance_user):
    # given
    item = _item(direction="by_merchant", kind="sim_fee", amount=Decimal("60.00"))

    # when
    finance.finance_item_close(
        item_id=item.pk, actor=finance_user, state="waived", reason="goodwill"
    )

    # then
    item.refresh_from_db()
    assert (item.state, item.reason) == ("waived", "goodwill")
    assert item.case.events.get(type=CaseEvent.Type.FINANCE).note == "goodwill"


def test_an_overdue_refund_shows_on_the_dashboard_and_in_the_filter(
    client, finance_user
):
    # given a refund due 15 days ago (limit 14) and one due today
    overdue = _item(due_on=timezone.localdate() - timedelta(days=15))
    _item(line=1)
    client.force_login(finance_user)

    # when
    index = client.get(reverse("admin:index")).content.decode()
    listing = client.get(reverse("admin:cases_financeitem_changelist") + "?overdue=yes")

    # then
    assert 'data-count="finance_overdue"><span class="case-tile__n">1</span>' in index
    assert list(listing.context["cl"].result_list) == [overdue]


def test_the_device_release_opens_the_waiting_deposit_refund(finance_user):
    # given a deposit refund waiting for its device
    case = factories.CaseFactory(state=CaseState.COMPLETED)
    terminal = case.case_terminals.get().terminal
    item = _item(
        case_kwargs=None,
        serial_number=terminal.serial_number,
        state=FinanceItem.State.WAITING,
    )

    # when the device helper reports the device received (twice: idempotent)
    finance.finance_items_release_for_terminal(terminal_id=terminal.pk)
    finance.finance_items_release_for_terminal(terminal_id=terminal.pk)

    # then the refund is open for finance, with one audit event
    item.refresh_from_db()
    assert item.state == FinanceItem.State.OPEN
    assert item.case.events.filter(type=CaseEvent.Type.FINANCE).count() == 1


def test_without_the_wait_setting_the_deposit_refund_is_open_at_once(
    settings, reviewer, approver
):
    # given
    settings.DEPOSIT_REFUND_WAITS_FOR_DEVICE = False
    case = awaiting_case(reviewer)
    finance.case_statement_freeze(case=case, actor=approver)

    # when
    items = finance.finance_items_create(case=case)
    again = finance.finance_items_create(case=case)

    # then
    deposit = next(i for i in items if i.kind == "deposit")
    assert deposit.state == FinanceItem.State.OPEN
    assert again == []
