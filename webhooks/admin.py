"""Subscriptions, their delivery log and the resend button."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_POST

from webhooks import services
from webhooks.models import EVENT_TYPES, Delivery, Subscription


class SubscriptionForm(forms.ModelForm):
    url = forms.URLField(label=_("URL"), max_length=500, assume_scheme="https")
    event_types = forms.MultipleChoiceField(
        label=_("event types"),
        choices=[(t, t) for t in EVENT_TYPES],
        initial=list(EVENT_TYPES),
        widget=forms.CheckboxSelectMultiple,
    )

    class Meta:
        model = Subscription
        fields = ["url", "event_types", "is_active"]


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    form = SubscriptionForm
    list_display = ("url", "is_active", "event_types", "created_at", "delivery_log")
    list_filter = ("is_active",)
    search_fields = ("url",)
    fields = ("url", "event_types", "is_active", "previous_secret_until", "created_at")
    readonly_fields = ("previous_secret_until", "created_at")
    actions = ["rotate_secret"]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if not change:
            # Shown once, like an API key; give it to the receiver now.
            self.message_user(
                request,
                _("Signing secret for %(url)s: %(secret)s")
                % {"url": obj.url, "secret": obj.secret},
                messages.WARNING,
            )

    @admin.display(description=_("delivery log"))
    def delivery_log(self, obj: Subscription) -> str:
        url = reverse("admin:webhooks_delivery_changelist")
        return format_html(
            '<a href="{}?subscription__id__exact={}">{}</a>',
            url,
            obj.pk,
            _("Deliveries"),
        )

    @admin.action(
        description=_(
            "Rotate the signing secret (the old one signs during the overlap)"
        )
    )
    def rotate_secret(self, request, queryset) -> None:
        for subscription in queryset:
            rotated = services.subscription_rotate_secret(
                subscription_id=subscription.pk
            )
            # Shown once, like an API key; give it to the receiver now.
            self.message_user(
                request,
                _("New secret for %(url)s: %(secret)s")
                % {
                    "url": rotated.url,
                    "secret": rotated.secret,
                },
                messages.WARNING,
            )


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    """The delivery log: failed ones are what Operations looks at."""

    list_display = (
        "created_at",
        "event_type",
        "case_reference",
        "subscription",
        "status",
        "attempts",
        "last_status_code",
        "next_attempt_at",
        "delivered_at",
    )
    list_filter = ("status", "event_type", "subscription")
    list_select_related = ("subscription",)
    search_fields = ("case_reference", "webhook_id")
    readonly_fields = [f.name for f in Delivery._meta.fields]
    actions = ["resend"]
    change_form_template = "admin/webhooks/delivery/change_form.html"

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description=_("Resend (same webhook-id)"), permissions=["change"])
    def resend(self, request, queryset) -> None:
        for delivery in queryset:
            services.delivery_resend(delivery_id=delivery.pk)
        count = queryset.count()
        self.message_user(
            request,
            ngettext(
                "%(count)d delivery queued again.",
                "%(count)d deliveries queued again.",
                count,
            )
            % {"count": count},
        )

    def get_urls(self):
        return [
            path(
                "<int:pk>/resend/",
                self.admin_site.admin_view(require_POST(self.resend_view)),
                name="webhooks_delivery_resend",
            ),
            *super().get_urls(),
        ]

    def resend_view(self, request, pk: int):
        delivery = get_object_or_404(Delivery, pk=pk)
        if not self.has_change_permission(request, delivery):
            raise PermissionDenied
        services.delivery_resend(delivery_id=delivery.pk)
        self.message_user(request, _("The delivery is queued again."))
        return HttpResponseRedirect(
            reverse("admin:webhooks_delivery_change", args=[delivery.pk])
        )
