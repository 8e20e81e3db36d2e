"""The core's callback: the final answer to a step it had answered "pending".

``POST /api/core/callback/`` with a JSON body ``{"idempotency_key": "...",
"status": "done" | "refused", "reference": "...", "reason": "..."}`` and two
headers: ``X-Core-Timestamp`` (Unix seconds) and ``X-Core-Signature:
sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" with CORE_CALLBACK_SECRET>``.
A wrong or stale signature is 403 and changes nothing; an unknown key is 404;
a duplicate callback is 200 with ``{"accepted": false}``.
"""

import hashlib
import hmac
import json
import time

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from cases.models import ExecutionStep
from cases.services.execution import execution_step_answer

SIGNATURE_HEADER = "X-Core-Signature"
TIMESTAMP_HEADER = "X-Core-Timestamp"


def callback_signature(*, secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value the core sends with ``body``."""
    digest = hmac.new(
        secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return f"sha256={digest}"


def _signed(request: HttpRequest) -> bool:
    secret = settings.CORE_CALLBACK_SECRET
    timestamp = request.headers.get(TIMESTAMP_HEADER, "")
    if not secret or not timestamp.isdigit():
        return False
    if abs(time.time() - int(timestamp)) > settings.CORE_CALLBACK_MAX_SKEW:
        return False
    expected = callback_signature(secret=secret, timestamp=timestamp, body=request.body)
    return hmac.compare_digest(expected, request.headers.get(SIGNATURE_HEADER, ""))


@csrf_exempt
@require_POST
def core_callback(request: HttpRequest) -> JsonResponse:
    if not _signed(request):
        return JsonResponse({"detail": "invalid signature"}, status=403)
    try:
        data = json.loads(request.body)
    except ValueError:
        data = None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("idempotency_key"), str)
        or data.get("status") not in ("done", "refused", "pending")
    ):
        return JsonResponse({"detail": "malformed callback"}, status=400)
    answer = {
        "status": data["status"],
        "reference": str(data.get("reference") or "")[:100],
        "reason": str(data.get("reason") or "")[:500],
    }
    try:
        accepted = execution_step_answer(key=data["idempotency_key"], answer=answer)
    except ExecutionStep.DoesNotExist:
        return JsonResponse({"detail": "unknown idempotency key"}, status=404)
    return JsonResponse({"accepted": accepted})
