"""A chain stopped half-way, seen in a real browser: Operations abandons it.

The staff case page shows the progress bar, the counts and the refused
terminals; the abandon confirmation lists the steps done and each terminal's
fate; the merchant's tracking page then says the request was stopped and
which terminals were unbound.
"""

import pytest

from cases.models import CaseState, CaseTerminal, ExecutionStep
from tests import factories
from tests.browser.conftest import save_screenshot
from tests.browser.test_journey import (
    LANGUAGES,
    admin_login,
    assert_page_basics,
    staff_user,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def failed_chain(*, terminals: int = 300, refused: int = 3):
    merchant = factories.MerchantFactory()
    bound = [
        factories.BindingFactory(merchant=merchant).terminal for _ in range(terminals)
    ]
    case = factories.CaseFactory(
        merchant=merchant,
        terminals=bound,
        state=CaseState.FAILED,
        failure_step="unbind",
        failure_reason="3 terminals were refused",
    )
    links = list(case.case_terminals.order_by("terminal__serial_number"))
    for index, link in enumerate(links):
        if index % 100 == 7 and refused:
            link.execution_status = CaseTerminal.ExecutionStatus.FAILED
            link.execution_error = "frozen by the core"
            refused -= 1
        else:
            link.execution_status = CaseTerminal.ExecutionStatus.DONE
    CaseTerminal.objects.bulk_update(links, ["execution_status", "execution_error"])
    for position, step in enumerate(ExecutionStep.Step.values[:4], start=1):
        ExecutionStep.objects.create(
            case=case,
            step=step,
            position=position,
            status="failed" if step == "unbind" else "done",
        )
    return case


@pytest.mark.parametrize("lang", LANGUAGES)
def test_operations_sees_the_progress_and_abandons_the_chain(lang, new_page):
    # given
    case = failed_chain()
    staff_user("operations", "Operations")
    page = new_page(lang=lang)
    change = f"/admin/cases/case/{case.pk}/change/"

    # when Operations opens the case
    admin_login(page, username="operations", lang=lang, next_url=change)

    # then the progress and the three refused terminals show
    progress = page.locator("#progress")
    assert progress.get_attribute("data-progress-done") == "297"
    assert page.locator("[data-terminal-failed]").count() == 3
    save_screenshot(page, f"admin-chain-progress-{lang}", max_height=900)

    # when Operations asks to abandon it
    page.locator('.case-actions a[data-transition="abandon"]').click()
    page.wait_for_url("**/transition/abandon/")

    # then the confirmation lists what stays as it is
    assert page.locator("[data-terminals-kept]").inner_text().count("SN") == 3
    save_screenshot(page, f"admin-abandon-confirm-{lang}", max_height=1100)

    # when confirmed with a note
    page.locator("textarea[name=note]").fill("The core keeps refusing these three.")
    page.locator(".case-confirm__form [type=submit]").click()
    page.wait_for_url(f"**{change}")
    case.refresh_from_db()
    assert case.state == CaseState.REJECTED

    # then the merchant's tracking page says it was stopped, with the progress
    merchant = new_page(lang=lang)
    merchant.goto(case.get_tracking_path())
    assert_page_basics(merchant, lang)
    assert merchant.locator("[data-status]").get_attribute("data-status") == "rejected"
    assert merchant.locator("#progress").get_attribute("data-progress-done") == "297"
    save_screenshot(merchant, f"tracking-chain-stopped-{lang}", max_height=1100)
