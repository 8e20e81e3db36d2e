"""Load the registry file of CONTRACT.md: merchants, terminals, bindings, transactions.

The import runs in three phases inside one transaction, so a bad record
rejects the whole file:

1. every record is checked in memory with the model fields' own validators;
2. existing rows are fetched by natural key in chunks and the file is checked
   against them (an identifier held by another row, a terminal bound to another
   merchant than the file says);
3. new rows are inserted and changed rows updated in batches.

Natural keys: ``merchant_id`` for merchants, ``serial_number`` for terminals
(stored in its canonical form, ``validators.normalise_serial_number``: the
file may print ``AB-1234`` or ``ab 1234``, both are terminal ``AB1234``),
(terminal, occurred_at, amount) for transactions. Importing the same file
twice changes nothing the second time.
"""

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import BooleanField, Model, Q
from django.db.models.expressions import RawSQL
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _

from terminals.models import (
    MONEY_TERM_FIELDS,
    Binding,
    Merchant,
    Terminal,
    Transaction,
)
from terminals.validators import (
    normalise_code,
    normalise_mobile,
    normalise_serial_number,
)

# Rows per INSERT / UPDATE statement. An UPDATE from bulk_update grows a CASE
# clause per field and row, so it is kept smaller than the inserts.
CREATE_BATCH_SIZE = 2000
UPDATE_BATCH_SIZE = 500
# Keys per "IN (...)" lookup of existing rows; bounds the query size and the
# number of rows held per round trip.
PREFETCH_CHUNK_SIZE = 5000

# Refresh the planner's statistics when an import adds at least this many rows.
ANALYZE_AFTER_ROWS = 10_000

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
# Optional: absent means "keep what the registry holds" (a new merchant gets
# the model default, ``enterprise`` for ``kind``).
MERCHANT_OPTIONAL_FIELDS = ("settlement_card_number", "kind", *MONEY_TERM_FIELDS)
# Identifiers a person may type with spaces or dashes; stored without them.
MERCHANT_CODE_FIELDS = {
    "merchant_id",
    "uscc",
    "legal_rep_id_number",
    "contact_phone",
    "settlement_card_number",
}
TERMINAL_FIELDS = ("serial_number", "terminal_id", "model", "kind", "merchant_id")
# Optional; absent keeps the stored value, null means "no deposit".
TERMINAL_OPTIONAL_FIELDS = ("deposit", *MONEY_TERM_FIELDS)
TERMINAL_UPDATABLE_FIELDS = (
    "terminal_id",
    "model",
    "kind",
    "deposit",
    *MONEY_TERM_FIELDS,
)
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
        values.update(
            _parse_money_terms(record, model=Merchant, section=section, index=index)
        )
        for name in (*MERCHANT_FIELDS, *MERCHANT_OPTIONAL_FIELDS):
            if name not in record or name in MONEY_TERM_FIELDS:
                continue
            if name == "uscc" and record[name] in (None, ""):
                # Only a micro-merchant may have none: checked once the kind
                # is known (_check_uscc_kind).
                values[name] = None
                continue
            value = _text(record, name, section=section, index=index)
            if name == "contact_phone":
                value = normalise_mobile(value)
            elif name in MERCHANT_CODE_FIELDS:
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
        if values["uscc"] is None:
            if "kind" in values:
                _check_uscc_kind(values["kind"], None, section=section, index=index)
            rows[merchant_id] = _MerchantRow(index=index, values=values)
            continue
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


def _check_uscc_kind(kind: str, uscc: str | None, *, section: str, index: int) -> None:
    """Refuse a merchant without a USCC unless it is a micro-merchant."""
    if uscc is None and kind != Merchant.Kind.MICRO:
        raise RegistryImportError(
            _(
                'only a micro-merchant (kind "micro") may have no unified social '
                "credit code"
            ),
            section=section,
            index=index,
            field="uscc",
        )


def _parse_deposit(record: dict, *, section: str, index: int) -> Decimal | None:
    """Read the optional deposit: a decimal string or a whole number, never a float."""
    raw = record["deposit"]
    if raw is None:
        return None
    if not isinstance(raw, str | int) or isinstance(raw, bool):
        # A JSON float would lose cents (299.1 is not 299.10 exactly).
        raise RegistryImportError(
            _('write the deposit as a string, e.g. "299.00"'),
            section=section,
            index=index,
            field="deposit",
        )
    deposit = _clean(
        Terminal, "deposit", str(raw).strip(), section=section, index=index
    )
    if deposit is None:
        return None
    if not deposit.is_finite() or deposit < 0:
        raise RegistryImportError(
            _("the deposit cannot be negative"),
            section=section,
            index=index,
            field="deposit",
        )
    return deposit.quantize(CENT)


MONEY_AMOUNT_FIELDS = {
    "deposit_refund_volume",
    "service_fee_annual",
    "sim_fee",
}
MONEY_DATE_FIELDS = {"service_fee_paid_until", "sim_fee_paid_until"}


def _parse_amount(raw, *, model, name: str, section: str, index: int) -> Decimal:
    """A decimal string (or whole number) in CNY, never a float, not negative."""
    if not isinstance(raw, str | int) or isinstance(raw, bool):
        raise RegistryImportError(
            _('write the amount as a string, e.g. "299.00"'),
            section=section,
            index=index,
            field=name,
        )
    value = _clean(model, name, str(raw).strip(), section=section, index=index)
    if value is None or not value.is_finite() or value < 0:
        raise RegistryImportError(
            _("the amount cannot be negative"),
            section=section,
            index=index,
            field=name,
        )
    return value.quantize(CENT)


def _parse_money_terms(record: dict, *, model, section: str, index: int) -> dict:
    """Read the optional money terms present in ``record`` (null clears one)."""
    values: dict = {}
    for name in MONEY_TERM_FIELDS:
        if name not in record:
            continue
        raw = record[name]
        if raw is None:
            values[name] = "" if name == "deposit_refund_condition" else None
        elif name in MONEY_AMOUNT_FIELDS:
            values[name] = _parse_amount(
                raw, model=model, name=name, section=section, index=index
            )
        elif name == "service_fee_prorated":
            if not isinstance(raw, bool):
                raise RegistryImportError(
                    _("write true or false"), section=section, index=index, field=name
                )
            values[name] = raw
        else:
            if not isinstance(raw, str):
                raise RegistryImportError(
                    _("write it as a string"), section=section, index=index, field=name
                )
            values[name] = _clean(
                model, name, raw.strip(), section=section, index=index
            )
    condition = values.get("deposit_refund_condition")
    if (
        condition == model.RefundCondition.VOLUME_REACHED
        and values.get("deposit_refund_volume") is None
    ):
        raise RegistryImportError(
            _("a volume_reached refund needs deposit_refund_volume"),
            section=section,
            index=index,
            field="deposit_refund_volume",
        )
    return values


def _parse_terminals(records: list) -> dict[str, _TerminalRow]:
    section = "terminals"
    rows: dict[str, _TerminalRow] = {}
    tid_seen: dict[str, int] = {}
    valid_merchant_ids: set[str] = set()
    for index, record in enumerate(records):
        _check_keys(
            record,
            section=section,
            index=index,
            required=TERMINAL_FIELDS,
            optional=TERMINAL_OPTIONAL_FIELDS,
        )
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
        if "deposit" in record:
            values["deposit"] = _parse_deposit(record, section=section, index=index)
        values.update(
            _parse_money_terms(record, model=Terminal, section=section, index=index)
        )
        merchant_id = None
        if record["merchant_id"] is not None:
            merchant_id = normalise_code(
                _text(record, "merchant_id", section=section, index=index)
            )
            # Many terminals share a merchant: check each number once.
            if merchant_id not in valid_merchant_ids:
                _clean(
                    Merchant, "merchant_id", merchant_id, section=section, index=index
                )
                valid_merchant_ids.add(merchant_id)
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


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _key_in(model: type[Model], field_name: str, values: list) -> Any:
    """Filter ``field_name`` IN ``values``, as one array parameter on PostgreSQL.

    psycopg re-parses a long statement for every placeholder; ``= ANY(%s)``
    with a single array keeps a 5,000-key lookup cheap to send.
    """
    if connection.vendor != "postgresql":
        return Q(**{f"{field_name}__in": values})
    quote = connection.ops.quote_name
    field = model._meta.get_field(field_name)
    table = quote(model._meta.db_table)
    column = quote(field.column)
    # Cast to the column's own type so that the planner can use the index and
    # hash the array (an int2[] against a bigint column does neither).
    return RawSQL(
        f"{table}.{column} = ANY(%s::{field.db_type(connection)}[])",
        (values,),
        output_field=BooleanField(),
    )


def _fetch(
    model: type[Model], field_name: str, keys: Iterable, *, queryset=None, fields=()
) -> Iterator[tuple]:
    """Yield ``fields`` of the rows whose ``field_name`` is one of ``keys``."""
    queryset = model._default_manager.all() if queryset is None else queryset
    # SQLite counts each IN value as a variable; stay under its usual limit.
    size = PREFETCH_CHUNK_SIZE if connection.vendor == "postgresql" else 900
    for chunk in _chunks(keys, size):
        yield from (
            queryset.filter(_key_in(model, field_name, chunk))
            .order_by()
            .values_list(*fields)
        )


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
    value_fields = (*MERCHANT_FIELDS, *MERCHANT_OPTIONAL_FIELDS)
    existing_merchants = {
        values[1]: values
        for values in _fetch(
            Merchant,
            "merchant_id",
            referenced_ids,
            fields=("pk", *value_fields, "status"),
        )
    }
    merchant_pk = {mid: values[0] for mid, values in existing_merchants.items()}
    closed = {
        mid
        for mid, values in existing_merchants.items()
        if values[-1] == Merchant.Status.CLOSED
    }
    uscc_holders = dict(
        _fetch(
            Merchant,
            "uscc",
            [
                row.values["uscc"]
                for row in merchant_rows.values()
                if row.values["uscc"]
            ],
            fields=("uscc", "merchant_id"),
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
        found = existing_merchants.get(merchant_id)
        current = dict(zip(value_fields, found[1:-1], strict=True)) if found else {}
        if row.values["uscc"] is None and "kind" not in row.values:
            _check_uscc_kind(
                current.get("kind", Merchant.Kind.ENTERPRISE),
                None,
                section="merchants",
                index=row.index,
            )
        if found is None:
            merchants_to_create.append(Merchant(**row.values))
            continue
        changed = [name for name, value in row.values.items() if current[name] != value]
        if changed:
            merchant = Merchant(pk=found[0], **{**current, **row.values})
            merchant.updated_at = now
            merchant_update_fields.update(changed)
            merchants_to_update.append(merchant)
        else:
            result.merchants.unchanged += 1
    del existing_merchants, uscc_holders

    for row in terminal_rows.values():
        if row.merchant_id is None:
            continue
        if row.merchant_id not in merchant_pk and row.merchant_id not in merchant_rows:
            raise RegistryImportError(
                _("merchant %(id)s is neither in the file nor in the registry")
                % {"id": row.merchant_id},
                section="terminals",
                index=row.index,
                field="merchant_id",
            )
        if row.merchant_id in closed:
            raise RegistryImportError(
                _("merchant %(id)s is closed; nothing can be bound to it")
                % {"id": row.merchant_id},
                section="terminals",
                index=row.index,
                field="merchant_id",
            )

    # --- terminals: existing rows by serial number and by terminal ID ---------
    existing_terminals = {
        values[1]: values
        for values in _fetch(
            Terminal,
            "serial_number",
            set(terminal_rows) | {row.serial_number for row in transaction_rows},
            fields=("pk", "serial_number", *TERMINAL_UPDATABLE_FIELDS, "status"),
        )
    }
    terminal_pk = {sn: values[0] for sn, values in existing_terminals.items()}
    tid_holders = dict(
        _fetch(
            Terminal,
            "terminal_id",
            [row.values["terminal_id"] for row in terminal_rows.values()],
            fields=("terminal_id", "serial_number"),
        )
    )
    # Active bindings of the terminals that exist: terminal pk -> merchant number.
    active_binding = dict(
        _fetch(
            Binding,
            "terminal",
            [terminal_pk[sn] for sn in terminal_rows if sn in terminal_pk],
            queryset=Binding.objects.active(),
            fields=("terminal_id", "merchant__merchant_id"),
        )
    )

    terminals_to_create: list[Terminal] = []
    terminals_to_update: list[Terminal] = []
    terminal_update_fields: set[str] = set()
    # (serial number, merchant number) pairs that need a new active binding.
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
        found = existing_terminals.get(serial)
        if found is None:
            terminals_to_create.append(
                Terminal(
                    **row.values,
                    status=(
                        Terminal.Status.ACTIVE
                        if row.merchant_id
                        else Terminal.Status.IN_STOCK
                    ),
                )
            )
            if row.merchant_id:
                bindings_wanted.append((serial, row.merchant_id))
            continue

        bound_to = active_binding.get(found[0])
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
        current = dict(zip(TERMINAL_UPDATABLE_FIELDS, found[2:-1], strict=True))
        status = found[-1]
        changed = [
            name
            for name in TERMINAL_UPDATABLE_FIELDS
            if name in row.values and current[name] != row.values[name]
        ]
        if row.merchant_id is not None:
            if bound_to is None:
                bindings_wanted.append((serial, row.merchant_id))
            else:
                result.bindings.unchanged += 1
            if status != Terminal.Status.ACTIVE:
                status = Terminal.Status.ACTIVE
                changed.append("status")
        if changed:
            terminal = Terminal(pk=found[0], status=status, **{**current, **row.values})
            terminal.updated_at = now
            terminal_update_fields.update(changed)
            terminals_to_update.append(terminal)
        else:
            result.terminals.unchanged += 1
    del existing_terminals, tid_holders, active_binding

    for row in transaction_rows:
        if (
            row.serial_number not in terminal_pk
            and row.serial_number not in terminal_rows
        ):
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
    merchant_pk.update((m.merchant_id, m.pk) for m in merchants_to_create)
    result.merchants.created = len(merchants_to_create)
    result.merchants.updated = len(merchants_to_update)
    del merchants_to_create, merchants_to_update

    if terminals_to_update:
        Terminal.objects.bulk_update(
            terminals_to_update,
            sorted(terminal_update_fields | {"updated_at"}),
            batch_size=UPDATE_BATCH_SIZE,
        )
    Terminal.objects.bulk_create(terminals_to_create, batch_size=CREATE_BATCH_SIZE)
    terminal_pk.update((t.serial_number, t.pk) for t in terminals_to_create)
    result.terminals.created = len(terminals_to_create)
    result.terminals.updated = len(terminals_to_update)
    del terminals_to_create, terminals_to_update

    Binding.objects.bulk_create(
        (
            Binding(
                terminal_id=terminal_pk[serial],
                merchant_id=merchant_pk[mid],
                started_at=now,
            )
            for serial, mid in bindings_wanted
        ),
        batch_size=CREATE_BATCH_SIZE,
    )
    result.bindings.created = len(bindings_wanted)

    _import_transactions(
        rows=transaction_rows, terminal_pk=terminal_pk, result=result.transactions
    )
    _refresh_statistics(result=result)
    return result


def _refresh_statistics(*, result: ImportResult) -> None:
    """Let PostgreSQL's planner know about a large load right away.

    Without fresh statistics the next lookups (a re-import, the admin lists)
    may be planned for the tables' old, much smaller size until autovacuum
    gets round to them.
    """
    created = sum(counts["created"] for counts in result.as_dict().values())
    if connection.vendor != "postgresql" or created < ANALYZE_AFTER_ROWS:
        return
    tables = ", ".join(
        connection.ops.quote_name(model._meta.db_table)
        for model in (Merchant, Terminal, Binding, Transaction)
    )
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {tables}")


def _import_transactions(
    *,
    rows: list[_TransactionRow],
    terminal_pk: dict[str, int],
    result: KindCounts,
) -> None:
    if not rows:
        return
    # Existing transactions of the terminals named in the file, by natural key.
    existing: dict[tuple[int, datetime, Decimal], tuple[int, bool]] = {
        (terminal, occurred_at.astimezone(UTC), amount.quantize(CENT)): (pk, settled)
        for pk, terminal, occurred_at, amount, settled in _fetch(
            Transaction,
            "terminal",
            list({terminal_pk[row.serial_number] for row in rows}),
            fields=("pk", "terminal_id", "occurred_at", "amount", "settled"),
        )
    }
    seen: dict[tuple[int, datetime, Decimal], int] = {}
    to_create: list[Transaction] = []
    to_settle: list[int] = []
    for row in rows:
        terminal = terminal_pk[row.serial_number]
        key = (terminal, row.occurred_at, row.amount)
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
                    terminal_id=terminal,
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
    for chunk in _chunks(to_settle, UPDATE_BATCH_SIZE):
        Transaction.objects.filter(pk__in=chunk).update(settled=True)
    result.created = len(to_create)
    result.updated = len(to_settle)
