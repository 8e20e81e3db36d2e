"""The base of every keyed API view: audit, idempotency keys, last use."""

import hashlib
import logging
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.http import HttpResponse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from api.auth import APIKeyAuthentication, APIKeyRateThrottle, HasScope
from api.models import APIAuditEntry, APIKey, IdempotencyRecord
from api.problems import Conflict, UnprocessableContent
from config.client_address import client_address

access_log = logging.getLogger("api.access")

IDEMPOTENCY_HEADER = "Idempotency-Key"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LAST_USED_RESOLUTION = timedelta(minutes=1)
# A first request still without an answer after this long died with its
# process (no 5xx was even sent): its key may be used again.
IDEMPOTENCY_ABANDONED_AFTER = timedelta(minutes=10)


class _Replay(Exception):
    def __init__(self, record: IdempotencyRecord):
        self.record = record


def _fingerprint(request) -> str:
    digest = hashlib.sha256(f"{request.method} {request.path}\n".encode())
    content_type = request.content_type or ""
    if content_type.startswith("multipart/"):
        for name in sorted(request.POST):
            for value in request.POST.getlist(name):
                digest.update(f"{name}={value}\n".encode())
        for name in sorted(request.FILES):
            for upload in request.FILES.getlist(name):
                digest.update(f"{name}:{upload.name}:{upload.size}\n".encode())
    else:
        digest.update(request.body)
    return digest.hexdigest()


class KeyedAPIView(APIView):
    """An API view that needs a key with ``required_scopes[method]``.

    Every POST may carry an ``Idempotency-Key``: the first answer (other than
    a 5xx) is stored and a repeat with the same key from the same API key
    gets it again, without acting twice. Every write is audited with the key's
    name as the actor; reads are logged to ``api.access``.
    """

    authentication_classes = [APIKeyAuthentication]
    permission_classes = [HasScope]
    throttle_classes = [APIKeyRateThrottle]
    required_scopes: dict[str, str] = {}
    # Set by views that know which object they touched, for the audit entry.
    audit_reference = ""

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        self._idempotency = None
        key = request.headers.get(IDEMPOTENCY_HEADER, "").strip()
        if request.method != "POST" or not key:
            return
        if len(key) > 255:
            raise UnprocessableContent(_("The Idempotency-Key is too long."))
        fingerprint = _fingerprint(request)
        IdempotencyRecord.objects.filter(
            api_key=request.auth,
            key=key,
            status_code__isnull=True,
            created_at__lt=timezone.now() - IDEMPOTENCY_ABANDONED_AFTER,
        ).delete()
        record = IdempotencyRecord.objects.filter(api_key=request.auth, key=key).first()
        if record is None:
            try:
                with transaction.atomic():
                    record = IdempotencyRecord.objects.create(
                        api_key=request.auth,
                        key=key,
                        method=request.method,
                        path=request.path[:500],
                        fingerprint=fingerprint,
                    )
            except IntegrityError:
                record = IdempotencyRecord.objects.get(api_key=request.auth, key=key)
            else:
                self._idempotency = record
                return
        if record.fingerprint != fingerprint:
            raise UnprocessableContent(
                _("This Idempotency-Key was used for a different request.")
            )
        if record.status_code is None:
            raise Conflict(_("A request with this Idempotency-Key is still running."))
        raise _Replay(record)

    def handle_exception(self, exc):
        if isinstance(exc, _Replay):
            record = exc.record
            response = HttpResponse(
                record.body,
                status=record.status_code,
                content_type=record.content_type or "application/json",
            )
            response["Idempotent-Replayed"] = "true"
            self._replayed = True
            return response
        return super().handle_exception(exc)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        api_key = getattr(request, "_auth", None)
        if not isinstance(api_key, APIKey) or getattr(self, "_replayed", False):
            return response
        self._remember(response)
        self._audit(request, api_key, response)
        return response

    def _remember(self, response) -> None:
        record = getattr(self, "_idempotency", None)
        if record is None:
            return
        if response.status_code >= 500:
            # Let the caller retry with the same key.
            record.delete()
            return
        data = getattr(response, "data", None)
        body = JSONRenderer().render(data).decode() if data is not None else ""
        record.status_code = response.status_code
        # Not rendered yet: the header is set later from this or the renderer.
        record.content_type = (
            getattr(response, "content_type", None) or "application/json"
        )
        record.body = body
        record.save(update_fields=["status_code", "content_type", "body"])

    def _audit(self, request, api_key: APIKey, response) -> None:
        now = timezone.now()
        if api_key.last_used_at is None or (
            now - api_key.last_used_at > LAST_USED_RESOLUTION
        ):
            APIKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
            # The instance may be the one api.auth keeps for the next requests.
            api_key.last_used_at = now
        if request.method in WRITE_METHODS:
            APIAuditEntry.objects.create(
                api_key=api_key,
                actor_label=f"api:{api_key.name}",
                method=request.method,
                path=request.path[:500],
                status_code=response.status_code,
                object_reference=self.audit_reference[:100],
                client_ip=client_address(request),
            )
        else:
            access_log.info(
                "api read key=%s method=%s path=%s status=%s",
                api_key.name,
                request.method,
                request.path,
                response.status_code,
            )
