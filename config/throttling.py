"""Fixed-window request throttling backed by the cache (Redis in production).

Rates are configured in ``settings.THROTTLE_RATES`` as ``"<count>/<seconds>"``.
"""

import functools
import hashlib
import time
from collections.abc import Callable, Iterable

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from config.client_address import client_address


def _parse(rate: str) -> tuple[int, int]:
    count, _, seconds = rate.partition("/")
    return int(count), int(seconds or 60)


def throttle_hit(scope: str, key: str) -> bool:
    """Count one hit of ``key`` in ``scope``; return True if it is over the limit."""
    if not settings.THROTTLE_ENABLED:
        return False
    limit, window = _parse(settings.THROTTLE_RATES[scope])
    bucket = int(time.time() // window)
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    cache_key = f"throttle:{scope}:{digest}:{bucket}"
    if cache.add(cache_key, 1, timeout=window + 1):
        return limit < 1
    try:
        hits = cache.incr(cache_key)
    except ValueError:  # expired between add and incr
        cache.set(cache_key, 1, timeout=window + 1)
        hits = 1
    return hits > limit


def too_many_requests(request: HttpRequest, *, retry_after: int = 60) -> HttpResponse:
    response = render(request, "429.html", status=429)
    response["Retry-After"] = str(retry_after)
    return response


def throttle(
    scope: str,
    *,
    methods: Iterable[str] = ("GET", "POST"),
    extra_keys: Callable[[HttpRequest, dict], Iterable[str]] | None = None,
):
    """Decorate a view so that it answers 429 once a client goes over ``scope``'s rate.

    The client address is always a key; ``extra_keys`` may add more (a merchant
    number, a case) so that spreading requests over many addresses does not help.
    """

    def decorator(view):
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs):
            if request.method in methods:
                keys = [f"ip:{client_address(request)}"]
                if extra_keys is not None:
                    keys += [k for k in extra_keys(request, kwargs) if k]
                over = [throttle_hit(scope, key) for key in keys]
                if any(over):
                    _, window = _parse(settings.THROTTLE_RATES[scope])
                    return too_many_requests(request, retry_after=window)
            return view(request, *args, **kwargs)

        return wrapped

    return decorator
