"""Public pages on a phone, accessibility, the language switch, CSP in force."""

import pytest

from cases.forms import RespondForm
from cases.models import CaseState
from cases.tokens import token_for_salt
from tests import factories, filebuilders
from tests.browser.conftest import PHONE, PageErrors, save_screenshot
from tests.browser.test_journey import (
    LANGUAGES,
    UNLINKED_ERRORS,
    Fields,
    assert_fits,
    assert_page_basics,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

INVALID_FIELDS = """() => Array.from(document.querySelectorAll(
  '#request-form .is-invalid, #request-form [aria-invalid=true]'))
  .map(el => el.name)"""


def assert_submit_reachable(page) -> None:
    submit = page.locator("#request-form [type=submit]")
    submit.scroll_into_view_if_needed()
    assert submit.is_visible()
    assert submit.is_enabled()
    box = submit.bounding_box()
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= PHONE["width"]
    assert box["height"] >= 40, "the submit button is too small to tap"
    # Nothing covers the button where a finger would tap it.
    hit = page.evaluate(
        """([x, y]) => {
             const el = document.elementFromPoint(x, y);
             return !!el && !!el.closest('#request-form [type=submit]');
           }""",
        [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2],
    )
    assert hit, "the submit button is covered"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_request_form_on_a_phone(lang, new_page):
    # given a merchant on a 390×844 phone
    page = new_page(lang=lang, phone=True)

    # when they open the public pages
    for url in ("/", "/terminals/status/", "/requests/track/"):
        page.goto(url)
        # then each fits the screen
        assert_page_basics(page, lang)
        assert_fits(page)

    # when they open the request form
    page.goto("/requests/new/")

    # then it fits, every control is labelled and the submit button is reachable
    assert_page_basics(page, lang)
    assert_fits(page)
    save_screenshot(page, f"request-form-phone-{lang}", full_page=False)
    assert_submit_reachable(page)

    # when they submit it empty
    page.locator("#request-form [type=submit]").click()
    page.wait_for_load_state()

    # then the errors are announced and each sits next to its field
    summary = page.locator("#form-errors")
    assert summary.get_attribute("role") == "alert"
    invalid = page.evaluate(INVALID_FIELDS)
    # (the USCC may be empty: a micro-merchant has none)
    assert {"merchant_id", "serial_numbers", "declaration"} <= set(invalid)
    errors = page.evaluate(UNLINKED_ERRORS, "#request-form")
    assert errors["problems"] == []
    assert errors["checked"] >= len(set(invalid))
    assert_page_basics(page, lang)
    assert_fits(page)
    assert_submit_reachable(page)


def test_language_switch_is_remembered(new_page):
    # given a browser that asks for English
    page = new_page(lang="en")
    page.goto("/")
    assert page.locator("html").get_attribute("lang") == "en"

    # when the merchant picks 简体中文 in the language switch
    page.get_by_label("Language").select_option("zh-hans")
    page.wait_for_function("document.documentElement.lang === 'zh-hans'")

    # then the page and the next ones are in Chinese despite Accept-Language
    page.goto("/terminals/status/")
    assert page.locator("html").get_attribute("lang") == "zh-hans"
    assert page.locator("#language-select").input_value() == "zh-hans"

    # when they switch back to English
    page.locator("#language-select").select_option("en")
    page.wait_for_function("document.documentElement.lang === 'en'")

    # then they stay on the same page, in English
    assert page.url.endswith("/terminals/status/")


def test_csp_is_in_force_and_a_violation_fails_the_test(chromium, live_server):
    # given a page of the running app, watched like every browser test's pages
    context = chromium.new_context(base_url=live_server.url)
    page = context.new_page()
    watched = PageErrors()
    watched.watch(page)
    response = page.goto("/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"

    # when something on it runs an inline script
    page.evaluate(
        """() => {
             const script = document.createElement('script');
             script.textContent = 'window.inlineRan = true';
             document.body.appendChild(script);
           }"""
    )
    page.wait_for_timeout(200)

    # then the browser refused it and the watcher recorded a console error
    assert page.evaluate("window.inlineRan") is None
    assert any("Content Security Policy" in e for e in watched.errors), watched.errors
    context.close()


@pytest.mark.parametrize("lang", LANGUAGES)
def test_merchant_answers_the_reviewer_then_withdraws_on_a_phone(
    lang, new_page, smtp_server, tmp_path
):
    # given a case waiting for the merchant's answer
    case = factories.CaseFactory(state=CaseState.INFO_REQUESTED, language=lang)
    token = token_for_salt(case.token_salt)
    evidence = tmp_path / "receipt.png"
    evidence.write_bytes(filebuilders.png_bytes(200, 120))
    page = new_page(lang=lang, phone=True)

    # when the merchant answers on the tracking page with a document
    page.goto(f"/requests/{token}/")
    assert page.locator("[data-status]").get_attribute("data-status") == (
        "info_requested"
    )
    assert_page_basics(page, lang)
    assert_fits(page)
    fields = Fields(page, RespondForm, lang)
    fields["message"].fill("The purchase receipt is attached.")
    fields["documents"].set_input_files(evidence)
    page.locator("#respond-form [type=submit]").click()

    # then the request is back in the queue with the document
    page.wait_for_function(
        "document.querySelector('[data-status]').dataset.status === 'submitted'"
    )
    assert case.documents.filter(original_name="receipt.png").exists()

    # when they withdraw it and accept the browser's confirmation
    page.locator("#withdraw-link").click()
    page.wait_for_url("**/withdraw/")
    assert_page_basics(page, lang)
    assert_fits(page)
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("main form [type=submit]").click()

    # then the request is withdrawn
    page.wait_for_function(
        "document.querySelector('[data-status]').dataset.status === 'withdrawn'"
    )
    case.refresh_from_db()
    assert case.state == CaseState.WITHDRAWN
