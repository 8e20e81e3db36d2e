"""Phone-in, branch and agent requests: staff file for a merchant in the admin."""

import re
from http import HTTPStatus

import pytest
from django.core import mail
from django.core.exceptions import PermissionDenied
from django.urls import reverse
from django.utils import translation

from cases.models import (
    AgentMerchant,
    Case,
    CaseChannel,
    CaseEvent,
    CaseState,
    Document,
)
from cases.services import review
from cases.services.common import CaseActionError
from tests import factories
from tests.cases.test_intake import form_data, pdf

FILE_URL = "/admin/cases/case/file/"


@pytest.fixture(autouse=True)
def _english_after(settings):
    """A request in Chinese leaves Chinese active in this thread; reset it after."""
    yield
    translation.activate(settings.LANGUAGE_CODE)


@pytest.fixture
def registry(db):
    merchant = factories.MerchantFactory(
        legal_rep_name="张伟", contact_email="contact@onfile.example.com"
    )
    terminals = [factories.BindingFactory(merchant=merchant).terminal]
    return merchant, terminals


def identity_url(case: Case) -> str:
    return reverse("admin:cases_case_identity", args=[case.pk])


def test_service_files_by_phone_and_enters_the_code_the_merchant_reads_out(
    hooks_client, service, registry
):
    # given
    merchant, terminals = registry
    hooks_client.force_login(service)
    assert (
        "File a request for a merchant" in hooks_client.get("/admin/").content.decode()
    )

    # when
    response = hooks_client.post(
        FILE_URL, form_data(merchant, terminals, channel="phone")
    )

    # then: filed, waiting for the code sent to the contact on file
    case = Case.objects.get()
    assert response.status_code == HTTPStatus.FOUND
    assert response["Location"] == identity_url(case)
    assert case.state == CaseState.PENDING_VERIFICATION
    assert case.channel == CaseChannel.PHONE
    assert case.filed_by == service
    assert mail.outbox[-1].to == ["contact@onfile.example.com"]
    assert "Our staff filed this request for you" in mail.outbox[-1].body
    filed = case.events.get(type=CaseEvent.Type.FILED)
    assert filed.actor == service
    assert filed.payload["channel"] == "phone"
    assert case.documents.count() == 4

    # when: the merchant reads the code out on the phone
    code = re.search(r"(?<![\d-])(\d{6})(?!\d)", mail.outbox[-1].body).group(1)
    wrong = hooks_client.post(identity_url(case), {"code-code": "000000"})
    right = hooks_client.post(identity_url(case), {"code-code": code})

    # then
    assert "This code is not right" in wrong.content.decode() or code == "000000"
    assert right.status_code == HTTPStatus.FOUND
    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTED


def test_service_filing_applies_the_public_forms_rules(hooks_client, service, registry):
    # given
    merchant, terminals = registry
    hooks_client.force_login(service)

    # when: the licence is missing and the legal representative does not match
    missing = hooks_client.post(
        FILE_URL, form_data(merchant, terminals, channel="phone", business_licence=None)
    )
    wrong_rep = hooks_client.post(
        FILE_URL, form_data(merchant, terminals, channel="phone", legal_rep_name="李四")
    )

    # then
    assert missing.status_code == HTTPStatus.OK
    assert "This document is required" in missing.content.decode()
    assert "do not match our records" in wrong_rep.content.decode()
    assert not Case.objects.exists()


def test_service_records_an_offline_identity_check_shown_to_the_approver(
    hooks_client, service, approver, registry
):
    # given
    merchant, terminals = registry
    hooks_client.force_login(service)
    hooks_client.post(FILE_URL, form_data(merchant, terminals, channel="branch"))
    case = Case.objects.get()

    # when: no note is refused, then with note and evidence
    refused = hooks_client.post(
        identity_url(case), {"check-evidence": [pdf("id-card.pdf")]}
    )
    response = hooks_client.post(
        identity_url(case),
        {
            "check-note": "Original ID card seen at the branch, photo matches.",
            "check-evidence": [pdf("id-card.pdf")],
        },
    )

    # then
    assert refused.status_code == HTTPStatus.OK
    assert response.status_code == HTTPStatus.FOUND
    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTED
    assert case.channel == CaseChannel.BRANCH
    check = case.events.get(type=CaseEvent.Type.IDENTITY_CHECKED)
    assert check.actor == service
    assert check.note.startswith("Original ID card")
    evidence = case.documents.get(kind=Document.Kind.IDENTITY_CHECK)
    assert check.payload["documents"] == [evidence.pk]
    assert case.events.filter(to_state=CaseState.SUBMITTED).exists()

    # when: the approver opens the case page and the approval confirmation
    hooks_client.force_login(approver)
    page = hooks_client.get(reverse("admin:cases_case_change", args=[case.pk]))
    Case.objects.filter(pk=case.pk).update(state=CaseState.AWAITING_APPROVAL)
    confirm = hooks_client.get(
        reverse("admin:cases_case_transition", args=[case.pk, "approve"])
    )

    # then
    for answer in (page, confirm):
        html = answer.content.decode()
        assert 'data-identity-check="offline"' in html
        assert "Original ID card seen at the branch" in html
        assert f'data-evidence="{evidence.pk}"' in html


def test_a_web_case_has_no_staff_identity_step(hooks_client, service):
    # given
    case = factories.CaseFactory(state=CaseState.PENDING_VERIFICATION)

    # when
    hooks_client.force_login(service)
    response = hooks_client.get(identity_url(case))

    # then
    assert response.status_code == HTTPStatus.NOT_FOUND


def test_reviewer_cannot_file_for_a_merchant(hooks_client, reviewer, registry):
    # given
    merchant, terminals = registry
    hooks_client.force_login(reviewer)

    # when
    response = hooks_client.post(FILE_URL, form_data(merchant, terminals))

    # then
    assert response.status_code == HTTPStatus.FORBIDDEN
    assert not Case.objects.exists()


def test_agent_files_only_for_its_merchants(hooks_client, pure_agent, registry):
    # given
    merchant, terminals = registry
    other = factories.MerchantFactory(legal_rep_name="张伟")
    other_terminals = [factories.BindingFactory(merchant=other).terminal]
    AgentMerchant.objects.create(agent=pure_agent, merchant=merchant)
    hooks_client.force_login(pure_agent)

    # when
    refused = hooks_client.post(FILE_URL, form_data(other, other_terminals))
    accepted = hooks_client.post(FILE_URL, form_data(merchant, terminals))

    # then
    assert refused.status_code == HTTPStatus.OK
    assert "only for the merchants you are agent for" in refused.content.decode()
    case = Case.objects.get()
    assert case.merchant == merchant
    assert accepted["Location"] == identity_url(case)
    assert case.channel == CaseChannel.AGENT
    assert case.filed_by == pure_agent
    # and the agent sees no case list, nor another merchant's identity page
    assert hooks_client.get("/admin/cases/case/").status_code == HTTPStatus.FORBIDDEN
    foreign = factories.CaseFactory(
        merchant=other, state=CaseState.PENDING_VERIFICATION
    )
    Case.objects.filter(pk=foreign.pk).update(channel=CaseChannel.PHONE)
    assert hooks_client.get(identity_url(foreign)).status_code == HTTPStatus.NOT_FOUND


def test_agent_page_in_chinese(hooks_client, pure_agent):
    # given
    hooks_client.force_login(pure_agent)

    # when
    page = hooks_client.get(FILE_URL, HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()

    # then
    assert "代为提交申请" in page


def test_agent_in_reviewing_groups_still_cannot_assign_or_review_documents(
    agent, approver
):
    """The outsourcing rule reaches past the transitions: assign, documents, fees."""
    # given: an agent that was (wrongly) also made Reviewer, Approver, Operations
    case = factories.CaseFactory(state=CaseState.IN_REVIEW, assigned_to=agent)
    document = factories.DocumentFactory(case=case)

    # when / then
    with pytest.raises(PermissionDenied):
        review.case_assign(case_id=case.pk, actor=agent, assignee=agent)
    with pytest.raises(PermissionDenied):
        review.document_review(
            document_id=document.pk, actor=agent, decision="accept", note=""
        )
    with pytest.raises(CaseActionError):
        review.case_assign(case_id=case.pk, actor=approver, assignee=agent)
    document.refresh_from_db()
    assert document.review_status == Document.ReviewStatus.PENDING
