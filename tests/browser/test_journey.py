"""The whole journey in a real browser, in English and in Simplified Chinese.

A merchant checks a binding, files the request by the form's labels, reads the
code from the real SMTP server, verifies and tracks; a reviewer and an
approver take the case to approval in admin; the merchant sees it completed.
Any console error or page error (a CSP violation included) fails the test.
"""

import re

import pytest
from django.contrib.admin.forms import AdminAuthenticationForm
from django.utils import translation

from cases.forms import CaseFilingForm, VerifyForm
from cases.models import Case, CaseState, Document
from terminals.forms import BindingStatusForm
from tests import factories, filebuilders
from tests.browser.conftest import code_from, save_screenshot, text_body
from tests.fixtures import ensure_staff_groups

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LANGUAGES = ["en", "zh-hans"]
PASSWORD = "correct horse battery staple"


# ------------------------------------------------------------------------------
# Helpers: labels as the page renders them in a language
# ------------------------------------------------------------------------------
def form_labels(form_class, lang: str) -> dict[str, str]:
    """The form's field labels in ``lang``: what a merchant reads on the page."""
    with translation.override(lang):
        form = form_class()
        return {name: str(field.label) for name, field in form.fields.items()}


def label_pattern(label: str) -> re.Pattern:
    # The whole label, with an optional required-field asterisk or colon.
    return re.compile(rf"^\s*{re.escape(label)}\s*[*:：]?\s*$", re.IGNORECASE)


class Fields:
    """Find inputs by their label text in the page's language."""

    def __init__(self, page, form_class, lang: str):
        self.page = page
        self.labels = form_labels(form_class, lang)

    def __getitem__(self, name: str):
        return self.page.get_by_label(label_pattern(self.labels[name]))


def assert_page_basics(page, lang: str) -> None:
    """One h1, the right lang attribute, every visible control labelled."""
    assert page.locator("html").get_attribute("lang") == lang
    assert page.locator("h1").count() == 1
    unlabelled = page.evaluate(
        """() => Array.from(document.querySelectorAll('input, select, textarea'))
            .filter(el => !['hidden', 'submit', 'button', 'reset', 'image'].includes(el.type))
            .filter(el => el.offsetParent !== null)
            .filter(el => !(el.labels && el.labels.length)
                          && !el.getAttribute('aria-label')
                          && !el.getAttribute('aria-labelledby'))
            .map(el => el.name || el.id)"""
    )
    assert unlabelled == [], f"inputs without a label: {unlabelled}"
    dangling = page.evaluate(
        """() => Array.from(document.querySelectorAll('[aria-describedby]'))
            .flatMap(el => el.getAttribute('aria-describedby').split(/\\s+/)
              .filter(id => id && !document.getElementById(id))
              .map(id => `${el.name || el.id} -> ${id}`))"""
    )
    assert dangling == [], f"aria-describedby names missing elements: {dangling}"


# Every error message must sit in its field's container or be named by the
# field's aria-describedby, and that field must be marked invalid; returns the
# messages that are not.
UNLINKED_ERRORS = """(form) => {
  const problems = [];
  let checked = 0;
  const errors = Array.from(document.querySelectorAll(
    `${form} .invalid-feedback, ${form} .errorlist`));
  for (const error of errors) {
    if (error.offsetParent === null || !error.textContent.trim()) continue;
    checked += 1;
    const container = error.closest('.mb-3, .form-check, fieldset');
    const field = container && container.querySelector(
      'input:not([type=hidden]), select, textarea');
    const described = field && (field.getAttribute('aria-describedby') || '')
      .split(/\\s+/).includes(error.id);
    const invalid = field && (field.classList.contains('is-invalid')
      || field.getAttribute('aria-invalid') === 'true');
    if (!field || !invalid || !(described || container.contains(error))) {
      problems.push(error.textContent.trim());
    }
  }
  return {checked, problems};
}"""


def assert_fits(page) -> None:
    """Nothing overflows the viewport horizontally."""
    widths = page.evaluate(
        "() => [document.documentElement.scrollWidth, window.innerWidth]"
    )
    assert widths[0] <= widths[1], f"page is {widths[0]}px wide in {widths[1]}px"


def write_documents(tmp_path) -> dict[str, object]:
    files = {
        "licence.pdf": filebuilders.valid_pdf_bytes(),
        "id-front.png": filebuilders.png_bytes(320, 200),
        "id-back.png": filebuilders.png_bytes(320, 200),
        "device.pdf": filebuilders.valid_pdf_bytes(2),
    }
    paths = {}
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        paths[name] = path
    return paths


def staff_user(username: str, group: str):
    from django.contrib.auth.models import Group

    ensure_staff_groups()
    user = factories.UserFactory(username=username, is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    return user


def admin_login(page, *, username: str, lang: str, next_url: str) -> None:
    page.goto(f"/admin/login/?next={next_url}")
    labels = form_labels(AdminAuthenticationForm, lang)
    page.get_by_label(label_pattern(labels["username"])).fill(username)
    page.get_by_label(label_pattern(labels["password"])).fill(PASSWORD)
    page.locator("#login-form [type=submit]").click()
    page.wait_for_url(f"**{next_url}")


def confirm_transition(page, name: str, *, screenshot: str | None = None) -> None:
    page.locator(f'.case-actions a[data-transition="{name}"]').click()
    page.wait_for_url(f"**/transition/{name}/")
    assert page.locator(f'.case-effect[data-transition="{name}"]').is_visible()
    if screenshot:
        save_screenshot(page, screenshot)
    page.locator(".case-confirm__form [type=submit]").click()
    page.wait_for_url("**/change/")


# ------------------------------------------------------------------------------
# The journey
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("lang", LANGUAGES)
def test_merchant_files_staff_approve_merchant_sees_completed(
    lang, new_page, smtp_server, tmp_path
):
    # given a merchant with a bound terminal, a reviewer and an approver
    merchant = factories.MerchantFactory(contact_email=f"onfile-{lang}@shop.example")
    terminal = factories.BindingFactory(merchant=merchant).terminal
    staff_user("reviewer", "Reviewer")
    staff_user("approver", "Approver")
    documents = write_documents(tmp_path)
    page = new_page(lang=lang)

    # when the merchant opens the home page and checks the binding
    page.goto("/")
    assert_page_basics(page, lang)
    save_screenshot(page, f"home-{lang}")
    page.locator('main a[href="/terminals/status/"]').click()
    assert_page_basics(page, lang)
    status_fields = Fields(page, BindingStatusForm, lang)
    status_fields["merchant_id"].fill(merchant.merchant_id)
    status_fields["serial_number"].fill(terminal.serial_number)
    page.locator("#binding-status-form [type=submit]").click()

    # then the page says the terminal is bound
    bound = page.locator("[data-binding]")
    assert bound.get_attribute("data-binding") == "bound"
    save_screenshot(page, f"binding-status-{lang}")

    # when the merchant files the request by the form's labels
    bound.get_by_role("link").click()
    page.wait_for_url(re.compile(r".*/requests/new/(\?.*)?$"))
    assert_page_basics(page, lang)
    fields = Fields(page, CaseFilingForm, lang)
    fields["merchant_id"].fill(merchant.merchant_id)
    fields["uscc"].fill(merchant.uscc)
    fields["legal_rep_name"].fill(merchant.legal_rep_name)
    fields["applicant_name"].fill(merchant.legal_rep_name)
    fields["applicant_is_legal_rep"].check()
    fields["applicant_phone"].fill("13912345678")
    fields["applicant_email"].fill(f"applicant-{lang}@typed.example")
    fields["serial_numbers"].fill(terminal.serial_number)
    fields["reason"].select_option("business_change")
    fields["business_licence"].set_input_files(documents["licence.pdf"])
    fields["legal_rep_id"].set_input_files(
        [documents["id-front.png"], documents["id-back.png"]]
    )
    fields["device_evidence"].set_input_files(documents["device.pdf"])
    fields["declaration"].check()
    save_screenshot(page, f"request-form-{lang}")
    page.locator("#request-form [type=submit]").click()

    # then the verify page asks for the code e-mailed to the contact on file
    page.wait_for_url("**/verify/")
    assert_page_basics(page, lang)
    reference = page.locator("[data-reference]").first.get_attribute("data-reference")
    save_screenshot(page, f"verify-{lang}")
    (message,) = smtp_server.wait_for(merchant.contact_email)
    assert reference in message["Subject"]
    assert message.get_body(preferencelist=("html",)) is not None

    # when the merchant mistypes the code, then enters the one from the real e-mail
    code = code_from(message)
    verify_fields = Fields(page, VerifyForm, lang)
    verify_fields["code"].fill(f"{(int(code) + 1) % 10**6:06d}")
    page.locator("#verify-form [type=submit]").click()
    page.wait_for_load_state()
    errors = page.evaluate(UNLINKED_ERRORS, "#verify-form")
    assert errors == {"checked": 1, "problems": []}
    verify_fields["code"].fill(code)
    page.locator("#verify-form [type=submit]").click()

    # then the tracking page shows the request in the queue
    page.wait_for_url(re.compile(r".*/requests/[^/]+/$"))
    tracking_url = page.url
    assert page.locator("[data-status]").get_attribute("data-status") == "submitted"
    assert page.locator("[data-reference]").get_attribute("data-reference") == reference
    assert_page_basics(page, lang)
    case = Case.objects.get(reference=reference)
    assert case.state == CaseState.SUBMITTED
    assert case.language == lang
    assert case.documents.count() == 4

    # when a reviewer logs in, opens the case, reviews the documents and recommends
    staff = new_page(lang=lang)
    admin_login(staff, username="reviewer", lang=lang, next_url="/admin/cases/case/")
    staff.get_by_role("link", name=reference, exact=True).click()
    staff.wait_for_url(f"**/admin/cases/case/{case.pk}/change/")
    confirm_transition(staff, "start_review")
    pending = staff.locator('tr[data-review="pending"] button[value="accept"]')
    assert pending.count() == 4
    save_screenshot(staff, f"admin-case-{lang}", max_height=1300)
    for _ in range(4):
        pending.first.click()
        staff.wait_for_load_state()
    assert staff.locator('tr[data-review="accepted"]').count() == 4
    confirm_transition(staff, "recommend")

    # and an approver (another person) approves on the confirmation page
    approver = new_page(lang=lang)
    admin_login(
        approver,
        username="approver",
        lang=lang,
        next_url=f"/admin/cases/case/{case.pk}/change/",
    )
    confirm_transition(approver, "approve", screenshot=f"admin-confirm-{lang}")

    # then the execution ran and the merchant sees the request completed
    case.refresh_from_db()
    assert case.state == CaseState.COMPLETED
    assert case.recommended_by.username == "reviewer"
    assert case.approved_by.username == "approver"
    assert set(case.documents.values_list("review_status", flat=True)) >= {
        Document.ReviewStatus.ACCEPTED
    }
    page.goto(tracking_url)
    assert page.locator("[data-status]").get_attribute("data-status") == "completed"
    assert_page_basics(page, lang)
    save_screenshot(page, f"tracking-{lang}")
    completed = smtp_server.wait_for(f"applicant-{lang}@typed.example", count=2)
    assert any(reference in m["Subject"] for m in completed)
    assert all(text_body(m) for m in completed)
