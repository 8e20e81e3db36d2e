"""What the case admin screens share: the refusal page and states in words."""

import re
from functools import lru_cache

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

from cases.models import Case, CaseState, Reason
from cases.services.common import CaseActionError


def refused_response(request: HttpRequest, *, message, case: Case | None = None):
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


def exception_message(exc: PermissionDenied) -> str:
    return str(exc.args[0]) if exc.args else str(_("You are not allowed to do this."))


@lru_cache(maxsize=256)
def _state_label(language: str | None, value: str) -> str:
    try:
        return str(CaseState(value).label)
    except ValueError:
        return value


def state_label(value: str) -> str:
    """A case state in words, in the active language (kept per language)."""
    return _state_label(get_language(), value)


@lru_cache(maxsize=256)
def _reason_short(language: str | None, value: str) -> str:
    try:
        label = str(Reason(value).label)
    except ValueError:
        return value
    return re.sub(r"\s*\([^)]*\)$", "", label)


def reason_short_label(value: str) -> str:
    """A case's reason without its Chinese gloss in brackets, in the active language."""
    return _reason_short(get_language(), value)


def datetime_short(value) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M") if value else ""


def service_answer(
    request: HttpRequest, *, call, case: Case, success, back: str
) -> HttpResponse:
    """Run ``call`` (one service call) and answer as every staff screen does.

    A refusal of the role is a 403 page saying why; a refusal of the case's
    state or content is an error message; success is ``success``. Then back
    to ``back`` (the case page).
    """
    try:
        call()
    except PermissionDenied as exc:
        return refused_response(request, message=exception_message(exc), case=case)
    except CaseActionError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, success)
    return HttpResponseRedirect(back)


class CaseReferenceSearchMixin:
    """Search the rows of a case by its exact reference (an indexed lookup)."""

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(case__reference=term.upper()), False
