"""Webhook subscriptions and their deliveries (the webhook outbox).

A delivery row is written in the same transaction as the case change it
announces; a Celery task sends it after commit, and the sweep retries it.
"""

import base64
import secrets

from django.db import models
from django.utils.translation import gettext_lazy as _

# Event types: ``case.<state>`` for every state a case enters.
EVENT_TYPES = (
    "case.submitted",
    "case.in_review",
    "case.info_requested",
    "case.awaiting_approval",
    "case.approved",
    "case.executing",
    "case.completed",
    "case.failed",
    "case.rejected",
    "case.withdrawn",
    "case.expired",
)


def new_secret() -> str:
    """Return a Standard Webhooks signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class Subscription(models.Model):
    """A URL of a calling system that receives the listed event types."""

    url = models.URLField(_("URL"), max_length=500)
    event_types = models.JSONField(
        _("event types"),
        default=list,
        help_text=_("The event types sent to this URL, e.g. case.approved."),
    )
    secret = models.CharField(_("signing secret"), max_length=100, default=new_secret)
    # During a rotation the old secret signs too, until ``previous_secret_until``.
    previous_secret = models.CharField(_("previous secret"), max_length=100, blank=True)
    previous_secret_until = models.DateTimeField(
        _("previous secret signs until"), null=True, blank=True
    )
    is_active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("webhook subscription")
        verbose_name_plural = _("webhook subscriptions")
        ordering = ["pk"]

    def __str__(self) -> str:
        return self.url

    def secrets_at(self, now) -> list[str]:
        """Return the secrets that sign at ``now``: the current one first."""
        result = [self.secret]
        if (
            self.previous_secret
            and self.previous_secret_until
            and now < self.previous_secret_until
        ):
            result.append(self.previous_secret)
        return result


class Delivery(models.Model):
    """One event for one subscription; ``webhook_id`` stays the same on every attempt."""

    class Status(models.TextChoices):
        # Waiting to be sent, or to be retried at ``next_attempt_at``.
        PENDING = "pending", _("Pending")
        # The receiver answered 2xx.
        DELIVERED = "delivered", _("Delivered")
        # Retried for WEBHOOK_RETRY_FOR without success; shown to Operations.
        FAILED = "failed", _("Failed")

    subscription = models.ForeignKey(
        Subscription,
        verbose_name=_("subscription"),
        on_delete=models.CASCADE,
        related_name="deliveries",
    )
    webhook_id = models.CharField(_("webhook id"), max_length=64, unique=True)
    event_type = models.CharField(_("event type"), max_length=50)
    # Deliveries of one case go out in pk order (see webhooks.services).
    case_id = models.BigIntegerField(_("case id"), db_index=True)
    case_reference = models.CharField(_("case"), max_length=20, blank=True)
    payload = models.JSONField(_("payload"))
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.PENDING
    )
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    next_attempt_at = models.DateTimeField(_("next attempt at"))
    # A sender holds the delivery until then, so that two never send it at once.
    claimed_until = models.DateTimeField(_("claimed until"), null=True, blank=True)
    last_attempt_at = models.DateTimeField(_("last attempt at"), null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(
        _("last answer"), null=True, blank=True
    )
    last_error = models.CharField(_("last error"), max_length=500, blank=True)
    delivered_at = models.DateTimeField(_("delivered at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"))
    # Retried until then, then failed (WEBHOOK_RETRY_FOR after the event or a resend).
    retry_until = models.DateTimeField(_("retried until"))

    class Meta:
        verbose_name = _("webhook delivery")
        verbose_name_plural = _("webhook deliveries")
        ordering = ["-pk"]
        indexes = [
            models.Index(
                fields=["next_attempt_at", "id"],
                condition=models.Q(status="pending"),
                name="webhook_delivery_due",
            ),
            models.Index(
                fields=["subscription", "case_id", "id"],
                name="webhook_delivery_case_order",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.case_reference} → {self.subscription}"
