"""Records: legal holds, the purge report and the regulator's binding report.

- A legal hold is placed by Operations (``cases.place_legalhold``) on a
  merchant or a case with its reason, and released with the "Release" action;
  holds are never edited or deleted, and every placing and release is in the
  audit trail of the cases it covers. Every staff role can see the holds.
- The purge report (CSV, every staff role that sees holds, auditors first):
  what was purged when, and what a hold keeps past its period.
- The regulator's report of terminal binding changes (银发〔2021〕259号) has
  the USCC or ID number and the settlement account in full, as the regulator
  needs them: only ``cases.export_regulator_report`` (Operations) may download
  it, and each download is recorded (``ReportExport``, visible to auditors).
"""

import csv
from collections.abc import Iterable, Iterator
from datetime import date

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from cases import roles
from cases.admin.common import datetime_short
from cases.admin.export import _csv_safe, _Echo
from cases.models import LegalHold, ReportExport
from cases.services import retention
from config.admin_site import ReadOnlyAdminMixin
from config.client_address import client_address


def csv_stream(
    *, header: Iterable, rows: Iterable[list], filename: str
) -> StreamingHttpResponse:
    """Stream rows as CSV with a byte order mark (Excel reads Chinese correctly)."""
    writer = csv.writer(_Echo())

    def stream() -> Iterator[str]:
        yield "\ufeff"
        yield writer.writerow([str(h) for h in header])
        for row in rows:
            yield writer.writerow(
                [
                    _csv_safe(datetime_short(v) if hasattr(v, "tzinfo") else v)
                    for v in row
                ]
            )

    response = StreamingHttpResponse(stream(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "private, no-store"
    return response


class LegalHoldForm(forms.ModelForm):
    class Meta:
        model = LegalHold
        fields = ("merchant", "case", "reason")
        help_texts = {
            "merchant": _("Either a merchant (all its cases) …"),
            "case": _("… or one case."),
        }


class PeriodForm(forms.Form):
    start = forms.DateField(
        label=_("first day"), widget=forms.DateInput(attrs={"type": "date"})
    )
    end = forms.DateField(
        label=_("last day"), widget=forms.DateInput(attrs={"type": "date"})
    )

    def clean(self):
        data = super().clean()
        if data.get("start") and data.get("end") and data["start"] > data["end"]:
            raise ValidationError(_("The period ends before it starts."))
        return data


PURGE_HEADER = [
    _("status"),
    _("case"),
    _("merchant number"),
    _("kind"),
    _("original name"),
    _("closed at"),
    _("file purged at"),
    _("held by"),
]

BINDING_HEADER = [
    _("serial number"),
    _("merchant number"),
    _("USCC or ID number"),
    _("settlement account"),
    _("business address"),
    _("date"),
    _("change"),
    _("ended because"),
]

CHANGE_LABELS = {"bound": _("bound"), "unbound": _("unbound")}
STATUS_LABELS = {"purged": _("purged"), "held": _("held by a legal hold")}


@admin.register(LegalHold)
class LegalHoldAdmin(admin.ModelAdmin):
    form = LegalHoldForm
    list_display = ("__str__", "reason", "placed_by", "placed_at", "released_at")
    list_filter = (("released_at", admin.EmptyFieldListFilter),)
    list_select_related = ("case", "merchant", "placed_by")
    raw_id_fields = ("merchant", "case")
    actions = ["release"]
    change_list_template = "admin/cases/legalhold/change_list.html"

    def _may_hold(self, request) -> bool:
        user = request.user
        return not roles.is_auditor(user) and user.has_perm("cases.place_legalhold")

    def has_add_permission(self, request) -> bool:
        return self._may_hold(request)

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_release_permission(self, request) -> bool:
        return self._may_hold(request)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return (
            "merchant",
            "case",
            "reason",
            "placed_by",
            "placed_at",
            "released_by",
            "released_at",
        )

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("merchant", "case", "reason")
        return self.get_readonly_fields(request, obj)

    def save_model(self, request, obj, form, change) -> None:
        """Placing goes through the service, which checks and audits it."""
        hold = retention.legal_hold_place(
            actor=request.user,
            reason=form.cleaned_data["reason"],
            case_id=obj.case_id,
            merchant_id=obj.merchant_id,
        )
        obj.pk = hold.pk

    @admin.action(description=_("Release the selected holds"), permissions=["release"])
    def release(self, request, queryset) -> None:
        released = 0
        for hold in queryset:
            try:
                retention.legal_hold_release(hold_id=hold.pk, actor=request.user)
            except ValidationError:
                continue
            released += 1
        self.message_user(
            request,
            _("%(count)s holds released.") % {"count": released},
            messages.SUCCESS,
        )

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path(
                "purge-report/",
                wrap(self.purge_report_view),
                name="cases_purge_report",
            ),
            path(
                "binding-report/",
                wrap(self.binding_report_view),
                name="cases_binding_report",
            ),
            *super().get_urls(),
        ]

    def purge_report_view(self, request):
        """CSV: what was purged when, and what a legal hold keeps."""
        if not request.user.has_perm("cases.view_legalhold"):
            raise PermissionDenied
        # Not recorded: no personal data in full, and an auditor's reading
        # leaves no trace in the data (tests/security/test_admin_walk.py).
        rows = (
            [STATUS_LABELS[row[0]], *row[1:]]
            for row in retention.purge_report_rows(now=timezone.now())
        )
        return csv_stream(
            header=PURGE_HEADER,
            rows=rows,
            filename=f"purge-report-{timezone.localtime():%Y%m%d-%H%M}.csv",
        )

    def binding_report_view(self, request):
        """GET a period: the form; with ``start`` and ``end``: the CSV, recorded."""
        if roles.is_auditor(request.user) or not request.user.has_perm(
            "cases.export_regulator_report"
        ):
            raise PermissionDenied
        form = PeriodForm(request.GET or None)
        if not form.is_valid():
            return TemplateResponse(
                request,
                "admin/cases/legalhold/binding_report.html",
                {
                    **self.admin_site.each_context(request),
                    "title": _("Binding changes for the regulator"),
                    "form": form,
                    "opts": self.model._meta,
                },
            )
        start: date = form.cleaned_data["start"]
        end: date = form.cleaned_data["end"]
        retention.report_export_record(
            kind=ReportExport.Kind.BINDING_CHANGES,
            actor=request.user,
            period_start=start,
            period_end=end,
            client_ip=client_address(request),
        )
        rows = (
            [*row[:6], CHANGE_LABELS[row[6]], row[7]]
            for row in retention.binding_changes_rows(start=start, end=end)
        )
        return csv_stream(
            header=BINDING_HEADER,
            rows=rows,
            filename=f"binding-changes-{start:%Y%m%d}-{end:%Y%m%d}.csv",
        )


@admin.register(ReportExport)
class ReportExportAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Who downloaded which report with personal data in full, and when."""

    list_display = ("created_at", "kind", "actor", "period_start", "period_end")
    list_filter = ("kind",)
    list_select_related = ("actor",)
    readonly_fields = (
        "kind",
        "actor",
        "period_start",
        "period_end",
        "client_ip",
        "created_at",
    )
    fields = readonly_fields
