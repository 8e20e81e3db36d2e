"""The PostgreSQL connection drops while a merchant files a request.

The connection of the request goes through ``PgProxy``, which cuts it when
the application sends a given statement: the database then rolls back (or,
for a COMMIT it received, commits) and the application's next read fails,
exactly as on a network fault or a restart of the database server.
"""

import hashlib
from http import HTTPStatus

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse

from cases.models import (
    Case,
    CaseEvent,
    CaseState,
    CaseTerminal,
    Document,
    Notification,
)
from tests import factories
from tests.faults.harness import database_through, filing_form
from tests.fixtures import issued_submission_key

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(60),
]

# What an error page must never show: internals of the failure.
LEAKS = ("Traceback", "psycopg", "OperationalError", "INSERT", "COMMIT", "cases_")


def stored_files(root) -> list:
    return sorted(p for p in root.rglob("*") if p.is_file())


def document_files(root) -> list:
    """The stored documents, without their rendered preview pages."""
    return [p for p in stored_files(root) if p.relative_to(root).parts[0] != "previews"]


def registry():
    merchant = factories.MerchantFactory(contact_email="contact@onfile.example.com")
    terminals = [factories.BindingFactory(merchant=merchant).terminal for _ in range(2)]
    return merchant, terminals


def assert_filed_once(case: Case, media_root) -> None:
    """The case, its four documents with their files intact, and one code e-mail."""
    assert case.state == CaseState.PENDING_VERIFICATION
    assert CaseTerminal.objects.filter(case=case).count() == 2
    documents = list(Document.objects.filter(case=case))
    assert len(documents) == 4
    assert len(document_files(media_root)) == 4
    for document in documents:
        content = (media_root / document.file.name).read_bytes()
        assert hashlib.sha256(content).hexdigest() == document.sha256
    assert list(CaseEvent.objects.filter(case=case).values_list("type", flat=True)) == [
        CaseEvent.Type.FILED,
        CaseEvent.Type.CODE_SENT,
    ]
    assert Notification.objects.filter(case=case).count() == 1


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param(b'INSERT INTO "cases_document"', id="mid-transaction"),
        pytest.param(b"COMMIT", id="before-commit-arrives"),
    ],
)
def test_connection_cut_while_filing_leaves_nothing_and_the_retry_is_filed(
    pg_proxy, media_root, statement
):
    """The connection drops inside the filing transaction (the database rolls back).

    Lost: nothing. The merchant gets the error page (no internals) and the
    same form posted again is filed normally; in between there is no case,
    no document row, no event, no outbox row, no stored file and no e-mail.
    """
    # given
    merchant, terminals = registry()
    client = Client(raise_request_exception=False)
    key = issued_submission_key(client)

    # when: the line is cut as the statement is sent
    pg_proxy.cut_on(statement)
    with database_through(pg_proxy):
        response = client.post(
            reverse("cases:new"), filing_form(merchant, terminals, key=key)
        )

    # then: an error page, and nothing half-written anywhere
    assert pg_proxy.cuts == 1
    assert response.status_code == HTTPStatus.INTERNAL_SERVER_ERROR
    page = response.content.decode()
    assert "Please try again" in page
    for leak in (*LEAKS, merchant.merchant_id):
        assert leak not in page
    assert Case.objects.count() == 0
    assert CaseTerminal.objects.count() == 0
    assert Document.objects.count() == 0
    assert CaseEvent.objects.count() == 0
    assert Notification.objects.count() == 0
    assert stored_files(media_root) == []
    assert mail.outbox == []

    # when: the merchant posts the same form again
    response = client.post(
        reverse("cases:new"), filing_form(merchant, terminals, key=key)
    )

    # then: filed once, with every document
    assert response.status_code == HTTPStatus.FOUND
    assert response.url.endswith("/verify/")
    case = Case.objects.get()
    assert_filed_once(case, media_root)
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == [merchant.contact_email]


def test_connection_cut_after_the_commit_keeps_the_case_and_its_documents(
    pg_proxy, media_root
):
    """The COMMIT reaches the database but its answer is lost on the way back.

    Lost: nothing. The application cannot tell from the error whether the
    case was filed; it asks again on a new connection, keeps the stored
    documents of the committed case, sends the code and takes the merchant
    to the code page. Posting the form again leads to the same case.
    """
    # given
    merchant, terminals = registry()
    client = Client(raise_request_exception=False)
    key = issued_submission_key(client)

    # when: the COMMIT is delivered, then the line is cut
    pg_proxy.cut_on(b"COMMIT", forward=True)
    with database_through(pg_proxy):
        response = client.post(
            reverse("cases:new"), filing_form(merchant, terminals, key=key)
        )

    # then: the case was filed with every document file kept
    assert pg_proxy.cuts == 1
    assert response.status_code == HTTPStatus.FOUND, response.content.decode()[:300]
    assert response.url.endswith("/verify/")
    case = Case.objects.get()
    assert_filed_once(case, media_root)
    assert len(mail.outbox) == 1

    # when: the merchant, unsure, posts the same form again
    again = client.post(reverse("cases:new"), filing_form(merchant, terminals, key=key))

    # then: the same case, nothing more stored or sent
    assert again.status_code == HTTPStatus.FOUND
    assert again.url == response.url
    assert Case.objects.count() == 1
    assert_filed_once(case, media_root)
    assert len(mail.outbox) == 1
