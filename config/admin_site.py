"""The staff admin site: password, lockout and (optional) verification code.

``StaffAdminConfig`` replaces ``django.contrib.admin`` in INSTALLED_APPS so that
``admin.site`` (and every ``@admin.register``) is a ``StaffAdminSite``. This
module is imported while the app registry loads, so it must not import models
at module level; the login form lives in ``config.security``.
"""

from django.contrib import admin
from django.contrib.admin import SimpleListFilter
from django.contrib.admin.apps import AdminConfig
from django.core.exceptions import FieldDoesNotExist
from django.utils.functional import SimpleLazyObject
from django.utils.translation import gettext_lazy as _

# What a field list filter puts in the query string after the field's path
# (django.contrib.admin.filters), and the date hierarchy's parts.
FIELD_FILTER_SUFFIXES = ("exact", "isnull", "isempty", "gte", "lt")
DATE_HIERARCHY_SUFFIXES = ("year", "month", "day")


class StrictLookupMixin:
    """Let a changelist filter only by its list filters and date hierarchy.

    Django's ``lookup_allowed`` accepts any lookup on the model's own fields,
    so ``?legal_rep_id_number__startswith=3`` would narrow the list and
    reveal a masked number digit by digit. Here only the parameters the
    list filters and the date hierarchy write themselves are allowed; the
    search box (``q``) is not a lookup and stays. Django answers any other
    lookup with 400 (``DisallowedModelAdminLookup``).
    """

    def lookup_allowed(self, lookup, value, request=None) -> bool:
        return lookup in self.allowed_lookups(request)

    def allowed_lookups(self, request) -> set[str]:
        allowed: set[str] = set()
        if self.date_hierarchy:
            allowed.update(
                f"{self.date_hierarchy}__{part}" for part in DATE_HIERARCHY_SUFFIXES
            )
        for item in self.get_list_filter(request):
            if isinstance(item, type) and issubclass(item, SimpleListFilter):
                allowed.add(item.parameter_name)
                continue
            path = item[0] if isinstance(item, (list, tuple)) else item
            allowed.update(f"{path}__{suffix}" for suffix in FIELD_FILTER_SUFFIXES)
            target = self._relation_target(path)
            if target:
                allowed.add(f"{path}__{target}__exact")
        return allowed

    def _relation_target(self, path: str) -> str | None:
        """Name the field a related list filter filters on (``id`` mostly)."""
        from django.contrib.admin.utils import get_fields_from_path

        try:
            field = get_fields_from_path(self.model, path)[-1]
        except FieldDoesNotExist:
            return None
        if not field.is_relation:
            return None
        return field.target_field.name


class ReadOnlyAdminMixin:
    """Rows only viewable with the view permission: never added, changed or deleted."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


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
        # Imported here: config.security imports models (see the docstring).
        from config.security import StaffLoginForm

        self.login_form = StaffLoginForm
        return super().login(request, extra_context)

    def has_permission(self, request) -> bool:
        # Imported here: config.security imports models (see the docstring).
        from config.security import otp_satisfied

        return super().has_permission(request) and otp_satisfied(request.user)

    def register(self, model_or_iterable, admin_class=None, **options) -> None:
        """Register with ``StrictLookupMixin`` mixed in, for every app's admin.

        Also for admins this project does not write (auth, axes): no
        changelist of the site filters by a field it does not offer.
        """
        admin_class = admin_class or admin.ModelAdmin
        if not issubclass(admin_class, StrictLookupMixin):
            admin_class = type(
                admin_class.__name__,
                (StrictLookupMixin, admin_class),
                {"__module__": admin_class.__module__},
            )
        super().register(model_or_iterable, admin_class, **options)

    def each_context(self, request):
        """Add the case dashboard, computed only if a template reads it (the index).

        The app list (``available_apps``) is also computed only when a
        template reads it: the sidebar and the index do; the case queue, with
        the sidebar off, does not (it was a fifth of the queue's CPU per page:
        a permission check for every model of the site).
        """
        # Django's AdminSite.each_context (5.2), with available_apps lazy.
        script_name = request.META["SCRIPT_NAME"]
        context = {
            "site_title": self.site_title,
            "site_header": self.site_header,
            "site_url": script_name
            if self.site_url == "/" and script_name
            else self.site_url,
            "has_permission": self.has_permission(request),
            "available_apps": SimpleLazyObject(lambda: self.get_app_list(request)),
            "is_popup": False,
            "is_nav_sidebar_enabled": self.enable_nav_sidebar,
            "log_entries": self.get_log_entries(request),
        }
        user = getattr(request, "user", None)
        if user is not None and user.is_active and user.has_perm("cases.view_case"):
            # Imported here: this module loads with the app registry, before
            # any model can be imported.
            from cases.selectors import case_dashboard_counts

            context["case_dashboard"] = SimpleLazyObject(
                lambda: case_dashboard_counts(user=user)
            )
        if (
            user is not None
            and user.is_active
            and user.has_perm("cases.view_financeitem")
        ):
            # Imported here for the same reason as above.
            from cases.services.finance import finance_dashboard_counts

            context["finance_dashboard"] = SimpleLazyObject(finance_dashboard_counts)
        return context


class StaffAdminConfig(AdminConfig):
    default_site = "config.admin_site.StaffAdminSite"

    def ready(self) -> None:
        super().ready()
        # Registers the deployment checks; imported once the apps are ready.
        from config import security

        security.admin_register_fixes(self.module.site)
