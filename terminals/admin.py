"""Staff admin for the terminal registry.

ID and card numbers are shown masked everywhere except in the change form of
a user who may change the merchant. Bindings, transactions and settlement
batches are history: read-only here and never deleted.
"""

from django import forms
from django.contrib import admin
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from config.admin_site import ReadOnlyAdminMixin
from terminals.masking import mask_card_number, mask_id_number
from terminals.models import Binding, Merchant, SettlementBatch, Terminal, Transaction
from terminals.validators import normalise_serial_number

# Raw personal fields and the masked read-only stand-ins shown instead of them.
MASKED_MERCHANT_FIELDS = {
    "legal_rep_id_number": "masked_legal_rep_id_number",
    "settlement_card_number": "masked_settlement_card_number",
}


class SerialSearchMixin:
    """Find terminals by serial number as printed or typed ("ab-1234", "AB 1234").

    The default search splits the term on spaces and matches it as written;
    the term's canonical serial (``normalise_serial_number``) is searched too.
    ``serial_search_lookup`` names the lookup on the canonical form.
    """

    serial_search_lookup = "terminal__serial_number"

    def get_search_results(self, request, queryset, search_term):
        results, may_have_duplicates = super().get_search_results(
            request, queryset, search_term
        )
        serial = normalise_serial_number(search_term)
        if serial and serial != search_term:
            results |= queryset.filter(**{self.serial_search_lookup: serial})
        return results, may_have_duplicates


class TerminalAdminForm(forms.ModelForm):
    class Meta:
        model = Terminal
        fields = ("serial_number", "terminal_id", "model", "kind")

    def clean_serial_number(self) -> str:
        # Stored canonical, as the import stores it; the model validates the form.
        return normalise_serial_number(self.cleaned_data.get("serial_number", ""))


class ActiveBindingFilter(admin.SimpleListFilter):
    title = _("binding")
    parameter_name = "active"

    def lookups(self, request, model_admin):
        return [("yes", _("Active")), ("no", _("Ended"))]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(ended_at__isnull=True)
        if self.value() == "no":
            return queryset.filter(ended_at__isnull=False)
        return queryset


class MerchantBindingInline(ReadOnlyAdminMixin, admin.TabularInline):
    """The terminals of a merchant, current and past."""

    model = Binding
    fk_name = "merchant"
    fields = ("terminal", "terminal_kind", "started_at", "ended_at", "ended_reason")
    readonly_fields = fields
    extra = 0
    ordering = ("ended_at", "-started_at")
    verbose_name = _("terminal binding")
    verbose_name_plural = _("terminals (binding history)")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("terminal")

    @admin.display(description=_("kind"))
    def terminal_kind(self, obj: Binding) -> str:
        return obj.terminal.get_kind_display()


class TerminalBindingInline(ReadOnlyAdminMixin, admin.TabularInline):
    """The binding history of a terminal."""

    model = Binding
    fk_name = "terminal"
    fields = ("merchant", "started_at", "ended_at", "ended_reason")
    readonly_fields = fields
    extra = 0
    verbose_name_plural = _("binding history")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("merchant")


@admin.register(Merchant)
class MerchantAdmin(admin.ModelAdmin):
    list_display = (
        "merchant_id",
        "name",
        "kind",
        "uscc",
        "legal_rep_name",
        "masked_legal_rep_id_number",
        "masked_settlement_card_number",
        "active_terminal_count",
        "status",
    )
    list_filter = ("kind", "status")
    search_fields = ("^merchant_id", "name", "^uscc")
    readonly_fields = ("status", "closed_at", "created_at", "updated_at")
    fieldsets = (
        (
            None,
            {"fields": ("merchant_id", "kind", "uscc", "name", "status", "closed_at")},
        ),
        (
            _("Legal representative"),
            {"fields": ("legal_rep_name", "legal_rep_id_number")},
        ),
        (
            _("Contact and settlement on file"),
            {
                "fields": (
                    "contact_email",
                    "contact_phone",
                    "settlement_card_number",
                    "address",
                )
            },
        ),
        (_("Record"), {"fields": ("created_at", "updated_at")}),
    )
    inlines = (MerchantBindingInline,)
    show_full_result_count = False

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return (
            super()
            .get_queryset(request)
            .annotate(
                active_terminals=Count(
                    "bindings", filter=Q(bindings__ended_at__isnull=True)
                )
            )
        )

    def get_fieldsets(self, request: HttpRequest, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or self.has_change_permission(request, obj):
            return fieldsets
        # A view-only user sees the masked numbers, never the raw ones.
        return [
            (
                name,
                {
                    **options,
                    "fields": [
                        MASKED_MERCHANT_FIELDS.get(f, f) for f in options["fields"]
                    ],
                },
            )
            for name, options in fieldsets
        ]

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None and not self.has_change_permission(request, obj):
            fields += MASKED_MERCHANT_FIELDS.values()
        return fields

    @admin.display(description=_("legal representative ID"))
    def masked_legal_rep_id_number(self, obj: Merchant) -> str:
        return mask_id_number(obj.legal_rep_id_number)

    @admin.display(description=_("settlement bank card"))
    def masked_settlement_card_number(self, obj: Merchant) -> str:
        return mask_card_number(obj.settlement_card_number)

    @admin.display(description=_("active terminals"), ordering="active_terminals")
    def active_terminal_count(self, obj: Merchant) -> int:
        return obj.active_terminals


@admin.register(Terminal)
class TerminalAdmin(SerialSearchMixin, admin.ModelAdmin):
    form = TerminalAdminForm
    serial_search_lookup = "serial_number__startswith"
    list_display = (
        "serial_number",
        "terminal_id",
        "model",
        "kind",
        "status",
        "deposit",
        "bound_merchant",
    )
    list_filter = ("status", "kind")
    search_fields = (
        "^serial_number",
        "^terminal_id",
        "=bindings__merchant__merchant_id",
        "model",
    )
    readonly_fields = ("status", "sim_deactivated_at", "created_at", "updated_at")
    inlines = (TerminalBindingInline,)
    show_full_result_count = False

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        active = Binding.objects.active().filter(terminal=OuterRef("pk"))
        return (
            super()
            .get_queryset(request)
            .annotate(
                bound_merchant_id=Subquery(active.values("merchant__merchant_id")[:1]),
                bound_merchant_name=Subquery(active.values("merchant__name")[:1]),
            )
        )

    @admin.display(description=_("bound to"), ordering="bound_merchant_id")
    def bound_merchant(self, obj: Terminal) -> str:
        if not obj.bound_merchant_id:
            return "—"
        return f"{obj.bound_merchant_id} {obj.bound_merchant_name}"


@admin.register(Binding)
class BindingAdmin(SerialSearchMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("terminal", "merchant", "started_at", "ended_at", "ended_reason")
    list_select_related = ("terminal", "merchant")
    list_filter = (ActiveBindingFilter, "terminal__kind")
    search_fields = (
        "=terminal__serial_number",
        "=terminal__terminal_id",
        "=merchant__merchant_id",
        "merchant__name",
    )
    date_hierarchy = "started_at"
    show_full_result_count = False


@admin.register(Transaction)
class TransactionAdmin(SerialSearchMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("terminal", "amount", "occurred_at", "settled", "settlement_batch")
    list_select_related = ("terminal", "settlement_batch")
    list_filter = ("settled", "terminal__kind")
    search_fields = ("=terminal__serial_number", "=terminal__terminal_id")
    date_hierarchy = "occurred_at"
    show_full_result_count = False


@admin.register(SettlementBatch)
class SettlementBatchAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("reference", "merchant", "total", "transaction_count", "created_at")
    list_select_related = ("merchant",)
    search_fields = ("=reference", "=merchant__merchant_id", "merchant__name")
    date_hierarchy = "created_at"
    show_full_result_count = False
