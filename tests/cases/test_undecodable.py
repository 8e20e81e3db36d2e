"""Issue 11: text whose bytes are not UTF-8 is refused, never stored as U+FFFD.

Django decodes a submitted form with ``errors="replace"``; the public forms
used to accept the replacement characters and store them. Each test posts a
raw request body the way a misconfigured client or a GBK page sends it.
"""

import uuid
from http import HTTPStatus

import pytest
from django.core import mail
from django.urls import reverse

from cases.forms import CaseFilingForm, RespondForm, TrackForm, VerifyForm
from cases.models import Case, CaseEvent, CaseState, Document
from config.forms import DecodedTextMixin
from terminals.forms import BindingStatusForm
from tests import factories
from tests.cases.test_intake import assert_nothing_stored, form_data, pdf_bytes

pytestmark = pytest.mark.django_db

BAD = b"\xff\xfe"
MESSAGE = "could not be read"


def multipart(fields: dict, files: dict) -> tuple[bytes, str]:
    """Encode ``fields`` (name -> bytes or list of bytes) and files as raw multipart."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, values in fields.items():
        for value in values if isinstance(values, list) else [values]:
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'
                f"\r\n\r\n".encode()
                + value
                + b"\r\n"
            )
    for name, items in files.items():
        for filename, content in items:
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                f'filename="{filename}"\r\nContent-Type: application/pdf\r\n\r\n'.encode()
                + content
                + b"\r\n"
            )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def post_raw(client, url: str, fields: dict, files: dict | None = None):
    body, content_type = multipart(fields, files or {})
    return client.generic("POST", url, body, content_type=content_type)


def field_errors(response, name: str) -> list[str]:
    return [str(e) for e in response.context["form"].errors.get(name, [])]


@pytest.fixture
def registry():
    merchant = factories.MerchantFactory(
        legal_rep_name="张伟", contact_email="contact@onfile.example.com"
    )
    terminals = [factories.BindingFactory(merchant=merchant).terminal for _ in range(2)]
    return merchant, terminals


def request_fields(merchant, terminals) -> dict:
    data = form_data(merchant, terminals)
    fields = {
        name: value.encode()
        for name, value in data.items()
        if isinstance(value, str) and name not in ("business_licence",)
    }
    return fields


REQUEST_FILES = {
    "business_licence": [("licence.pdf", pdf_bytes())],
    "legal_rep_id": [("front.pdf", pdf_bytes()), ("back.pdf", pdf_bytes())],
    "device_evidence": [("device.pdf", pdf_bytes())],
}


def test_a_well_formed_raw_post_files_a_case(hooks_client, registry):
    """The control: the same raw encoding with valid UTF-8 is accepted."""
    merchant, terminals = registry
    fields = request_fields(merchant, terminals)
    fields["reason_detail"] = "门店搬迁".encode()

    response = post_raw(hooks_client, reverse("cases:new"), fields, REQUEST_FILES)

    assert response.status_code == HTTPStatus.FOUND
    assert Case.objects.get().reason_detail == "门店搬迁"


@pytest.mark.parametrize(
    "field",
    [
        "applicant_name",
        "reason_detail",
        "legal_rep_name",
        "applicant_email",
        "applicant_phone",
        "serial_numbers",
        "merchant_id",
        "uscc",
        "replacement_serial_number",
        "submission_key",
    ],
)
def test_the_request_form_refuses_undecodable_text_and_stores_nothing(
    hooks_client, registry, media_root, field
):
    # given
    merchant, terminals = registry
    fields = request_fields(merchant, terminals)
    fields[field] = (fields.get(field) or b"") + BAD

    # when
    response = post_raw(hooks_client, reverse("cases:new"), fields, REQUEST_FILES)

    # then
    assert response.status_code == HTTPStatus.OK
    assert any(MESSAGE in e for e in field_errors(response, field))
    html = response.content.decode()
    assert "\ufffd" not in html
    assert_nothing_stored(media_root)


def test_a_stored_replacement_character_never_reaches_a_case(hooks_client, registry):
    merchant, terminals = registry
    fields = request_fields(merchant, terminals)
    fields["applicant_name"] = "张".encode() + BAD

    post_raw(hooks_client, reverse("cases:new"), fields, REQUEST_FILES)

    assert not Case.objects.filter(applicant_name__contains="\ufffd").exists()


def test_the_respond_form_refuses_undecodable_text_and_stores_nothing(
    hooks_client, media_root
):
    # given
    case = factories.CaseFactory(state=CaseState.INFO_REQUESTED)
    events = case.events.count()

    # when
    response = post_raw(
        hooks_client,
        reverse("cases:respond", args=[case.tracking_token]),
        {"message": "补充".encode() + BAD, "document_kind": b"business_licence"},
        {"documents": [("more.pdf", pdf_bytes())]},
    )

    # then
    assert response.status_code == HTTPStatus.OK
    assert any(MESSAGE in e for e in field_errors(response, "message"))
    case.refresh_from_db()
    assert case.state == CaseState.INFO_REQUESTED
    assert case.events.count() == events
    assert not CaseEvent.objects.filter(note__contains="\ufffd").exists()
    assert Document.objects.count() == 0
    assert [p for p in media_root.rglob("*") if p.is_file()] == []
    assert mail.outbox == []


def test_the_verify_form_refuses_undecodable_text_without_counting_an_attempt(
    hooks_client,
):
    case = factories.CaseFactory(state=CaseState.PENDING_VERIFICATION)
    attempts = case.code_attempts

    response = post_raw(
        hooks_client,
        reverse("cases:verify", args=[case.tracking_token]),
        {"code": b"1234" + BAD},
    )

    assert response.status_code == HTTPStatus.OK
    assert any(MESSAGE in e for e in field_errors(response, "code"))
    case.refresh_from_db()
    assert case.code_attempts == attempts


def test_the_status_page_refuses_an_undecodable_serial(client, bound_terminal):
    response = client.get(
        reverse("terminals:status"),
        QUERY_STRING=(
            f"merchant_id={bound_terminal.bindings.get().merchant.merchant_id}"
            "&serial_number=SN%FF%FE0001"
        ),
    )

    html = response.content.decode()
    assert MESSAGE in html
    assert "data-binding=" not in html


def test_the_track_page_refuses_an_undecodable_link(client):
    # The track form posts (no token in a URL query).
    response = client.post(
        reverse("cases:track"),
        data=b"link=%FF%FE",
        content_type="application/x-www-form-urlencoded",
    )

    assert MESSAGE in response.content.decode()


@pytest.mark.parametrize(
    "form_class",
    [CaseFilingForm, VerifyForm, RespondForm, TrackForm, BindingStatusForm],
)
def test_every_public_form_refuses_undecodable_text(form_class):
    assert issubclass(form_class, DecodedTextMixin)


def test_no_public_form_is_left_out():
    """A new form in the public modules must take the mixin too."""
    import inspect

    from django import forms

    import cases.forms
    import terminals.forms

    public = {
        obj
        for module in (cases.forms, terminals.forms)
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, forms.BaseForm) and obj.__module__ == module.__name__
    }
    assert public
    assert all(issubclass(form, DecodedTextMixin) for form in public), public
