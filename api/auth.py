"""Who is calling: the API key, its scopes and its throttle."""

import hashlib
import threading
import time

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions, permissions, throttling

from api.models import APIKey

KEYWORD = "Api-Key"
# The same words for a missing, malformed, unknown, revoked or expired key.
KEY_REFUSED = _("A valid API key is required.")


# Keys found valid lately, per process: {sha256 of the key: (until, APIKey)}.
# A key's lookup (its row, its hash check, its staff user) is done at most
# once per API_KEY_CACHE_SECONDS per process; a revocation, expiry date,
# scope or staff-user change made in this process forgets every entry at once
# (api.signals, api.services.api_key_revoke), one made in another process
# takes effect there within API_KEY_CACHE_SECONDS. An expiry date passing is
# checked on every request. Unknown or refused keys are never kept.
_known_keys: dict[str, tuple[float, APIKey]] = {}
_known_keys_lock = threading.Lock()
KNOWN_KEYS_MAX = 1000


def api_keys_forget() -> None:
    """Forget every key this process found valid: the next call looks it up again."""
    with _known_keys_lock:
        _known_keys.clear()


def _api_key_lookup(key: str) -> APIKey:
    """The usable APIKey for ``key`` (with its staff user), or DoesNotExist."""
    seconds = settings.API_KEY_CACHE_SECONDS
    digest = hashlib.sha256(key.encode()).hexdigest()
    now = time.monotonic()
    if seconds > 0:
        known = _known_keys.get(digest)
        if known is not None and known[0] > now:
            return known[1]
    # APIKeyManager.get_from_key, with the staff user in the same query.
    prefix, _dot, _rest = key.partition(".")
    api_key = (
        APIKey.objects.get_usable_keys().select_related("staff_user").get(prefix=prefix)
    )
    if not api_key.is_valid(key):
        raise APIKey.DoesNotExist("Key is not valid.")
    if seconds > 0:
        with _known_keys_lock:
            if len(_known_keys) >= KNOWN_KEYS_MAX:
                _known_keys.clear()
            _known_keys[digest] = (now + seconds, api_key)
    return api_key


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
            api_key = _api_key_lookup(key.strip())
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
    """Throttle per API key (its id), whatever address it calls from.

    A fixed window of ``duration`` seconds counted in the cache: with Redis,
    one round trip a request (a pipeline of SET NX EX and INCR) instead of
    DRF's read and rewrite of a list of every request's time in the window.
    """

    scope = "api_key"

    def allow_request(self, request, view) -> bool:
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        now = time.time()
        window = int(now // self.duration)
        self.window_end = (window + 1) * self.duration
        self.now = now
        hits = _window_hit(f"{self.key}:{window}", timeout=self.duration + 1)
        return hits <= self.num_requests

    def wait(self) -> float:
        return max(self.window_end - self.now, 0)

    def get_cache_key(self, request, view):
        api_key = request.auth
        if not isinstance(api_key, APIKey):
            return None
        return self.cache_format % {"scope": self.scope, "ident": api_key.pk}


def _window_hit(key: str, *, timeout: int) -> int:
    """Count one hit on ``key`` (created with ``timeout``); return the count."""
    client = _redis_client(key)
    if client is not None:
        full_key = cache.make_and_validate_key(key)
        pipeline = client.pipeline(transaction=False)
        pipeline.set(full_key, 0, ex=timeout, nx=True)
        pipeline.incr(full_key)
        return pipeline.execute()[1]
    if cache.add(key, 1, timeout=timeout):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=timeout)
        return 1


_redis_clients: dict = {}


def _redis_client(key: str):
    """The redis-py client behind Django's RedisCache, else None.

    Kept per cache client: Django's ``get_client`` builds a new ``Redis``
    object (its table of ~170 response callbacks) on each call, over the same
    connection pool.
    """
    backend = caches["default"]
    if not isinstance(backend, RedisCache):
        return None
    cache_client = backend._cache
    client = _redis_clients.get(cache_client)
    if client is None:
        client = _redis_clients[cache_client] = cache_client.get_client(key, write=True)
    return client
