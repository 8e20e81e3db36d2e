"""The CSV export of the case queue, personal data masked."""

import csv
from collections.abc import Iterator

from django.http import StreamingHttpResponse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from cases.admin.common import datetime_short
from terminals.masking import mask_email, mask_phone


class _Echo:
    def write(self, value: str) -> str:
        return value


def _csv_safe(value) -> str:
    """Keep spreadsheet programs from running a cell as a formula."""
    text = "" if value is None else str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


CSV_HEADER = [
    _("reference"),
    _("state"),
    _("reason"),
    _("merchant number"),
    _("merchant"),
    _("applicant"),
    _("applicant mobile"),
    _("applicant e-mail"),
    _("terminals"),
    _("close the merchant account"),
    _("replacement device"),
    _("assigned to"),
    _("submitted at"),
    _("review due"),
    _("closed at"),
]


def _csv_rows(queryset) -> Iterator[list[str]]:
    yield [str(h) for h in CSV_HEADER]
    queryset = queryset.select_related(
        "merchant", "assigned_to", "replacement_terminal"
    ).prefetch_related("case_terminals__terminal")
    for case in queryset.iterator(chunk_size=500):
        serials = " ".join(
            sorted(link.terminal.serial_number for link in case.case_terminals.all())
        )
        yield [
            _csv_safe(v)
            for v in (
                case.reference,
                case.get_state_display(),
                case.get_reason_display(),
                case.merchant.merchant_id,
                case.merchant.name,
                case.applicant_name,
                mask_phone(case.applicant_phone),
                mask_email(case.applicant_email),
                serials,
                _("yes") if case.close_account else _("no"),
                case.replacement_terminal.serial_number
                if case.replacement_terminal
                else "",
                case.assigned_to.get_username() if case.assigned_to else "",
                datetime_short(case.submitted_at),
                datetime_short(case.review_due_at),
                datetime_short(case.closed_at),
            )
        ]


def case_csv_response(queryset) -> StreamingHttpResponse:
    """Stream ``queryset`` as CSV with personal data masked.

    Starts with a UTF-8 byte order mark so that Excel reads Chinese names
    correctly.
    """
    writer = csv.writer(_Echo())

    def stream() -> Iterator[str]:
        yield "\ufeff"
        for row in _csv_rows(queryset):
            yield writer.writerow(row)

    filename = f"cases-{timezone.localtime():%Y%m%d-%H%M}.csv"
    response = StreamingHttpResponse(stream(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
