"""Kinds of merchant on /requests/new/: a micro-merchant (小微商户) files without a
USCC and without a business licence; the registry's kind decides, never the form."""

from http import HTTPStatus

import pytest
from django.core import mail
from django.urls import reverse

from cases.models import Case, Document, required_document_kinds
from terminals.models import Merchant
from tests import factories
from tests.cases.test_intake import (
    assert_nothing_stored,
    form_data,
    form_errors,
    stored_files,
)

pytestmark = pytest.mark.django_db


def registry_of(kind: str, *, no_uscc: bool = False):
    extra = {"uscc": None} if no_uscc else {}
    merchant = factories.MerchantFactory(
        kind=kind, contact_email="contact@onfile.example.com", **extra
    )
    terminal = factories.BindingFactory(merchant=merchant).terminal
    return merchant, [terminal]


def test_a_micro_merchant_files_without_uscc_or_business_licence(
    hooks_client, media_root
):
    # given a micro-merchant with no USCC in the registry
    merchant, terminals = registry_of(Merchant.Kind.MICRO, no_uscc=True)

    # when it files with the USCC empty and no licence
    response = hooks_client.post(
        reverse("cases:new"),
        form_data(merchant, terminals, uscc="", business_licence=None),
    )

    # then
    assert response.status_code == HTTPStatus.FOUND, form_errors(response)
    case = Case.objects.get()
    assert case.uscc == ""
    assert Document.Kind.BUSINESS_LICENCE not in case.required_document_kinds()
    assert not case.documents.filter(kind=Document.Kind.BUSINESS_LICENCE).exists()
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["contact@onfile.example.com"]


def test_a_micro_merchant_that_has_a_uscc_may_still_leave_it_empty(hooks_client):
    # given a micro-merchant whose USCC is on file
    merchant, terminals = registry_of(Merchant.Kind.MICRO)
    assert merchant.uscc

    # when
    response = hooks_client.post(
        reverse("cases:new"),
        form_data(merchant, terminals, uscc="", business_licence=None),
    )

    # then
    assert response.status_code == HTTPStatus.FOUND, form_errors(response)


@pytest.mark.parametrize("kind", [Merchant.Kind.ENTERPRISE, Merchant.Kind.INDIVIDUAL])
def test_a_licensed_merchant_cannot_claim_to_be_micro(hooks_client, media_root, kind):
    # given an enterprise (or individual business) in the registry
    merchant, terminals = registry_of(kind)

    # when the form leaves the USCC and the licence out, as a micro-merchant would
    response = hooks_client.post(
        reverse("cases:new"),
        form_data(merchant, terminals, uscc="", business_licence=None),
    )

    # then the identity does not match and nothing is stored
    assert response.status_code == HTTPStatus.OK
    assert "do not match our records" in str(form_errors(response)["__all__"])
    assert_nothing_stored(media_root)


def test_a_licensed_merchant_still_needs_the_business_licence(hooks_client, media_root):
    # given an enterprise that gives its USCC but no licence
    merchant, terminals = registry_of(Merchant.Kind.ENTERPRISE)

    # when
    response = hooks_client.post(
        reverse("cases:new"), form_data(merchant, terminals, business_licence=None)
    )

    # then
    assert response.status_code == HTTPStatus.OK
    assert "business_licence" in form_errors(response)
    assert_nothing_stored(media_root)
    # and the hint names the licence, not the micro-merchant exception
    html = response.content.decode()
    assert 'data-merchant-kind="enterprise"' in html
    assert "you need no business licence" not in html


def test_a_micro_merchant_giving_a_wrong_uscc_does_not_match(hooks_client, media_root):
    # given
    merchant, terminals = registry_of(Merchant.Kind.MICRO)
    other = factories.MerchantFactory.build().uscc

    # when
    response = hooks_client.post(
        reverse("cases:new"),
        form_data(merchant, terminals, uscc=other, business_licence=None),
    )

    # then
    assert response.status_code == HTTPStatus.OK
    assert "do not match our records" in str(form_errors(response))
    assert stored_files(media_root) == []


def test_the_required_documents_hint_follows_the_registry_kind(hooks_client):
    # given a micro-merchant whose request misses the device evidence
    merchant, terminals = registry_of(Merchant.Kind.MICRO)

    # when
    response = hooks_client.post(
        reverse("cases:new"),
        form_data(
            merchant, terminals, uscc="", business_licence=None, device_evidence=None
        ),
    )

    # then the hint says no licence is needed, and asks only for the evidence
    assert response.status_code == HTTPStatus.OK
    errors = form_errors(response)
    assert list(errors) == ["device_evidence"]
    html = response.content.decode()
    assert 'data-merchant-kind="micro"' in html
    assert "you need no business licence" in html


def test_before_identity_matches_the_hint_stays_generic(client):
    # given / when a fresh form
    html = client.get(reverse("cases:new")).content.decode()

    # then both rules are explained and no kind is claimed
    assert "data-merchant-kind" not in html
    assert 'data-doc="micro"' in html


def test_required_documents_for_each_kind():
    # given / when / then
    common = {
        "close_account": False,
        "replacement": False,
        "applicant_is_legal_rep": True,
    }
    micro = required_document_kinds(**common, merchant_kind=Merchant.Kind.MICRO)
    individual = required_document_kinds(
        **common, merchant_kind=Merchant.Kind.INDIVIDUAL
    )
    assert Document.Kind.BUSINESS_LICENCE not in micro
    assert Document.Kind.LEGAL_REP_ID in micro
    assert Document.Kind.BUSINESS_LICENCE in individual
    assert Document.Kind.BUSINESS_LICENCE in required_document_kinds(**common)


def test_a_micro_case_can_be_recommended_without_a_licence():
    # given a micro-merchant's case in review
    merchant = factories.MerchantFactory(kind=Merchant.Kind.MICRO, uscc=None)
    case = factories.CaseFactory(merchant=merchant, state="in_review")

    # when every document its kind requires is accepted
    documents = factories.accepted_documents_for(case)

    # then nothing more is missing, and no licence was asked for
    assert Document.Kind.BUSINESS_LICENCE not in {d.kind for d in documents}
    assert case.required_documents_accepted()
