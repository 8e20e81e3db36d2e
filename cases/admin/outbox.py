"""Admin for the notification outbox and execution steps.

``cases.admin.case_page`` shows ``ExecutionStepInline`` and
``NotificationInline`` on the case page. The outbox is read-only except for the "resend" action; staff can preview
every e-mail template in both languages with a sample case.
"""

from datetime import timedelta
from decimal import Decimal

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from cases import roles
from cases.models import Case, CaseTerminal, ExecutionStep, Notification
from cases.notifications import notification_render, notification_resend
from config.admin_site import ReadOnlyAdminMixin
from terminals.masking import mask_email
from terminals.models import Merchant, Terminal


class ExecutionStepInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = ExecutionStep
    extra = 0
    can_delete = False
    fields = ("position", "step", "status", "attempts", "error", "finished_at")
    readonly_fields = fields


class NotificationInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Notification
    extra = 0
    can_delete = False
    fields = ("kind", "status", "attempts", "sent_at", "last_error")
    readonly_fields = fields


@admin.register(ExecutionStep)
class ExecutionStepAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("case", "position", "step", "status", "attempts", "finished_at")
    list_filter = ("status", "step")
    search_fields = ("case__reference",)
    list_select_related = ("case",)
    readonly_fields = (
        "case",
        "step",
        "position",
        "status",
        "result",
        "error",
        "attempts",
        "finished_at",
    )
    fields = readonly_fields


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "kind",
        "case",
        "masked_recipients",
        "language",
        "status",
        "attempts",
        "short_error",
        "sent_at",
    )
    list_filter = ("status", "kind", "language")
    search_fields = ("case__reference", "subject")
    list_select_related = ("case",)
    date_hierarchy = "created_at"
    actions = ["resend"]
    fields = (
        "kind",
        "case",
        "masked_recipients",
        "language",
        "status",
        "attempts",
        "last_error",
        "subject",
        "created_at",
        "queued_at",
        "sent_at",
        "dedupe_key",
    )
    readonly_fields = fields
    change_list_template = "admin/cases/notification/change_list.html"

    @admin.display(description=mark_safe('<input type="checkbox" id="action-toggle">'))
    def action_checkbox(self, obj: Notification) -> str:
        # The default label is str(obj), which holds the full addresses.
        attrs = {
            "class": "action-select",
            "aria-label": format_html(
                _("Select this object for an action - {}"), self.label(obj)
            ),
        }
        checkbox = forms.CheckboxInput(attrs, lambda value: False)
        return checkbox.render(helpers.ACTION_CHECKBOX_NAME, str(obj.pk))

    def label(self, obj: Notification) -> str:
        return f"{obj.get_kind_display()} #{obj.pk}"

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, object_id)
        extra = {"title": self.label(obj), "subtitle": self.label(obj)} if obj else {}
        return super().change_view(
            request, object_id, form_url, {**extra, **(extra_context or {})}
        )

    @admin.display(description=_("recipients"))
    def masked_recipients(self, obj: Notification) -> str:
        return ", ".join(mask_email(r) for r in obj.recipients)

    @admin.display(description=_("last error"))
    def short_error(self, obj: Notification) -> str:
        return (
            (obj.last_error[:80] + "…") if len(obj.last_error) > 80 else obj.last_error
        )

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        # "change" is the permission of the resend action; the form is
        # read-only. An auditor changes nothing, whatever their other groups:
        # the rule the services apply (cases.roles.is_auditor).
        return (
            obj is None
            and not roles.is_auditor(request.user)
            and super().has_change_permission(request, obj)
        )

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(
        description=_("Send the selected notices again"), permissions=["change"]
    )
    def resend(self, request: HttpRequest, queryset: QuerySet[Notification]) -> None:
        """Re-queue pending or failed notices; send a copy of sent ones."""
        done = skipped = 0
        for notification in queryset.select_related("case"):
            if notification_resend(notification=notification) is None:
                skipped += 1
            else:
                done += 1
        if done:
            self.message_user(
                request,
                ngettext(
                    "%(count)d notice queued again.",
                    "%(count)d notices queued again.",
                    done,
                )
                % {"count": done},
                messages.SUCCESS,
            )
        if skipped:
            self.message_user(
                request,
                ngettext(
                    "%(count)d verification code was not resent: the merchant "
                    "asks for a new code on the verify page.",
                    "%(count)d verification codes were not resent: the merchant "
                    "asks for a new code on the verify page.",
                    skipped,
                )
                % {"count": skipped},
                messages.WARNING,
            )

    # --- template preview -------------------------------------------------------

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path(
                "preview/",
                view(self.preview_index),
                name="cases_notification_preview",
            ),
            path(
                "preview/<str:kind>/<str:language>/",
                view(self.preview),
                name="cases_notification_preview_kind",
            ),
            path(
                "preview/<str:kind>/<str:language>/html/",
                view(self.preview_html),
                name="cases_notification_preview_html",
            ),
            *super().get_urls(),
        ]

    def _check_preview(self, request: HttpRequest, kind: str, language: str) -> None:
        if not self.has_view_permission(request):
            raise PermissionDenied
        if kind not in Notification.Kind.values or language not in dict(
            settings.LANGUAGES
        ):
            raise Http404

    def preview_index(self, request: HttpRequest) -> TemplateResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        rows = [
            {
                "kind": kind,
                "label": label,
                "links": [
                    (
                        name,
                        reverse(
                            "admin:cases_notification_preview_kind",
                            args=[kind, code],
                        ),
                    )
                    for code, name in settings.LANGUAGES
                ],
            }
            for kind, label in Notification.Kind.choices
        ]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": _("E-mail templates"),
            "rows": rows,
        }
        return TemplateResponse(
            request, "admin/cases/notification/preview_index.html", context
        )

    def _preview_render(
        self, request: HttpRequest, kind: str, language: str
    ) -> tuple[str, str, str]:
        self._check_preview(request, kind, language)
        return notification_render(sample_notification(kind=kind, language=language))

    def preview(self, request: HttpRequest, kind: str, language: str):
        subject, text, _html = self._preview_render(request, kind, language)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": _("Preview: %(kind)s") % {"kind": Notification.Kind(kind).label},
            "kind": kind,
            "language": language,
            "subject": subject,
            "text": text,
            "html_url": reverse(
                "admin:cases_notification_preview_html", args=[kind, language]
            ),
            "index_url": reverse("admin:cases_notification_preview"),
        }
        return TemplateResponse(
            request, "admin/cases/notification/preview.html", context
        )

    def preview_html(self, request: HttpRequest, kind: str, language: str):
        _subject, _text, html = self._preview_render(request, kind, language)
        return HttpResponse(html, content_type="text/html; charset=utf-8")


def _sample_terminals(case: Case, serials: list[str]) -> None:
    """Give an unsaved sample case its terminals without touching the database.

    Django has no public way to fill a related manager of an unsaved
    instance; this sets the prefetch cache ``prefetch_related`` would, so
    the receipt template's ``case.case_terminals.all`` reads the samples.
    """
    links = CaseTerminal.objects.none()
    links._result_cache = [
        CaseTerminal(case=case, terminal=Terminal(serial_number=sn)) for sn in serials
    ]
    links._prefetch_done = True
    case._prefetched_objects_cache = {"case_terminals": links}


def sample_case(*, language: str, number: int = 123) -> Case:
    """An unsaved case with made-up data, for previews (pk 0 matches no row)."""
    merchant = Merchant(
        merchant_id="898110000000001",
        name="北京示例商贸有限公司",
        contact_email="merchant@shop.example.com",
    )
    now = timezone.now()
    case = Case(
        reference=f"UB-{now:%Y}-{number:06d}",
        merchant=merchant,
        applicant_email="applicant@shop.example.com",
        applicant_name="张伟",
        reason="device_replacement",
        language=language,
        state="in_review",
        token_salt="0" * 32,
        review_due_at=now - timedelta(days=1),
        settlement_total=Decimal("1234.50"),
    )
    case.pk = 0
    _sample_terminals(case, ["SN00000001", "SN00000002"])
    return case


def sample_notification(*, kind: str, language: str) -> Notification:
    """An unsaved notice of ``kind`` with a sample case and context, for previews."""
    case = sample_case(language=language)
    common = {
        "settlement_total": "1234.50",
        "settlement_reference": f"{case.reference}-FINAL",
        "terminals": ["SN00000001", "SN00000002"],
        "replacement": "SN00000003",
        "account_closed": False,
        "merchant_id": case.merchant.merchant_id,
        "merchant_name": case.merchant.name,
    }
    contexts = {
        Notification.Kind.VERIFICATION_CODE: {"code": "123456", "ttl_minutes": 15},
        Notification.Kind.INFO_REQUESTED: {
            "note": "请补充上传营业执照副本的清晰扫描件。"
        },
        Notification.Kind.INFO_REMINDER: {
            "note": "请补充上传营业执照副本的清晰扫描件。",
            "withdraw_on": (timezone.localdate() + timedelta(days=11)).isoformat(),
        },
        Notification.Kind.REJECTED: {"note": "设备序列号与登记信息不符。"},
        Notification.Kind.DEVICE_RETURN_REMINDER: {
            "serial_numbers": ["SN00000001", "SN00000002"],
            "due_on": (timezone.localdate() - timedelta(days=3)).isoformat(),
            "return_address": "POS Returns, 1 Example Road, Beijing 100020",
        },
        Notification.Kind.COMPLETED: common,
        Notification.Kind.DEPARTMENT_COMPLETED: {**common, "department": "finance"},
        Notification.Kind.EXECUTION_FAILED: {
            "step": ExecutionStep.Step.VERIFY_BINDINGS,
            "step_label": str(ExecutionStep.Step.VERIFY_BINDINGS.label),
            "reason": "Bindings changed since filing: SN00000001 is bound to "
            "another merchant",
            "admin_path": "/admin/cases/case/0/change/",
        },
        Notification.Kind.MONEY_MOVED: {
            "kind": "deposit",
            "direction": "to_merchant",
            "amount": "299.00",
            "reference": "PAY-2026-000123",
            "serial_number": "SN00000001",
        },
        Notification.Kind.OVERDUE_DIGEST: {
            "overdue_cases": [
                sample_case(language=language, number=n) for n in (121, 122)
            ],
            "more": False,
            "date": timezone.localdate().isoformat(),
        },
    }
    return Notification(
        kind=kind,
        case=None if kind == Notification.Kind.OVERDUE_DIGEST else case,
        recipients=["someone@example.com"],
        language=language,
        context=contexts.get(kind, {}),
    )
