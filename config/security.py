"""Staff login with a verification code, and the deployment checks.

Two-factor is per user: a staff member with a confirmed TOTP device always
enters its code; members of ``STAFF_OTP_REQUIRED_GROUPS`` (Approver and
Operations) must have one when ``STAFF_OTP_REQUIRED`` is on. Repeated failures,
of the password or of the code, count towards the django-axes lockout.
"""

from http import HTTPStatus

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.signals import user_login_failed
from django.core import checks
from django.http import HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext_lazy as _
from django_otp import devices_for_user


def otp_required_for(user) -> bool:
    """Tell whether ``user``'s role requires a verification code at login."""
    if not settings.STAFF_OTP_REQUIRED or not getattr(user, "is_active", False):
        return False
    groups = settings.STAFF_OTP_REQUIRED_GROUPS
    return user.groups.filter(name__in=groups).exists()


def otp_devices(user) -> list:
    """Return ``user``'s confirmed two-factor devices."""
    return list(devices_for_user(user, confirmed=True))


def otp_needed(user) -> bool:
    """Tell whether ``user`` must enter a code: required by role, or enrolled."""
    cached = getattr(user, "_otp_needed", None)
    if cached is None:
        cached = otp_required_for(user) or bool(otp_devices(user))
        user._otp_needed = cached
    return cached


def otp_satisfied(user) -> bool:
    """Tell whether ``user``'s session has passed the two-factor step (if any)."""
    if not getattr(user, "is_authenticated", False) or not otp_needed(user):
        return True
    is_verified = getattr(user, "is_verified", None)
    return bool(is_verified and is_verified())


class StaffLoginForm(AdminAuthenticationForm):
    """Username, password and verification code on one page."""

    otp_token = forms.CharField(
        label=_("Verification code"),
        required=False,
        max_length=16,
        strip=True,
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}
        ),
        help_text=_(
            "The 6-digit code from your authenticator app, if two-factor "
            "verification is set up for you."
        ),
    )

    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "otp_token_required": _(
            "Enter the verification code from your authenticator app."
        ),
        "otp_invalid": _(
            "This verification code is not right. Enter the current code from "
            "your authenticator app."
        ),
        "otp_throttled": _(
            "Too many wrong verification codes. Wait a minute and try again."
        ),
        "otp_no_device": _(
            "Your role requires two-factor verification, but no authenticator "
            "is set up for your account. Ask an administrator to enrol a TOTP "
            "device for you, then sign in with its code."
        ),
    }

    def clean(self):
        cleaned_data = super().clean()
        user = self.get_user()
        if user is not None:
            self._clean_otp(user)
        return cleaned_data

    def _clean_otp(self, user) -> None:
        devices = otp_devices(user)
        if not devices:
            if otp_required_for(user):
                raise forms.ValidationError(
                    self.error_messages["otp_no_device"], code="otp_no_device"
                )
            return
        token = "".join((self.cleaned_data.get("otp_token") or "").split())
        if not token:
            raise forms.ValidationError(
                self.error_messages["otp_token_required"], code="otp_token_required"
            )
        throttled = True
        for device in devices:
            allowed, _extra = device.verify_is_allowed()
            if not allowed:
                continue
            throttled = False
            if device.verify_token(token):
                # django_otp stores it in the session when the login completes.
                user.otp_device = device
                return
        # A wrong code counts towards the lockout like a wrong password.
        user_login_failed.send(
            sender=type(self),
            credentials={"username": user.get_username()},
            request=self.request,
        )
        code = "otp_throttled" if throttled else "otp_invalid"
        raise forms.ValidationError(self.error_messages[code], code=code)


# --- deployment checks -------------------------------------------------------------

LOCAL_CACHES = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
)


@checks.register(checks.Tags.caches, checks.Tags.security)
def check_shared_cache(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """Warn when production keeps throttle counters in one process's memory."""
    if settings.DEBUG:
        return []
    backend = settings.CACHES.get("default", {}).get("BACKEND", "")
    if backend in LOCAL_CACHES:
        return [
            checks.Warning(
                "The default cache is local to each process, so request "
                "throttles do not hold across processes.",
                hint="Set CACHE_URL to Redis, e.g. redis://127.0.0.1:6379/1.",
                id="config.W001",
            )
        ]
    return []


CONSOLE_EMAIL_BACKENDS = (
    "django.core.mail.backends.console.EmailBackend",
    "django.core.mail.backends.dummy.EmailBackend",
    "django.core.mail.backends.locmem.EmailBackend",
)


@checks.register(checks.Tags.security, deploy=True)
def check_email_backend(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """Refuse a production deployment whose e-mail goes nowhere.

    Verification codes are e-mailed: with the console backend (the default
    when EMAIL_URL is unset) no merchant could ever file a request.
    """
    if settings.DEBUG or settings.EMAIL_BACKEND not in CONSOLE_EMAIL_BACKENDS:
        return []
    return [
        checks.Error(
            "E-mail is printed to the console (or dropped) with DEBUG off, so "
            "verification codes and notices never reach anyone.",
            hint="Set EMAIL_URL, e.g. smtp://user:pass@mail.example.com:587/?tls=True.",
            id="config.E001",
        )
    ]


@checks.register(checks.Tags.security, deploy=True)
def check_forwarded_proto(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """Warn when X-Forwarded-Proto is trusted without a named proxy.

    The header makes Django treat a request as HTTPS (secure cookies, no
    redirect); it is only trustworthy from a proxy that sets it, and the
    deployment that says it has one should also say which (TRUSTED_PROXIES).
    """
    if settings.DEBUG or not settings.SECURE_PROXY_SSL_HEADER:
        return []
    if settings.TRUSTED_PROXIES:
        return []
    return [
        checks.Warning(
            "X-Forwarded-Proto is trusted (TRUST_X_FORWARDED_PROTO) but no proxy "
            "is named in TRUSTED_PROXIES.",
            hint="Set TRUSTED_PROXIES to the TLS proxy's address, or turn "
            "TRUST_X_FORWARDED_PROTO off when clients connect directly.",
            id="config.W002",
        )
    ]


def lockout_response(request, original_response=None, credentials=None) -> HttpResponse:
    """Render the lockout page (429) with the limit and the lock's length."""
    from django.contrib import admin

    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    context = {
        **admin.site.each_context(request),
        "title": _("Sign-in locked"),
        "failure_limit": settings.AXES_FAILURE_LIMIT,
        "cooloff_minutes": minutes,
    }
    response = render(
        request,
        settings.AXES_LOCKOUT_TEMPLATE,
        context,
        status=HTTPStatus.TOO_MANY_REQUESTS,
    )
    response["Retry-After"] = str(minutes * 60)
    return response


def _access_attempt_admin():
    """django-axes' attempt admin, with its clean-up action fixed.

    The action reads ``request.axes_attempt_time``, which axes only sets on
    login requests, so running it from the admin list was a server error.
    """
    from axes.admin import AccessAttemptAdmin
    from axes.handlers.proxy import AxesProxyHandler
    from django.contrib import admin

    class StaffAccessAttemptAdmin(AccessAttemptAdmin):
        actions = ["cleanup_expired_attempts"]

        @admin.action(description=_("Clean up expired attempts"))
        def cleanup_expired_attempts(self, request, queryset):
            AxesProxyHandler.update_request(request)
            count = self.handler.clean_expired_user_attempts(request=request)
            self.message_user(
                request,
                _("Cleaned up %(count)d expired access attempts.") % {"count": count},
            )

    return StaffAccessAttemptAdmin


def admin_register_fixes(site) -> None:
    """Swap in the fixed axes attempt admin (called once the admin is loaded)."""
    from axes.models import AccessAttempt

    if site.is_registered(AccessAttempt):
        site.unregister(AccessAttempt)
        site.register(AccessAttempt, _access_attempt_admin())


# --- records retention (issue 14) ----------------------------------------------------

MIN_RECORDS_RETENTION_YEARS = 5


@checks.register(checks.Tags.compatibility)
def check_records_retention(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """Refuse to keep the transaction exports and the audit trail under five years."""
    years = getattr(settings, "RECORDS_RETENTION_YEARS", MIN_RECORDS_RETENTION_YEARS)
    if isinstance(years, int) and years >= MIN_RECORDS_RETENTION_YEARS:
        return []
    return [
        checks.Error(
            f"RECORDS_RETENTION_YEARS is {years!r}; transaction exports and the "
            f"audit trail must be kept at least {MIN_RECORDS_RETENTION_YEARS} years.",
            hint="Set RECORDS_RETENTION_YEARS to 5 or more (unset means 5).",
            id="cases.E101",
        )
    ]
