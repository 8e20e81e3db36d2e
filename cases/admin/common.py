"""What the case admin screens share: the refusal page and states in words."""

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from cases.models import Case, CaseState


def _client_ip(request: HttpRequest) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


def _refused(request: HttpRequest, *, message, case: Case | None = None):
    """Answer 403 with the reason in words; nothing was changed."""
    return TemplateResponse(
        request,
        "admin/cases/refused.html",
        {
            **admin.site.each_context(request),
            "title": _("Not allowed"),
            "message": message,
            "case": case,
        },
        status=403,
    )


def _message_of(exc: PermissionDenied) -> str:
    return str(exc.args[0]) if exc.args else str(_("You are not allowed to do this."))


def _state_label(value: str) -> str:
    try:
        return str(CaseState(value).label)
    except ValueError:
        return value


def _format_dt(value) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M") if value else ""
