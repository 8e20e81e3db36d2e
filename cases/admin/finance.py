"""Finance: the work items of completed cases and the frozen statements.

The Finance group marks each item paid with its payment reference on the
item's page (``pay``); above ``FINANCE_DUAL_CONTROL_ABOVE`` that records the
payment and a different finance user confirms it (``confirm``). ``close``
waives or cancels an item with a reason. Each screen calls one service of
``cases.services.finance``; items are never edited through the admin form.
"""

from django import forms
from django.contrib import admin
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from cases import roles
from cases.admin.common import CaseReferenceSearchMixin, service_answer
from cases.models import CaseStatement, FinanceItem
from cases.services.finance import (
    finance_item_close,
    finance_item_confirm,
    finance_item_pay,
    finance_items_overdue,
    needs_second_user,
)
from cases.statements import LineKind
from config.admin_site import ReadOnlyAdminMixin


class FinanceOverdueFilter(admin.SimpleListFilter):
    title = _("overdue refund")
    parameter_name = "overdue"

    def lookups(self, request, model_admin):
        return [("yes", _("Overdue refunds"))]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(pk__in=finance_items_overdue().values("pk"))
        return queryset


class PayForm(forms.Form):
    reference = forms.CharField(label=_("Payment reference"), max_length=100)


class CloseForm(forms.Form):
    state = forms.ChoiceField(
        label=_("Close as"),
        choices=[
            (FinanceItem.State.WAIVED, _("Waive")),
            (FinanceItem.State.CANCELLED, _("Cancel")),
        ],
    )
    reason = forms.CharField(label=_("Reason"), widget=forms.Textarea)


@admin.register(FinanceItem)
class FinanceItemAdmin(CaseReferenceSearchMixin, admin.ModelAdmin):
    list_display = (
        "case",
        "kind_label",
        "serial_number",
        "direction",
        "amount_display",
        "state",
        "due_on",
        "payment_reference",
    )
    list_filter = ("state", "direction", "kind", FinanceOverdueFilter)
    list_select_related = ("case",)
    search_fields = ("case__reference",)
    search_help_text = _("A case's exact reference.")
    date_hierarchy = "due_on"
    change_form_template = "admin/cases/financeitem/change_form.html"
    readonly_fields = [
        "case",
        "statement",
        "kind_label",
        "line_rule",
        *(
            f.name
            for f in FinanceItem._meta.fields
            if f.name not in ("id", "case", "statement", "line", "kind")
        ),
    ]

    fields = readonly_fields

    @admin.display(description=_("line kind"), ordering="kind")
    def kind_label(self, obj: FinanceItem) -> str:
        return str(LineKind.LABELS.get(obj.kind, obj.kind))

    @admin.display(description=_("Rule"))
    def line_rule(self, obj: FinanceItem) -> str:
        lines = obj.statement.data.get("lines", [])
        return lines[obj.line]["rule"] if obj.line < len(lines) else ""

    @admin.display(description=_("amount (CNY)"), ordering="amount")
    def amount_display(self, obj: FinanceItem):
        return format_html('<span data-amount="{}">¥{}</span>', obj.amount, obj.amount)

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        # The page is read-only; payments go through the screens below.
        return False

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/pay/",
                wrap(require_POST(self.pay_view)),
                name="cases_financeitem_pay",
            ),
            path(
                "<path:object_id>/confirm/",
                wrap(require_POST(self.confirm_view)),
                name="cases_financeitem_confirm",
            ),
            path(
                "<path:object_id>/close/",
                wrap(require_POST(self.close_view)),
                name="cases_financeitem_close",
            ),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        item = get_object_or_404(FinanceItem, pk=object_id)
        is_finance = roles.user_in_group(request.user, roles.FINANCE) and not (
            roles.is_auditor(request.user)
        )
        extra = {
            "item": item,
            "is_finance": is_finance,
            "pay_form": PayForm(),
            "close_form": CloseForm(),
            "dual_control": needs_second_user(item),
            "can_confirm": is_finance
            and item.state == FinanceItem.State.RECORDED
            and item.recorded_by_id != request.user.pk,
        }
        return super().change_view(
            request,
            object_id,
            form_url,
            extra_context={**extra, **(extra_context or {})},
        )

    def _back(self, item_id) -> str:
        return reverse("admin:cases_financeitem_change", args=[item_id])

    def pay_view(self, request, object_id):
        item = get_object_or_404(
            FinanceItem.objects.select_related("case"), pk=object_id
        )
        reference = request.POST.get("reference", "")
        return service_answer(
            request,
            call=lambda: finance_item_pay(
                item_id=item.pk, actor=request.user, reference=reference
            ),
            case=item.case,
            success=(
                _("Payment recorded: a different finance user must confirm it.")
                if needs_second_user(item)
                else _("Marked paid.")
            ),
            back=self._back(item.pk),
        )

    def confirm_view(self, request, object_id):
        item = get_object_or_404(
            FinanceItem.objects.select_related("case"), pk=object_id
        )
        return service_answer(
            request,
            call=lambda: finance_item_confirm(item_id=item.pk, actor=request.user),
            case=item.case,
            success=_("Payment confirmed."),
            back=self._back(item.pk),
        )

    def close_view(self, request, object_id):
        item = get_object_or_404(
            FinanceItem.objects.select_related("case"), pk=object_id
        )
        return service_answer(
            request,
            call=lambda: finance_item_close(
                item_id=item.pk,
                actor=request.user,
                state=request.POST.get("state", ""),
                reason=request.POST.get("reason", ""),
            ),
            case=item.case,
            success=_("The item is closed."),
            back=self._back(item.pk),
        )


@admin.register(CaseStatement)
class CaseStatementAdmin(
    ReadOnlyAdminMixin, CaseReferenceSearchMixin, admin.ModelAdmin
):
    list_display = ("case", "version", "created_at")
    list_select_related = ("case",)
    search_fields = ("case__reference",)
    readonly_fields = ("case", "version", "data", "created_at")
