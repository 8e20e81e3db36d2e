"""Retention, legal holds, the purge report and the regulator's binding report."""

import csv
import io
import tracemalloc
from datetime import timedelta
from http import HTTPStatus

import pytest
from django.core import checks
from django.core.exceptions import PermissionDenied
from django.core.files.base import ContentFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from cases.models import CaseEvent, Document, DocumentPreview, LegalHold, ReportExport
from cases.services import housekeeping, previews, retention
from config.security import check_records_retention
from terminals import identifiers
from terminals.models import Binding, Merchant, Terminal
from tests import factories, filebuilders


def backdate(obj, **fields) -> None:
    type(obj).objects.filter(pk=obj.pk).update(**fields)
    obj.refresh_from_db()


def closed_case(days_ago: int, **kwargs):
    case = factories.CaseFactory(state="completed", **kwargs)
    backdate(case, closed_at=timezone.now() - timedelta(days=days_ago))
    return case


def csv_rows(response) -> list[list[str]]:
    body = b"".join(response.streaming_content).decode("utf-8")
    assert body.startswith("\ufeff")
    return list(csv.reader(io.StringIO(body[1:])))


# --- retention ------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_transaction_export_is_kept_five_years_while_documents_go(settings):
    # given: a case closed a year ago with a licence and its transaction export
    settings.CASE_DOCUMENT_RETENTION = timedelta(days=180)
    case = closed_case(days_ago=365)
    licence = factories.DocumentFactory(case=case)
    export = factories.DocumentFactory(
        case=case, kind=Document.Kind.DATA_EXPORT, original_name="transactions.csv"
    )
    old_case = closed_case(days_ago=5 * 366)
    old_export = factories.DocumentFactory(
        case=old_case, kind=Document.Kind.DATA_EXPORT
    )

    # when
    purged = housekeeping.documents_purge_expired()

    # then
    assert purged == 2
    for doc, gone in ((licence, True), (export, False), (old_export, True)):
        doc.refresh_from_db()
        assert (doc.purged_at is not None) is gone, doc


@pytest.mark.django_db
@pytest.mark.parametrize("on", ["case", "merchant"])
def test_a_legal_hold_stops_the_purge_until_released(settings, operations, on):
    # given: a closed case past its period, its PDF rendered for preview
    settings.CASE_DOCUMENT_RETENTION = timedelta(days=180)
    case = closed_case(days_ago=400)
    data = filebuilders.valid_pdf_bytes(pages=2)
    document = factories.DocumentFactory(case=case)
    document.file.save("licence.pdf", ContentFile(data), save=True)
    previews.document_preview_render(document_id=document.pk)
    page = DocumentPreview.objects.get(document=document).pages[0]
    storage = document.file.storage
    target = {"case_id": case.pk} if on == "case" else {"merchant_id": case.merchant_id}
    hold = retention.legal_hold_place(
        actor=operations, reason="court order 7", **target
    )

    # when
    held_run = housekeeping.documents_purge_expired()
    report_held = list(retention.purge_report_rows())
    retention.legal_hold_release(hold_id=hold.pk, actor=operations)
    released_run = housekeeping.documents_purge_expired()

    # then
    assert held_run == 0
    assert [r[0] for r in report_held] == ["held"]
    assert report_held[0][7] == "court order 7"
    assert released_run == 1
    document.refresh_from_db()
    assert document.purged_at is not None
    assert not storage.exists(page)
    events = CaseEvent.objects.filter(case=case, type=CaseEvent.Type.LEGAL_HOLD)
    assert [(e.payload["action"], e.actor) for e in events] == [
        ("placed", operations),
        ("released", operations),
    ]


@pytest.mark.django_db
def test_a_hold_placed_between_selection_and_purge_still_wins(settings, operations):
    # given: the case was selected, then a hold arrives before its row lock
    settings.CASE_DOCUMENT_RETENTION = timedelta(days=180)
    case = closed_case(days_ago=400)
    document = factories.DocumentFactory(case=case)
    retention.legal_hold_place(actor=operations, reason="audit", case_id=case.pk)

    # when
    purged = housekeeping.case_documents_purge(case_id=case.pk, now=timezone.now())

    # then
    assert purged == 0
    document.refresh_from_db()
    assert document.purged_at is None


@pytest.mark.django_db
@pytest.mark.parametrize("who", ["reviewer", "approver", "auditor"])
def test_only_operations_place_or_release_holds(request, who):
    # given
    case = closed_case(days_ago=1)

    # when / then
    with pytest.raises(PermissionDenied):
        retention.legal_hold_place(
            actor=request.getfixturevalue(who), reason="x", case_id=case.pk
        )
    assert not LegalHold.objects.exists()


@pytest.mark.parametrize(("years", "errors"), [(5, []), (10, []), (4, ["cases.E101"])])
def test_the_system_check_refuses_keeping_records_under_five_years(
    settings, years, errors
):
    # given
    settings.RECORDS_RETENTION_YEARS = years

    # when
    found = check_records_retention(None)

    # then
    assert [e.id for e in found] == errors
    assert all(e.level == checks.ERROR for e in found)


# --- the admin, as each role ------------------------------------------------------------


@pytest.mark.django_db
def test_operations_place_a_hold_in_the_admin_and_release_it(client, operations):
    # given
    case = closed_case(days_ago=1)
    client.force_login(operations)

    # when
    placed = client.post(
        reverse("admin:cases_legalhold_add"),
        {"case": case.pk, "merchant": "", "reason": "police request 12"},
    )
    hold = LegalHold.objects.get()
    released = client.post(
        reverse("admin:cases_legalhold_changelist"),
        {"action": "release", "_selected_action": [hold.pk]},
    )

    # then
    assert placed.status_code == HTTPStatus.FOUND
    assert released.status_code == HTTPStatus.FOUND
    hold.refresh_from_db()
    assert (hold.placed_by, hold.released_by) == (operations, operations)
    assert hold.released_at is not None
    assert CaseEvent.objects.filter(case=case, type="legal_hold").count() == 2


@pytest.mark.django_db
def test_a_hold_on_both_or_neither_is_refused_in_the_admin(client, operations):
    # given
    case = closed_case(days_ago=1)
    client.force_login(operations)

    # when
    both = client.post(
        reverse("admin:cases_legalhold_add"),
        {"case": case.pk, "merchant": case.merchant_id, "reason": "x"},
    )
    neither = client.post(
        reverse("admin:cases_legalhold_add"),
        {"case": "", "merchant": "", "reason": "x"},
    )

    # then
    assert both.status_code == neither.status_code == HTTPStatus.OK  # form again
    assert not LegalHold.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("who", ["reviewer", "approver", "auditor"])
def test_other_roles_see_holds_but_cannot_place_one_even_by_typed_url(
    client, request, who
):
    # given
    client.force_login(request.getfixturevalue(who))

    # when
    listing = client.get(reverse("admin:cases_legalhold_changelist"))
    add = client.get(reverse("admin:cases_legalhold_add"))

    # then
    assert listing.status_code == HTTPStatus.OK
    assert add.status_code == HTTPStatus.FORBIDDEN


@pytest.mark.django_db
def test_auditors_download_the_purge_report(client, auditor, operations, settings):
    # given: one case purged, another held past its period
    settings.CASE_DOCUMENT_RETENTION = timedelta(days=180)
    purged_case = closed_case(days_ago=400)
    factories.DocumentFactory(case=purged_case, original_name="gone.pdf")
    held_case = closed_case(days_ago=400)
    factories.DocumentFactory(case=held_case, original_name="kept.pdf")
    retention.legal_hold_place(
        actor=operations, reason="litigation", merchant_id=held_case.merchant_id
    )
    housekeeping.documents_purge_expired()
    client.force_login(auditor)

    # when
    response = client.get(reverse("admin:cases_purge_report"))

    # then
    assert response.status_code == HTTPStatus.OK
    header, *rows = csv_rows(response)
    assert header[0] == "status"
    assert [(r[0], r[1], r[4], r[7]) for r in rows] == [
        ("purged", purged_case.reference, "gone.pdf", ""),
        ("held by a legal hold", held_case.reference, "kept.pdf", "litigation"),
    ]
    assert rows[0][6]  # purged at
    assert not ReportExport.objects.exists()  # an auditor's reading changes nothing


# --- the regulator's report --------------------------------------------------------------


def bind(merchant, *, started, ended=None, reason=""):
    return factories.BindingFactory(
        merchant=merchant, started_at=started, ended_at=ended, ended_reason=reason
    )


@pytest.mark.django_db
def test_operations_download_the_binding_changes_of_a_period(client, operations):
    # given: an enterprise and an individual without USCC; changes in and out of May
    may = timezone.now().replace(year=2026, month=5, day=10, hour=10)
    enterprise = factories.MerchantFactory(address="上海市浦东新区世纪大道100号")
    individual = factories.MerchantFactory(
        uscc=None, kind=Merchant.Kind.MICRO, address="杭州市西湖区文三路1号"
    )
    bound = bind(enterprise, started=may)
    unbound = bind(
        individual,
        started=may - timedelta(days=400),
        ended=may + timedelta(days=3),
        reason="UB-2026-000001",
    )
    bind(enterprise, started=may - timedelta(days=60))  # April: not in the report
    client.force_login(operations)

    # when
    form = client.get(reverse("admin:cases_binding_report"))
    response = client.get(
        reverse("admin:cases_binding_report"),
        {"start": "2026-05-01", "end": "2026-05-31"},
    )

    # then
    assert form.status_code == HTTPStatus.OK
    assert 'id="binding-report-form"' in form.content.decode()
    assert response.status_code == HTTPStatus.OK
    assert response.streaming
    header, *rows = csv_rows(response)
    assert header == [
        "serial number",
        "merchant number",
        "USCC or ID number",
        "settlement account",
        "business address",
        "date",
        "change",
        "ended because",
    ]
    assert [(r[0], r[1], r[2], r[3], r[4], r[6], r[7]) for r in rows] == [
        (
            bound.terminal.serial_number,
            enterprise.merchant_id,
            enterprise.uscc,
            enterprise.settlement_card_number,
            "上海市浦东新区世纪大道100号",
            "bound",
            "",
        ),
        (
            unbound.terminal.serial_number,
            individual.merchant_id,
            individual.legal_rep_id_number,
            individual.settlement_card_number,
            "杭州市西湖区文三路1号",
            "unbound",
            "UB-2026-000001",
        ),
    ]
    assert rows[0][5].startswith("2026-05-10")
    export = ReportExport.objects.get()
    assert (export.kind, export.actor) == ("binding_changes", operations)
    assert (str(export.period_start), str(export.period_end)) == (
        "2026-05-01",
        "2026-05-31",
    )


@pytest.mark.django_db
@pytest.mark.parametrize("who", ["reviewer", "approver", "auditor"])
def test_no_other_role_gets_the_binding_report_even_by_typed_url(client, request, who):
    # given
    client.force_login(request.getfixturevalue(who))

    # when
    response = client.get(
        reverse("admin:cases_binding_report"),
        {"start": "2026-05-01", "end": "2026-05-31"},
    )

    # then
    assert response.status_code == HTTPStatus.FORBIDDEN
    assert not ReportExport.objects.exists()


def many_bindings(count: int, *, offset: int, started) -> None:
    merchant = factories.MerchantFactory()
    terminals = Terminal.objects.bulk_create(
        Terminal(
            serial_number=identifiers.make_serial_number(offset + n),
            terminal_id=identifiers.make_terminal_id(offset + n),
            kind=Terminal.Kind.SMART,
            status=Terminal.Status.ACTIVE,
        )
        for n in range(count)
    )
    Binding.objects.bulk_create(
        Binding(terminal=t, merchant=merchant, started_at=started) for t in terminals
    )


def report_cost(client, *, start: str, end: str) -> tuple[int, int, int]:
    """Queries, rows and peak traced memory while streaming the report."""
    with CaptureQueriesContext(connection) as queries:
        response = client.get(
            reverse("admin:cases_binding_report"), {"start": start, "end": end}
        )
        tracemalloc.start()
        rows = 0
        for _chunk in response.streaming_content:
            rows += 1
        _size, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return len(queries), rows, peak


@pytest.mark.django_db
def test_the_binding_report_streams_with_constant_queries_and_memory(
    client, operations, settings
):
    # given: 2000 changes in one month, three times as many in another (both
    # above the chunk of rows fetched at a time)
    settings.DEBUG = False
    jan = timezone.now().replace(year=2025, month=1, day=15)
    mar = timezone.now().replace(year=2025, month=3, day=15)
    many_bindings(2000, offset=100_000, started=jan)
    many_bindings(6000, offset=200_000, started=mar)
    client.force_login(operations)

    # when
    small = report_cost(client, start="2025-01-01", end="2025-01-31")
    large = report_cost(client, start="2025-03-01", end="2025-03-31")

    # then
    assert (small[1], large[1]) == (2002, 6002)  # BOM, header, rows
    assert small[0] == large[0]
    # memory is bounded by the chunk, not by the rows (3x the rows here)
    assert large[2] < small[2] * 1.3


@pytest.mark.django_db
def test_the_purge_report_runs_the_same_queries_for_2_or_6_held_cases(
    operations, settings
):
    # given
    settings.CASE_DOCUMENT_RETENTION = timedelta(days=180)

    def hold_cases(count: int) -> int:
        for _ in range(count):
            case = closed_case(days_ago=400)
            factories.DocumentFactory(case=case)
            retention.legal_hold_place(actor=operations, reason="r", case_id=case.pk)
        with CaptureQueriesContext(connection) as queries:
            rows = list(retention.purge_report_rows())
        assert len(rows) == LegalHold.objects.count()
        return len(queries)

    # when
    few = hold_cases(2)
    more = hold_cases(4)

    # then
    assert few == more


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("who", "status"),
    [
        ("operations", HTTPStatus.OK),
        ("auditor", HTTPStatus.OK),
        ("reviewer", HTTPStatus.FORBIDDEN),
        ("approver", HTTPStatus.FORBIDDEN),
    ],
)
def test_who_sees_the_record_of_report_downloads(client, request, who, status):
    # given
    client.force_login(request.getfixturevalue(who))

    # when
    response = client.get(reverse("admin:cases_reportexport_changelist"))

    # then
    assert response.status_code == status


@pytest.mark.django_db
def test_staff_without_a_role_get_no_purge_report_by_typed_url(client):
    # given
    client.force_login(factories.UserFactory(username="nobody", is_staff=True))

    # when
    response = client.get(reverse("admin:cases_purge_report"))

    # then
    assert response.status_code == HTTPStatus.FORBIDDEN
    assert not ReportExport.objects.exists()


@pytest.mark.django_db
def test_the_holds_list_filters_active_and_released(client, auditor, operations):
    # given
    active = retention.legal_hold_place(
        actor=operations, reason="active one", case_id=closed_case(days_ago=1).pk
    )
    released = retention.legal_hold_place(
        actor=operations, reason="released one", case_id=closed_case(days_ago=1).pk
    )
    retention.legal_hold_release(hold_id=released.pk, actor=operations)
    client.force_login(auditor)
    url = reverse("admin:cases_legalhold_changelist")

    # when
    only_active = client.get(url, {"released_at__isempty": "1"})

    # then
    assert only_active.status_code == HTTPStatus.OK
    body = only_active.content.decode()
    assert active.reason in body
    assert released.reason not in body
