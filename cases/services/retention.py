"""Records retention: legal holds, the purge report and the regulator's report.

A legal hold on a merchant or a case stops every purge of what belongs to it
(documents, their previews, transaction exports) while it is active. Placing
and releasing a hold needs ``cases.place_legalhold`` (granted to Operations);
each is written to the audit trail of the cases it covers.
"""

from collections.abc import Iterator
from datetime import date, datetime, time

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext

from cases import events, roles
from cases.models import (
    CLOSED_STATES,
    Case,
    Document,
    LegalHold,
    ReportExport,
)
from terminals.models import Binding, Merchant

# Rows fetched from the database per round trip while streaming a report.
REPORT_CHUNK_SIZE = 1000


def records_retention_cutoff(*, now: datetime) -> datetime:
    """The moment before which transaction exports may go (RECORDS_RETENTION_YEARS)."""
    years = settings.RECORDS_RETENTION_YEARS
    try:
        return now.replace(year=now.year - years)
    except ValueError:  # 29 February
        return now.replace(year=now.year - years, day=28)


def cases_on_hold() -> QuerySet:
    """Cases under an active legal hold, their own or their merchant's."""
    active = LegalHold.objects.active()
    return Case.objects.filter(
        Q(pk__in=active.filter(case__isnull=False).values("case_id"))
        | Q(merchant_id__in=active.filter(merchant__isnull=False).values("merchant_id"))
    )


def case_is_on_hold(*, case: Case) -> bool:
    return (
        LegalHold.objects.active()
        .filter(Q(case_id=case.pk) | Q(merchant_id=case.merchant_id))
        .exists()
    )


def _check_may_hold(actor) -> None:
    if roles.is_auditor(actor) or not actor.has_perm("cases.place_legalhold"):
        raise PermissionDenied(gettext("You may not place or release legal holds."))


def _covered_cases(hold: LegalHold) -> list[Case]:
    if hold.case_id:
        return [hold.case]
    return list(Case.objects.filter(merchant_id=hold.merchant_id).order_by("pk"))


@transaction.atomic
def legal_hold_place(
    *,
    actor,
    reason: str,
    case_id: int | None = None,
    merchant_id: int | None = None,
) -> LegalHold:
    """Place a hold on one case or one merchant; audited on every case it covers."""
    _check_may_hold(actor)
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError(gettext("Give the reason for the hold."))
    if (case_id is None) == (merchant_id is None):
        raise ValidationError(gettext("A hold is on a merchant or on a case."))
    hold = LegalHold(
        case=Case.objects.get(pk=case_id) if case_id else None,
        merchant=Merchant.objects.get(pk=merchant_id) if merchant_id else None,
        reason=reason,
        placed_by=actor,
        placed_at=timezone.now(),
    )
    hold.full_clean()
    hold.save()
    for case in _covered_cases(hold):
        events.legal_hold_event(case=case, actor=actor, hold=hold, placed=True)
    return hold


@transaction.atomic
def legal_hold_release(*, hold_id: int, actor) -> LegalHold:
    """Release an active hold; purges resume at their next run. Audited."""
    _check_may_hold(actor)
    hold = LegalHold.objects.select_for_update().get(pk=hold_id)
    if hold.released_at is not None:
        raise ValidationError(gettext("This hold is already released."))
    hold.released_at = timezone.now()
    hold.released_by = actor
    hold.save(update_fields=["released_at", "released_by"])
    for case in _covered_cases(hold):
        events.legal_hold_event(case=case, actor=actor, hold=hold, placed=False)
    return hold


# --- the purge report ----------------------------------------------------------------


def purge_report_rows(*, now: datetime | None = None) -> Iterator[list]:
    """What was purged when, and what a hold keeps past its period.

    Yields ``[status, case reference, merchant number, kind, name, closed at,
    purged at, holds]``: status is "purged" or "held".
    """
    now = now or timezone.now()
    purged = (
        Document.objects.filter(purged_at__isnull=False)
        .select_related("case__merchant")
        .order_by("-purged_at", "pk")
    )
    for doc in purged.iterator(chunk_size=REPORT_CHUNK_SIZE):
        yield [
            "purged",
            doc.case.reference,
            doc.case.merchant.merchant_id,
            doc.get_kind_display(),
            doc.original_name,
            doc.case.closed_at,
            doc.purged_at,
            "",
        ]
    reasons_by_case: dict[int, list[str]] = {}
    reasons_by_merchant: dict[int, list[str]] = {}
    for hold in LegalHold.objects.active().order_by("placed_at", "pk"):
        if hold.case_id:
            reasons_by_case.setdefault(hold.case_id, []).append(hold.reason)
        else:
            reasons_by_merchant.setdefault(hold.merchant_id, []).append(hold.reason)
    held = (
        Document.objects.filter(
            purged_at__isnull=True,
            case__in=cases_on_hold(),
            case__state__in=CLOSED_STATES,
        )
        .filter(
            Q(
                case__closed_at__lt=now - settings.CASE_DOCUMENT_RETENTION,
                kind__in=[k for k in Document.Kind.values if k != "data_export"],
            )
            | Q(
                case__closed_at__lt=records_retention_cutoff(now=now),
                kind=Document.Kind.DATA_EXPORT,
            )
        )
        .select_related("case__merchant")
        .order_by("case_id", "pk")
    )
    for doc in held.iterator(chunk_size=REPORT_CHUNK_SIZE):
        reasons = reasons_by_case.get(doc.case_id, []) + reasons_by_merchant.get(
            doc.case.merchant_id, []
        )
        yield [
            "held",
            doc.case.reference,
            doc.case.merchant.merchant_id,
            doc.get_kind_display(),
            doc.original_name,
            doc.case.closed_at,
            None,
            "; ".join(reasons),
        ]


# --- the regulator's report of binding changes (银发〔2021〕259号) ----------------------


def report_export_record(
    *,
    kind: str,
    actor,
    period_start: date | None = None,
    period_end: date | None = None,
    client_ip: str | None = None,
) -> ReportExport:
    """Record one download of a report before it is streamed."""
    return ReportExport.objects.create(
        kind=kind,
        actor=actor,
        period_start=period_start,
        period_end=period_end,
        client_ip=client_ip,
    )


def _day_bounds(start: date, end: date) -> tuple[datetime, datetime]:
    tz = timezone.get_current_timezone()
    return (
        datetime.combine(start, time.min, tzinfo=tz),
        datetime.combine(end, time.max, tzinfo=tz),
    )


def binding_changes_rows(*, start: date, end: date) -> Iterator[list]:
    """Every terminal bound or unbound between ``start`` and ``end`` (inclusive).

    One row per change, the bindings first, then the unbindings, each in date
    order: ``[serial, merchant number, USCC or ID
    number, settlement account, business address, date, "bound" | "unbound",
    reason]``. Numbers
    are in full (the regulator needs them): callers restrict and audit it.
    Two queries, whatever the number of rows.
    """
    since, until = _day_bounds(start, end)
    columns = (
        "terminal__serial_number",
        "merchant__merchant_id",
        "merchant__uscc",
        "merchant__legal_rep_id_number",
        "merchant__settlement_card_number",
        "merchant__address",
    )
    changes = (
        (
            "bound",
            Binding.objects.filter(started_at__range=(since, until))
            .order_by("started_at", "pk")
            .values_list(*columns, "started_at", "ended_reason"),
        ),
        (
            "unbound",
            Binding.objects.filter(ended_at__range=(since, until))
            .order_by("ended_at", "pk")
            .values_list(*columns, "ended_at", "ended_reason"),
        ),
    )
    for change, rows in changes:
        for (
            serial,
            merchant_no,
            uscc,
            id_no,
            card,
            address,
            at,
            reason,
        ) in rows.iterator(chunk_size=REPORT_CHUNK_SIZE):
            yield [
                serial,
                merchant_no,
                uscc or id_no,
                card,
                address,
                timezone.localtime(at).strftime("%Y-%m-%d %H:%M:%S"),
                change,
                reason if change == "unbound" else "",
            ]
