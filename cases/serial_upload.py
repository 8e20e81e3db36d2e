"""Read a chain's serial numbers from an uploaded CSV or XLSX file.

One serial number per row, in the first column; a header row is allowed (the
first non-empty row, when its first cell holds no digit: ``SN``, ``Serial
number``, ``序列号``). Blank rows are skipped. Every other row must hold a
valid serial number that appears once; otherwise the file is refused with a
report naming each bad line, so the merchant can fix them all at once.

The file is recognised by its bytes (an XLSX is a ZIP archive), never by its
name. Both formats are bounded before they are parsed: the upload's size, an
XLSX's uncompressed size and its number of parts, and the number of rows read.
openpyxl reads in read-only (streaming) mode, with defusedxml installed so
its XML parsing refuses entity expansion.

The upload is never stored: its content becomes the case's terminal list (the
``CaseTerminal`` rows and the ``filed`` event), which is the record; the file
itself may carry other sheets, formulas and personal data that nobody
reviews, in a format the document storage does not accept.
"""

import csv
import io
import logging
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.utils.translation import gettext_lazy as _

from terminals import validators

logger = logging.getLogger(__name__)

# Rows read at most (a header and blank rows included); a chain's largest
# request stays well within it, and a request this size is one SELECT.
MAX_ROWS = 5_000
# Bytes of the uploaded file: 5,000 serials of 32 characters are ~170 KB as
# CSV and less as XLSX; the rest is room for other columns.
MAX_FILE_SIZE = 2 * 1024 * 1024
# An XLSX is a ZIP: bound what it expands to, and its parts (a zip bomb).
MAX_XLSX_UNCOMPRESSED = 20 * 1024 * 1024
MAX_XLSX_PARTS = 200
# Bad lines listed in the form error; the rest are counted.
MAX_REPORTED_LINES = 50

CSV_SAMPLE = 4096
_ZIP_SIGNATURE = b"PK\x03\x04"
_OLE_SIGNATURE = b"\xd0\xcf\x11\xe0"  # the old binary .xls

MESSAGES = {
    "too_large": _("The serial number file is larger than %(limit)s KB."),
    "too_many_rows": _(
        "The serial number file has more than %(limit)d rows; split the request."
    ),
    "empty": _("The file has no serial numbers in its first column."),
    "xls": _("Old .xls workbooks are not accepted; save the file as XLSX or CSV."),
    "unreadable": _(
        "The file could not be read as CSV or XLSX. Save it as XLSX, or as CSV in UTF-8."
    ),
    "line": _("line %(line)d: %(serial)s: %(reason)s"),
    "more": _("… and %(count)d more lines with errors."),
    "invalid": _("not a valid serial number"),
    "duplicate": _("duplicate of line %(line)d"),
    "not_bound": _("not bound to your merchant number"),
    "busy": _("already in an open request"),
}


@dataclass
class SerialSheet:
    """The serial numbers of a file, in file order, with the line of each."""

    serials: list[str] = field(default_factory=list)
    line_of: dict[str, int] = field(default_factory=dict)


def serial_sheet_read(uploaded: UploadedFile) -> SerialSheet:
    """Read and check the serial numbers of ``uploaded``.

    Raise ValidationError with one message per bad line (line number and
    reason) or one message about the whole file; nothing is kept either way.
    """
    if uploaded.size is not None and uploaded.size > MAX_FILE_SIZE:
        raise _refuse("too_large", limit=MAX_FILE_SIZE // 1024)
    uploaded.seek(0)
    content = uploaded.read(MAX_FILE_SIZE + 1)
    if len(content) > MAX_FILE_SIZE:
        raise _refuse("too_large", limit=MAX_FILE_SIZE // 1024)
    if content.startswith(_OLE_SIGNATURE):
        raise _refuse("xls")
    rows = _xlsx_rows(content) if content.startswith(_ZIP_SIGNATURE) else None
    if rows is None:
        rows = _csv_rows(content)
    return _sheet(rows)


def line_errors(problems: dict[str, str], *, sheet: SerialSheet) -> list[str]:
    """Return per-line messages for ``problems`` (serial → MESSAGES key)."""
    found = sorted(
        (sheet.line_of[serial], serial, reason)
        for serial, reason in problems.items()
        if serial in sheet.line_of
    )
    return _report([(line, serial, MESSAGES[reason]) for line, serial, reason in found])


# ------------------------------------------------------------------------------
# Formats
# ------------------------------------------------------------------------------


def _xlsx_rows(content: bytes) -> Iterator[tuple[int, str]]:
    """Yield (row number, first cell as text) of the workbook's first sheet."""
    # openpyxl is loaded only when a workbook is uploaded, not by every process.
    from openpyxl import load_workbook

    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            parts = archive.infolist()
            if len(parts) > MAX_XLSX_PARTS or (
                sum(part.file_size for part in parts) > MAX_XLSX_UNCOMPRESSED
            ):
                raise _refuse("unreadable")
        with warnings.catch_warnings():
            # "Workbook contains no default style" and the like: not the merchant's concern.
            warnings.simplefilter("ignore")
            workbook = load_workbook(
                io.BytesIO(content), read_only=True, data_only=True
            )
    except ValidationError:
        raise
    except Exception as exc:  # openpyxl raises many kinds on a damaged file
        logger.info("unreadable serial number workbook: %r", exc)
        raise _refuse("unreadable") from None
    return _workbook_rows(workbook)


def _workbook_rows(workbook) -> Iterator[tuple[int, str]]:
    try:
        sheet = workbook.worksheets[0]
        for number, row in enumerate(
            sheet.iter_rows(min_col=1, max_col=1, values_only=True), start=1
        ):
            if number > MAX_ROWS:
                raise _refuse("too_many_rows", limit=MAX_ROWS)
            yield number, _cell_text(row[0] if row else None)
    except ValidationError:
        raise
    except Exception as exc:
        logger.info("unreadable serial number sheet: %r", exc)
        raise _refuse("unreadable") from None
    finally:
        workbook.close()


def _cell_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        # A serial of digits only, stored by the spreadsheet as a number.
        return str(int(value))
    return str(value)


def _csv_rows(content: bytes) -> Iterator[tuple[int, str]]:
    """Yield (row number, first field) of a CSV in UTF-8 (with or without BOM) or GB18030."""
    if b"\x00" in content:
        raise _refuse("unreadable")
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = content.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise _refuse("unreadable")
    try:
        dialect = csv.Sniffer().sniff(text[:CSV_SAMPLE], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    return _reader_rows(csv.reader(io.StringIO(text, newline=""), dialect))


def _reader_rows(reader) -> Iterator[tuple[int, str]]:
    try:
        for number, row in enumerate(reader, start=1):
            if number > MAX_ROWS:
                raise _refuse("too_many_rows", limit=MAX_ROWS)
            yield number, row[0] if row else ""
    except csv.Error:
        raise _refuse("unreadable") from None


# ------------------------------------------------------------------------------
# Rows to serial numbers
# ------------------------------------------------------------------------------


def _sheet(rows: Iterator[tuple[int, str]]) -> SerialSheet:
    sheet = SerialSheet()
    bad: list[tuple[int, str, str]] = []
    first = True
    for number, raw in rows:
        serial = validators.normalise_serial_number(raw)
        if not serial:
            continue
        if first:
            first = False
            if not any(ch.isdigit() for ch in serial):
                continue  # a header row: "SN", "Serial number", "序列号"
        try:
            validators.validate_serial_number(serial)
        except ValidationError:
            bad.append((number, raw.strip(), MESSAGES["invalid"]))
            continue
        if serial in sheet.line_of:
            bad.append(
                (
                    number,
                    serial,
                    MESSAGES["duplicate"] % {"line": sheet.line_of[serial]},
                )
            )
            continue
        sheet.line_of[serial] = number
        sheet.serials.append(serial)
    if bad:
        raise ValidationError(_report(bad))
    if not sheet.serials:
        raise _refuse("empty")
    return sheet


def _report(bad: list[tuple[int, str, str]]) -> list[str]:
    messages = [
        str(MESSAGES["line"] % {"line": line, "serial": serial[:40], "reason": reason})
        for line, serial, reason in bad[:MAX_REPORTED_LINES]
    ]
    if len(bad) > MAX_REPORTED_LINES:
        messages.append(
            str(MESSAGES["more"] % {"count": len(bad) - MAX_REPORTED_LINES})
        )
    return messages


def _refuse(code: str, **params) -> ValidationError:
    message = MESSAGES[code]
    return ValidationError(message % params if params else message, code=code)
