"""Connectors: how an execution step reaches the provider's systems.

The execution steps (``cases.services.execution``) verify the bindings,
settle, export, unbind, deactivate the SIMs, bind the replacement and close
the account through one
``Connector``, chosen by ``CORE_CONNECTOR``:

- ``local`` (the default): the effects on this product's own registry
  (``terminals.services``), as before any core was plugged in;
- ``http``: the provider's core / TMS over HTTP (``cases.connectors.http``),
  then the same effects on the local registry, which mirrors the core.

A connector method either finishes the step (``StepOutcome`` with ``pending``
False), reports that the core accepted it and will answer later (``pending``
True: the core's callback or a poll ends it), refuses it for good
(``ConnectorRefused``, the case fails with the core's reason) or cannot reach
the core now (``ConnectorUnavailable``, transient: the case waits and retries).
Every call carries an idempotency key derived from the case and the step, the
same on every retry, so the core does each operation once.

The unbinding goes by batches of terminals (``EXECUTION_BATCH_SIZE``), each
with its own key (``cases.services.execution.terminal_batch_key``). Its
result may name terminals refused one by one, ``{"refused": {serial: reason}}``
(the HTTP core says so in a "done" answer); the others of the batch are done.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from django.conf import settings
from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from cases.models import Case
    from terminals.models import Terminal

CONNECTORS = {
    "local": "cases.connectors.local.LocalConnector",
    "http": "cases.connectors.http.HTTPConnector",
}


class ConnectorRefused(Exception):
    """The core refused the operation for good (its reason is the message)."""


class ConnectorUnavailable(Exception):
    """The core could not be reached or failed (timeout, 5xx, circuit open): retry later."""


@dataclass(frozen=True)
class Operation:
    """One step of one case, as handed to a connector."""

    step: str
    key: str
    case: "Case"
    terminals: list["Terminal"]
    now: datetime
    # The core's final answer when its callback already delivered it.
    answer: dict | None = None


@dataclass(frozen=True)
class StepOutcome:
    """What a connector did: the step's result, the core's reference, pending or not."""

    result: dict = field(default_factory=dict)
    reference: str = ""
    pending: bool = False


class Connector(Protocol):
    """The operations of the execution steps; each one safe to call twice."""

    def verify_bindings(self, operation: Operation) -> StepOutcome:
        """Confirm the terminals are still bound as filed (after the local check)."""
        ...

    def settle(self, operation: Operation) -> StepOutcome: ...

    def export(self, operation: Operation) -> StepOutcome: ...

    def unbind(self, operation: Operation) -> StepOutcome: ...

    def deactivate_sim(self, operation: Operation) -> StepOutcome:
        """Deactivate the SIM / data cards of the unbound terminals."""
        ...

    def bind_replacement(self, operation: Operation) -> StepOutcome: ...

    def close_account(self, operation: Operation) -> StepOutcome: ...

    def poll(self, operation: Operation) -> StepOutcome:
        """Finish a step the core answered "pending", or say it is still pending."""
        ...


def connector_get() -> Connector:
    """The connector named by ``CORE_CONNECTOR`` (a short name or a dotted path)."""
    name = getattr(settings, "CORE_CONNECTOR", "local") or "local"
    return import_string(CONNECTORS.get(name, name))()


def idempotency_key(*, case: "Case", step: str, round: int = 0) -> str:
    """The key of ``step`` of ``case``: the same on every retry of this round.

    ``round`` counts the Operations retries of the failed case, so an operation
    the core refused is asked again under a new key after the cause is fixed.
    """
    key = f"{case.reference or f'case{case.pk}'}.{step}"
    return f"{key}.r{round}" if round else key
