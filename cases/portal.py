"""The merchant page (/merchant/): sign in with a code, see everything in one place.

The merchant's session is not Django's: a cookie scoped to ``/merchant/``
holds the signed id of a ``MerchantSignIn`` row and a random secret whose
hash is on that row. It never reaches ``/admin/``, a staff login or logout
leaves it alone, a new sign-in replaces it (rotated), sign-out ends it on
the server, and it lapses after ``MERCHANT_SESSION_IDLE`` without use.
Views only translate HTTP into calls of ``cases.services.merchant_portal``.
"""

from django.conf import settings
from django.contrib import messages
from django.core import signing
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from cases.portal_forms import MerchantCodeForm, MerchantSignInForm
from cases.selectors import merchant_overview
from cases.services import merchant_portal
from config.client_address import client_address
from config.throttling import throttle

SESSION_COOKIE = "merchant_session"
CHALLENGE_COOKIE = "merchant_sign_in"
SESSION_SALT = "cases.portal.session"
CHALLENGE_SALT = "cases.portal.challenge"
COOKIE_PATH = "/merchant/"


def _merchant_key(request: HttpRequest, kwargs: dict) -> list[str]:
    merchant_id = "".join((request.POST.get("merchant_id") or "").split())[:20]
    return [f"merchant:{merchant_id}"] if merchant_id else []


def _challenge_key(request: HttpRequest, kwargs: dict) -> list[str]:
    return [f"sign-in:{request.COOKIES.get(CHALLENGE_COOKIE, '')[:200]}"]


def _set_cookie(response: HttpResponse, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        secure=settings.SESSION_COOKIE_SECURE,
        httponly=True,
        samesite="Lax",
    )


def _challenge_id(request: HttpRequest) -> int | None:
    try:
        return int(
            signing.loads(
                request.COOKIES.get(CHALLENGE_COOKIE, ""),
                salt=CHALLENGE_SALT,
                max_age=settings.MERCHANT_SIGN_IN_CODE_TTL,
            )
        )
    except (signing.BadSignature, TypeError, ValueError):
        return None


def _session(request: HttpRequest) -> tuple[int, str] | None:
    try:
        value = signing.loads(
            request.COOKIES.get(SESSION_COOKIE, ""), salt=SESSION_SALT
        )
        return int(value["id"]), str(value["secret"])
    except (signing.BadSignature, TypeError, ValueError, KeyError):
        return None


def _signed_in_merchant(request: HttpRequest):
    session = _session(request)
    if session is None:
        return None
    return merchant_portal.merchant_session_resume(
        sign_in_id=session[0], secret=session[1]
    )


@never_cache
def merchant_home_view(request: HttpRequest) -> HttpResponse:
    merchant = _signed_in_merchant(request)
    if merchant is None:
        response = redirect("merchant:login")
        response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
        return response
    overview = merchant_overview(merchant=merchant)
    return render(
        request,
        "cases/merchant/home.html",
        {"overview": overview, "merchant": merchant, "now": timezone.now()},
    )


@never_cache
@require_http_methods(["GET", "POST"])
@throttle("merchant_sign_in", methods=("POST",), extra_keys=_merchant_key)
def merchant_login_view(request: HttpRequest) -> HttpResponse:
    form = MerchantSignInForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        sign_in = merchant_portal.merchant_sign_in_start(
            merchant_number=form.cleaned_data["merchant_id"],
            channel=form.cleaned_data["channel"],
            client_ip=client_address(request),
        )
        # The same answer whether or not the number exists or a code was sent.
        response = redirect("merchant:code")
        _set_cookie(
            response,
            CHALLENGE_COOKIE,
            signing.dumps(sign_in.pk, salt=CHALLENGE_SALT),
            int(settings.MERCHANT_SIGN_IN_CODE_TTL.total_seconds()),
        )
        return response
    return render(request, "cases/merchant/login.html", {"form": form})


@never_cache
@require_http_methods(["GET", "POST"])
@throttle("merchant_code", methods=("POST",), extra_keys=_challenge_key)
def merchant_code_view(request: HttpRequest) -> HttpResponse:
    sign_in_id = _challenge_id(request)
    if sign_in_id is None:
        messages.info(request, _("Ask for a new sign-in code."))
        return redirect("merchant:login")
    form = MerchantCodeForm(request.POST or None)
    locked = False
    if request.method == "POST" and form.is_valid():
        result, secret = merchant_portal.merchant_sign_in_verify(
            sign_in_id=sign_in_id,
            code=form.cleaned_data["code"],
            client_ip=client_address(request),
        )
        if result == merchant_portal.OK:
            response = redirect("merchant:home")
            response.delete_cookie(CHALLENGE_COOKIE, path=COOKIE_PATH)
            _set_cookie(
                response,
                SESSION_COOKIE,
                signing.dumps({"id": sign_in_id, "secret": secret}, salt=SESSION_SALT),
                # The server ends it sooner when idle (MERCHANT_SESSION_IDLE).
                int(settings.MERCHANT_SESSION_MAX_AGE.total_seconds()),
            )
            return response
        if result == merchant_portal.EXPIRED:
            form.add_error("code", _("This code has expired. Ask for a new code."))
        elif result == merchant_portal.DAILY_LIMIT:
            locked = True
            form.add_error(
                "code",
                _("Too many wrong codes for this merchant today. Try again tomorrow."),
            )
        elif result == merchant_portal.LOCKED:
            locked = True
            form.add_error(
                "code",
                _(
                    "Too many wrong codes. Ask for a new code; this one no longer works."
                ),
            )
        else:
            form.add_error("code", _("This code is not right. Check it and try again."))
    return render(
        request,
        "cases/merchant/code.html",
        {
            "form": form,
            "locked": locked,
            "ttl_minutes": int(
                settings.MERCHANT_SIGN_IN_CODE_TTL.total_seconds() // 60
            ),
        },
    )


@require_POST
def merchant_logout_view(request: HttpRequest) -> HttpResponse:
    session = _session(request)
    if session is not None:
        merchant_portal.merchant_sign_out(sign_in_id=session[0], secret=session[1])
    messages.success(request, _("You are signed out."))
    response = redirect(reverse("merchant:login"))
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response
