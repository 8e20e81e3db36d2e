"""Hostile uploads and races through the public form: refused, nothing stored."""

import threading
from http import HTTPStatus

import pytest
from django.core import mail
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.urls import reverse

from cases.models import Case, CaseEvent, Document, Notification
from tests import factories, filebuilders
from tests.cases.test_intake import form_data, pdf, stored_files
from tests.fixtures import issued_submission_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def registry():
    merchant = factories.MerchantFactory(contact_email="contact@onfile.example.com")
    terminals = [factories.BindingFactory(merchant=merchant).terminal]
    return merchant, terminals


def nothing_stored(media_root) -> bool:
    return (
        not Case.objects.exists()
        and not Document.objects.exists()
        and not CaseEvent.objects.exists()
        and not Notification.objects.exists()
        and stored_files(media_root) == []
        and mail.outbox == []
    )


ATTACKS = {
    "executable renamed .pdf": ("invoice.pdf", filebuilders.elf_bytes()),
    "windows executable renamed .pdf": ("setup.pdf", filebuilders.pe_bytes()),
    "svg with a script renamed .png": ("photo.png", filebuilders.svg_script_bytes()),
    "html renamed .png": ("photo.png", filebuilders.html_bytes()),
    "zip renamed .jpg": ("scan.jpg", filebuilders.zip_bytes()),
    "decompression bomb": ("bomb.png", filebuilders.png_bomb_bytes()),
    "encrypted pdf": ("locked.pdf", filebuilders.encrypted_pdf_bytes()),
    "pdf with javascript": (
        "js.pdf",
        filebuilders.pdf_with_open_action_javascript_bytes(),
    ),
    "pdf with an embedded file": (
        "embed.pdf",
        filebuilders.pdf_with_embedded_file_bytes(),
    ),
    "broken pdf": ("broken.pdf", filebuilders.truncated_pdf_bytes()),
    "empty file": ("empty.pdf", b""),
}


@pytest.mark.parametrize("attack", ATTACKS, ids=list(ATTACKS))
def test_hostile_documents_are_refused_and_nothing_is_stored(
    hooks_client, registry, media_root, attack
):
    # given a request whose business licence is hostile
    name, content = ATTACKS[attack]
    merchant, terminals = registry

    # when it is posted
    response = hooks_client.post(
        reverse("cases:new"),
        form_data(
            merchant, terminals, business_licence=SimpleUploadedFile(name, content)
        ),
    )

    # then the form says what is wrong with that file and nothing is kept
    assert response.status_code == HTTPStatus.OK
    assert response.context["form"].errors["business_licence"]
    assert nothing_stored(media_root)


def test_an_oversized_file_is_refused_with_a_form_error(
    hooks_client, registry, media_root, settings
):
    settings.UPLOAD_MAX_FILE_SIZE = 300 * 1024
    merchant, terminals = registry
    big = SimpleUploadedFile("big.pdf", filebuilders.large_pdf_bytes(400 * 1024))

    response = hooks_client.post(
        reverse("cases:new"), form_data(merchant, terminals, business_licence=big)
    )

    assert response.status_code == HTTPStatus.OK
    assert "business_licence" in response.context["form"].errors
    assert nothing_stored(media_root)


def test_an_oversized_request_gets_413_not_500(
    hooks_client, registry, media_root, settings
):
    settings.UPLOAD_MAX_REQUEST_SIZE = 200 * 1024
    merchant, terminals = registry
    big = SimpleUploadedFile("big.pdf", filebuilders.large_pdf_bytes(300 * 1024))

    response = hooks_client.post(
        reverse("cases:new"), form_data(merchant, terminals, other_documents=[big])
    )

    assert response.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert b'data-error="too-large"' in response.content
    assert nothing_stored(media_root)


def test_a_path_in_the_file_name_is_dropped(hooks_client, registry, media_root):
    merchant, terminals = registry
    hostile = SimpleUploadedFile("../../etc/passwd.pdf", filebuilders.valid_pdf_bytes())

    response = hooks_client.post(
        reverse("cases:new"), form_data(merchant, terminals, business_licence=hostile)
    )

    assert response.status_code == HTTPStatus.FOUND
    document = Document.objects.get(kind="business_licence")
    assert "/" not in document.original_name
    assert ".." not in document.original_name
    assert "passwd" not in document.file.name
    stored = [p.resolve() for p in stored_files(media_root)]
    assert all(media_root.resolve() in p.parents for p in stored)


def test_photos_lose_their_location_data(hooks_client, registry):
    merchant, terminals = registry
    photo = SimpleUploadedFile("id.jpg", filebuilders.jpeg_with_gps_bytes())

    hooks_client.post(
        reverse("cases:new"), form_data(merchant, terminals, legal_rep_id=[photo])
    )

    document = Document.objects.get(kind="legal_rep_id")
    assert document.content_type == "image/jpeg"
    with document.file.open("rb") as fh:
        data = fh.read()
    assert b"GPS" not in data
    assert b"Exif" not in data


# --- races on the real database ---------------------------------------------------


def _post_concurrently(payloads: list[dict], cookies=None) -> list[int]:
    barrier = threading.Barrier(len(payloads))
    statuses: list[int] = []

    def post(payload):
        try:
            client = Client()
            if cookies is not None:
                client.cookies = cookies
            barrier.wait()
            statuses.append(client.post(reverse("cases:new"), payload).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=post, args=(p,)) for p in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def _payload(merchant, terminals, **overrides) -> dict:
    data = form_data(merchant, terminals, **overrides)
    for key in ("legal_rep_id", "device_evidence"):
        data[key] = [pdf(f"{key}.pdf")]
    data["business_licence"] = pdf("licence.pdf")
    return data


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_identical_posts_at_once_make_one_case(registry, settings):
    settings.THROTTLE_ENABLED = False
    merchant, terminals = registry
    browser = Client()
    key = issued_submission_key(browser)

    statuses = _post_concurrently(
        [_payload(merchant, terminals, submission_key=key) for _ in range(2)],
        cookies=browser.cookies,
    )

    assert statuses == [HTTPStatus.FOUND, HTTPStatus.FOUND]
    assert Case.objects.count() == 1
    assert Document.objects.count() == 3


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_requests_for_one_terminal_at_once_make_one_case(
    registry, media_root, settings
):
    settings.THROTTLE_ENABLED = False
    merchant, terminals = registry

    statuses = _post_concurrently([_payload(merchant, terminals) for _ in range(2)])

    assert sorted(statuses) == [HTTPStatus.OK, HTTPStatus.FOUND]
    assert Case.objects.count() == 1
    # the loser's files were removed with its rows
    assert len(stored_files(media_root)) == Document.objects.count() == 3
