"""Effects on the terminal registry, each safe to call twice.

The execution of an unbinding case calls these one step at a time. A task
delivered twice, or retried after a crash, calls them again: every function
checks the registry first and does nothing that is already done.
"""

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from terminals.models import Binding, Merchant, SettlementBatch, Terminal, Transaction

CENTS = Decimal("0.01")


class RegistryError(Exception):
    """The registry is not in a state that allows the effect; not worth retrying."""

    def __init__(self, message):
        super().__init__(str(message))
        self.message = message


def binding_release(
    *, terminal: Terminal, merchant: Merchant, reason: str, at: datetime
) -> Binding | None:
    """End the active binding of ``terminal`` to ``merchant``; keep it as history.

    Return the binding ended by this call, or None when there is none left to
    end (already released by an earlier run). A terminal actively bound to
    another merchant is refused.
    """
    active = list(
        Binding.objects.active().select_for_update().filter(terminal=terminal)
    )
    if not active:
        return None
    binding = active[0]
    if binding.merchant_id != merchant.pk:
        raise RegistryError(
            _("Terminal %(sn)s is bound to another merchant.")
            % {"sn": terminal.serial_number}
        )
    binding.ended_at = max(at, binding.started_at)
    binding.ended_reason = reason[:200]
    binding.save(update_fields=["ended_at", "ended_reason"])
    Terminal.objects.filter(pk=terminal.pk).update(
        status=Terminal.Status.UNBOUND, updated_at=at
    )
    terminal.status = Terminal.Status.UNBOUND
    return binding


def binding_create(*, terminal: Terminal, merchant: Merchant, at: datetime) -> Binding:
    """Bind and activate ``terminal`` for ``merchant``; return the active binding.

    Calling it again returns the same binding. A terminal actively bound to
    another merchant, or a closed merchant, is refused (the database also
    refuses a second active binding of a terminal).
    """
    existing = (
        Binding.objects.active().select_for_update().filter(terminal=terminal).first()
    )
    if existing is not None:
        if existing.merchant_id == merchant.pk:
            return existing
        raise RegistryError(
            _("The replacement device %(sn)s is bound to another merchant.")
            % {"sn": terminal.serial_number}
        )
    if merchant.status != Merchant.Status.ACTIVE:
        raise RegistryError(_("The merchant account is closed."))
    binding = Binding.objects.create(
        terminal=terminal, merchant=merchant, started_at=at
    )
    Terminal.objects.filter(pk=terminal.pk).update(
        status=Terminal.Status.ACTIVE, updated_at=at
    )
    terminal.status = Terminal.Status.ACTIVE
    return binding


def transactions_settle(
    *, merchant: Merchant, terminals: Iterable[Terminal], reference: str
) -> SettlementBatch:
    """Settle every unsettled transaction of ``terminals`` in the batch ``reference``.

    The reference identifies the batch: a second call finds the same batch,
    adds whatever is still unsettled (normally nothing) and recomputes the
    total from the batch's transactions, so the total is never counted twice.
    """
    connection = transaction.get_connection()
    assert connection.in_atomic_block, "call inside atomic"
    terminal_ids = [t.pk for t in terminals]
    batches = connection.ops.quote_name(SettlementBatch._meta.db_table)
    transactions = connection.ops.quote_name(Transaction._meta.db_table)
    with connection.cursor() as cursor:
        # Find or create the batch, locked, in one statement (an upsert whose
        # update changes nothing).
        cursor.execute(
            f"INSERT INTO {batches} "
            "(merchant_id, reference, total, transaction_count, created_at) "
            "VALUES (%s, %s, 0, 0, %s) "
            "ON CONFLICT (reference) DO UPDATE SET reference = EXCLUDED.reference "
            "RETURNING id, merchant_id, created_at",
            [
                merchant.pk,
                reference,
                connection.ops.adapt_datetimefield_value(timezone.now()),
            ],
        )
        batch_id, owner_id, created_at = cursor.fetchone()
        if owner_id != merchant.pk:
            raise RegistryError(
                _("Settlement batch %(ref)s belongs to another merchant.")
                % {"ref": reference}
            )
        Transaction.objects.filter(terminal_id__in=terminal_ids, settled=False).update(
            settled=True, settlement_batch_id=batch_id
        )
        # The total from the batch's transactions, written and read back at once.
        cursor.execute(
            f"UPDATE {batches} SET "
            f"total = COALESCE((SELECT SUM(amount) FROM {transactions} "
            "WHERE settlement_batch_id = %s), 0), "
            f"transaction_count = (SELECT COUNT(*) FROM {transactions} "
            "WHERE settlement_batch_id = %s) "
            "WHERE id = %s RETURNING total, transaction_count",
            [batch_id, batch_id, batch_id],
        )
        total, count = cursor.fetchone()
    batch = SettlementBatch(
        pk=batch_id,
        merchant=merchant,
        reference=reference,
        total=Decimal(str(total)).quantize(CENTS),
        transaction_count=count,
    )
    batch.created_at = SettlementBatch._meta.get_field("created_at").to_python(
        created_at
    )
    return batch


def merchant_close(*, merchant: Merchant, at: datetime) -> Merchant:
    """Close the merchant account (注销); refuse while a terminal is still bound.

    Closing a closed account does nothing.
    """
    merchant = Merchant.objects.select_for_update().get(pk=merchant.pk)
    if merchant.status == Merchant.Status.CLOSED:
        return merchant
    still_bound = list(
        Binding.objects.active()
        .filter(merchant=merchant)
        .values_list("terminal__serial_number", flat=True)[:5]
    )
    if still_bound:
        raise RegistryError(
            _("The account cannot be closed: terminals still bound (%(sns)s).")
            % {"sns": ", ".join(still_bound)}
        )
    merchant.status = Merchant.Status.CLOSED
    merchant.closed_at = at
    merchant.save(update_fields=["status", "closed_at", "updated_at"])
    return merchant


def sims_deactivate(*, terminals: Iterable[Terminal], at: datetime) -> list[str]:
    """Deactivate the SIM cards of ``terminals``; return the serial numbers done now.

    A SIM already deactivated keeps its first date.
    """
    ids = [t.pk for t in terminals]
    if not ids:
        return []
    connection = transaction.get_connection()
    stamp = connection.ops.adapt_datetimefield_value(at)
    with connection.cursor() as cursor:
        # One statement: the SIMs still active, deactivated and named.
        cursor.execute(
            f"UPDATE {connection.ops.quote_name(Terminal._meta.db_table)} "
            "SET sim_deactivated_at = %s, updated_at = %s "
            f"WHERE id IN ({', '.join(['%s'] * len(ids))}) "
            "AND sim_deactivated_at IS NULL RETURNING serial_number",
            [stamp, stamp, *ids],
        )
        done = sorted(serial for (serial,) in cursor.fetchall())
    for terminal in terminals:
        if terminal.sim_deactivated_at is None:
            terminal.sim_deactivated_at = at
    return done


def terminal_restock(*, terminal: Terminal, at: datetime) -> Terminal:
    """Put a returned, refurbished device back in stock (bound to nobody).

    Refused while the device is actively bound (it never came back).
    """
    if Binding.objects.active().filter(terminal=terminal).exists():
        raise RegistryError(
            _("Terminal %(sn)s is still bound.") % {"sn": terminal.serial_number}
        )
    Terminal.objects.filter(pk=terminal.pk).update(
        status=Terminal.Status.IN_STOCK, updated_at=at
    )
    terminal.status = Terminal.Status.IN_STOCK
    return terminal
