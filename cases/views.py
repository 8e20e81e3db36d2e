"""Merchant-facing pages of a case: file, verify, track, respond, withdraw.

Views only translate HTTP into calls of ``cases.services.intake``.
"""

import secrets

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import translation
from django.utils.html import escape
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from cases.forms import (
    CaseFilingForm,
    DeviceLostForm,
    DeviceShipForm,
    RespondForm,
    TrackForm,
    VerifyForm,
)
from cases.models import CaseEvent, CaseState
from cases.selectors import (
    case_code_resend_wait_seconds,
    case_get_by_token,
    device_return_of_case,
    device_returns_for_case,
)
from cases.services import intake, returns
from cases.services.chains import case_terminal_progress
from cases.services.common import CaseActionError
from cases.tokens import (
    is_submission_key,
    submission_key_is_bound,
    submission_key_issue,
)
from cases.uploads import limit_upload_size
from config.client_address import client_address
from config.throttling import throttle


def _merchant_key(request: HttpRequest, kwargs: dict) -> list[str]:
    merchant_id = (request.POST.get("merchant_id") or "").strip()[:20]
    return [f"merchant:{merchant_id}"] if merchant_id else []


def _token_key(request: HttpRequest, kwargs: dict) -> list[str]:
    return [f"case:{kwargs.get('token', '')[:64]}"]


# The cookie that binds a form's submission key to the browser that got the
# form. It is kept by the browser alone (no session row, nothing in the
# database), so a key learnt anywhere else replays nothing.
SUBMISSION_BINDING_COOKIE = "submission_binding"
SUBMISSION_BINDING_AGE = 24 * 3600


def _submission_binding(request: HttpRequest) -> str:
    value = request.COOKIES.get(SUBMISSION_BINDING_COOKIE, "")
    return value if is_submission_key(value) else ""


def _submission_key_posted(request: HttpRequest) -> str:
    """The posted submission key if it was issued to this browser, else "".

    The key leads back to its case, so only the browser that got the form may
    replay it: a key or salt learnt elsewhere (a log, a database copy) is ignored.
    """
    key = request.POST.get("submission_key", "")
    if submission_key_is_bound(key=key, binding=_submission_binding(request)):
        return key
    return ""


def _case_or_404(token: str):
    case = case_get_by_token(token=token)
    if case is None:
        raise Http404
    return case


# The blank filing form's HTML per (language, upload limits): the same for
# every visitor but the CSRF token and the submission key, which are spliced
# into slots. Rendering the crispy layout of 22 fields costs tens of ms; the
# splice well under one. Per process, filled on first use; off with DEBUG so
# template edits show at once.
_BLANK_FORMS: dict[tuple, str] = {}
_KEY_SLOT = "submission-key-slot-7f3a9c"
_CSRF_SLOT = "csrf-token-slot-7f3a9c"


def _blank_form_html(*, submission_key: str, csrf_token: str, limits: dict) -> str:
    """The unbound filing form (``{% crispy form %}``) with this visitor's values."""
    cache_key = (translation.get_language(), *sorted(limits.items()))
    html = _BLANK_FORMS.get(cache_key)
    if html is None:
        blank = CaseFilingForm(
            initial={"submission_key": _KEY_SLOT, "applicant_is_legal_rep": True}
        )
        html = render_to_string(
            "cases/_request_form_fields.html",
            {"form": blank, "csrf_token": _CSRF_SLOT, **limits},
        )
        if not settings.DEBUG:
            _BLANK_FORMS[cache_key] = html
    return mark_safe(
        html.replace(_KEY_SLOT, escape(submission_key)).replace(
            _CSRF_SLOT, escape(csrf_token)
        )
    )


@never_cache
@require_http_methods(["GET", "POST"])
@throttle("request_new", methods=("POST",), extra_keys=_merchant_key)
@limit_upload_size
def case_file_view(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        # The same form posted again (double click, retry) leads to its first
        # case: case_file returns it when the form is still valid, and when
        # it is not (its terminals now look taken), the look-up below does.
        submission_key = _submission_key_posted(request)
        form = CaseFilingForm(request.POST, request.FILES)
        if form.is_valid():
            filing = form.filing(
                language=translation.get_language() or "zh-hans",
                client_ip=client_address(request),
                submission_key=submission_key,
            )
            try:
                _case, token = intake.case_file(filing=filing)
            except CaseActionError as exc:
                form.add_error(None, exc.message)
            else:
                return redirect("cases:verify", token=token)
        form.discard_uploads()
        # A twin post of this browser, or this same form posted earlier, may
        # have filed the case (its terminals now look taken): lead to that case.
        token = intake.case_token_for_submission(key=submission_key)
        if token:
            return redirect("cases:verify", token=token)
    else:
        binding = _submission_binding(request) or secrets.token_hex(16)
        form = CaseFilingForm(
            initial={
                "submission_key": submission_key_issue(binding=binding),
                "applicant_is_legal_rep": True,
                # Carried over from a binding check so a phone user need not retype.
                "merchant_id": request.GET.get("merchant_id", "")[:15],
                "serial_numbers": request.GET.get("serial_numbers", "")[:400],
            }
        )
    limits = {
        "max_file_mb": settings.UPLOAD_MAX_FILE_SIZE // (1024 * 1024),
        "max_request_mb": settings.UPLOAD_MAX_REQUEST_SIZE // (1024 * 1024),
    }
    form_html = None
    if request.method == "GET" and not (
        request.GET.get("merchant_id") or request.GET.get("serial_numbers")
    ):
        form_html = _blank_form_html(
            submission_key=form.initial["submission_key"],
            csrf_token=get_token(request),
            limits=limits,
        )
    response = render(
        request,
        "cases/request_form.html",
        {"form": form, "form_html": form_html, **limits},
    )
    if request.method == "GET":
        response.set_cookie(
            SUBMISSION_BINDING_COOKIE,
            binding,
            max_age=SUBMISSION_BINDING_AGE,
            path=reverse("cases:new"),
            secure=settings.SESSION_COOKIE_SECURE,
            httponly=True,
            samesite="Lax",
        )
    return response


@never_cache
@require_http_methods(["GET", "POST"])
@throttle("verify", methods=("POST",), extra_keys=_token_key)
def case_verify_view(request: HttpRequest, token: str) -> HttpResponse:
    case = _case_or_404(token)
    if case.state != CaseState.PENDING_VERIFICATION:
        return redirect("cases:detail", token=token)
    form = VerifyForm(request.POST or None)
    locked = case.code_attempts >= _max_attempts()
    if request.method == "POST" and form.is_valid():
        result = intake.case_verify(
            case_id=case.pk,
            code=form.cleaned_data["code"],
            client_ip=client_address(request),
        )
        if result in (
            intake.VerificationResult.OK,
            intake.VerificationResult.NOT_PENDING,
        ):
            if result == intake.VerificationResult.OK:
                messages.success(
                    request, _("Thank you. Your request is now in the review queue.")
                )
            return redirect("cases:detail", token=token)
        if result == intake.VerificationResult.WRONG:
            form.add_error(
                "code",
                _("This code is not right. Check the latest e-mail and try again."),
            )
        elif result == intake.VerificationResult.MERCHANT_LIMIT:
            form.add_error("code", intake.MERCHANT_LIMIT_MESSAGE)
        elif result == intake.VerificationResult.EXPIRED:
            form.add_error(
                "code", _("This code has expired. Ask for a new code below.")
            )
        else:
            locked = True
            form.add_error(
                "code",
                _(
                    "Too many wrong codes. Ask for a new code below; earlier codes no longer work."
                ),
            )
    return render(
        request,
        "cases/verify.html",
        {
            "case": case,
            "token": token,
            "form": form,
            "locked": locked,
            "resend_wait": case_code_resend_wait_seconds(case=case),
            "failures_cap": settings.VERIFICATION_MAX_FAILURES_PER_MERCHANT_PER_DAY,
            "failures_left": intake.verification_failures_left(case=case),
        },
    )


def _max_attempts() -> int:
    return settings.CASE_VERIFICATION_MAX_ATTEMPTS


@require_POST
@throttle("resend", extra_keys=_token_key)
def case_code_resend_view(request: HttpRequest, token: str) -> HttpResponse:
    case = _case_or_404(token)
    try:
        sent = intake.case_resend_code(
            case_id=case.pk, client_ip=client_address(request)
        )
    except CaseActionError as exc:
        messages.info(request, exc.message)
        return redirect("cases:detail", token=token)
    if sent:
        messages.success(
            request,
            _(
                "A new code is on its way to the merchant's contact e-mail on file. Earlier codes no longer work."
            ),
        )
    else:
        messages.warning(
            request,
            _(
                "A code was sent a moment ago. Please wait a minute before asking again."
            ),
        )
    return redirect("cases:verify", token=token)


def _detail_context(
    case, token: str, respond_form=None, return_forms: dict | None = None
) -> dict:
    timeline = list(
        case.events.filter(visible_to_merchant=True).order_by("created_at", "pk")
    )
    if respond_form is None and case.state == CaseState.INFO_REQUESTED:
        respond_form = RespondForm()
    return {
        "case": case,
        "token": token,
        "timeline": timeline,
        "staff_messages": [
            e for e in timeline if e.actor_kind == CaseEvent.Actor.STAFF and e.note
        ],
        "terminals": [
            link.terminal for link in case.case_terminals.select_related("terminal")
        ],
        "documents": case.documents.exclude(kind="data_export").order_by(
            "uploaded_at", "pk"
        ),
        "respond_form": respond_form,
        "progress": case_terminal_progress(case=case),
        "device_returns": _device_returns(case, return_forms or {}),
        "return_address": settings.RETURN_ADDRESS,
    }


def _device_returns(case, return_forms: dict) -> list[dict]:
    """Each device coming back, with the forms the merchant can fill in for it."""
    rows = []
    for device_return in device_returns_for_case(case=case):
        bound = return_forms.get(device_return.pk, {})
        rows.append(
            {
                "item": device_return,
                "overdue": device_return.is_overdue(),
                "ship_form": bound.get("ship") or DeviceShipForm(),
                "lost_form": bound.get("lost") or DeviceLostForm(),
                "lost_open": "lost" in bound,
            }
        )
    return rows


@never_cache
@require_http_methods(["GET"])
@throttle("tracking")
def case_detail_view(request: HttpRequest, token: str) -> HttpResponse:
    case = _case_or_404(token)
    return render(request, "cases/case_detail.html", _detail_context(case, token))


@require_POST
@throttle("tracking", extra_keys=_token_key)
@limit_upload_size
def case_respond_view(request: HttpRequest, token: str) -> HttpResponse:
    case = _case_or_404(token)
    if case.state != CaseState.INFO_REQUESTED:
        messages.error(request, _("This request is not waiting for your answer."))
        return redirect("cases:detail", token=token)
    form = RespondForm(request.POST, request.FILES)
    if form.is_valid():
        try:
            intake.case_respond(
                case_id=case.pk,
                message=form.cleaned_data["message"],
                uploads=form.uploads,
                client_ip=client_address(request),
            )
        except CaseActionError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(
                request, _("Thank you. Your answer was sent to the reviewer.")
            )
        return redirect("cases:detail", token=token)
    form.discard_uploads()
    return render(request, "cases/case_detail.html", _detail_context(case, token, form))


@require_http_methods(["GET", "POST"])
@throttle("tracking", methods=("POST",), extra_keys=_token_key)
def case_withdraw_view(request: HttpRequest, token: str) -> HttpResponse:
    case = _case_or_404(token)
    if request.method == "GET":
        return render(
            request, "cases/withdraw_confirm.html", {"case": case, "token": token}
        )
    try:
        intake.case_withdraw(case_id=case.pk, client_ip=client_address(request))
    except CaseActionError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request,
            _("Your request was withdrawn. Nothing will be changed on your terminals."),
        )
    return redirect("cases:detail", token=token)


@never_cache
@require_http_methods(["GET", "POST"])
@throttle("tracking")
def case_track_view(request: HttpRequest) -> HttpResponse:
    # POST, so that the pasted token never sits in a URL query (access logs,
    # browser history, Referer). A GET's query is ignored.
    form = TrackForm(request.POST if request.method == "POST" else None)
    form.helper.form_method = "post"
    if request.method == "POST" and form.is_valid():
        case = case_get_by_token(token=form.cleaned_data["link"])
        if case is not None:
            return redirect("cases:detail", token=form.cleaned_data["link"])
        form.add_error(
            "link",
            _(
                "No request was found for this link. Copy the whole link from the e-mail."
            ),
        )
    return render(request, "cases/track.html", {"form": form})


def _return_or_404(case, return_id: int):
    device_return = device_return_of_case(case=case, return_id=return_id)
    if device_return is None:
        raise Http404
    return device_return


@require_POST
@throttle("tracking", extra_keys=_token_key)
def device_return_ship_view(
    request: HttpRequest, token: str, return_id: int
) -> HttpResponse:
    case = _case_or_404(token)
    device_return = _return_or_404(case, return_id)
    form = DeviceShipForm(request.POST)
    if not form.is_valid():
        context = _detail_context(
            case, token, return_forms={device_return.pk: {"ship": form}}
        )
        return render(request, "cases/case_detail.html", context)
    try:
        returns.device_return_ship(
            return_id=device_return.pk,
            courier=form.cleaned_data["courier"],
            tracking_number=form.cleaned_data["tracking_number"],
            actor="merchant",
            client_ip=client_address(request),
        )
    except CaseActionError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request,
            _("Thank you. We will tell you when the device %(sn)s arrives.")
            % {"sn": device_return.terminal.serial_number},
        )
    return redirect("cases:detail", token=token)


@require_POST
@throttle("tracking", extra_keys=_token_key)
@limit_upload_size
def device_return_lost_view(
    request: HttpRequest, token: str, return_id: int
) -> HttpResponse:
    case = _case_or_404(token)
    device_return = _return_or_404(case, return_id)
    form = DeviceLostForm(request.POST, request.FILES)
    if not form.is_valid():
        form.discard_uploads()
        context = _detail_context(
            case, token, return_forms={device_return.pk: {"lost": form}}
        )
        return render(request, "cases/case_detail.html", context)
    try:
        returns.device_return_report_lost(
            return_id=device_return.pk,
            upload=form.upload,
            note=form.cleaned_data["note"],
            actor="merchant",
            client_ip=client_address(request),
        )
    except CaseActionError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request,
            _("The police report was received: nothing more to send for %(sn)s.")
            % {"sn": device_return.terminal.serial_number},
        )
    return redirect("cases:detail", token=token)
