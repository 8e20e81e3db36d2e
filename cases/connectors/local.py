"""The local connector: the steps' effects on this product's own registry.

This is the behaviour of the product on its own (``make run``): the registry
imported with ``import_registry`` is the system of record. Each effect checks
the registry first (``terminals.services``), so a step run twice does it once.
"""

import csv
import hashlib
import io
import tempfile

from django.core.files import File
from django.db import transaction

from cases.connectors import Operation, StepOutcome
from cases.models import Case, Document
from cases.services.returns import device_returns_open
from terminals import services as registry
from terminals.models import Transaction

EXPORT_HEADER = (
    "serial_number",
    "terminal_id",
    "occurred_at",
    "amount",
    "settled",
    "settlement_batch",
)
# Rows fetched per round trip while streaming the export (bounded memory).
EXPORT_CHUNK_SIZE = 2000


def case_export_storage_name(case: Case) -> str:
    """Deterministic storage name: a rerun after a crash overwrites, never duplicates."""
    return f"cases/exports/{case.pk}/transactions-{case.reference or case.pk}.csv"


class LocalConnector:
    """Carry out the steps on the local registry; nothing is ever pending."""

    # No remote call separates the steps: the execution commits them together
    # (``cases.services.execution``). A subclass that calls out sets True.
    remote = False

    def verify_bindings(self, operation: Operation) -> StepOutcome:
        """Nothing more: the execution step checked the local registry itself."""
        return StepOutcome()

    def settle(self, operation: Operation) -> StepOutcome:
        """Settle the terminals' unsettled transactions in the case's one batch."""
        case = operation.case
        batch = registry.transactions_settle(
            merchant=case.merchant,
            terminals=operation.terminals,
            reference=case.settlement_reference,
        )
        Case.objects.filter(pk=case.pk).update(
            settlement_batch=batch, settlement_total=batch.total
        )
        case.settlement_batch = batch
        case.settlement_total = batch.total
        return StepOutcome(
            result={
                "batch": batch.reference,
                "total": str(batch.total),
                "transactions": batch.transaction_count,
            }
        )

    def export(self, operation: Operation) -> StepOutcome:
        """Stream the terminals' transaction history to a CSV stored with the case."""
        case = operation.case
        existing = (
            Document.objects.filter(case=case, kind=Document.Kind.DATA_EXPORT)
            .order_by("pk")
            .first()
        )
        if existing is not None:
            return StepOutcome(result={"document": existing.pk, "size": existing.size})
        rows = (
            Transaction.objects.filter(
                terminal_id__in=[t.pk for t in operation.terminals]
            )
            .order_by("terminal__serial_number", "occurred_at", "pk")
            .values_list(
                "terminal__serial_number",
                "terminal__terminal_id",
                "occurred_at",
                "amount",
                "settled",
                "settlement_batch__reference",
            )
            .iterator(chunk_size=EXPORT_CHUNK_SIZE)
        )
        storage = Document._meta.get_field("file").storage
        name = case_export_storage_name(case)
        count = 0
        digest = hashlib.sha256()
        with tempfile.TemporaryFile() as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
            writer = csv.writer(text)
            writer.writerow(EXPORT_HEADER)
            for sn, tid, occurred_at, amount, settled, batch in rows:
                writer.writerow(
                    [
                        sn,
                        tid,
                        occurred_at.isoformat(),
                        amount,
                        int(settled),
                        batch or "",
                    ]
                )
                count += 1
            text.flush()
            size = raw.tell()
            raw.seek(0)
            for chunk in iter(lambda: raw.read(64 * 1024), b""):
                digest.update(chunk)
            raw.seek(0)
            # A file left by a run that crashed before its commit is replaced.
            if storage.exists(name):
                storage.delete(name)
            saved = storage.save(name, File(raw, name=name))
            text.detach()
        document = Document.objects.create(
            case=case,
            kind=Document.Kind.DATA_EXPORT,
            file=saved,
            original_name=f"{case.reference or case.pk}-transactions.csv",
            size=size,
            sha256=digest.hexdigest(),
            content_type="text/csv",
            review_status=Document.ReviewStatus.ACCEPTED,
        )
        return StepOutcome(
            result={"document": document.pk, "size": size, "rows": count}
        )

    def unbind(self, operation: Operation) -> StepOutcome:
        """End the bindings of the batch's terminals (history kept).

        A terminal the registry refuses (bound to another merchant since) is
        reported in ``refused`` with the reason; the others are released.
        """
        case = operation.case
        released = []
        refused = {}
        for terminal in operation.terminals:
            try:
                with transaction.atomic():
                    binding = registry.binding_release(
                        terminal=terminal,
                        merchant=case.merchant,
                        reason=f"case {case.reference or case.pk}: {case.reason}",
                        at=operation.now,
                    )
            except registry.RegistryError as exc:
                refused[terminal.serial_number] = str(exc)
                continue
            if binding is not None:
                released.append(terminal.serial_number)
        # The unbound devices are expected back (once per case and device).
        unbound = [t for t in operation.terminals if t.serial_number not in refused]
        returns = device_returns_open(case=case, terminals=unbound, now=operation.now)
        return StepOutcome(
            result={
                "released": released,
                "refused": refused,
                "returns": [r.pk for r in returns],
            }
        )

    def deactivate_sim(self, operation: Operation) -> StepOutcome:
        """Deactivate the SIM cards of the unbound terminals (a date on each)."""
        done = registry.sims_deactivate(terminals=operation.terminals, at=operation.now)
        return StepOutcome(result={"deactivated": done})

    def bind_replacement(self, operation: Operation) -> StepOutcome:
        """Bind and activate the replacement device."""
        case = operation.case
        binding = registry.binding_create(
            terminal=case.replacement_terminal, merchant=case.merchant, at=operation.now
        )
        return StepOutcome(
            result={
                "binding": binding.pk,
                "terminal": case.replacement_terminal.serial_number,
            }
        )

    def close_account(self, operation: Operation) -> StepOutcome:
        """Close the merchant account (refused while a terminal is still bound)."""
        merchant = registry.merchant_close(
            merchant=operation.case.merchant, at=operation.now
        )
        return StepOutcome(result={"closed_at": merchant.closed_at.isoformat()})

    def poll(self, operation: Operation) -> StepOutcome:
        """Nothing is ever pending locally: run the step again (it is idempotent)."""
        return getattr(self, operation.step)(operation)
