"""Devices coming back, in a browser: the merchant on a phone, Operations in the admin."""

from datetime import timedelta

import pytest
from django.utils import timezone

from cases import roles
from cases.models import CaseState, DeviceReturn, DeviceReturnState
from tests import factories
from tests.browser.conftest import save_screenshot
from tests.browser.test_journey import (
    LANGUAGES,
    admin_login,
    assert_fits,
    assert_page_basics,
    staff_user,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def case_with_a_device_to_return(*, overdue: bool = False):
    merchant = factories.MerchantFactory()
    terminal = factories.BindingFactory(merchant=merchant).terminal
    case = factories.CaseFactory(
        merchant=merchant,
        terminals=[terminal],
        state=CaseState.COMPLETED,
        language="zh-hans",
    )
    days = -3 if overdue else 10
    device_return = DeviceReturn.objects.create(
        case=case, terminal=terminal, due_at=timezone.now() + timedelta(days=days)
    )
    return case, device_return


@pytest.mark.parametrize("lang", LANGUAGES)
def test_merchant_enters_the_tracking_number_on_a_phone(lang, new_page):
    # given a merchant with a device to send back, on a phone
    case, device_return = case_with_a_device_to_return()
    page = new_page(lang=lang, phone=True)
    page.goto(case.get_tracking_path())
    returns = page.locator("#device-returns")
    assert returns.is_visible()
    assert_page_basics(page, lang)
    assert_fits(page)
    save_screenshot(page, f"device-return-{lang}", max_height=1800)

    # when they enter the courier and the tracking number
    form = page.locator(f'[data-return="{device_return.terminal.serial_number}"]')
    form.locator("[name=courier]").fill("SF Express")
    form.locator("[name=tracking_number]").fill("SF1234567890")
    form.locator('[data-form="ship"] [type=submit]').click()
    page.wait_for_load_state()

    # then the page says the device is on its way
    assert page.locator('[data-return-state="shipped"]').is_visible()
    assert_fits(page)
    device_return.refresh_from_db()
    assert device_return.state == DeviceReturnState.SHIPPED


def test_operations_see_the_overdue_queue(new_page):
    # given an overdue device and one on time
    case_with_a_device_to_return(overdue=True)
    case_with_a_device_to_return()
    staff_user("ops-browser", roles.OPERATIONS)
    page = new_page(lang="en")

    # when Operations open the returns queue, overdue only
    url = "/admin/cases/devicereturn/?overdue=yes"
    admin_login(page, username="ops-browser", lang="en", next_url=url)

    # then one row, with the actions to record receipt and inspection
    assert page.locator("#result_list tbody tr").count() == 1
    options = page.locator("select[name=action] option").all_text_contents()
    assert any("receipt" in o for o in options)
    save_screenshot(page, "admin-device-returns")
