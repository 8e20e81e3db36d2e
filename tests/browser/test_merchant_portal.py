"""In Chromium: a merchant signs in on a phone; Service files a branch request in admin."""

from datetime import timedelta

import pytest
from django.utils import timezone

from cases.models import Case, CaseChannel, CaseState, DeviceReturn
from cases.portal_forms import MerchantCodeForm, MerchantSignInForm
from tests import factories
from tests.browser.conftest import code_from, save_screenshot
from tests.browser.test_journey import (
    LANGUAGES,
    Fields,
    admin_login,
    assert_fits,
    assert_page_basics,
    staff_user,
    write_documents,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("lang", LANGUAGES)
def test_merchant_signs_in_on_a_phone_and_sees_everything(lang, new_page, smtp_server):
    # given a merchant with two terminals and a request in review
    merchant = factories.MerchantFactory(contact_email=f"portal-{lang}@shop.example")
    first = factories.BindingFactory(merchant=merchant).terminal
    unbound = factories.BindingFactory(merchant=merchant, ended_at=timezone.now())
    second = unbound.terminal
    case = factories.CaseFactory(
        merchant=merchant, state=CaseState.IN_REVIEW, terminals=[first]
    )
    # and an earlier request that unbound a device still to be sent back
    done = factories.CaseFactory(
        merchant=merchant, state=CaseState.COMPLETED, terminals=[second]
    )
    DeviceReturn.objects.create(
        case=done, terminal=second, due_at=timezone.now() + timedelta(days=14)
    )
    page = new_page(lang=lang, phone=True)

    # when they ask for a code by e-mail on file
    page.goto("/merchant/")
    page.wait_for_url("**/merchant/login/")
    assert_page_basics(page, lang)
    assert_fits(page)
    fields = Fields(page, MerchantSignInForm, lang)
    fields["merchant_id"].fill(merchant.merchant_id)
    page.locator('input[name="channel"][value="email"]').check()
    save_screenshot(page, f"merchant-login-{lang}", full_page=False)
    page.locator("#merchant-sign-in-form [type=submit]").click()

    # then they enter the code of the real e-mail
    page.wait_for_url("**/merchant/login/code/")
    assert_page_basics(page, lang)
    (message,) = smtp_server.wait_for(merchant.contact_email)
    Fields(page, MerchantCodeForm, lang)["code"].fill(code_from(message))
    page.locator("#merchant-code-form [type=submit]").click()

    # and see their terminals and the request, with its tracking link
    page.wait_for_url("**/merchant/")
    assert_page_basics(page, lang)
    assert_fits(page)
    assert page.locator(f'[data-serial="{first.serial_number}"]').count() == 1
    assert page.locator("#terminals tr[data-serial]").count() == 2
    assert page.locator(f'[data-case="{case.reference}"]').is_visible()
    returns = page.locator(f'[data-case="{done.reference}"] [data-device-returns]')
    assert returns.locator(f'[data-return="{second.serial_number}"]').is_visible()
    save_screenshot(page, f"merchant-home-{lang}", full_page=False)

    # and the device's link leads to where the tracking number is entered
    returns.locator("[data-ship-link]").click()
    page.wait_for_url(f"**/{done.tracking_token}/**")
    assert page.locator(
        f'#device-returns [data-return="{second.serial_number}"] [data-form="ship"]'
    ).is_visible()
    page.go_back()
    page.wait_for_url("**/merchant/")

    # when they sign out
    page.locator("#merchant-logout").click()
    page.wait_for_url("**/merchant/login/")
    page.goto("/merchant/")

    # then the page asks to sign in again
    page.wait_for_url("**/merchant/login/")


@pytest.mark.parametrize("lang", LANGUAGES)
def test_service_records_an_offline_identity_check(lang, new_page, tmp_path):
    # given a branch request filed by Service, waiting for the merchant's code
    service = staff_user("service", "Service")
    case = factories.CaseFactory(state=CaseState.PENDING_VERIFICATION)
    Case.objects.filter(pk=case.pk).update(channel=CaseChannel.BRANCH, filed_by=service)
    documents = write_documents(tmp_path)
    page = new_page(lang=lang)
    admin_login(page, username="service", lang=lang, next_url="/admin/")

    # when Service opens the filing form from the admin home
    page.locator('#file-for-merchant a[href="/admin/cases/case/file/"]').click()
    page.wait_for_url("**/admin/cases/case/file/")
    assert page.locator("#staff-filing-form").is_visible()
    save_screenshot(page, f"admin-file-for-merchant-{lang}", max_height=1100)

    # and records the offline check of the branch request
    page.goto(f"/admin/cases/case/{case.pk}/identity/")
    save_screenshot(page, f"admin-identity-{lang}")
    page.locator("#id_check-note").fill("身份证原件已核验 / ID card seen")
    page.locator("#id_check-evidence").set_input_files(documents["id-front.png"])
    page.locator("#identity-check-form [type=submit]").click()
    page.wait_for_load_state()

    # then the case is submitted and the check is shown
    assert page.locator("[data-state]").get_attribute("data-state") == "submitted"
    assert page.locator('[data-identity-check="offline"]').is_visible()
