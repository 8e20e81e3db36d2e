"""Load the registry file of CONTRACT.md: merchants, terminals, bindings, transactions.

The import runs in three phases inside one transaction, so a bad record
rejects the whole file:

1. every record is checked in memory with the model fields' own validators;
2. existing rows are fetched by natural key in chunks and the file is checked
   against them (an identifier held by another row, a terminal bound to another
   merchant than the file says);
3. new rows are inserted and changed rows updated in batches.

Natural keys: ``merchant_id`` for merchants, ``serial_number`` for terminals,
(terminal, occurred_at, amount) for transactions. Importing the same file
twice changes nothing the second time.
"""

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Model
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _

from terminals.models import Binding, Merchant, Terminal, Transaction
from terminals.validators import normalise_code

# Rows per INSERT / UPDATE statement. An UPDATE from bulk_update grows a CASE
# clause per field and row, so it is kept smaller than the inserts.
CREATE_BATCH_SIZE = 2000
UPDATE_BATCH_SIZE = 500
# Keys per "IN (...)" lookup of existing rows; bounds the query size and the
# number of rows held per round trip.
PREFETCH_CHUNK_SIZE = 5000

CENT = Decimal("0.01")

MERCHANT_FIELDS = (
    "merchant_id",
    "uscc",
    "name",
    "legal_rep_name",
    "legal_rep_id_number",
    "contact_email",
    "contact_phone",
)
MERCHANT_OPTIONAL_FIELDS = ("settlement_card_number",)
# Identifiers a person may type with spaces or dashes; stored without them.
MERCHANT_CODE_FIELDS = {
    "merchant_id",
    "uscc",
    "legal_rep_id_number",
    "contact_phone",
    "settlement_card_number",
}
TERMINAL_FIELDS = ("serial_number", "terminal_id", "model", "kind", "merchant_id")
TERMINAL_UPDATABLE_FIELDS = ("terminal_id", "model", "kind")
TRANSACTION_FIELDS = ("serial_number", "amount", "occurred_at", "settled")


class RegistryImportError(Exception):
    """A record of the file is wrong; nothing was imported.

    ``section`` is ``merchants``, ``terminals`` or ``transactions`` and
    ``index`` the record's 0-based position in that list.
    """

    def __init__(
        self,
        reason: str,
        *,
        section: str | None = None,
        index: int | None = None,
        field: str | None = None,
    ) -> None:
        self.reason = str(reason)
        self.section = section
        self.index = index
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.section is not None:
            where = (
                self.section if self.index is None else f"{self.section}[{self.index}]"
            )
            if self.field:
                where += f".{self.field}"
            where += ": "
        return where + self.reason


@dataclass
class KindCounts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0


@dataclass
class ImportResult:
    merchants: KindCounts = field(default_factory=KindCounts)
    terminals: KindCounts = field(default_factory=KindCounts)
    bindings: KindCounts = field(default_factory=KindCounts)
    transactions: KindCounts = field(default_factory=KindCounts)

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {
            kind: vars(getattr(self, kind))
            for kind in ("merchants", "terminals", "bindings", "transactions")
        }


# ------------------------------------------------------------------------------
# Phase 1: check each record on its own
# ------------------------------------------------------------------------------


def normalise_serial_number(value: str) -> str:
    """Drop all white space from a serial number and upper-case it."""
    return re.sub(r"\s+", "", value).upper()


def _reason(error: ValidationError) -> str:
    return " ".join(str(message) for message in error.messages)


def _records(data: dict, section: str) -> list:
    records = data.get(section, [])
    if records is None:
        return []
    if not isinstance(records, list):
        raise RegistryImportError(_("must be a list of records"), section=section)
    return records


def _check_keys(
    record: Any,
    *,
    section: str,
    index: int,
    required: Sequence[str],
    optional: Sequence[str] = (),
) -> None:
    if not isinstance(record, dict):
        raise RegistryImportError(
            _("a record must be a JSON object"), section=section, index=index
        )
    for name in required:
        if name not in record:
            raise RegistryImportError(
                _("the field is missing"), section=section, index=index, field=name
            )
    unknown = sorted(set(record) - set(required) - set(optional))
    if unknown:
        raise RegistryImportError(
            _("unknown field(s): %(names)s") % {"names": ", ".join(unknown)},
            section=section,
            index=index,
        )


def _text(record: dict, name: str, *, section: str, index: int) -> str:
    value = record[name]
    if not isinstance(value, str):
        raise RegistryImportError(
            _("must be a string"), section=section, index=index, field=name
        )
    return value.strip()


def _clean(
    model: type[Model], name: str, value: Any, *, section: str, index: int
) -> Any:
    """Run the model field's own checks (validators, max_length, choices, blank)."""
    try:
        return model._meta.get_field(name).clean(value, None)
    except ValidationError as error:
        raise RegistryImportError(
            _reason(error), section=section, index=index, field=name
        ) from None


@dataclass
class _MerchantRow:
    index: int
    values: dict[str, str]


@dataclass
class _TerminalRow:
    index: int
    values: dict[str, str]
    merchant_id: str | None


@dataclass
class _TransactionRow:
    index: int
    serial_number: str
    amount: Decimal
    occurred_at: datetime
    settled: bool


def _parse_merchants(records: list) -> dict[str, _MerchantRow]:
    section = "merchants"
    rows: dict[str, _MerchantRow] = {}
    uscc_seen: dict[str, int] = {}
    for index, record in enumerate(records):
        _check_keys(
            record,
            section=section,
            index=index,
            required=MERCHANT_FIELDS,
            optional=MERCHANT_OPTIONAL_FIELDS,
        )
        values = {}
        for name in (*MERCHANT_FIELDS, *MERCHANT_OPTIONAL_FIELDS):
            if name not in record:
                continue
            value = _text(record, name, section=section, index=index)
            if name in MERCHANT_CODE_FIELDS:
                value = normalise_code(value)
            values[name] = _clean(Merchant, name, value, section=section, index=index)
        merchant_id = values["merchant_id"]
        if merchant_id in rows:
            raise RegistryImportError(
                _("merchant %(id)s already appears in record %(other)d")
                % {"id": merchant_id, "other": rows[merchant_id].index},
                section=section,
                index=index,
                field="merchant_id",
            )
        if values["uscc"] in uscc_seen:
            raise RegistryImportError(
                _("this unified social credit code already appears in record %(other)d")
                % {"other": uscc_seen[values["uscc"]]},
                section=section,
                index=index,
                field="uscc",
            )
        uscc_seen[values["uscc"]] = index
        rows[merchant_id] = _MerchantRow(index=index, values=values)
    return rows


def _parse_terminals(records: list) -> dict[str, _TerminalRow]:
    section = "terminals"
    rows: dict[str, _TerminalRow] = {}
    tid_seen: dict[str, int] = {}
    for index, record in enumerate(records):
        _check_keys(record, section=section, index=index, required=TERMINAL_FIELDS)
        serial = normalise_serial_number(
            _text(record, "serial_number", section=section, index=index)
        )
        values = {
            "serial_number": _clean(
                Terminal, "serial_number", serial, section=section, index=index
            ),
            "terminal_id": _clean(
                Terminal,
                "terminal_id",
                normalise_code(
                    _text(record, "terminal_id", section=section, index=index)
                ),
                section=section,
                index=index,
            ),
            "model": _clean(
                Terminal,
                "model",
                _text(record, "model", section=section, index=index),
                section=section,
                index=index,
            ),
            "kind": _clean(
                Terminal,
                "kind",
                _text(record, "kind", section=section, index=index),
                section=section,
                index=index,
            ),
        }
        merchant_id = None
        if record["merchant_id"] is not None:
            merchant_id = _clean(
                Merchant,
                "merchant_id",
                normalise_code(
                    _text(record, "merchant_id", section=section, index=index)
                ),
                section=section,
                index=index,
            )
        if serial in rows:
            raise RegistryImportError(
                _("serial number %(sn)s already appears in record %(other)d")
                % {"sn": serial, "other": rows[serial].index},
                section=section,
                index=index,
                field="serial_number",
            )
        tid = values["terminal_id"]
        if tid in tid_seen:
            raise RegistryImportError(
                _("terminal ID %(tid)s already appears in record %(other)d")
                % {"tid": tid, "other": tid_seen[tid]},
                section=section,
                index=index,
                field="terminal_id",
            )
        tid_seen[tid] = index
        rows[serial] = _TerminalRow(index=index, values=values, merchant_id=merchant_id)
    return rows


def _parse_transactions(records: list) -> list[_TransactionRow]:
    section = "transactions"
    rows = []
    for index, record in enumerate(records):
        _check_keys(record, section=section, index=index, required=TRANSACTION_FIELDS)
        serial = normalise_serial_number(
            _text(record, "serial_number", section=section, index=index)
        )
        _clean(Terminal, "serial_number", serial, section=section, index=index)
        amount_raw = record["amount"]
        if not isinstance(amount_raw, str | int) or isinstance(amount_raw, bool):
            # A JSON float would lose cents (128.1 is not 128.10 exactly).
            raise RegistryImportError(
                _('write the amount as a string, e.g. "128.50"'),
                section=section,
                index=index,
                field="amount",
            )
        amount = _clean(
            Transaction, "amount", str(amount_raw), section=section, index=index
        )
        raw_time = _text(record, "occurred_at", section=section, index=index)
        try:
            occurred_at = parse_datetime(raw_time)
        except ValueError:
            occurred_at = None
        if occurred_at is None:
            raise RegistryImportError(
                _("not an ISO 8601 date and time"),
                section=section,
                index=index,
                field="occurred_at",
            )
        if timezone.is_naive(occurred_at):
            raise RegistryImportError(
                _("give the time-zone offset, e.g. 2026-11-01T10:00:00+08:00"),
                section=section,
                index=index,
                field="occurred_at",
            )
        if not isinstance(record["settled"], bool):
            raise RegistryImportError(
                _("must be true or false"),
                section=section,
                index=index,
                field="settled",
            )
        rows.append(
            _TransactionRow(
                index=index,
                serial_number=serial,
                amount=amount.quantize(CENT),
                occurred_at=occurred_at.astimezone(UTC),
                settled=record["settled"],
            )
        )
    return rows


# ------------------------------------------------------------------------------
# Phase 2: compare with what the database holds
# ------------------------------------------------------------------------------


def _chunks(items: Iterable, size: int = PREFETCH_CHUNK_SIZE) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _fetch(queryset_for_chunk, keys: Iterable) -> Iterator:
    for chunk in _chunks(keys):
        yield from queryset_for_chunk(chunk)


# ------------------------------------------------------------------------------
# The service
# ------------------------------------------------------------------------------


def registry_import(*, data: dict) -> ImportResult:
    """Import the registry file ``data`` (parsed JSON) atomically and idempotently.

    Raise ``RegistryImportError`` naming the section, the record's index and the
    reason at the first bad record; nothing is written then.
    """
    if not isinstance(data, dict):
        raise RegistryImportError(
            _(
                "the file must hold a JSON object with merchants, terminals, transactions"
            )
        )
    unknown = sorted(set(data) - {"merchants", "terminals", "transactions"})
    if unknown:
        raise RegistryImportError(
            _("unknown section(s): %(names)s") % {"names": ", ".join(unknown)}
        )
    merchant_rows = _parse_merchants(_records(data, "merchants"))
    terminal_rows = _parse_terminals(_records(data, "terminals"))
    transaction_rows = _parse_transactions(_records(data, "transactions"))

    try:
        with transaction.atomic():
            return _import(
                merchant_rows=merchant_rows,
                terminal_rows=terminal_rows,
                transaction_rows=transaction_rows,
            )
    except IntegrityError as error:
        # Only reachable when another import changed the same rows concurrently.
        raise RegistryImportError(
            _("the database refused the import (%(error)s); nothing was imported")
            % {"error": error}
        ) from error


def _import(
    *,
    merchant_rows: dict[str, _MerchantRow],
    terminal_rows: dict[str, _TerminalRow],
    transaction_rows: list[_TransactionRow],
) -> ImportResult:
    result = ImportResult()
    now = timezone.now()

    # --- merchants: existing rows by merchant number and by USCC --------------
    referenced_ids = set(merchant_rows) | {
        row.merchant_id for row in terminal_rows.values() if row.merchant_id
    }
    merchants: dict[str, Merchant] = {
        m.merchant_id: m
        for m in _fetch(
            lambda chunk: Merchant.objects.filter(merchant_id__in=chunk), referenced_ids
        )
    }
    uscc_holders = dict(
        _fetch(
            lambda chunk: Merchant.objects.filter(uscc__in=chunk).values_list(
                "uscc", "merchant_id"
            ),
            [row.values["uscc"] for row in merchant_rows.values()],
        )
    )
    merchants_to_create: list[Merchant] = []
    merchants_to_update: list[Merchant] = []
    merchant_update_fields: set[str] = set()
    for merchant_id, row in merchant_rows.items():
        holder = uscc_holders.get(row.values["uscc"])
        if holder is not None and holder != merchant_id:
            # Allowed only if the file also gives the holder another code.
            holder_row = merchant_rows.get(holder)
            if holder_row is None or holder_row.values["uscc"] == row.values["uscc"]:
                raise RegistryImportError(
                    _("this unified social credit code belongs to merchant %(other)s")
                    % {"other": holder},
                    section="merchants",
                    index=row.index,
                    field="uscc",
                )
        existing = merchants.get(merchant_id)
        if existing is None:
            merchant = Merchant(**row.values)
            merchants_to_create.append(merchant)
            merchants[merchant_id] = merchant
            continue
        changed = [
            name
            for name, value in row.values.items()
            if getattr(existing, name) != value
        ]
        if changed:
            for name in changed:
                setattr(existing, name, row.values[name])
            existing.updated_at = now
            merchant_update_fields.update(changed)
            merchants_to_update.append(existing)
        else:
            result.merchants.unchanged += 1

    # --- terminals: existing rows by serial number and by terminal ID ---------
    for row in terminal_rows.values():
        if row.merchant_id is not None and row.merchant_id not in merchants:
            raise RegistryImportError(
                _("merchant %(id)s is neither in the file nor in the registry")
                % {"id": row.merchant_id},
                section="terminals",
                index=row.index,
                field="merchant_id",
            )
    terminals: dict[str, Terminal] = {
        t.serial_number: t
        for t in _fetch(
            lambda chunk: Terminal.objects.filter(serial_number__in=chunk),
            set(terminal_rows) | {row.serial_number for row in transaction_rows},
        )
    }
    tid_holders = dict(
        _fetch(
            lambda chunk: Terminal.objects.filter(terminal_id__in=chunk).values_list(
                "terminal_id", "serial_number"
            ),
            [row.values["terminal_id"] for row in terminal_rows.values()],
        )
    )
    # Active bindings of the terminals that exist: terminal pk -> merchant number.
    active_binding = dict(
        _fetch(
            lambda chunk: (
                Binding.objects.active()
                .filter(terminal_id__in=chunk)
                .values_list("terminal_id", "merchant__merchant_id")
            ),
            [t.pk for serial, t in terminals.items() if serial in terminal_rows],
        )
    )

    terminals_to_create: list[Terminal] = []
    terminals_to_update: list[Terminal] = []
    terminal_update_fields: set[str] = set()
    # (terminal serial, merchant number) pairs that need a new active binding.
    bindings_wanted: list[tuple[str, str]] = []
    for serial, row in terminal_rows.items():
        tid = row.values["terminal_id"]
        holder = tid_holders.get(tid)
        if holder is not None and holder != serial:
            holder_row = terminal_rows.get(holder)
            if holder_row is None or holder_row.values["terminal_id"] == tid:
                raise RegistryImportError(
                    _("terminal ID %(tid)s belongs to terminal %(sn)s")
                    % {"tid": tid, "sn": holder},
                    section="terminals",
                    index=row.index,
                    field="terminal_id",
                )
        if row.merchant_id is not None:
            merchant = merchants[row.merchant_id]
            if merchant.status == Merchant.Status.CLOSED:
                raise RegistryImportError(
                    _("merchant %(id)s is closed; nothing can be bound to it")
                    % {"id": row.merchant_id},
                    section="terminals",
                    index=row.index,
                    field="merchant_id",
                )
        existing = terminals.get(serial)
        if existing is None:
            terminal = Terminal(
                **row.values,
                status=(
                    Terminal.Status.ACTIVE
                    if row.merchant_id
                    else Terminal.Status.IN_STOCK
                ),
            )
            terminals_to_create.append(terminal)
            terminals[serial] = terminal
            if row.merchant_id:
                bindings_wanted.append((serial, row.merchant_id))
            continue

        bound_to = active_binding.get(existing.pk)
        if bound_to is not None and bound_to != row.merchant_id:
            if row.merchant_id is None:
                reason = _(
                    "the terminal is bound to merchant %(current)s but the file "
                    "lists it in stock; unbind it through a case first"
                ) % {"current": bound_to}
            else:
                reason = _(
                    "the terminal is bound to merchant %(current)s, not %(file)s; "
                    "unbind it through a case first"
                ) % {"current": bound_to, "file": row.merchant_id}
            raise RegistryImportError(
                reason, section="terminals", index=row.index, field="merchant_id"
            )
        changed = [
            name
            for name in TERMINAL_UPDATABLE_FIELDS
            if getattr(existing, name) != row.values[name]
        ]
        if row.merchant_id is not None:
            if bound_to is None:
                bindings_wanted.append((serial, row.merchant_id))
            else:
                result.bindings.unchanged += 1
            if existing.status != Terminal.Status.ACTIVE:
                existing.status = Terminal.Status.ACTIVE
                changed.append("status")
        if changed:
            for name in TERMINAL_UPDATABLE_FIELDS:
                setattr(existing, name, row.values[name])
            existing.updated_at = now
            terminal_update_fields.update(changed)
            terminals_to_update.append(existing)
        else:
            result.terminals.unchanged += 1

    for row in transaction_rows:
        if row.serial_number not in terminals:
            raise RegistryImportError(
                _("terminal %(sn)s is neither in the file nor in the registry")
                % {"sn": row.serial_number},
                section="transactions",
                index=row.index,
                field="serial_number",
            )

    # --- phase 3: write ------------------------------------------------------
    # Updates first: they may free a code that a new row takes.
    if merchants_to_update:
        Merchant.objects.bulk_update(
            merchants_to_update,
            sorted(merchant_update_fields | {"updated_at"}),
            batch_size=UPDATE_BATCH_SIZE,
        )
    Merchant.objects.bulk_create(merchants_to_create, batch_size=CREATE_BATCH_SIZE)
    result.merchants.created = len(merchants_to_create)
    result.merchants.updated = len(merchants_to_update)

    if terminals_to_update:
        Terminal.objects.bulk_update(
            terminals_to_update,
            sorted(terminal_update_fields | {"updated_at"}),
            batch_size=UPDATE_BATCH_SIZE,
        )
    Terminal.objects.bulk_create(terminals_to_create, batch_size=CREATE_BATCH_SIZE)
    result.terminals.created = len(terminals_to_create)
    result.terminals.updated = len(terminals_to_update)

    Binding.objects.bulk_create(
        [
            Binding(terminal=terminals[serial], merchant=merchants[mid], started_at=now)
            for serial, mid in bindings_wanted
        ],
        batch_size=CREATE_BATCH_SIZE,
    )
    result.bindings.created = len(bindings_wanted)

    _import_transactions(
        rows=transaction_rows, terminals=terminals, result=result.transactions
    )
    return result


def _import_transactions(
    *,
    rows: list[_TransactionRow],
    terminals: dict[str, Terminal],
    result: KindCounts,
) -> None:
    if not rows:
        return
    # Existing transactions of the terminals named in the file, by natural key.
    terminal_pks = {terminals[row.serial_number].pk for row in rows}
    existing: dict[tuple[int, datetime, Decimal], tuple[int, bool]] = {
        (terminal_pk, occurred_at.astimezone(UTC), amount.quantize(CENT)): (
            pk,
            settled,
        )
        for pk, terminal_pk, occurred_at, amount, settled in _fetch(
            lambda chunk: (
                Transaction.objects.filter(terminal_id__in=chunk)
                .order_by()
                .values_list("pk", "terminal_id", "occurred_at", "amount", "settled")
            ),
            terminal_pks,
        )
    }
    seen: dict[tuple[int, datetime, Decimal], int] = {}
    to_create: list[Transaction] = []
    to_settle: list[int] = []
    for row in rows:
        terminal = terminals[row.serial_number]
        key = (terminal.pk, row.occurred_at, row.amount)
        if key in seen:
            raise RegistryImportError(
                _(
                    "the same terminal, time and amount as record %(other)d; "
                    "a transaction is listed once"
                )
                % {"other": seen[key]},
                section="transactions",
                index=row.index,
            )
        seen[key] = row.index
        found = existing.get(key)
        if found is None:
            to_create.append(
                Transaction(
                    terminal=terminal,
                    amount=row.amount,
                    occurred_at=row.occurred_at,
                    settled=row.settled,
                )
            )
        elif row.settled and not found[1]:
            to_settle.append(found[0])
        else:
            # Settlement is one-way: a file never un-settles a transaction.
            result.unchanged += 1
    Transaction.objects.bulk_create(to_create, batch_size=CREATE_BATCH_SIZE)
    for chunk in _chunks(to_settle):
        Transaction.objects.filter(pk__in=chunk).update(settled=True)
    result.created = len(to_create)
    result.updated = len(to_settle)
