"""Who is calling: the API key, its scopes and its throttle."""

from django.contrib.auth.models import AnonymousUser
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions, permissions, throttling

from api.models import APIKey

KEYWORD = "Api-Key"
# The same words for a missing, malformed, unknown, revoked or expired key.
KEY_REFUSED = _("A valid API key is required.")


class APIKeyAuthentication(authentication.BaseAuthentication):
    """Read ``Authorization: Api-Key <key>``; ``request.auth`` becomes the APIKey.

    ``request.user`` is the staff user linked to the key, or anonymous.
    """

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode(
            "latin-1", errors="replace"
        )
        if not header:
            return None
        keyword, _sep, key = header.partition(" ")
        if keyword.lower() != KEYWORD.lower() or not key.strip():
            raise exceptions.AuthenticationFailed(KEY_REFUSED)
        try:
            api_key = APIKey.objects.get_from_key(key.strip())
        except APIKey.DoesNotExist:
            raise exceptions.AuthenticationFailed(KEY_REFUSED) from None
        if api_key.has_expired:
            raise exceptions.AuthenticationFailed(KEY_REFUSED)
        if api_key.staff_user_id is None:
            return AnonymousUser(), api_key
        if not api_key.staff_user.is_active:
            raise exceptions.AuthenticationFailed(KEY_REFUSED)
        return api_key.staff_user, api_key

    def authenticate_header(self, request) -> str:
        # Makes a missing key a 401 (with WWW-Authenticate) rather than a 403.
        return KEYWORD


class HasScope(permissions.BasePermission):
    """Allow a request whose API key has the view's ``required_scopes[method]``."""

    message = _("This API key is not allowed to do this.")

    def has_permission(self, request, view) -> bool:
        api_key = request.auth
        if not isinstance(api_key, APIKey):
            raise exceptions.NotAuthenticated(KEY_REFUSED)
        scope = view.required_scopes.get(request.method)
        if scope is None:
            scope = view.required_scopes.get("*")
        return scope is not None and api_key.has_scope(scope)


class APIKeyRateThrottle(throttling.SimpleRateThrottle):
    """Throttle per API key (its id), whatever address it calls from."""

    scope = "api_key"

    def get_cache_key(self, request, view):
        api_key = request.auth
        if not isinstance(api_key, APIKey):
            return None
        return self.cache_format % {"scope": self.scope, "ident": api_key.pk}
