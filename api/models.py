"""API keys of the provider's own systems, the answers kept for idempotency keys,
the audit of changes made through the API and the registry sync conflicts.
"""

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _
from rest_framework_api_key.models import AbstractAPIKey


class Scope(models.TextChoices):
    # GET cases (detail, list) and the binding check.
    READ_CASES = "cases:read", _("Read cases")
    # File a case for a merchant and post its identity code.
    FILE_CASES = "cases:file", _("File cases")
    # Staff actions, as the staff user the key is linked to.
    ACT_ON_CASES = "cases:act", _("Act on cases")
    # Push merchants, terminals and bindings from the provider's core.
    SYNC_REGISTRY = "registry:sync", _("Sync the registry")
    # List finance items (refunds, deductions) and their states.
    READ_FINANCE = "finance:read", _("Read finance items")
    # Pay finance items, as the staff user the key is linked to (Finance group).
    ACT_ON_FINANCE = "finance:act", _("Pay finance items")


class APIKey(AbstractAPIKey):
    """A key for one calling system: only a hash of it is stored.

    ``revoked`` and ``expiry_date`` come from djangorestframework-api-key.
    """

    scopes = models.JSONField(
        _("scopes"),
        default=list,
        blank=True,
        help_text=_(
            "What this key may do: cases:read, cases:file, cases:act, "
            "registry:sync, finance:read, finance:act."
        ),
    )
    staff_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("acts as staff user"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="api_keys",
        help_text=_(
            "Staff actions of this key are done as this user: the user's groups "
            "decide, and maker-checker and assignee rules apply to the user."
        ),
    )
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True)

    class Meta(AbstractAPIKey.Meta):
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")

    def __str__(self) -> str:
        return self.name

    def has_scope(self, scope: str) -> bool:
        return scope in (self.scopes or [])


class IdempotencyRecord(models.Model):
    """The first answer to a POST with an ``Idempotency-Key``, per API key."""

    api_key = models.ForeignKey(
        APIKey, verbose_name=_("API key"), on_delete=models.CASCADE, related_name="+"
    )
    key = models.CharField(_("idempotency key"), max_length=255)
    method = models.CharField(_("method"), max_length=10)
    path = models.CharField(_("path"), max_length=500)
    # SHA-256 of method, path and body: the same key with another request is refused.
    fingerprint = models.CharField(_("request fingerprint"), max_length=64)
    status_code = models.PositiveSmallIntegerField(_("status"), null=True)
    content_type = models.CharField(_("content type"), max_length=100, blank=True)
    body = models.TextField(_("body"), blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("idempotency record")
        verbose_name_plural = _("idempotency records")
        constraints = [
            models.UniqueConstraint(
                fields=["api_key", "key"], name="one_answer_per_idempotency_key"
            )
        ]

    def __str__(self) -> str:
        return self.key


class APIAuditEntry(models.Model):
    """One change made through the API, with the key's name as the actor.

    Append-only, like django.contrib.admin's LogEntry. Reads are not stored
    here but logged (logger ``api.access``): they change nothing, and a row
    per read would grow this table by the polling rate of every caller.
    """

    api_key = models.ForeignKey(
        APIKey,
        verbose_name=_("API key"),
        on_delete=models.SET_NULL,
        null=True,
        related_name="+",
    )
    actor_label = models.CharField(_("actor"), max_length=150)
    method = models.CharField(_("method"), max_length=10)
    path = models.CharField(_("path"), max_length=500)
    status_code = models.PositiveSmallIntegerField(_("status"))
    object_reference = models.CharField(_("object"), max_length=100, blank=True)
    client_ip = models.GenericIPAddressField(_("client address"), null=True, blank=True)
    created_at = models.DateTimeField(_("at"), auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = _("API audit entry")
        verbose_name_plural = _("API audit entries")
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.actor_label} {self.method} {self.path}"


class RegistryConflict(models.Model):
    """A registry sync record that was not applied because a local change is newer."""

    class Kind(models.TextChoices):
        BINDING = "binding", _("Binding")

    kind = models.CharField(_("kind"), max_length=20, choices=Kind.choices)
    serial_number = models.CharField(_("serial number"), max_length=64)
    merchant_id = models.CharField(_("merchant number"), max_length=20, blank=True)
    record_as_of = models.DateTimeField(_("record as of"))
    local_changed_at = models.DateTimeField(_("local change at"))
    detail = models.TextField(_("detail"), blank=True)
    api_key_name = models.CharField(_("sent by"), max_length=150)
    created_at = models.DateTimeField(_("at"), auto_now_add=True)

    class Meta:
        verbose_name = _("registry sync conflict")
        verbose_name_plural = _("registry sync conflicts")
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.serial_number} ({self.record_as_of:%Y-%m-%d %H:%M})"
