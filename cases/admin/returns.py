"""Devices coming back: the Operations queue of returns and its actions.

The changelist is the queue (filters: overdue, state). Operations record a
receipt, an inspection and its outcome with the list's actions, and a
shipment or a lost device (with its police report) on a small screen of the
return. Every change goes through ``cases.services.returns``.
"""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from cases import roles
from cases.forms import DeviceLostForm, DeviceShipForm
from cases.models import DeviceReturn, DeviceReturnState
from cases.services import returns
from cases.services.common import CaseActionError


class OverdueFilter(admin.SimpleListFilter):
    title = _("overdue")
    parameter_name = "overdue"

    def lookups(self, request, model_admin):
        return [("yes", _("Overdue")), ("no", _("Not overdue"))]

    def queryset(self, request, queryset):
        overdue = DeviceReturn.objects.overdue(now=timezone.now())
        if self.value() == "yes":
            return queryset.filter(pk__in=overdue.values("pk"))
        if self.value() == "no":
            return queryset.exclude(pk__in=overdue.values("pk"))
        return queryset


class StaffShipForm(DeviceShipForm):
    """The courier and tracking number, entered by staff."""


@admin.register(DeviceReturn)
class DeviceReturnAdmin(admin.ModelAdmin):
    # Few, narrow columns: the list fits a 1280-pixel screen with the filters open.
    list_display = ("terminal", "case", "state_shown", "due_on", "shipment")
    list_filter = (OverdueFilter, "state")
    search_fields = ("terminal__serial_number", "case__reference", "tracking_number")
    list_select_related = ("terminal", "case")
    readonly_fields = (
        "terminal",
        "case",
        "state",
        "due_at",
        "courier",
        "tracking_number",
        "shipped_at",
        "received_at",
        "inspected_at",
        "outcome",
        "inspection_note",
        "police_report",
        "lost_reported_at",
        "reminded_at",
        "reminder_count",
        "record_links",
    )
    fields = readonly_fields
    actions = ("receive", "inspect_refurbish", "inspect_scrap", "finish")

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        user = request.user
        return (
            super().has_change_permission(request, obj)
            and not roles.is_auditor(user)
            and roles.user_in_group(user, roles.OPERATIONS)
        )

    @admin.display(description=_("return state"), ordering="state")
    def state_shown(self, obj: DeviceReturn) -> str:
        if obj.is_overdue():
            return format_html(
                '{} <strong class="errornote-inline">· {}</strong>',
                obj.get_state_display(),
                _("overdue"),
            )
        return obj.get_state_display()

    @admin.display(description=_("due back by"), ordering="due_at")
    def due_on(self, obj: DeviceReturn):
        return timezone.localdate(obj.due_at)

    @admin.display(description=_("shipment"))
    def shipment(self, obj: DeviceReturn) -> str:
        return f"{obj.courier} {obj.tracking_number}".strip() or "-"

    @admin.display(description=_("record"))
    def record_links(self, obj: DeviceReturn) -> str:
        if obj.state not in (
            DeviceReturnState.AWAITING_RETURN,
            DeviceReturnState.SHIPPED,
        ):
            return "-"
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:cases_devicereturn_record", args=[obj.pk]),
            _("Record shipment or loss"),
        )

    # --- list actions -----------------------------------------------------

    def _each(self, request, queryset, call, done_message) -> None:
        done, refused = 0, []
        for device_return in queryset.select_related("terminal"):
            try:
                call(device_return)
            except (CaseActionError, PermissionDenied, ValidationError) as exc:
                refused.append(
                    f"{device_return.terminal.serial_number}: "
                    f"{getattr(exc, 'message', exc)}"
                )
            else:
                done += 1
        if done:
            self.message_user(
                request, done_message(done) % {"count": done}, messages.SUCCESS
            )
        for line in refused:
            self.message_user(request, line, messages.ERROR)

    @admin.action(description=_("Record receipt of the device"), permissions=["change"])
    def receive(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._each(
            request,
            queryset,
            lambda r: returns.device_return_receive(return_id=r.pk, actor=request.user),
            lambda n: ngettext(
                "%(count)d device received.", "%(count)d devices received.", n
            ),
        )

    @admin.action(description=_("Inspected: refurbish"), permissions=["change"])
    def inspect_refurbish(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._inspect(request, queryset, DeviceReturn.Outcome.REFURBISHED)

    @admin.action(description=_("Inspected: scrap"), permissions=["change"])
    def inspect_scrap(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._inspect(request, queryset, DeviceReturn.Outcome.SCRAPPED)

    def _inspect(self, request, queryset, outcome) -> None:
        self._each(
            request,
            queryset,
            lambda r: returns.device_return_inspect(
                return_id=r.pk, outcome=outcome, actor=request.user
            ),
            lambda n: ngettext(
                "%(count)d device inspected.", "%(count)d devices inspected.", n
            ),
        )

    @admin.action(
        description=_("Put back in stock or scrap (as inspected)"),
        permissions=["change"],
    )
    def finish(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._each(
            request,
            queryset,
            lambda r: returns.device_return_finish(return_id=r.pk, actor=request.user),
            lambda n: ngettext(
                "%(count)d return completed.", "%(count)d returns completed.", n
            ),
        )

    # --- the record screen ------------------------------------------------

    def get_urls(self):
        return [
            path(
                "<int:pk>/record/",
                self.admin_site.admin_view(self.record_view),
                name="cases_devicereturn_record",
            ),
            *super().get_urls(),
        ]

    def record_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Record a shipment (courier, tracking number) or a loss (police report)."""
        device_return = get_object_or_404(
            DeviceReturn.objects.select_related("terminal", "case"), pk=pk
        )
        if not self.has_change_permission(request, device_return):
            raise PermissionDenied
        ship_form, lost_form = StaffShipForm(), DeviceLostForm()
        if request.method == "POST":
            try:
                if request.POST.get("record") == "lost":
                    lost_form = DeviceLostForm(request.POST, request.FILES)
                    if lost_form.is_valid():
                        returns.device_return_report_lost(
                            return_id=pk,
                            upload=lost_form.upload,
                            note=lost_form.cleaned_data["note"],
                            actor=request.user,
                        )
                        return self._recorded(request, device_return)
                    lost_form.discard_uploads()
                else:
                    ship_form = StaffShipForm(request.POST)
                    if ship_form.is_valid():
                        returns.device_return_ship(
                            return_id=pk,
                            courier=ship_form.cleaned_data["courier"],
                            tracking_number=ship_form.cleaned_data["tracking_number"],
                            actor=request.user,
                        )
                        return self._recorded(request, device_return)
            except CaseActionError as exc:
                self.message_user(request, exc.message, messages.ERROR)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": device_return,
            "title": _("Record shipment or loss of %(sn)s")
            % {"sn": device_return.terminal.serial_number},
            "ship_form": ship_form,
            "lost_form": lost_form,
        }
        return TemplateResponse(
            request, "admin/cases/devicereturn/record.html", context
        )

    def _recorded(self, request, device_return) -> HttpResponse:
        self.message_user(request, _("Recorded."), messages.SUCCESS)
        return redirect("admin:cases_devicereturn_change", device_return.pk)
