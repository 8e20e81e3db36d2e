"""Load the registry file of CONTRACT.md: merchants, terminals, bindings, transactions.

``registry_import_file`` reads the file as a stream (ijson: one record at a
time, numbers as ``Decimal``, never ``float``); ``registry_import`` takes the
parsed JSON (the API's registry sync). Both run in one transaction, so a bad
record rejects the whole file:

1. every record is checked on its own with the model fields' own validators;
2. the file is checked as a whole and against the registry (a key twice in the
   file, an identifier held by another row, a terminal bound to another
   merchant than the file says), naming the first offending record;
3. new rows are inserted and changed rows updated; unchanged rows are not
   written at all.

On PostgreSQL (``_import_staged``) each checked record is copied (``COPY``)
into a temporary staging table as soon as it is read, so memory stays flat
whatever the file's size; steps 2 and 3 are a few set-based statements over
the staging tables (an UPDATE ... WHERE the values are DISTINCT FROM the
stored ones, an INSERT of the new keys). Elsewhere (SQLite, ``make run``:
``_import_in_memory``) the records are held in memory and compared in Python,
with the same checks and messages.

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
from functools import cache, lru_cache
from typing import Any, BinaryIO

import ijson
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
# ... and inside the import, before joining a table that grew by this many.
ANALYZE_WITHIN_IMPORT_ROWS = 1_000

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
MERCHANT_OPTIONAL_FIELDS = (
    "settlement_card_number",
    "kind",
    "address",
    *MONEY_TERM_FIELDS,
)
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
        return _field(model, name).clean(value, None)
    except ValidationError as error:
        raise RegistryImportError(
            _reason(error), section=section, index=index, field=name
        ) from None


@cache
def _field(model: type[Model], name: str) -> Any:
    return model._meta.get_field(name)


@lru_cache(maxsize=4096)
def _clean_value(model: type[Model], name: str, value: Any) -> Any:
    return _field(model, name).clean(value, None)


def _clean_repeated(
    model: type[Model], name: str, value: Any, *, section: str, index: int
) -> Any:
    """``_clean`` for a field whose few values repeat across records.

    A million terminals share a handful of kinds and models, and transaction
    amounts repeat: each distinct value is checked once (only for fields whose
    checks depend on nothing but the value).
    """
    try:
        return _clean_value(model, name, value)
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


def _parse_merchant(record: Any, index: int) -> dict:
    """Check one merchant record on its own; return its cleaned values."""
    section = "merchants"
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
        if name == "kind":
            values[name] = _clean_repeated(
                Merchant, name, value, section=section, index=index
            )
        else:
            values[name] = _clean(Merchant, name, value, section=section, index=index)
    if values["uscc"] is None and "kind" in values:
        _check_uscc_kind(values["kind"], None, section=section, index=index)
    return values


def _parse_merchants(records: Iterable) -> dict[str, _MerchantRow]:
    section = "merchants"
    rows: dict[str, _MerchantRow] = {}
    uscc_seen: dict[str, int] = {}
    for index, record in enumerate(records):
        values = _parse_merchant(record, index)
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
    deposit = _clean_repeated(
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
    value = _clean_repeated(model, name, str(raw).strip(), section=section, index=index)
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
            values[name] = _clean_repeated(
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


def _parse_terminal(
    record: Any, index: int, valid_merchant_ids: set[str]
) -> _TerminalRow:
    """Check one terminal record on its own.

    ``valid_merchant_ids`` remembers the merchant numbers already checked (many
    terminals share a merchant); it grows with each new valid number.
    """
    section = "terminals"
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
            normalise_code(_text(record, "terminal_id", section=section, index=index)),
            section=section,
            index=index,
        ),
        "model": _clean_repeated(
            Terminal,
            "model",
            _text(record, "model", section=section, index=index),
            section=section,
            index=index,
        ),
        "kind": _clean_repeated(
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
            _clean(Merchant, "merchant_id", merchant_id, section=section, index=index)
            valid_merchant_ids.add(merchant_id)
    return _TerminalRow(index=index, values=values, merchant_id=merchant_id)


def _parse_terminals(records: Iterable) -> dict[str, _TerminalRow]:
    section = "terminals"
    rows: dict[str, _TerminalRow] = {}
    tid_seen: dict[str, int] = {}
    valid_merchant_ids: set[str] = set()
    for index, record in enumerate(records):
        row = _parse_terminal(record, index, valid_merchant_ids)
        serial = row.values["serial_number"]
        if serial in rows:
            raise RegistryImportError(
                _("serial number %(sn)s already appears in record %(other)d")
                % {"sn": serial, "other": rows[serial].index},
                section=section,
                index=index,
                field="serial_number",
            )
        tid = row.values["terminal_id"]
        if tid in tid_seen:
            raise RegistryImportError(
                _("terminal ID %(tid)s already appears in record %(other)d")
                % {"tid": tid, "other": tid_seen[tid]},
                section=section,
                index=index,
                field="terminal_id",
            )
        tid_seen[tid] = index
        rows[serial] = row
    return rows


def _parse_transaction(record: Any, index: int) -> _TransactionRow:
    """Check one transaction record on its own."""
    section = "transactions"
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
    amount = _clean_repeated(
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
    return _TransactionRow(
        index=index,
        serial_number=serial,
        amount=amount.quantize(CENT),
        occurred_at=occurred_at.astimezone(UTC),
        settled=record["settled"],
    )


def _parse_transactions(records: Iterable) -> list[_TransactionRow]:
    return [_parse_transaction(record, index) for index, record in enumerate(records)]


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


SECTIONS = ("merchants", "terminals", "transactions")


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
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise RegistryImportError(
            _("unknown section(s): %(names)s") % {"names": ", ".join(unknown)}
        )
    return _run((section, _records(data, section)) for section in SECTIONS)


def registry_import_file(handle: BinaryIO) -> ImportResult:
    """Import the registry file open in ``handle`` (binary), reading it as a stream.

    The same checks and the same all-or-nothing rule as ``registry_import``;
    the file is never held in memory whole. A file that is not JSON raises
    ``ijson.JSONError`` (nothing is written then either).
    """
    return _run(_stream_sections(handle))


def _run(sections: Iterable[tuple[str, Iterable]]) -> ImportResult:
    try:
        with transaction.atomic():
            if connection.vendor == "postgresql":
                return _import_staged(sections)
            return _import_in_memory(sections)
    except IntegrityError as error:
        # Only reachable when another import changed the same rows concurrently.
        raise RegistryImportError(
            _("the database refused the import (%(error)s); nothing was imported")
            % {"error": error}
        ) from error


# ------------------------------------------------------------------------------
# Reading the file as a stream
# ------------------------------------------------------------------------------

_SCALAR_EVENTS = frozenset({"null", "boolean", "integer", "double", "number", "string"})


def _stream_sections(handle: BinaryIO) -> Iterator[tuple[str, Iterator]]:
    """Yield (section, records) in the file's order; each ``records`` is lazy.

    Each records iterator must be used up before the next section is read.
    Numbers come as ``int`` or ``Decimal`` (never ``float``), so that a float
    amount is still refused by the record checks.
    """
    events = ijson.basic_parse(handle, use_float=False)
    event, _value = next(events, (None, None))
    if event != "start_map":
        for _event in events:  # report a file that is not JSON as such
            pass
        raise RegistryImportError(
            _(
                "the file must hold a JSON object with merchants, terminals, transactions"
            )
        )
    seen: set[str] = set()
    for event, value in events:
        if event == "end_map":
            break
        section = value  # a map_key
        if section not in SECTIONS:
            raise RegistryImportError(
                _("unknown section(s): %(names)s") % {"names": section}
            )
        if section in seen:
            raise RegistryImportError(_("the section appears twice"), section=section)
        seen.add(section)
        event, value = next(events)
        if event == "null":
            continue
        if event != "start_array":
            raise RegistryImportError(_("must be a list of records"), section=section)
        yield section, _array_items(events)
    for _event in events:  # trailing garbage is a JSON error
        pass


def _array_items(events: Iterator) -> Iterator[Any]:
    """Yield the values of the array whose ``start_array`` was just read."""
    for event, value in events:
        if event == "end_array":
            return
        if event == "start_map":
            record = {}
            key = None
            for event, value in events:
                if event == "map_key":
                    key = value
                elif event == "end_map":
                    break
                elif event in _SCALAR_EVENTS:
                    record[key] = value
                else:
                    record[key] = _build(event, value, events)
            yield record
        elif event in _SCALAR_EVENTS:
            yield value
        else:
            yield _build(event, value, events)


def _build(event: str, value: Any, events: Iterator) -> Any:
    """Build the nested list or object that starts with ``event``."""
    builder = ijson.ObjectBuilder()
    builder.event(event, value)
    depth = 1
    for event, value in events:
        builder.event(event, value)
        if event in ("start_map", "start_array"):
            depth += 1
        elif event in ("end_map", "end_array"):
            depth -= 1
            if depth == 0:
                break
    return builder.value


# ------------------------------------------------------------------------------
# Any database: every record in memory, compared in Python
# ------------------------------------------------------------------------------


def _import_in_memory(sections: Iterable[tuple[str, Iterable]]) -> ImportResult:
    """The portable path (SQLite, ``make run``): holds the whole file in memory."""
    merchant_rows: dict[str, _MerchantRow] = {}
    terminal_rows: dict[str, _TerminalRow] = {}
    transaction_rows: list[_TransactionRow] = []
    for section, records in sections:
        if section == "merchants":
            merchant_rows = _parse_merchants(records)
        elif section == "terminals":
            terminal_rows = _parse_terminals(records)
        else:
            transaction_rows = _parse_transactions(records)
    return _import(
        merchant_rows=merchant_rows,
        terminal_rows=terminal_rows,
        transaction_rows=transaction_rows,
    )


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


# ------------------------------------------------------------------------------
# PostgreSQL: the file streamed into staging tables, compared and applied in SQL
# ------------------------------------------------------------------------------

# Temporary tables of the import's own connection, dropped at its end (and
# with everything else when the import is rolled back).
STAGE_MERCHANTS = "registry_stage_merchant"
STAGE_TERMINALS = "registry_stage_terminal"
STAGE_TRANSACTIONS = "registry_stage_transaction"

MERCHANT_STAGED = (*MERCHANT_FIELDS, *MERCHANT_OPTIONAL_FIELDS)
TERMINAL_STAGED = TERMINAL_FIELDS + TERMINAL_OPTIONAL_FIELDS


def _pg_type(model: type[Model], name: str) -> str:
    if name in ("merchant_id", "serial_number"):
        # Natural keys, also of the row a terminal or transaction refers to.
        return "text"
    kind = _field(model, name).get_internal_type()
    return {
        "DecimalField": "numeric",
        "DateField": "date",
        "DateTimeField": "timestamptz",
        "BooleanField": "boolean",
    }.get(kind, "text")


def _has(name: str) -> str:
    """The staging column that says whether the record gave the optional field."""
    return f"has_{name}"


def _stage_table_sql(
    table: str, model: type[Model], names: Sequence[str], optional: Sequence[str]
) -> str:
    columns = [
        "idx integer NOT NULL",
        *(f"{name} {_pg_type(model, name)}" for name in names),
        *(f"{_has(name)} boolean NOT NULL" for name in optional),
    ]
    return f"CREATE TEMPORARY TABLE {table} ({', '.join(columns)})"


def _q(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _first(cursor, sql: str, params: Sequence = ()) -> tuple | None:
    cursor.execute(sql + " LIMIT 1", params)
    return cursor.fetchone()


def _stage(cursor, sections: Iterable[tuple[str, Iterable]]) -> dict[str, int]:
    """COPY every checked record into the staging tables; return counts."""
    counts = dict.fromkeys(SECTIONS, 0)
    valid_merchant_ids: set[str] = set()
    for section, records in sections:
        if section == "merchants":
            columns = ("idx", *MERCHANT_STAGED, *map(_has, MERCHANT_OPTIONAL_FIELDS))
            with cursor.copy(
                f"COPY {STAGE_MERCHANTS} ({', '.join(columns)}) FROM STDIN"
            ) as copy:
                for index, record in enumerate(records):
                    values = _parse_merchant(record, index)
                    copy.write_row(
                        (
                            index,
                            *(values.get(name) for name in MERCHANT_STAGED),
                            *(name in values for name in MERCHANT_OPTIONAL_FIELDS),
                        )
                    )
                    counts[section] += 1
        elif section == "terminals":
            columns = ("idx", *TERMINAL_STAGED, *map(_has, TERMINAL_OPTIONAL_FIELDS))
            with cursor.copy(
                f"COPY {STAGE_TERMINALS} ({', '.join(columns)}) FROM STDIN"
            ) as copy:
                for index, record in enumerate(records):
                    row = _parse_terminal(record, index, valid_merchant_ids)
                    values = row.values
                    copy.write_row(
                        (
                            index,
                            values["serial_number"],
                            values["terminal_id"],
                            values["model"],
                            values["kind"],
                            row.merchant_id,
                            *(values.get(name) for name in TERMINAL_OPTIONAL_FIELDS),
                            *(name in values for name in TERMINAL_OPTIONAL_FIELDS),
                        )
                    )
                    counts[section] += 1
        else:
            with cursor.copy(
                f"COPY {STAGE_TRANSACTIONS} "
                "(idx, serial_number, amount, occurred_at, settled) FROM STDIN"
            ) as copy:
                for index, record in enumerate(records):
                    row = _parse_transaction(record, index)
                    copy.write_row(
                        (
                            index,
                            row.serial_number,
                            row.amount,
                            row.occurred_at,
                            row.settled,
                        )
                    )
                    counts[section] += 1
    return counts


def _import_staged(sections: Iterable[tuple[str, Iterable]]) -> ImportResult:
    """Stream the records through their checks into staging tables, then apply.

    Memory stays flat whatever the file's size: a record is checked on its own
    and copied out (``COPY``) before the next is read. The checks between
    records (duplicates in the file) and against the registry (codes held by
    other rows, bindings) are queries over the staging tables, each naming the
    first offending record; then each table gets one UPDATE of the rows whose
    values differ (``IS DISTINCT FROM``: an unchanged file writes nothing) and
    one INSERT of the new ones.
    """
    now = timezone.now()
    with connection.cursor() as cursor:
        for table in (STAGE_MERCHANTS, STAGE_TERMINALS, STAGE_TRANSACTIONS):
            cursor.execute(f"DROP TABLE IF EXISTS pg_temp.{table}")
        cursor.execute(
            _stage_table_sql(
                STAGE_MERCHANTS, Merchant, MERCHANT_STAGED, MERCHANT_OPTIONAL_FIELDS
            )
        )
        cursor.execute(
            _stage_table_sql(
                STAGE_TERMINALS, Terminal, TERMINAL_STAGED, TERMINAL_OPTIONAL_FIELDS
            )
        )
        cursor.execute(
            _stage_table_sql(
                STAGE_TRANSACTIONS,
                Transaction,
                ("serial_number", "amount", "occurred_at", "settled"),
                (),
            )
        )
        counts = _stage(cursor, sections)
        # A small body (an API sync of a few records) is scanned faster than
        # indexed; the indexes and statistics pay off from about a thousand.
        if max(counts.values()) >= ANALYZE_WITHIN_IMPORT_ROWS:
            for sql in (
                f"CREATE INDEX ON {STAGE_MERCHANTS} (merchant_id)",
                f"CREATE INDEX ON {STAGE_MERCHANTS} (uscc)",
                f"CREATE INDEX ON {STAGE_TERMINALS} (serial_number)",
                f"CREATE INDEX ON {STAGE_TERMINALS} (terminal_id)",
                f"CREATE INDEX ON {STAGE_TRANSACTIONS} (serial_number)",
                # Autovacuum never analyses temporary tables.
                f"ANALYZE {STAGE_MERCHANTS}, {STAGE_TERMINALS}, {STAGE_TRANSACTIONS}",
            ):
                cursor.execute(sql)
        _check_staged(cursor)
        result = _apply_staged(cursor, counts=counts, now=now)
        for table in (STAGE_MERCHANTS, STAGE_TERMINALS, STAGE_TRANSACTIONS):
            cursor.execute(f"DROP TABLE {table}")
    _refresh_statistics(result=result)
    return result


def _duplicate_sql(table: str, key: str, where: str = "") -> str:
    """The first record whose ``key`` an earlier record of ``table`` has."""
    return (
        f"SELECT idx, first, {key} FROM ("
        f"  SELECT idx, {key}, min(idx) OVER (PARTITION BY {key}) AS first"
        f"  FROM {table} {where}"
        f") AS keyed WHERE idx <> first ORDER BY idx"
    )


def _check_staged(cursor) -> None:
    """Raise ``RegistryImportError`` for the first record that breaks a rule."""
    merchant, terminal, binding = _q(Merchant), _q(Terminal), _q(Binding)
    sm, st, sx = STAGE_MERCHANTS, STAGE_TERMINALS, STAGE_TRANSACTIONS

    # --- within the file -------------------------------------------------------
    found = _first(cursor, _duplicate_sql(sm, "merchant_id"))
    if found:
        raise RegistryImportError(
            _("merchant %(id)s already appears in record %(other)d")
            % {"id": found[2], "other": found[1]},
            section="merchants",
            index=found[0],
            field="merchant_id",
        )
    found = _first(cursor, _duplicate_sql(sm, "uscc", "WHERE uscc IS NOT NULL"))
    if found:
        raise RegistryImportError(
            _("this unified social credit code already appears in record %(other)d")
            % {"other": found[1]},
            section="merchants",
            index=found[0],
            field="uscc",
        )
    found = _first(cursor, _duplicate_sql(st, "serial_number"))
    if found:
        raise RegistryImportError(
            _("serial number %(sn)s already appears in record %(other)d")
            % {"sn": found[2], "other": found[1]},
            section="terminals",
            index=found[0],
            field="serial_number",
        )
    found = _first(cursor, _duplicate_sql(st, "terminal_id"))
    if found:
        raise RegistryImportError(
            _("terminal ID %(tid)s already appears in record %(other)d")
            % {"tid": found[2], "other": found[1]},
            section="terminals",
            index=found[0],
            field="terminal_id",
        )

    # --- against the registry: merchants -------------------------------------
    found = _first(
        cursor,
        f"SELECT s.idx, d.merchant_id FROM {sm} s"
        f" JOIN {merchant} d ON d.uscc = s.uscc AND d.merchant_id <> s.merchant_id"
        f" LEFT JOIN {sm} h ON h.merchant_id = d.merchant_id"
        # Allowed only if the file also gives the holder another code.
        f" WHERE h.idx IS NULL OR h.uscc IS NOT DISTINCT FROM s.uscc"
        f" ORDER BY s.idx",
    )
    if found:
        raise RegistryImportError(
            _("this unified social credit code belongs to merchant %(other)s")
            % {"other": found[1]},
            section="merchants",
            index=found[0],
            field="uscc",
        )
    found = _first(
        cursor,
        f"SELECT s.idx FROM {sm} s LEFT JOIN {merchant} d"
        f" ON d.merchant_id = s.merchant_id"
        f" WHERE s.uscc IS NULL AND NOT s.{_has('kind')}"
        f" AND COALESCE(d.kind, %s) <> %s ORDER BY s.idx",
        [Merchant.Kind.ENTERPRISE, Merchant.Kind.MICRO],
    )
    if found:
        _check_uscc_kind(
            Merchant.Kind.ENTERPRISE, None, section="merchants", index=found[0]
        )

    # --- terminals ---------------------------------------------------------------
    found = _first(
        cursor,
        f"SELECT s.idx, s.merchant_id, d.status FROM {st} s"
        f" LEFT JOIN {merchant} d ON d.merchant_id = s.merchant_id"
        f" WHERE s.merchant_id IS NOT NULL AND (d.status = %s OR (d.id IS NULL AND"
        f" NOT EXISTS (SELECT 1 FROM {sm} m WHERE m.merchant_id = s.merchant_id)))"
        f" ORDER BY s.idx",
        [Merchant.Status.CLOSED],
    )
    if found:
        if found[2] is None:
            reason = _("merchant %(id)s is neither in the file nor in the registry")
        else:
            reason = _("merchant %(id)s is closed; nothing can be bound to it")
        raise RegistryImportError(
            reason % {"id": found[1]},
            section="terminals",
            index=found[0],
            field="merchant_id",
        )
    found = _first(
        cursor,
        f"SELECT s.idx, s.terminal_id, d.serial_number FROM {st} s"
        f" JOIN {terminal} d ON d.terminal_id = s.terminal_id"
        f" AND d.serial_number <> s.serial_number"
        f" LEFT JOIN {st} h ON h.serial_number = d.serial_number"
        f" WHERE h.idx IS NULL OR h.terminal_id = s.terminal_id ORDER BY s.idx",
    )
    if found:
        raise RegistryImportError(
            _("terminal ID %(tid)s belongs to terminal %(sn)s")
            % {"tid": found[1], "sn": found[2]},
            section="terminals",
            index=found[0],
            field="terminal_id",
        )
    found = _first(
        cursor,
        f"SELECT s.idx, m.merchant_id, s.merchant_id FROM {st} s"
        f" JOIN {terminal} d ON d.serial_number = s.serial_number"
        f" JOIN {binding} b ON b.terminal_id = d.id AND b.ended_at IS NULL"
        f" JOIN {merchant} m ON m.id = b.merchant_id"
        f" WHERE m.merchant_id IS DISTINCT FROM s.merchant_id ORDER BY s.idx",
    )
    if found:
        if found[2] is None:
            reason = _(
                "the terminal is bound to merchant %(current)s but the file "
                "lists it in stock; unbind it through a case first"
            ) % {"current": found[1]}
        else:
            reason = _(
                "the terminal is bound to merchant %(current)s, not %(file)s; "
                "unbind it through a case first"
            ) % {"current": found[1], "file": found[2]}
        raise RegistryImportError(
            reason, section="terminals", index=found[0], field="merchant_id"
        )

    # --- transactions ------------------------------------------------------------
    found = _first(
        cursor,
        f"SELECT s.idx, s.serial_number FROM {sx} s"
        f" WHERE NOT EXISTS (SELECT 1 FROM {st} t"
        f"  WHERE t.serial_number = s.serial_number)"
        f" AND NOT EXISTS (SELECT 1 FROM {terminal} d"
        f"  WHERE d.serial_number = s.serial_number) ORDER BY s.idx",
    )
    if found:
        raise RegistryImportError(
            _("terminal %(sn)s is neither in the file nor in the registry")
            % {"sn": found[1]},
            section="transactions",
            index=found[0],
            field="serial_number",
        )
    found = _first(
        cursor,
        f"SELECT idx, first FROM ("
        f"  SELECT idx, min(idx) OVER ("
        f"   PARTITION BY serial_number, occurred_at, amount) AS first FROM {sx}"
        f") AS keyed WHERE idx <> first ORDER BY idx",
    )
    if found:
        raise RegistryImportError(
            _(
                "the same terminal, time and amount as record %(other)d; "
                "a transaction is listed once"
            )
            % {"other": found[1]},
            section="transactions",
            index=found[0],
        )


def _staged_value(model: type[Model], name: str, optional: Sequence[str]) -> str:
    """The new value of column ``name``: the file's, or the stored one if absent."""
    column = connection.ops.quote_name(_field(model, name).column)
    if name in optional:
        return f"CASE WHEN s.{_has(name)} THEN s.{name} ELSE d.{column} END"
    return f"s.{name}"


def _insert_columns(
    model: type[Model], given: dict[str, str | tuple[str, list]], now: datetime
) -> tuple[list[str], list[str], list]:
    """Columns, SELECT expressions and parameters for an INSERT ... SELECT.

    ``given`` maps field names to SQL expressions, or to (expression, its
    parameters); every other column gets the field's default (the time of the
    import for ``auto_now`` fields).
    """
    columns, expressions, params = [], [], []
    for model_field in model._meta.concrete_fields:
        if model_field.primary_key:
            continue
        columns.append(connection.ops.quote_name(model_field.column))
        if model_field.name in given:
            expression = given[model_field.name]
            if isinstance(expression, tuple):
                expression, expression_params = expression
                params.extend(expression_params)
            expressions.append(expression)
            continue
        if getattr(model_field, "auto_now", False) or getattr(
            model_field, "auto_now_add", False
        ):
            value = now
        else:
            value = model_field.get_default()
        expressions.append(f"%s::{model_field.db_type(connection)}")
        params.append(model_field.get_db_prep_save(value, connection))
    return columns, expressions, params


def _given_or_default(model: type[Model], name: str) -> tuple[str, list]:
    """The file's value of optional field ``name``, or the field's default."""
    default = _field(model, name).get_db_prep_save(
        _field(model, name).get_default(), connection
    )
    return f"CASE WHEN s.{_has(name)} THEN s.{name} ELSE %s END", [default]


def _analyze_if_grown(cursor, table: str, added: int) -> None:
    """Refresh ``table``'s statistics inside the import after a large insert.

    The next statements join the rows just inserted (terminals to their new
    bindings, transactions to their terminals); planned on the statistics of
    an empty table they would scan it once per row. ANALYZE counts the
    transaction's own new rows.
    """
    if added >= ANALYZE_WITHIN_IMPORT_ROWS:
        cursor.execute(f"ANALYZE {table}")


def _insert_new(
    cursor,
    *,
    into: str,
    select: str,
    source: str,
    params: list,
    new: str,
    conflict: str,
) -> int:
    """INSERT INTO ``into`` SELECT ``select`` FROM ``source`` the rows ``new`` finds new.

    The new rows are counted first (nothing to insert: no INSERT at all, so an
    unchanged file writes nothing); the INSERT itself then leaves the rows that
    exist to ``ON CONFLICT ... DO NOTHING`` instead of testing ``new`` again:
    a NOT EXISTS on the table being filled, planned as a nested loop over what
    looked like an empty table, would rescan every page inserted so far for
    each row (quadratic, minutes at 100,000 rows).
    """
    cursor.execute(f"SELECT count(*) FROM {source} WHERE {new}")
    if not cursor.fetchone()[0]:
        return 0
    cursor.execute(
        f"INSERT INTO {into} SELECT {select} FROM {source}"
        f" ON CONFLICT {conflict} DO NOTHING",
        params,
    )
    return cursor.rowcount


def _apply_staged(cursor, *, counts: dict[str, int], now: datetime) -> ImportResult:
    result = ImportResult()
    merchant, terminal, binding, txn = (
        _q(Merchant),
        _q(Terminal),
        _q(Binding),
        _q(Transaction),
    )
    sm, st, sx = STAGE_MERCHANTS, STAGE_TERMINALS, STAGE_TRANSACTIONS
    quote = connection.ops.quote_name

    # --- merchants: changed rows first (they may free a code a new row takes) --
    names = [name for name in MERCHANT_STAGED if name != "merchant_id"]
    new = [_staged_value(Merchant, name, MERCHANT_OPTIONAL_FIELDS) for name in names]
    old = [f"d.{quote(_field(Merchant, name).column)}" for name in names]
    assignments = [
        f"{quote(_field(Merchant, name).column)} = {value}"
        for name, value in zip(names, new, strict=True)
    ]
    cursor.execute(
        f"UPDATE {merchant} AS d SET {', '.join(assignments)}, updated_at = %s"
        f" FROM {sm} AS s WHERE d.merchant_id = s.merchant_id"
        f" AND ({', '.join(old)}) IS DISTINCT FROM ({', '.join(new)})",
        [now],
    )
    result.merchants.updated = cursor.rowcount
    given: dict[str, str | tuple[str, list]] = {
        name: f"s.{name}" for name in MERCHANT_FIELDS
    }
    given.update(
        (name, _given_or_default(Merchant, name)) for name in MERCHANT_OPTIONAL_FIELDS
    )
    columns, expressions, params = _insert_columns(Merchant, given, now)
    result.merchants.created = _insert_new(
        cursor,
        into=f"{merchant} ({', '.join(columns)})",
        select=", ".join(expressions),
        source=f"{sm} AS s",
        params=params,
        new=f"NOT EXISTS (SELECT 1 FROM {merchant} AS d"
        f" WHERE d.merchant_id = s.merchant_id)",
        conflict="(merchant_id)",
    )
    _analyze_if_grown(cursor, merchant, result.merchants.created)
    result.merchants.unchanged = (
        counts["merchants"] - result.merchants.created - result.merchants.updated
    )

    # --- terminals -------------------------------------------------------------
    names = list(TERMINAL_UPDATABLE_FIELDS)
    new = [_staged_value(Terminal, name, TERMINAL_OPTIONAL_FIELDS) for name in names]
    old = [f"d.{quote(_field(Terminal, name).column)}" for name in names]
    status = "CASE WHEN s.merchant_id IS NOT NULL THEN %s ELSE d.status END"
    assignments = [
        f"{quote(_field(Terminal, name).column)} = {value}"
        for name, value in zip(names, new, strict=True)
    ]
    cursor.execute(
        f"UPDATE {terminal} AS d SET {', '.join(assignments)}, status = {status},"
        f" updated_at = %s FROM {st} AS s WHERE d.serial_number = s.serial_number"
        f" AND ({', '.join(old)}, d.status) IS DISTINCT FROM"
        f" ({', '.join(new)}, {status})",
        [Terminal.Status.ACTIVE, now, Terminal.Status.ACTIVE],
    )
    result.terminals.updated = cursor.rowcount
    given = {
        name: f"s.{name}" for name in ("serial_number", "terminal_id", "model", "kind")
    }
    given.update(
        (name, _given_or_default(Terminal, name)) for name in TERMINAL_OPTIONAL_FIELDS
    )
    given["status"] = (
        "CASE WHEN s.merchant_id IS NULL THEN %s ELSE %s END",
        [Terminal.Status.IN_STOCK, Terminal.Status.ACTIVE],
    )
    columns, expressions, params = _insert_columns(Terminal, given, now)
    result.terminals.created = _insert_new(
        cursor,
        into=f"{terminal} ({', '.join(columns)})",
        select=", ".join(expressions),
        source=f"{st} AS s",
        params=params,
        new=f"NOT EXISTS (SELECT 1 FROM {terminal} AS d"
        f" WHERE d.serial_number = s.serial_number)",
        conflict="(serial_number)",
    )
    _analyze_if_grown(cursor, terminal, result.terminals.created)
    result.terminals.unchanged = (
        counts["terminals"] - result.terminals.created - result.terminals.updated
    )

    # --- bindings: a terminal the file binds that has no active binding ------
    columns, expressions, params = _insert_columns(
        Binding,
        {"terminal": "d.id", "merchant": "m.id", "started_at": ("%s", [now])},
        now,
    )
    result.bindings.created = _insert_new(
        cursor,
        into=f"{binding} ({', '.join(columns)})",
        select=", ".join(expressions),
        source=f"{st} AS s"
        f" JOIN {terminal} AS d ON d.serial_number = s.serial_number"
        f" JOIN {merchant} AS m ON m.merchant_id = s.merchant_id",
        params=params,
        new=f"NOT EXISTS (SELECT 1 FROM {binding} AS b"
        f" WHERE b.terminal_id = d.id AND b.ended_at IS NULL)",
        conflict="(terminal_id) WHERE ended_at IS NULL",
    )
    _analyze_if_grown(cursor, binding, result.bindings.created)
    cursor.execute(f"SELECT count(*) FROM {st} WHERE merchant_id IS NOT NULL")
    result.bindings.unchanged = cursor.fetchone()[0] - result.bindings.created

    # --- transactions: settlement is one-way, a file never un-settles ----------
    cursor.execute(
        f"UPDATE {txn} AS x SET settled = true FROM {sx} AS s"
        f" JOIN {terminal} AS d ON d.serial_number = s.serial_number"
        f" WHERE x.terminal_id = d.id AND x.occurred_at = s.occurred_at"
        f" AND x.amount = s.amount AND s.settled AND NOT x.settled"
    )
    result.transactions.updated = cursor.rowcount
    columns, expressions, params = _insert_columns(
        Transaction,
        {
            "terminal": "d.id",
            "amount": "s.amount",
            "occurred_at": "s.occurred_at",
            "settled": "s.settled",
        },
        now,
    )
    result.transactions.created = _insert_new(
        cursor,
        into=f"{txn} ({', '.join(columns)})",
        select=", ".join(expressions),
        source=f"{sx} AS s JOIN {terminal} AS d ON d.serial_number = s.serial_number",
        params=params,
        new=f"NOT EXISTS (SELECT 1 FROM {txn} AS x WHERE x.terminal_id = d.id"
        f" AND x.occurred_at = s.occurred_at AND x.amount = s.amount)",
        conflict="(terminal_id, occurred_at, amount)",
    )
    result.transactions.unchanged = (
        counts["transactions"]
        - result.transactions.created
        - result.transactions.updated
    )
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
