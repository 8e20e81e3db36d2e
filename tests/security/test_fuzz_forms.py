"""Property-based attacks on the public request form and the respond form.

Arbitrary text (CJK, right-to-left, emoji, combining marks, NUL bytes), huge
fields and random file bytes and names: never a server error, and an invalid
submission stores no row (Case, Document, CaseEvent, Notification) and no file.
"""

import os
from http import HTTPStatus

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cases.models import (
    Case,
    CaseEvent,
    CaseState,
    Document,
    Notification,
)
from cases.tokens import token_for_salt
from tests import factories
from tests.cases.test_intake import form_data

pytestmark = pytest.mark.django_db

SPECIALS = [
    "",
    "\x00",
    "a\x00b",
    "统一社会信用代码",
    "张伟\u0301\u0302",
    "\u202eevil\u202c",
    "مرحبا",
    "🙂👨‍👩‍👧",
    "\ufeff",
    "e\u0301" * 3,
    "<script>alert(1)</script>",
    "' OR 1=1 --",
    "../../etc/passwd",
    '=HYPERLINK("http://x")',
    "\r\n\r\n",
]

texts = st.one_of(
    st.text(max_size=300),
    st.sampled_from(SPECIALS),
    st.builds(
        lambda piece, times: piece * times,
        st.sampled_from(["A", "统", "🙂", "\x00", "e\u0301"]),
        st.integers(min_value=1_000, max_value=20_000),
    ),
)
file_names = st.one_of(
    st.text(
        alphabet=st.characters(
            blacklist_characters='"\r\n\\', blacklist_categories=["Cs"]
        ),
        min_size=1,
        max_size=80,
    ).filter(lambda name: os.path.basename(name) not in ("", ".", "..")),
    st.sampled_from(
        ["营业执照.pdf", "a.pdf\x00.exe", "../../x.pdf", "图片.png", ".pdf"]
    ),
)
random_files = st.lists(
    st.builds(
        lambda name, data: SimpleUploadedFile(name, data),
        file_names,
        st.binary(max_size=4096),
    ),
    max_size=3,
)

TEXT_FIELDS = [
    "merchant_id", "uscc", "legal_rep_name", "applicant_name", "applicant_phone",
    "applicant_email", "serial_numbers", "reason", "reason_detail",
    "replacement_serial_number", "submission_key",
]  # fmt: skip
FILE_FIELDS = [
    "business_licence", "legal_rep_id", "device_evidence", "contract",
    "bank_statement", "replacement_documents", "authorisation_letter",
    "other_documents", "serial_numbers_file",
]  # fmt: skip
FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def stored(media_root) -> tuple:
    return (
        Case.objects.count(),
        Document.objects.count(),
        CaseEvent.objects.count(),
        Notification.objects.count(),
        sum(1 for p in media_root.rglob("*") if p.is_file()),
    )


@pytest.fixture
def registry():
    merchant = factories.MerchantFactory()
    return merchant, [factories.BindingFactory(merchant=merchant).terminal]


@FUZZ
@given(
    text_overrides=st.dictionaries(st.sampled_from(TEXT_FIELDS), texts, max_size=4),
    file_overrides=st.dictionaries(
        st.sampled_from(FILE_FIELDS), random_files, max_size=3
    ),
    drop_declaration=st.booleans(),
)
def test_the_request_form_survives_anything(
    registry, media_root, text_overrides, file_overrides, drop_declaration
):
    # given: a valid filing with some fields replaced by hostile values
    merchant, terminals = registry
    data = form_data(merchant, terminals, **text_overrides, **file_overrides)
    if drop_declaration:
        data.pop("declaration")
    before = stored(media_root)

    # when
    with override_settings(THROTTLE_ENABLED=False):
        response = Client().post("/requests/new/", data)

    # then
    assert response.status_code in (
        HTTPStatus.OK,
        HTTPStatus.FOUND,
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    )
    if (
        response.status_code != HTTPStatus.FOUND
        or "/verify/" not in response["Location"]
    ):
        assert stored(media_root) == before
    if drop_declaration:
        assert response.status_code == HTTPStatus.OK


@FUZZ
@given(
    fields=st.dictionaries(st.sampled_from([*TEXT_FIELDS, "declaration"]), texts),
    files=st.dictionaries(st.sampled_from(FILE_FIELDS), random_files, max_size=4),
)
def test_a_form_of_pure_garbage_stores_nothing(media_root, fields, files):
    # given: no registry at all, so nothing can be valid
    before = stored(media_root)

    # when
    with override_settings(THROTTLE_ENABLED=False):
        response = Client().post("/requests/new/", {**fields, **files})

    # then
    assert response.status_code in (HTTPStatus.OK, HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
    assert stored(media_root) == before


@pytest.fixture
def waiting_case():
    case = factories.CaseFactory(state=CaseState.INFO_REQUESTED)
    return case, f"/requests/{token_for_salt(case.token_salt)}/respond/"


@FUZZ
@given(
    message=texts, files=random_files, extra=st.dictionaries(texts, texts, max_size=3)
)
def test_the_respond_form_survives_anything(
    waiting_case, media_root, message, files, extra
):
    # given
    case, url = waiting_case
    Case.objects.filter(pk=case.pk).update(state=CaseState.INFO_REQUESTED)
    before = stored(media_root)

    # when
    with override_settings(THROTTLE_ENABLED=False):
        response = Client().post(url, {**extra, "message": message, "documents": files})

    # then: a malformed upload may be a 400, never a 500
    assert response.status_code in (
        HTTPStatus.OK,
        HTTPStatus.FOUND,
        HTTPStatus.BAD_REQUEST,
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    )
    case.refresh_from_db()
    if case.state == CaseState.INFO_REQUESTED:
        # refused: not a single row or file
        assert stored(media_root) == before
    else:
        # accepted: the answer is recorded, every stored file has its row
        assert case.state == CaseState.SUBMITTED
        documents = Document.objects.filter(case=case).count()
        files_on_disk = sum(1 for p in media_root.rglob("*") if p.is_file())
        assert files_on_disk == documents
