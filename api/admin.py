"""API keys, their audit and the registry sync conflicts in the staff admin."""

from django import forms
from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey as LibraryAPIKey

from api.models import APIAuditEntry, APIKey, RegistryConflict, Scope

# Only this project's keys (with scopes) are used; hide the library's own model.
if admin.site.is_registered(LibraryAPIKey):
    admin.site.unregister(LibraryAPIKey)


class APIKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        label=_("scopes"),
        choices=Scope.choices,
        widget=forms.CheckboxSelectMultiple,
        required=False,
    )

    class Meta:
        model = APIKey
        fields = ["name", "scopes", "staff_user", "expiry_date", "revoked"]


@admin.register(APIKey)
class ProjectAPIKeyAdmin(APIKeyModelAdmin):
    """Shown once on creation (a message), stored hashed; revoke, never delete."""

    form = APIKeyForm
    list_display = (
        "prefix",
        "name",
        "scopes",
        "staff_user",
        "created",
        "expiry_date",
        "_has_expired",
        "revoked",
        "last_used_at",
    )
    list_filter = ("revoked",)
    list_select_related = ("staff_user",)

    def save_model(self, request, obj, form, change):
        obj.scopes = list(form.cleaned_data.get("scopes") or [])
        if change:
            obj.save()
            return
        key = APIKey.objects.assign_key(obj)
        obj.save()
        messages.warning(
            request,
            _(
                "The API key for %(name)s is: %(key)s — store it somewhere safe "
                "now: it is not shown again."
            )
            % {"name": obj.name, "key": key},
        )

    def has_delete_permission(self, request, obj=None) -> bool:
        # Revoked keys stay, so the audit keeps naming them.
        return False


@admin.register(APIAuditEntry)
class APIAuditEntryAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "actor_label",
        "method",
        "path",
        "status_code",
        "object_reference",
    )
    list_filter = ("method", "status_code")
    search_fields = ("actor_label", "object_reference", "path")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(RegistryConflict)
class RegistryConflictAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "kind",
        "serial_number",
        "merchant_id",
        "record_as_of",
        "local_changed_at",
        "api_key_name",
    )
    list_filter = ("kind",)
    search_fields = ("serial_number", "merchant_id")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
