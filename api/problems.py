"""Every API error as an RFC 9457 problem details document.

``application/problem+json`` with ``type``, ``title``, ``status`` and
``detail``; validation errors add ``errors`` (field name → messages).
"""

import logging
from http import HTTPStatus

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, JsonResponse
from django.utils.translation import gettext as _
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from cases.services.common import CaseActionError

logger = logging.getLogger("api")

CONTENT_TYPE = "application/problem+json"
# Relative URIs: the docs page describes each type (docs/api.md, "Errors").
TYPE_BASE = "/api/problems/"


class Conflict(exceptions.APIException):
    """The request is valid but the case or key is not in a state that allows it."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


class BadRecord(exceptions.APIException):
    """A record of a registry sync is wrong; ``record`` says where and why."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "bad-record"

    def __init__(self, detail, *, record: dict):
        super().__init__(detail)
        self.record = record


class UnprocessableContent(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "unprocessable"


def problem(*, status_code: int, detail: str, code: str = "", **extra) -> dict:
    """Return the problem document for ``status_code``."""
    phrase = HTTPStatus(status_code).phrase
    slug = code or phrase.lower().replace(" ", "-").replace("'", "")
    return {
        "type": f"{TYPE_BASE}{slug}",
        "title": phrase,
        "status": status_code,
        "detail": str(detail),
        **extra,
    }


def _detail(exc: exceptions.APIException) -> str:
    if isinstance(exc, exceptions.ValidationError):
        return _("The request is not valid; see errors.")
    detail = exc.detail
    if isinstance(detail, list | dict):
        return _("The request is not valid.")
    return str(detail)


def problem_exception_handler(exc, context) -> Response:
    """DRF ``EXCEPTION_HANDLER``: any exception of an API view becomes a problem."""
    if isinstance(exc, CaseActionError):
        exc = Conflict(exc.message)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    response = exception_handler(exc, context)
    if response is None:
        logger.exception("API error", exc_info=exc)
        return Response(
            problem(
                status_code=500,
                detail=_("Something went wrong on our side. Nothing was changed."),
            ),
            status=500,
            content_type=CONTENT_TYPE,
        )
    extra = {}
    if isinstance(exc, exceptions.ValidationError):
        extra["errors"] = (
            exc.detail
            if isinstance(exc.detail, dict)
            else {"non_field_errors": exc.detail}
        )
    if isinstance(exc, BadRecord):
        extra["record"] = exc.record
    code = ""
    if isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else ""
        code = code.replace("_", "-")
    response.data = problem(
        status_code=response.status_code, detail=_detail(exc), code=code, **extra
    )
    response.content_type = CONTENT_TYPE
    return response


def not_found(request: HttpRequest, *args, **kwargs) -> JsonResponse:
    """Answer an unknown path under /api/ with a problem, not the HTML 404 page."""
    return JsonResponse(
        problem(status_code=404, detail=_("There is nothing at this address.")),
        status=404,
        content_type=CONTENT_TYPE,
    )
