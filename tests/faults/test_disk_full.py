"""The document storage fills up while a merchant's uploads are being stored.

MEDIA_ROOT is a 2 MB tmpfs, nearly filled beforehand, so that the first
documents fit and a later one runs out of space half-way through its write.
"""

import hashlib
from http import HTTPStatus

import pytest
from django.contrib.messages import get_messages
from django.core import mail
from django.core.files.uploadedfile import SimpleUploadedFile
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
from cases.tokens import token_for_salt
from tests import factories
from tests.faults.harness import filing_form, pdf_bytes
from tests.fixtures import issued_submission_key

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(60),
]

# Each of the four PDFs is about this large; two of them fit in the space left.
DOCUMENT_PADDING = 150_000


def test_disk_full_while_storing_uploads_shows_a_form_error_and_keeps_nothing(
    tiny_media_root,
):
    """The disk fills up during the third of four document writes.

    Lost: nothing. The merchant sees the form again with a message to try
    later (not the 500 page); there is no case, no document row, no event,
    no outbox row, no e-mail, and no stored or half-written file. Once there
    is space again, the same form is filed normally.
    """
    # given: room for about two of the four documents
    merchant = factories.MerchantFactory()
    terminals = [factories.BindingFactory(merchant=merchant).terminal]
    size = len(pdf_bytes(padding=DOCUMENT_PADDING))
    tiny_media_root.fill(leave=int(size * 2.5))
    client = Client(raise_request_exception=False)
    key = issued_submission_key(client)

    # when
    response = client.post(
        reverse("cases:new"),
        filing_form(merchant, terminals, key=key, padding=DOCUMENT_PADDING),
    )

    # then: a clear form error, nothing kept
    assert response.status_code == HTTPStatus.OK
    errors = response.context["form"].non_field_errors()
    assert errors == [
        "We could not store your documents just now. Nothing was filed; "
        "please try again in a few minutes."
    ]
    assert "No space left" not in response.content.decode()
    assert Case.objects.count() == 0
    assert CaseTerminal.objects.count() == 0
    assert Document.objects.count() == 0
    assert CaseEvent.objects.count() == 0
    assert Notification.objects.count() == 0
    assert tiny_media_root.files() == []
    assert mail.outbox == []

    # when: space is freed and the merchant posts the form again
    (tiny_media_root.path / "filler").unlink()
    response = client.post(
        reverse("cases:new"),
        filing_form(merchant, terminals, key=key, padding=DOCUMENT_PADDING),
    )

    # then
    assert response.status_code == HTTPStatus.FOUND
    case = Case.objects.get()
    documents = list(case.documents.all())
    assert len(documents) == 4
    # the four documents (their preview pages are rendered beside them)
    stored = [
        p
        for p in tiny_media_root.files()
        if p.relative_to(tiny_media_root.path).parts[0] != "previews"
    ]
    assert len(stored) == 4
    for document in documents:
        content = (tiny_media_root.path / document.file.name).read_bytes()
        assert hashlib.sha256(content).hexdigest() == document.sha256
    assert len(mail.outbox) == 1


def test_disk_full_while_storing_an_answer_keeps_the_case_waiting(tiny_media_root):
    """The disk is full when the merchant answers a request for information.

    Lost: nothing. The merchant is told to try again; the case still waits
    for the answer, with no new document, event or file.
    """
    # given
    case = factories.CaseFactory(state=CaseState.INFO_REQUESTED)
    events_before = CaseEvent.objects.filter(case=case).count()
    tiny_media_root.fill(leave=0)
    client = Client(raise_request_exception=False)
    token = token_for_salt(case.token_salt)

    # when
    response = client.post(
        reverse("cases:respond", kwargs={"token": token}),
        {
            "message": "The contract is attached.",
            "document_kind": Document.Kind.CONTRACT,
            "documents": [
                SimpleUploadedFile(
                    "contract.pdf",
                    pdf_bytes(padding=DOCUMENT_PADDING),
                    content_type="application/pdf",
                )
            ],
        },
    )

    # then
    assert response.status_code == HTTPStatus.FOUND
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        "We could not store your documents just now. Your answer was not sent; "
        "please try again in a few minutes."
    ]
    case.refresh_from_db()
    assert case.state == CaseState.INFO_REQUESTED
    assert Document.objects.filter(case=case).count() == 0
    assert CaseEvent.objects.filter(case=case).count() == events_before
    assert tiny_media_root.files() == []
