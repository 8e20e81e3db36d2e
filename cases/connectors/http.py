"""The HTTP connector: the provider's core / TMS does the work, the registry mirrors it.

The protocol (README, "Plugging in the provider's core"):

- ``POST {CORE_URL}/operations/`` with a JSON body naming the operation, the
  case, the merchant and the terminals, headers ``Authorization: Bearer
  {CORE_API_KEY}`` and ``Idempotency-Key``; the answer is JSON
  ``{"status": "done" | "pending" | "refused", "reference": "...",
  "reason": "..."}``. ``409`` means the key was already used: its body is the
  first answer (a duplicate is a success, never a second operation).
- ``GET {CORE_URL}/operations/<key>/``: the same answer, for polling a
  pending operation.
- The core may instead POST the final answer to ``/api/core/callback/``
  (``cases.connectors.views``), signed with ``CORE_CALLBACK_SECRET``.

Timeouts, connection errors, 5xx and 429 are retried here ``CORE_RETRIES``
times with the same key, then reported as ``ConnectorUnavailable`` (the case
waits); every other 4xx is a refusal and fails the case with the core's
reason. Consecutive failures open a circuit breaker shared by all workers.
"""

import logging
import time
from dataclasses import replace
from urllib.parse import quote

import requests
from django.conf import settings
from django.utils.translation import gettext

from cases.connectors import (
    ConnectorRefused,
    ConnectorUnavailable,
    Operation,
    StepOutcome,
)
from cases.connectors.breaker import CircuitBreaker
from cases.connectors.local import LocalConnector

logger = logging.getLogger(__name__)

# Answers worth asking again (besides every 5xx).
RETRY_STATUSES = frozenset({408, 429})


def core_breaker() -> CircuitBreaker:
    return CircuitBreaker(
        name="core",
        threshold=settings.CORE_BREAKER_THRESHOLD,
        reset_after=settings.CORE_BREAKER_RESET_SECONDS,
    )


class HTTPConnector:
    """Ask the core first; once it has done a step, mirror it on the local registry."""

    # A remote call per step: each step commits on its own.
    remote = True

    def __init__(self) -> None:
        if not settings.CORE_URL:
            raise ConnectorUnavailable("CORE_URL is not set")
        self.base_url = settings.CORE_URL.rstrip("/")
        self.breaker = core_breaker()
        self.local = LocalConnector()

    # --- the steps ---------------------------------------------------------------

    def verify_bindings(self, operation: Operation) -> StepOutcome:
        # The core refuses (4xx) when a terminal is no longer bound as filed.
        return self._submit(operation)

    def settle(self, operation: Operation) -> StepOutcome:
        return self._submit(operation)

    def export(self, operation: Operation) -> StepOutcome:
        return self._submit(operation)

    def unbind(self, operation: Operation) -> StepOutcome:
        return self._submit(operation)

    def deactivate_sim(self, operation: Operation) -> StepOutcome:
        return self._submit(operation)

    def bind_replacement(self, operation: Operation) -> StepOutcome:
        return self._submit(operation)

    def close_account(self, operation: Operation) -> StepOutcome:
        return self._submit(operation)

    def poll(self, operation: Operation) -> StepOutcome:
        answer = operation.answer or self._request(
            "GET",
            f"{self.base_url}/operations/{quote(operation.key, safe='')}/",
            key=operation.key,
        )
        return self._finish(operation, answer)

    # --- plumbing ----------------------------------------------------------------

    def _submit(self, operation: Operation) -> StepOutcome:
        answer = self._request(
            "POST",
            f"{self.base_url}/operations/",
            key=operation.key,
            body=self._body(operation),
        )
        return self._finish(operation, answer)

    def _body(self, operation: Operation) -> dict:
        case = operation.case
        replacement = case.replacement_terminal
        return {
            "operation": operation.step,
            "idempotency_key": operation.key,
            "case": case.reference,
            "merchant_id": case.merchant.merchant_id,
            "serial_numbers": [t.serial_number for t in operation.terminals],
            "replacement_serial_number": replacement.serial_number
            if replacement
            else None,
            "callback_url": settings.SITE_URL.rstrip("/") + "/api/core/callback/",
        }

    def _finish(self, operation: Operation, answer: dict) -> StepOutcome:
        status = answer.get("status")
        reference = str(answer.get("reference") or "")[:100]
        if status == "pending":
            return StepOutcome(reference=reference, pending=True)
        if status == "refused":
            raise ConnectorRefused(self._reason(answer))
        if status != "done":
            raise ConnectorUnavailable(f"unexpected answer from the core: {status!r}")
        # The core may refuse some terminals of a batch and do the others.
        refused = answer.get("refused") if operation.step == "unbind" else None
        if isinstance(refused, dict) and refused:
            refused = {str(sn): str(why)[:500] for sn, why in refused.items()}
            operation = replace(
                operation,
                terminals=[
                    t for t in operation.terminals if t.serial_number not in refused
                ],
            )
        mirrored = getattr(self.local, operation.step)(operation)
        result = dict(mirrored.result)
        if isinstance(refused, dict) and refused:
            result["refused"] = {**result.get("refused", {}), **refused}
        return StepOutcome(
            result={**result, "core_reference": reference},
            reference=reference,
        )

    @staticmethod
    def _reason(answer: dict) -> str:
        reason = answer.get("reason") or answer.get("detail") or answer.get("message")
        return gettext("Refused by the core: %(reason)s") % {
            "reason": str(reason or answer)[:500]
        }

    def _request(
        self, method: str, url: str, *, key: str, body: dict | None = None
    ) -> dict:
        """Send one request with retries; return the JSON answer of the core."""
        headers = {
            "Authorization": f"Bearer {settings.CORE_API_KEY}",
            "Idempotency-Key": key,
            "Accept": "application/json",
        }
        timeout = (settings.CORE_CONNECT_TIMEOUT, settings.CORE_READ_TIMEOUT)
        attempts = 1 + max(0, settings.CORE_RETRIES)
        error = ""
        for attempt in range(attempts):
            if self.breaker.is_open():
                raise ConnectorUnavailable(
                    gettext("The core is unavailable (circuit open): %(error)s")
                    % {"error": error or gettext("too many failures")}
                )
            try:
                response = requests.request(
                    method, url, json=body, headers=headers, timeout=timeout
                )
            except requests.RequestException as exc:
                error = f"{type(exc).__name__}: {exc}"[:300]
            else:
                if response.status_code < 500 and (
                    response.status_code not in RETRY_STATUSES
                ):
                    self.breaker.record_success()  # the core answered: it is up
                    return self._answer(response)
                error = f"HTTP {response.status_code}"
            self.breaker.record_failure()
            logger.warning("core %s %s failed (%s), key %s", method, url, error, key)
            if attempt + 1 < attempts:
                time.sleep(settings.CORE_RETRY_BACKOFF * 2**attempt)
        raise ConnectorUnavailable(
            gettext("The core is unavailable: %(error)s") % {"error": error}
        )

    @staticmethod
    def _answer(response: requests.Response) -> dict:
        try:
            answer = response.json()
        except ValueError:
            answer = {"reason": response.text[:500]}
        if not isinstance(answer, dict):
            answer = {"reason": str(answer)[:500]}
        if response.status_code == 409:
            # The key was used before: the body is the first answer.
            answer.setdefault("status", "done")
            return answer
        if response.status_code >= 400:
            return {**answer, "status": "refused"}
        return answer
