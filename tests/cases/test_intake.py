"""The merchant's side through the HTTP layer: file, verify, track, respond, withdraw."""

import io
import re
from datetime import timedelta
from http import HTTPStatus

import pytest
from django.core import mail
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone
from pypdf import PdfWriter

from cases.models import (
    Case,
    CaseEvent,
    CaseState,
    CaseTerminal,
    Document,
    Notification,
)
from tests import factories
from tests.fixtures import issued_submission_key

pytestmark = pytest.mark.django_db


def pdf_bytes() -> bytes:
    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def pdf(name: str = "doc.pdf") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, pdf_bytes(), content_type="application/pdf")


@pytest.fixture
def registry():
    merchant = factories.MerchantFactory(
        legal_rep_name="张伟", contact_email="contact@onfile.example.com"
    )
    terminals = [factories.BindingFactory(merchant=merchant).terminal for _ in range(2)]
    return merchant, terminals


def form_data(merchant, terminals, **overrides) -> dict:
    data = {
        "merchant_id": merchant.merchant_id,
        "uscc": merchant.uscc,
        "legal_rep_name": merchant.legal_rep_name,
        "applicant_name": "张伟",
        "applicant_is_legal_rep": "on",
        "applicant_phone": "13912345678",
        "applicant_email": "applicant@typed.example.com",
        "serial_numbers": "\n".join(t.serial_number for t in terminals),
        "reason": "business_change",
        "reason_detail": "",
        "replacement_serial_number": "",
        "declaration": "on",
        "business_licence": pdf("营业执照.pdf"),
        "legal_rep_id": [pdf("id-front.pdf"), pdf("id-back.pdf")],
        "device_evidence": [pdf("device.pdf")],
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def stored_files(media_root) -> list:
    """The stored uploads (the rendered preview pages are not uploads)."""
    return [
        p
        for p in media_root.rglob("*")
        if p.is_file() and "previews" not in p.relative_to(media_root).parts
    ]


def code_from_mail(message) -> str:
    return re.search(r"(?<![\d-])(\d{6})(?!\d)", message.body).group(1)


def form_errors(response):
    return response.context and response.context["form"].errors


def assert_nothing_stored(media_root):
    assert Case.objects.count() == 0
    assert Document.objects.count() == 0
    assert CaseEvent.objects.count() == 0
    assert Notification.objects.count() == 0
    assert stored_files(media_root) == []
    assert mail.outbox == []


def file_request(client, merchant, terminals, **overrides):
    return client.post(
        reverse("cases:new"), form_data(merchant, terminals, **overrides)
    )


# --- the happy path ------------------------------------------------------------


def test_request_form_renders_with_every_contract_field(hooks_client):
    client = hooks_client
    response = client.get(reverse("cases:new"))

    assert response.status_code == HTTPStatus.OK
    html = response.content.decode()
    for name in (
        "merchant_id", "uscc", "legal_rep_name", "applicant_name", "applicant_is_legal_rep",
        "applicant_phone", "applicant_email", "serial_numbers", "reason", "reason_detail",
        "close_account", "replacement_serial_number", "declaration", "business_licence",
        "legal_rep_id", "device_evidence", "contract", "bank_statement",
        "replacement_documents", "authorisation_letter", "other_documents",
    ):  # fmt: skip
        assert f'name="{name}"' in html, name


def test_filing_then_verifying_puts_the_case_in_the_queue(
    hooks_client, registry, media_root
):
    client = hooks_client
    merchant, terminals = registry

    # when the merchant files
    response = file_request(client, merchant, terminals)

    # then the case waits for the code, which went only to the contact on file
    assert response.status_code == HTTPStatus.FOUND
    match = re.fullmatch(r"/requests/([A-Za-z0-9_-]{32,})/verify/", response.url)
    assert match, response.url
    token = match.group(1)
    case = Case.objects.get()
    assert case.state == CaseState.PENDING_VERIFICATION
    assert re.fullmatch(r"UB-\d{4}-\d{6}", case.reference)
    assert set(
        case.case_terminals.values_list("terminal__serial_number", flat=True)
    ) == {t.serial_number for t in terminals}
    assert case.documents.count() == 4
    assert len(stored_files(media_root)) == 4
    # each PDF was rendered to page images on upload, after the commit
    for document in case.documents.filter(content_type="application/pdf"):
        assert document.preview.status == "ready"
        assert (media_root / document.preview.pages[0]).is_file()
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["contact@onfile.example.com"]
    assert case.reference in mail.outbox[0].subject
    code = code_from_mail(mail.outbox[0])
    assert code not in case.code_hash

    # when the right code is entered
    response = client.post(reverse("cases:verify", args=[token]), {"code": code})

    # then the case is submitted with a due date and the receipt goes to both addresses
    assert response.status_code == HTTPStatus.FOUND
    assert response.url == f"/requests/{token}/"
    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTED
    assert case.review_due_at > timezone.now()
    receipt = mail.outbox[1]
    assert set(receipt.to) == {
        "contact@onfile.example.com",
        "applicant@typed.example.com",
    }
    assert case.reference in receipt.subject
    assert f"/requests/{token}/" in receipt.body
    assert receipt.alternatives
    assert receipt.alternatives[0][1] == "text/html"
    assert list(case.events.values_list("type", flat=True)) == [
        CaseEvent.Type.FILED,
        CaseEvent.Type.CODE_SENT,
        CaseEvent.Type.TRANSITION,
    ]

    # and the tracking page shows it
    page = client.get(f"/requests/{token}/")
    assert page.status_code == HTTPStatus.OK
    assert f'data-reference="{case.reference}"' in page.content.decode()
    assert 'data-status="submitted"' in page.content.decode()


def test_the_code_never_goes_to_the_address_typed_in_the_form(hooks_client, registry):
    client = hooks_client
    merchant, terminals = registry

    file_request(
        client, merchant, terminals, applicant_email="attacker@evil.example.com"
    )

    assert [m.to for m in mail.outbox] == [["contact@onfile.example.com"]]


# --- refusals: a clear error and nothing stored ---------------------------------


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"uscc": "91110000600037341L"}, None, "do not match our records"),
        ({"legal_rep_name": "李四"}, None, "do not match our records"),
        ({"merchant_id": "12345"}, "merchant_id", "15 digits"),
        ({"uscc": "911100000000000010"}, "uscc", "not valid"),
        ({"applicant_phone": "2345"}, "applicant_phone", "11 digits"),
        ({"declaration": None}, "declaration", "required"),
        ({"serial_numbers": ""}, "serial_numbers", "required"),
        ({"reason": "other"}, "reason_detail", "reason in a few words"),
        ({"business_licence": None}, "business_licence", "required"),
        ({"legal_rep_id": None}, "legal_rep_id", "required"),
        ({"applicant_is_legal_rep": None}, "authorisation_letter", "required"),
        ({"reason": "device_replacement"}, "replacement_serial_number", "new device"),
        (
            {"replacement_serial_number": "SNNOTINSTOCK"},
            "replacement_serial_number",
            "not available",
        ),
    ],
)
def test_invalid_requests_are_refused_and_store_nothing(
    client, registry, media_root, overrides, field, message
):
    merchant, terminals = registry

    response = file_request(client, merchant, terminals, **overrides)

    assert response.status_code == HTTPStatus.OK
    form = response.context["form"]
    errors = form.errors.get(field or "__all__", [])
    assert any(message in str(e) for e in errors), form.errors
    assert_nothing_stored(media_root)


def test_a_terminal_bound_to_someone_else_is_refused_without_saying_whose(
    client, registry, media_root
):
    merchant, terminals = registry
    other = factories.BindingFactory(merchant__name="隔壁商店有限公司")

    response = file_request(client, merchant, [*terminals, other.terminal])

    html = response.content.decode()
    assert "not bound to your merchant number" in html
    assert other.terminal.serial_number in html  # echoes what was typed
    assert "隔壁商店" not in html
    assert other.merchant.merchant_id not in html
    assert_nothing_stored(media_root)


def test_closing_the_account_needs_every_terminal_and_its_documents(
    client, registry, media_root
):
    merchant, terminals = registry

    response = file_request(client, merchant, terminals[:1], close_account="on")

    errors = response.context["form"].errors
    assert "1 more terminal is bound" in str(errors["close_account"])
    assert_nothing_stored(media_root)

    response = file_request(client, merchant, terminals, close_account="on")

    errors = response.context["form"].errors
    assert "contract" in errors
    assert "bank_statement" in errors
    assert_nothing_stored(media_root)

    response = file_request(
        client, merchant, terminals, close_account="on",
        contract=pdf("contract.pdf"), bank_statement=pdf("statement.pdf"),
    )  # fmt: skip

    assert response.status_code == HTTPStatus.FOUND
    assert Case.objects.get().close_account is True


def test_replacement_device_must_be_in_stock(hooks_client, registry):
    client = hooks_client
    merchant, terminals = registry
    stock = factories.TerminalFactory()

    response = file_request(
        client, merchant, terminals, reason="device_replacement",
        replacement_serial_number=stock.serial_number.lower(),
        replacement_documents=[pdf("new.pdf")],
    )  # fmt: skip

    assert response.status_code == HTTPStatus.FOUND, form_errors(response)
    assert Case.objects.get().replacement_terminal == stock


def test_a_second_request_for_an_open_terminal_is_refused(
    hooks_client, registry, media_root
):
    client = hooks_client
    merchant, terminals = registry
    file_request(client, merchant, terminals)
    files_before = len(stored_files(media_root))

    response = file_request(client, merchant, terminals[1:])

    assert response.status_code == HTTPStatus.OK
    assert "already an open request" in str(
        response.context["form"].errors["serial_numbers"]
    )
    assert Case.objects.count() == 1
    assert len(stored_files(media_root)) == files_before


def test_the_same_form_posted_twice_makes_one_case(hooks_client, registry):
    client = hooks_client
    merchant, terminals = registry
    key = issued_submission_key(client)

    first = file_request(client, merchant, terminals, submission_key=key)
    second = file_request(client, merchant, terminals, submission_key=key)

    assert first.status_code == second.status_code == HTTPStatus.FOUND
    assert first.url == second.url
    assert Case.objects.count() == 1
    assert Document.objects.count() == 4
    assert len(mail.outbox) == 1


def test_an_expired_unverified_request_does_not_block_a_new_one(hooks_client, registry):
    client = hooks_client
    merchant, terminals = registry
    file_request(client, merchant, terminals)
    Case.objects.update(code_expires_at=timezone.now() - timedelta(minutes=1))

    response = file_request(client, merchant, terminals)

    assert response.status_code == HTTPStatus.FOUND
    states = sorted(Case.objects.values_list("state", flat=True))
    assert states == [CaseState.EXPIRED, CaseState.PENDING_VERIFICATION]
    assert CaseTerminal.objects.filter(is_open=True).count() == len(terminals)


# --- verification --------------------------------------------------------------


@pytest.fixture
def filed(hooks_client, registry):
    client = hooks_client
    merchant, terminals = registry
    response = file_request(client, merchant, terminals)
    token = response.url.split("/")[2]
    return Case.objects.get(), token, code_from_mail(mail.outbox[-1])


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


def test_five_wrong_codes_lock_the_case_until_a_new_code(hooks_client, filed, settings):
    client = hooks_client
    case, token, code = filed
    url = reverse("cases:verify", args=[token])

    for _ in range(settings.CASE_VERIFICATION_MAX_ATTEMPTS):
        response = client.post(url, {"code": wrong(code)})
        assert response.status_code == HTTPStatus.OK

    # the right code no longer works
    response = client.post(url, {"code": code})
    assert response.status_code == HTTPStatus.OK
    assert "Too many wrong codes" in response.content.decode()
    case.refresh_from_db()
    assert case.state == CaseState.PENDING_VERIFICATION
    assert case.events.filter(type=CaseEvent.Type.CODE_FAILED).count() == 5

    # a new code (asked for after the resend interval) unlocks it; the old one stays dead
    Case.objects.filter(pk=case.pk).update(
        code_sent_at=timezone.now() - timedelta(minutes=2)
    )
    response = client.post(reverse("cases:resend", args=[token]))
    assert response.status_code == HTTPStatus.FOUND
    assert response.url == url
    new_code = code_from_mail(mail.outbox[-1])
    assert mail.outbox[-1].to == ["contact@onfile.example.com"]
    if new_code != code:
        assert client.post(url, {"code": code}).status_code == HTTPStatus.OK
    response = client.post(url, {"code": new_code})
    assert response.status_code == HTTPStatus.FOUND
    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTED


def test_resend_is_throttled(hooks_client, filed):
    client = hooks_client
    _case, token, _code = filed
    client.post(reverse("cases:resend", args=[token]))
    sent = len(mail.outbox)

    response = client.post(reverse("cases:resend", args=[token]), follow=True)

    assert "wait a minute" in response.content.decode()
    assert len(mail.outbox) == sent  # the first resend came too soon after filing


def test_an_expired_code_is_refused(hooks_client, filed):
    client = hooks_client
    case, token, code = filed
    Case.objects.filter(pk=case.pk).update(
        code_expires_at=timezone.now() - timedelta(seconds=1)
    )

    response = client.post(reverse("cases:verify", args=[token]), {"code": code})

    assert "expired" in response.content.decode()
    case.refresh_from_db()
    assert case.state == CaseState.PENDING_VERIFICATION


@pytest.mark.parametrize("path", ["", "verify/", "withdraw/"])
def test_a_wrong_token_is_404(hooks_client, filed, path):
    client = hooks_client
    response = client.get(f"/requests/{'x' * 32}/{path}")

    assert response.status_code == HTTPStatus.NOT_FOUND


# --- respond and withdraw --------------------------------------------------------


def test_the_merchant_answers_a_request_for_information(hooks_client, reviewer):
    client = hooks_client
    case = factories.CaseFactory(state=CaseState.INFO_REQUESTED)
    token = case.tracking_token

    response = client.post(
        reverse("cases:respond", args=[token]),
        {
            "message": "补充材料如下",
            "documents": [pdf("more.pdf")],
            "document_kind": "business_licence",
        },
    )

    assert response.status_code == HTTPStatus.FOUND
    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTED
    assert case.documents.get().kind == "business_licence"
    assert case.events.filter(type=CaseEvent.Type.MESSAGE, note="补充材料如下").exists()


def test_answering_is_refused_when_no_information_was_asked(hooks_client, media_root):
    client = hooks_client
    case = factories.CaseFactory(state=CaseState.IN_REVIEW)

    response = client.post(
        reverse("cases:respond", args=[case.tracking_token]),
        {"message": "hello", "documents": [pdf()]},
    )

    assert response.status_code == HTTPStatus.FOUND
    case.refresh_from_db()
    assert case.state == CaseState.IN_REVIEW
    assert stored_files(media_root) == []


def test_withdraw_before_approval(hooks_client):
    client = hooks_client
    case = factories.CaseFactory(state=CaseState.IN_REVIEW)

    confirm = client.get(reverse("cases:withdraw", args=[case.tracking_token]))
    response = client.post(reverse("cases:withdraw", args=[case.tracking_token]))

    assert confirm.status_code == HTTPStatus.OK
    assert response.status_code == HTTPStatus.FOUND
    case.refresh_from_db()
    assert case.state == CaseState.WITHDRAWN
    assert not case.case_terminals.filter(is_open=True).exists()
    assert Notification.objects.filter(case=case, kind="withdrawn").exists()


@pytest.mark.parametrize(
    "state", [CaseState.APPROVED, CaseState.EXECUTING, CaseState.COMPLETED]
)
def test_withdraw_is_refused_after_approval(hooks_client, state):
    client = hooks_client
    case = factories.CaseFactory(state=state)

    response = client.post(
        reverse("cases:withdraw", args=[case.tracking_token]), follow=True
    )

    assert "can no longer be withdrawn" in response.content.decode()
    case.refresh_from_db()
    assert case.state == state


def test_a_bound_result_links_to_a_prefilled_request_form(client, registry):
    merchant, terminals = registry

    status = client.get(
        reverse("terminals:status"),
        {
            "merchant_id": merchant.merchant_id,
            "serial_number": terminals[0].serial_number,
        },
    )
    link = re.search(r'href="(/requests/new/\?[^"]+)"', status.content.decode()).group(
        1
    )
    form = client.get(link.replace("&amp;", "&"))

    html = form.content.decode()
    assert f'value="{merchant.merchant_id}"' in html
    assert terminals[0].serial_number in html
