"""Logging filters that keep secrets out of log lines."""

import logging
import re

# /requests/<token>/... — the tracking token opens a case; never log it. Also
# URL-encoded (a tracking link inside another URL's query or a Referer).
_TOKEN_PATH = re.compile(
    r"(/requests/|%2Frequests%2F)(?!new/|track/)[A-Za-z0-9_-]{16,}", re.IGNORECASE
)
# ?link=<token or tracking link>: the old GET form of /requests/track/.
_TOKEN_QUERY = re.compile(r"([?&]link=)[^&\s\"']+")


def redact(text: str) -> str:
    """Replace tracking tokens in ``text`` (paths, links, queries) with ``[token]``."""
    return _TOKEN_QUERY.sub(r"\1[token]", _TOKEN_PATH.sub(r"\1[token]", text))


class RedactTrackingTokens(logging.Filter):
    """Replace tracking tokens in request paths with ``[token]``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact(a) if isinstance(a, str) else a for a in record.args
            )
        elif isinstance(record.args, dict):
            # In place: the mapping may be a dict subclass (gunicorn's atoms).
            for key, value in list(record.args.items()):
                if isinstance(value, str):
                    record.args[key] = redact(value)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        request = getattr(record, "request", None)
        if request is not None and hasattr(request, "path"):
            # django.request attaches the request; its repr carries the path.
            record.request = _RedactedRequest(request)
        return True


class _RedactedRequest:
    def __init__(self, request):
        self._request = request

    def __getattr__(self, name):
        value = getattr(self._request, name)
        return (
            redact(value)
            if name in {"path", "path_info"} and isinstance(value, str)
            else value
        )

    def __repr__(self) -> str:
        return redact(repr(self._request))
