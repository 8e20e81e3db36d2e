"""Personal numbers (ID, bank card, phone) never appear in full outside the
case's own detail: not in logs, admin lists, the CSV export or e-mails."""

import logging
from http import HTTPStatus

import pytest
from django.core import mail

from cases.models import Case, CaseState, Document
from tests import factories
from tests.cases.test_intake import code_from_mail, form_data

pytestmark = pytest.mark.django_db

APPLICANT_PHONE = "13912345678"


def secrets_of(merchant) -> dict[str, str]:
    return {
        "ID number": merchant.legal_rep_id_number,
        "bank card": merchant.settlement_card_number,
        "contact phone": merchant.contact_phone,
        "applicant phone": APPLICANT_PHONE,
    }


def leaks(text: str, merchant) -> list[str]:
    return [name for name, value in secrets_of(merchant).items() if value in text]


@pytest.fixture
def registry():
    merchant = factories.MerchantFactory(contact_phone="13700137000")
    terminals = [factories.BindingFactory(merchant=merchant).terminal for _ in range(2)]
    for terminal in terminals:
        factories.TransactionFactory(terminal=terminal, settled=True)
    return merchant, terminals


def file_and_complete(client, merchant, terminals, reviewer, approver) -> Case:
    """File a request, verify it, review it and approve it through HTTP."""
    response = client.post(
        "/requests/new/",
        form_data(merchant, terminals, applicant_phone=APPLICANT_PHONE),
        REMOTE_ADDR="203.0.113.7",
    )
    assert response.status_code == HTTPStatus.FOUND, response.content[:2000]
    verify_url = response["Location"]
    code = code_from_mail(mail.outbox[-1])
    assert client.post(verify_url, {"code": code}).status_code == HTTPStatus.FOUND
    case = Case.objects.get()

    client.force_login(reviewer)
    base = f"/admin/cases/case/{case.pk}"
    client.post(f"{base}/transition/start_review/", {"note": ""})
    for document in Document.objects.filter(case=case):
        client.post(
            f"/admin/cases/document/{document.pk}/review/", {"decision": "accept"}
        )
    client.post(f"{base}/transition/recommend/", {"note": ""})
    client.force_login(approver)
    client.post(f"{base}/transition/approve/", {"note": ""})
    case.refresh_from_db()
    return case


def test_a_whole_case_logs_no_personal_numbers(
    hooks_client, registry, reviewer, approver, caplog
):
    # given
    merchant, terminals = registry
    caplog.set_level(logging.DEBUG)

    # when
    case = file_and_complete(hooks_client, merchant, terminals, reviewer, approver)

    # then
    assert case.state == CaseState.COMPLETED, case.failure_reason
    log_text = "\n".join(
        f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records
    )
    assert caplog.records
    assert leaks(log_text, merchant) == []


def test_e_mails_carry_no_id_or_card_numbers(
    hooks_client, registry, reviewer, approver
):
    # given
    merchant, terminals = registry

    # when
    file_and_complete(hooks_client, merchant, terminals, reviewer, approver)

    # then
    assert len(mail.outbox) >= 3
    for message in mail.outbox:
        parts = [message.subject, message.body] + [
            content for content, _type in getattr(message, "alternatives", [])
        ]
        text = "\n".join(str(p) for p in parts)
        assert leaks(text, merchant) == [], message.subject


def test_admin_lists_and_the_csv_export_mask_personal_numbers(
    client, registry, auditor, approver
):
    # given
    merchant, terminals = registry
    case = factories.CaseFactory(
        merchant=merchant,
        terminals=terminals,
        applicant_phone=APPLICANT_PHONE,
        state=CaseState.SUBMITTED,
    )
    client.force_login(auditor)

    # when
    pages = {
        url: client.get(url)
        for url in (
            "/admin/cases/case/",
            "/admin/cases/case/?q=" + merchant.merchant_id,
            "/admin/cases/notification/",
            "/admin/cases/caseevent/",
            "/admin/terminals/merchant/",
            "/admin/terminals/binding/",
            "/admin/terminals/terminal/",
        )
    }
    export = client.post(
        "/admin/cases/case/",
        {"action": "export_csv", "_selected_action": [case.pk], "index": 0},
    )
    csv_text = b"".join(export.streaming_content).decode("utf-8-sig")

    # then
    for url, response in pages.items():
        assert response.status_code == HTTPStatus.OK, url
        assert leaks(response.content.decode(), merchant) == [], url
    assert export.status_code == HTTPStatus.OK
    assert merchant.merchant_id in csv_text
    assert leaks(csv_text, merchant) == []
    assert "139****5678" in csv_text


def test_the_case_page_masks_id_and_card(client, registry, auditor):
    # given
    merchant, terminals = registry
    case = factories.CaseFactory(merchant=merchant, terminals=terminals)
    client.force_login(auditor)

    # when
    html = client.get(f"/admin/cases/case/{case.pk}/change/").content.decode()

    # then
    assert merchant.legal_rep_id_number not in html
    assert merchant.settlement_card_number not in html
    assert merchant.settlement_card_number[-4:] in html


def test_the_merchant_tracking_page_shows_no_personal_numbers(client, registry):
    # given
    from cases.tokens import token_for_salt

    merchant, terminals = registry
    case = factories.CaseFactory(
        merchant=merchant, terminals=terminals, applicant_phone=APPLICANT_PHONE
    )

    # when
    html = client.get(f"/requests/{token_for_salt(case.token_salt)}/").content.decode()

    # then: anyone holding the link sees no full number
    assert leaks(html, merchant) == []
