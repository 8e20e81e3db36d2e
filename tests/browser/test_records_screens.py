"""Issue 14 screens in a real browser: the case list at 1280 pixels, document
previews beside the checklist, legal holds and the regulator's report."""

import pytest
from django.core.files.base import ContentFile

from cases import roles
from cases.services import previews, retention
from tests import factories, filebuilders
from tests.browser.conftest import save_screenshot
from tests.browser.test_journey import admin_login, staff_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREEN = {"width": 1280, "height": 800}


def long_cases(count: int) -> list:
    cases = []
    for n in range(count):
        merchant = factories.MerchantFactory(
            name=f"北京朝阳区示例连锁超市商贸有限责任公司第{n}分店"
        )
        cases.append(
            factories.CaseFactory(
                merchant=merchant,
                state="in_review" if n % 2 else "submitted",
                applicant_name="欧阳娜娜",
            )
        )
    return cases


@pytest.mark.parametrize("lang", ["en", "zh-hans"])
def test_the_case_list_fits_1280_pixels_with_the_filters_open(lang, new_page):
    # given
    staff_user("reviewer", roles.REVIEWER)
    long_cases(12)
    page = new_page(lang=lang)
    page.set_viewport_size(SCREEN)

    # when
    admin_login(page, username="reviewer", lang=lang, next_url="/admin/cases/case/")

    # then
    assert page.locator("#changelist-filter").is_visible()
    widths = page.evaluate(
        """() => {
            const results = document.querySelector('#changelist .results');
            return [document.documentElement.scrollWidth, window.innerWidth,
                    results.scrollWidth, results.clientWidth];
        }"""
    )
    save_screenshot(page, f"admin-case-list-1280-{lang}", full_page=False)
    assert widths[0] <= widths[1], widths  # no page scroll
    assert widths[2] <= widths[3], widths  # and no scroll inside the table


def test_a_reviewer_reads_a_pdf_beside_the_checklist(new_page):
    # given: a case with a three-page PDF, rendered on the server
    staff_user("reviewer", roles.REVIEWER)
    case = long_cases(1)[0]
    data = filebuilders.drawn_pdf_bytes(pages=3)
    document = factories.DocumentFactory(case=case, size=len(data))
    document.file.save("licence.pdf", ContentFile(data), save=True)
    previews.document_preview_render(document_id=document.pk)
    broken = factories.DocumentFactory(
        case=case, kind="contract", original_name="x.pdf"
    )
    previews.document_preview_render(document_id=broken.pk)
    page = new_page()
    page.set_viewport_size(SCREEN)
    url = f"/admin/cases/case/{case.pk}/change/"

    # when
    admin_login(page, username="reviewer", lang="en", next_url=url)
    page.locator("#documents").evaluate("el => el.scrollIntoView()")

    # then: the page images were drawn, the broken file has its placeholder
    pages = page.locator(f"#document-{document.pk} img.case-page")
    assert pages.count() == 3
    assert pages.first.evaluate("img => img.complete && img.naturalWidth > 0")
    assert page.locator(f'#document-{broken.pk} [data-preview="failed"]').is_visible()
    save_screenshot(page, "admin-document-previews", full_page=False)


def test_operations_see_holds_and_the_regulator_report_form(new_page):
    # given
    ops = staff_user("ops", roles.OPERATIONS)
    case = long_cases(1)[0]
    retention.legal_hold_place(
        actor=ops, reason="法院调取证据（2026）京0105民初123号", case_id=case.pk
    )
    page = new_page(lang="zh-hans")
    page.set_viewport_size(SCREEN)

    # when
    admin_login(
        page, username="ops", lang="zh-hans", next_url="/admin/cases/legalhold/"
    )
    save_screenshot(page, "admin-legal-holds-zh-hans", full_page=False)
    page.goto("/admin/cases/legalhold/binding-report/")

    # then
    assert page.locator("#binding-report-form").is_visible()
    save_screenshot(page, "admin-binding-report-zh-hans", full_page=False)
