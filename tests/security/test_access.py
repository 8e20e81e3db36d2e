"""Tracking tokens open only their own case; documents have no public URL;
error pages carry no personal data or secrets."""

import secrets
from http import HTTPStatus

import pytest
from django.conf import settings as django_settings
from django.test import Client

from cases.models import CaseState, Document
from cases.tokens import token_for_salt
from tests import factories

pytestmark = pytest.mark.django_db

# Every merchant URL under /requests/<token>/ with the methods it accepts.
CASE_URLS = [
    ("", "get"),
    ("verify/", "get"),
    ("verify/", "post"),
    ("resend/", "post"),
    ("respond/", "post"),
    ("withdraw/", "get"),
    ("withdraw/", "post"),
]
FOREIGN_TOKENS = [
    secrets.token_urlsafe(24),
    secrets.token_hex(16),
    "a",
    "x" * 500,
    "../../admin",
    "%2e%2e%2fadmin",
    "' OR '1'='1",
    "令牌",
    "\u202eRTL",
    "0",
]


def token_of(case) -> str:
    return token_for_salt(case.token_salt)


def send(client, method: str, url: str):
    data = {"code": "123456", "message": "hi"} if method == "post" else None
    return getattr(client, method)(url, data)


@pytest.mark.parametrize("token", FOREIGN_TOKENS)
def test_a_wrong_token_is_404_on_every_merchant_url(client, token):
    # given: real cases exist
    for state in (CaseState.PENDING_VERIFICATION, CaseState.INFO_REQUESTED):
        factories.CaseFactory(state=state)

    # when
    answers = {
        (suffix, method): send(client, method, f"/requests/{token}/{suffix}")
        for suffix, method in CASE_URLS
    }

    # then
    assert {k: r.status_code for k, r in answers.items()} == dict.fromkeys(
        answers, HTTPStatus.NOT_FOUND
    )


def test_a_token_opens_only_its_own_case(client):
    # given
    a = factories.CaseFactory(state=CaseState.INFO_REQUESTED)
    b = factories.CaseFactory(state=CaseState.INFO_REQUESTED)

    # when
    page_a = client.get(f"/requests/{token_of(a)}/").content.decode()
    page_b = client.get(f"/requests/{token_of(b)}/").content.decode()

    # then
    assert f'data-reference="{a.reference}"' in page_a
    assert b.reference not in page_a
    assert f'data-reference="{b.reference}"' in page_b
    assert a.reference not in page_b


def test_a_token_cannot_act_on_another_case(client):
    # given: A and B both waiting; the attacker holds A's token only
    a = factories.CaseFactory(state=CaseState.SUBMITTED)
    b = factories.CaseFactory(state=CaseState.SUBMITTED)

    # when: withdraw with A's token, with B's id or reference added anywhere
    client.post(
        f"/requests/{token_of(a)}/withdraw/?case={b.pk}",
        {"case": b.pk, "reference": b.reference, "token": "x"},
    )
    # and the reference or the primary key in place of a token
    by_reference = client.post(f"/requests/{b.reference}/withdraw/")
    by_pk = client.post(f"/requests/{b.pk}/withdraw/")

    # then
    a.refresh_from_db()
    b.refresh_from_db()
    assert a.state == CaseState.WITHDRAWN
    assert b.state == CaseState.SUBMITTED
    assert by_reference.status_code == HTTPStatus.NOT_FOUND
    assert by_pk.status_code == HTTPStatus.NOT_FOUND


def test_tokens_are_long_and_random():
    # given
    from cases.tokens import new_token_salt

    # when
    tokens = {token_for_salt(new_token_salt()) for _ in range(200)}

    # then: 192 bits of HMAC output, no repeats
    assert len(tokens) == 200
    assert all(len(t) >= 32 for t in tokens)


def test_media_is_not_served_at_any_public_url(client, media_root):
    # given: a stored document
    document = factories.DocumentFactory()
    stored = document.file.name
    assert (media_root / stored).is_file()
    name = stored.rsplit("/", 1)[-1]

    # when
    candidates = [
        f"/{prefix}/{path}"
        for prefix in ("media", "documents", "static", "var/documents", "uploads")
        for path in (stored, name)
    ] + [f"/{stored}", "/media/", "/documents/"]
    answers = {url: client.get(url).status_code for url in candidates}

    # then
    assert django_settings.MEDIA_URL is None
    assert set(answers.values()) == {HTTPStatus.NOT_FOUND}, answers


def test_document_download_needs_staff_permission(client, reviewer):
    # given
    document = factories.DocumentFactory()
    url = f"/admin/cases/document/{document.pk}/download/"
    staff_without_role = factories.UserFactory(username="nobody", is_staff=True)
    merchant_user = factories.UserFactory(username="merchant", is_staff=False)

    # when
    anonymous = client.get(url)
    client.force_login(merchant_user)
    not_staff = client.get(url)
    client.force_login(staff_without_role)
    no_role = client.get(url)
    client.force_login(reviewer)
    allowed = client.get(url)

    # then
    assert anonymous.status_code == HTTPStatus.FOUND
    assert anonymous["Location"].startswith("/admin/login/")
    assert not_staff.status_code == HTTPStatus.FOUND
    assert no_role.status_code == HTTPStatus.FORBIDDEN
    assert allowed.status_code == HTTPStatus.OK
    assert b"".join(allowed.streaming_content).startswith(b"%PDF")


def test_stored_files_are_private_to_the_process(media_root):
    # given
    document = factories.DocumentFactory()

    # then
    path = media_root / document.file.name
    assert path.stat().st_mode & 0o077 == 0
    assert Document.objects.filter(pk=document.pk).exists()


@pytest.fixture
def production_errors(settings):
    settings.DEBUG = False
    settings.DEBUG_PROPAGATE_EXCEPTIONS = False
    return settings


def test_the_404_page_shows_no_personal_data_or_settings(client, production_errors):
    # given: a case whose merchant data must not leak
    case = factories.CaseFactory(state=CaseState.SUBMITTED)
    merchant = case.merchant

    # when
    response = client.get(f"/requests/{token_of(case)}x/")
    html = response.content.decode()

    # then
    assert response.status_code == HTTPStatus.NOT_FOUND
    for secret in (
        merchant.legal_rep_id_number,
        merchant.settlement_card_number,
        merchant.contact_phone,
        merchant.contact_email,
        django_settings.SECRET_KEY,
        "Traceback",
        "DATABASES",
        "urlpatterns",
    ):
        assert secret not in html


def test_the_500_page_shows_no_personal_data_or_secrets(production_errors, monkeypatch):
    # given: a view that fails while holding personal data
    from cases import views

    case = factories.CaseFactory(state=CaseState.SUBMITTED)
    merchant = case.merchant

    def explode(*args, **kwargs):
        raise RuntimeError(
            f"boom {merchant.legal_rep_id_number} {merchant.settlement_card_number}"
        )

    monkeypatch.setattr(views, "_detail_context", explode)
    client = Client(raise_request_exception=False)

    # when
    response = client.get(f"/requests/{token_of(case)}/")
    html = response.content.decode()

    # then
    assert response.status_code == HTTPStatus.INTERNAL_SERVER_ERROR
    for secret in (
        merchant.legal_rep_id_number,
        merchant.settlement_card_number,
        django_settings.SECRET_KEY,
        "Traceback",
        "RuntimeError",
        "boom",
    ):
        assert secret not in html
