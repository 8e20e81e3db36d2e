"""The staff admin site: password, lockout and (optional) verification code.

``StaffAdminConfig`` replaces ``django.contrib.admin`` in INSTALLED_APPS so that
``admin.site`` (and every ``@admin.register``) is a ``StaffAdminSite``. This
module is imported while the app registry loads, so it must not import models
at module level; the login form lives in ``config.security``.
"""

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.utils.functional import SimpleLazyObject
from django.utils.translation import gettext_lazy as _


class StaffAdminSite(admin.AdminSite):
    """Admin site that asks for a verification code where two-factor applies.

    A staff member with a confirmed TOTP device, or one whose role requires
    two-factor (``STAFF_OTP_REQUIRED``), is only let in once the session was
    verified with a code at login. Anyone else signs in with a password.
    """

    login_template = "admin/staff_login.html"
    site_header = _("POS terminal unbinding · back office")
    site_title = _("POS terminal unbinding")

    def login(self, request, extra_context=None):
        from config.security import StaffLoginForm

        self.login_form = StaffLoginForm
        return super().login(request, extra_context)

    def has_permission(self, request) -> bool:
        from config.security import otp_satisfied

        return super().has_permission(request) and otp_satisfied(request.user)

    def each_context(self, request):
        """Add the case dashboard, computed only if a template reads it (the index)."""
        context = super().each_context(request)
        user = getattr(request, "user", None)
        if user is not None and user.is_active and user.has_perm("cases.view_case"):
            # Imported here: this module loads with the app registry, before
            # any model can be imported.
            from cases.selectors import case_dashboard_counts

            context["case_dashboard"] = SimpleLazyObject(
                lambda: case_dashboard_counts(user=user)
            )
        return context


class StaffAdminConfig(AdminConfig):
    default_site = "config.admin_site.StaffAdminSite"

    def ready(self) -> None:
        super().ready()
        # Registers the deployment checks.
        from config import security

        security.admin_register_fixes(self.module.site)
