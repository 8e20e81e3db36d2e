"""The audit trail: readable, never added to, changed or deleted here."""

from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from cases.admin.common import CaseReferenceSearchMixin, state_label
from cases.admin.queue import EstimatedCountPaginator
from cases.models import CaseEvent, MerchantSignIn
from config.admin_site import ReadOnlyAdminMixin


@admin.register(CaseEvent)
class CaseEventAdmin(CaseReferenceSearchMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """The audit trail: readable, never added to, changed or deleted here."""

    list_display = (
        "created_at",
        "case",
        "type",
        "transition",
        "from_state_label",
        "to_state_label",
        "actor_label",
        "visible_to_merchant",
    )
    list_filter = ("type", "actor_kind", "visible_to_merchant")

    @admin.display(description=_("from"), ordering="from_state")
    def from_state_label(self, event):
        return state_label(event.from_state) if event.from_state else ""

    @admin.display(description=_("to"), ordering="to_state")
    def to_state_label(self, event):
        return state_label(event.to_state) if event.to_state else ""

    list_select_related = ("case",)
    search_fields = ("case__reference",)
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    ordering = ("-created_at", "-pk")
    readonly_fields = (
        "case",
        "type",
        "actor_kind",
        "actor",
        "actor_label",
        "from_state",
        "to_state",
        "transition",
        "note",
        "payload",
        "visible_to_merchant",
        "client_ip",
        "created_at",
    )
    fields = readonly_fields


@admin.register(MerchantSignIn)
class MerchantSignInAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The merchant page's sign-ins: every code asked for, checked, used; read-only."""

    list_display = (
        "created_at",
        "merchant_number",
        "merchant",
        "channel",
        "status",
        "refused_because",
        "code_attempts",
        "client_ip",
        "signed_in_at",
        "signed_out_at",
    )
    list_filter = ("status", "channel", "refused_because")
    list_select_related = ("merchant",)
    search_fields = ("=merchant_number",)
    exclude = ("code_hash", "session_hash")
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    ordering = ("-created_at", "-pk")
