"""Chains: the serial numbers uploaded as CSV or XLSX (``serial_numbers_file``)."""

import io
import zipfile
from http import HTTPStatus

import pytest
from django.core import mail
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from openpyxl import Workbook

from cases import serial_upload
from cases.models import Case, CaseEvent
from tests import factories
from tests.cases.test_intake import (
    assert_nothing_stored,
    form_data,
    form_errors,
    stored_files,
)

pytestmark = pytest.mark.django_db

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@pytest.fixture
def chain():
    """A chain merchant with 300 bound terminals."""
    merchant = factories.MerchantFactory(contact_email="contact@onfile.example.com")
    terminals = [
        factories.BindingFactory(merchant=merchant).terminal for _ in range(300)
    ]
    return merchant, terminals


def csv_file(lines: list[str], *, encoding="utf-8", name="serials.csv"):
    content = "\r\n".join(lines).encode(encoding)
    return SimpleUploadedFile(name, content, content_type="text/csv")


def xlsx_bytes(rows: list[list]) -> bytes:
    workbook = Workbook()
    sheet = workbook.active
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def xlsx_file(rows: list[list], name="serials.xlsx"):
    return SimpleUploadedFile(name, xlsx_bytes(rows), content_type=XLSX)


def file_with(client, merchant, upload, **overrides):
    data = form_data(merchant, [], **{"serial_numbers": "", **overrides})
    data["serial_numbers_file"] = upload
    return client.post(reverse("cases:new"), data)


def file_errors(response) -> list[str]:
    return list(form_errors(response).get("serial_numbers_file", []))


# --- 300 terminals in one request ------------------------------------------------


def test_a_csv_of_300_serials_files_one_case_with_300_terminals(
    hooks_client, chain, media_root
):
    # given a CSV with a header row and a blank line
    merchant, terminals = chain
    lines = ["SN", *(t.serial_number for t in terminals[:150]), ""]
    lines += [t.serial_number.lower() for t in terminals[150:]]

    # when
    response = file_with(hooks_client, merchant, csv_file(lines))

    # then
    assert response.status_code == HTTPStatus.FOUND, form_errors(response)
    case = Case.objects.get()
    assert case.case_terminals.count() == 300
    filed = case.events.get(type=CaseEvent.Type.FILED)
    assert len(filed.payload["terminals"]) == 300
    # the spreadsheet is not kept: only the four PDF documents are stored
    assert case.documents.count() == 4
    assert len(stored_files(media_root)) == 4
    assert len(mail.outbox) == 1


def test_an_xlsx_of_300_serials_files_one_case_with_300_terminals(
    hooks_client, chain, media_root
):
    # given a workbook with a header and a second column the form ignores
    merchant, terminals = chain
    rows = [["序列号", "门店"]] + [[t.serial_number, "朝阳店"] for t in terminals]

    # when
    response = file_with(hooks_client, merchant, xlsx_file(rows))

    # then
    assert response.status_code == HTTPStatus.FOUND, form_errors(response)
    assert Case.objects.get().case_terminals.count() == 300
    assert len(stored_files(media_root)) == 4


def test_a_gb18030_csv_with_a_chinese_header_is_read(hooks_client, chain):
    # given a CSV saved by a Chinese spreadsheet program, semicolon-separated
    merchant, terminals = chain
    lines = ["序列号;门店", *(f"{t.serial_number};朝阳店" for t in terminals[:5])]

    # when
    response = file_with(hooks_client, merchant, csv_file(lines, encoding="gb18030"))

    # then
    assert response.status_code == HTTPStatus.FOUND, form_errors(response)
    assert Case.objects.get().case_terminals.count() == 5


# --- a per-line report; nothing stored ----------------------------------------------


def test_bad_lines_are_each_reported_and_nothing_is_stored(
    hooks_client, chain, media_root
):
    # given a file with an invalid serial on line 4 and a duplicate on line 9
    merchant, terminals = chain
    serials = [t.serial_number for t in terminals[:10]]
    lines = ["SN", *serials[:2], "bad serial!", *serials[2:6], serials[0]]

    # when
    response = file_with(hooks_client, merchant, csv_file(lines))

    # then
    assert response.status_code == HTTPStatus.OK
    errors = file_errors(response)
    assert errors == [
        "line 4: bad serial!: not a valid serial number",
        f"line 9: {serials[0]}: duplicate of line 2",
    ]
    assert "line 4: bad serial!" in response.content.decode()
    assert_nothing_stored(media_root)


def test_serials_not_bound_to_the_merchant_are_reported_by_line(
    hooks_client, chain, media_root
):
    # given a file whose line 7 is another merchant's terminal, line 9 unknown
    merchant, terminals = chain
    foreign = factories.BindingFactory().terminal.serial_number
    serials = [t.serial_number for t in terminals[:8]]
    lines = ["SN", *serials[:5], foreign, serials[5], "SN99999999"]

    # when
    response = file_with(hooks_client, merchant, xlsx_file([[x] for x in lines]))

    # then
    assert response.status_code == HTTPStatus.OK
    assert file_errors(response) == [
        f"line 7: {foreign}: not bound to your merchant number",
        "line 9: SN99999999: not bound to your merchant number",
    ]
    assert "serial_numbers" not in form_errors(response)
    assert_nothing_stored(media_root)


def test_a_serial_already_in_an_open_request_is_reported_by_line(
    hooks_client, chain, media_root
):
    # given terminal 3 is already in an open case
    merchant, terminals = chain
    factories.CaseFactory(merchant=merchant, terminals=[terminals[2]])
    lines = [t.serial_number for t in terminals[:4]]

    # when
    response = file_with(hooks_client, merchant, csv_file(lines))

    # then line 3 (no header here) is named
    assert response.status_code == HTTPStatus.OK
    assert file_errors(response) == [
        f"line 3: {terminals[2].serial_number}: already in an open request"
    ]
    assert Case.objects.count() == 1
    assert stored_files(media_root) == []


@pytest.mark.parametrize(
    ("upload", "message"),
    [
        (
            SimpleUploadedFile("a.xls", b"\xd0\xcf\x11\xe0" + b"\0" * 600),
            "Old .xls workbooks are not accepted",
        ),
        (SimpleUploadedFile("a.csv", b"\x00\x01\x02garbage"), "could not be read"),
        (
            SimpleUploadedFile("a.xlsx", b"PK\x03\x04 not really a zip"),
            "could not be read",
        ),
        (SimpleUploadedFile("a.csv", b"SN\r\n\r\n"), "no serial numbers"),
        (
            SimpleUploadedFile("a.csv", b"x" * (serial_upload.MAX_FILE_SIZE + 1)),
            "larger than",
        ),
    ],
)
def test_an_unreadable_file_is_refused_as_a_whole(
    hooks_client, chain, media_root, upload, message
):
    # given / when
    merchant, _terminals = chain
    response = file_with(hooks_client, merchant, upload)

    # then
    assert response.status_code == HTTPStatus.OK
    assert message in " ".join(file_errors(response))
    assert_nothing_stored(media_root)


def test_too_many_rows_are_refused(hooks_client, chain, media_root):
    # given one row more than allowed
    merchant, _terminals = chain
    lines = [f"SN{n:08d}" for n in range(serial_upload.MAX_ROWS + 1)]

    # when
    response = file_with(hooks_client, merchant, csv_file(lines))

    # then
    assert response.status_code == HTTPStatus.OK
    assert "more than 5000 rows" in " ".join(file_errors(response))
    assert_nothing_stored(media_root)


def test_a_zip_bomb_disguised_as_xlsx_is_refused_before_parsing(chain):
    # given a ZIP whose content expands far beyond the bound
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/worksheets/sheet1.xml", b"0" * (25 * 1024 * 1024))
    upload = SimpleUploadedFile("bomb.xlsx", buffer.getvalue())
    assert upload.size < serial_upload.MAX_FILE_SIZE

    # when / then
    with pytest.raises(serial_upload.ValidationError) as caught:
        serial_upload.serial_sheet_read(upload)
    assert caught.value.code == "unreadable"


def test_typing_and_uploading_at_once_is_refused(hooks_client, chain, media_root):
    # given
    merchant, terminals = chain

    # when
    response = file_with(
        hooks_client,
        merchant,
        csv_file([terminals[0].serial_number]),
        serial_numbers=terminals[1].serial_number,
    )

    # then
    assert response.status_code == HTTPStatus.OK
    assert "not both" in str(form_errors(response)["serial_numbers"])
    assert_nothing_stored(media_root)


def test_neither_typed_nor_uploaded_is_required(hooks_client, chain):
    # given / when
    merchant, _terminals = chain
    response = hooks_client.post(
        reverse("cases:new"), form_data(merchant, [], serial_numbers="")
    )

    # then
    assert "required" in str(form_errors(response)["serial_numbers"])


def test_many_bad_lines_are_summarised_after_the_first_fifty(chain):
    # given 80 invalid lines
    upload = SimpleUploadedFile("a.csv", "\n".join(["bad-1!"] * 80).encode())

    # when
    with pytest.raises(serial_upload.ValidationError) as caught:
        serial_upload.serial_sheet_read(upload)

    # then
    messages = caught.value.messages
    assert len(messages) == serial_upload.MAX_REPORTED_LINES + 1
    assert messages[-1] == "… and 30 more lines with errors."


def test_a_number_cell_is_read_as_its_digits():
    # given a serial of digits stored as a number by the spreadsheet
    upload = SimpleUploadedFile(
        "a.xlsx", xlsx_bytes([["SN"], [12345678], [87654321.0]])
    )

    # when
    sheet = serial_upload.serial_sheet_read(upload)

    # then
    assert sheet.serials == ["12345678", "87654321"]
    assert sheet.line_of == {"12345678": 2, "87654321": 3}


def test_the_per_line_report_is_in_the_merchants_language(hooks_client, chain):
    # given a file with a duplicate on line 3
    merchant, terminals = chain
    serial = terminals[0].serial_number
    data = form_data(merchant, [], serial_numbers="")
    data["serial_numbers_file"] = csv_file([serial, terminals[1].serial_number, serial])

    # when filed from a Chinese browser
    response = hooks_client.post(
        reverse("cases:new"), data, HTTP_ACCEPT_LANGUAGE="zh-CN"
    )

    # then
    assert f"第 3 行：{serial}：与第 1 行重复" in response.content.decode()
