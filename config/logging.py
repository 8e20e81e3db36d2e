"""Logging filters that keep secrets out of log lines."""

import logging
import re

# /requests/<token>/... — the tracking token opens a case; never log it.
_TOKEN_PATH = re.compile(r"(/requests/)(?!new/|track/)[A-Za-z0-9_-]{16,}")


def redact(text: str) -> str:
    return _TOKEN_PATH.sub(r"\1[token]", text)


class RedactTrackingTokens(logging.Filter):
    """Replace tracking tokens in request paths with ``[token]``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = (
                tuple(redact(a) if isinstance(a, str) else a for a in record.args)
                if isinstance(record.args, tuple)
                else record.args
            )
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
