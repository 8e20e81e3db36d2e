"""Finance in a real browser: the dashboard's overdue refund, paying it with
its reference, and the merchant's tracking page showing the frozen statement."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from cases import roles
from cases.models import CaseState, FinanceItem
from cases.services import finance
from cases.tokens import token_for_salt
from tests import factories
from tests.browser.conftest import save_screenshot
from tests.browser.test_journey import LANGUAGES, admin_login, staff_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def completed_case_with_items(lang: str):
    merchant = factories.MerchantFactory()
    terminal = factories.BindingFactory(merchant=merchant).terminal
    terminal.deposit = Decimal("299.00")
    terminal.deposit_refund_condition = "device_returned"
    terminal.service_fee_annual = Decimal("365.00")
    terminal.service_fee_paid_until = timezone.localdate() + timedelta(days=120)
    terminal.service_fee_prorated = True
    terminal.save()
    factories.TransactionFactory(terminal=terminal, amount=Decimal("800.00"))
    case = factories.CaseFactory(
        merchant=merchant,
        terminals=[terminal],
        state=CaseState.COMPLETED,
        language=lang,
    )
    approver = staff_user(f"approver-{lang}", roles.APPROVER)
    finance.case_statement_freeze(case=case, actor=approver)
    items = finance.finance_items_create(case=case)
    refund = next(i for i in items if i.kind == "service_fee")
    FinanceItem.objects.filter(pk=refund.pk).update(
        due_on=timezone.localdate() - timedelta(days=20)
    )
    return case, refund


@pytest.mark.parametrize("lang", LANGUAGES)
def test_finance_pays_the_overdue_refund_the_merchant_sees_the_statement(
    lang, new_page
):
    # given a completed case with an overdue refund and a Finance user
    case, refund = completed_case_with_items(lang)
    staff_user(f"finance-{lang}", roles.FINANCE)
    page = new_page(lang=lang)

    # when the finance user signs in, the dashboard shows the overdue refund
    admin_login(page, username=f"finance-{lang}", lang=lang, next_url="/admin/")
    tile = page.locator('[data-count="finance_overdue"] .case-tile__n')
    assert tile.inner_text() == "1"
    save_screenshot(page, f"admin-finance-dashboard-{lang}", max_height=700)

    # and they open it from the tile and mark it paid with the reference
    page.locator('[data-count="finance_overdue"]').click()
    page.locator(f'a[href*="/financeitem/{refund.pk}/change/"]').click()
    save_screenshot(page, f"admin-finance-item-{lang}", max_height=900)
    page.locator("#pay-form input[name=reference]").fill("PAY-2026-000777")
    page.locator("#pay-form [type=submit]").click()
    page.wait_for_url(f"**/financeitem/{refund.pk}/change/")

    # then it is paid
    refund.refresh_from_db()
    assert refund.state == FinanceItem.State.PAID
    assert refund.payment_reference == "PAY-2026-000777"

    # and the merchant's tracking page shows the frozen statement
    merchant_page = new_page(lang=lang)
    merchant_page.goto(f"/requests/{token_for_salt(case.token_salt)}/")
    statement = merchant_page.locator("#statement")
    assert statement.locator("[data-statement-version='1']").count() == 1
    assert statement.locator('[data-line="chargeback_reserve"]').count() == 1
    statement.scroll_into_view_if_needed()
    save_screenshot(merchant_page, f"tracking-statement-{lang}")
