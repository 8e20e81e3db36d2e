"""The registry file read as a stream, and PostgreSQL's staging path at size.

The import reads the file with ijson record by record; on PostgreSQL the
records are copied into staging tables and checked and applied in SQL, on
other databases they are compared in memory. These tests hold both paths to
the rules of tests/terminals/test_import.py where they could differ: records
far apart in a large file, the order of the sections, an unchanged file.
"""

import json
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.utils import translation

from terminals import identifiers, importer
from terminals.importer import RegistryImportError, registry_import
from terminals.models import Binding, Merchant, Terminal, Transaction
from tests.terminals.test_import import (
    merchant_record,
    registry_file,
    terminal_record,
    transaction_record,
    write,
)

pytestmark = pytest.mark.django_db

needs_postgresql = pytest.mark.skipif(
    "connection.vendor != 'postgresql'",
    reason="the staging path and its statistics are PostgreSQL's",
)
REGISTRY_TABLES = (
    "terminals_merchant",
    "terminals_terminal",
    "terminals_binding",
    "terminals_transaction",
)
# More terminals than the in-import ANALYZE threshold, so that the statements
# after the inserts are planned on the grown tables as in a real load.
MANY = importer.ANALYZE_WITHIN_IMPORT_ROWS + 500


@pytest.fixture(autouse=True)
def _english():
    with translation.override("en"):
        yield


def large_file(terminals: int = MANY, merchants: int = 20) -> dict:
    return {
        "merchants": [merchant_record(n) for n in range(1, merchants + 1)],
        "terminals": [
            terminal_record(n, None if n % 10 == 0 else 1 + n % merchants)
            for n in range(1, terminals + 1)
        ],
        "transactions": [transaction_record(n, n % 24) for n in range(1, 200)],
    }


def test_large_file_with_a_bad_last_record_imports_nothing(tmp_path):
    # given: the only error is in the very last terminal
    data = large_file()
    data["terminals"][-1]["kind"] = "floppy"
    path = write(tmp_path, data)

    # when
    with pytest.raises(CommandError) as caught:
        call_command("import_registry", path, stdout=StringIO())

    # then
    assert f"terminals[{MANY - 1}].kind" in str(caught.value)
    assert "Nothing was imported" in str(caught.value)
    assert not Merchant.objects.exists()
    assert not Terminal.objects.exists()


def test_duplicate_far_apart_in_a_large_file_names_both_records():
    # given: the last terminal repeats the first one's serial number
    data = large_file()
    data["terminals"][-1]["serial_number"] = data["terminals"][0]["serial_number"]

    # when
    with pytest.raises(RegistryImportError) as caught:
        registry_import(data=data)

    # then
    assert (caught.value.section, caught.value.index) == ("terminals", MANY - 1)
    assert "already appears in record 0" in str(caught.value)
    assert not Terminal.objects.exists()


def test_conflict_with_the_registry_in_the_last_record_rolls_everything_back():
    # given: a file that adds ten terminals and, near its end, rebinds the
    # last of the registry's bound terminals (n = MANY - 1, bound to 20)
    registry_import(data=large_file())
    changed = large_file(terminals=MANY + 10)
    changed["terminals"][MANY - 2]["merchant_id"] = identifiers.make_merchant_id(3)
    before = Terminal.objects.count()

    # when
    with pytest.raises(RegistryImportError) as caught:
        registry_import(data=changed)

    # then
    assert (caught.value.section, caught.value.index) == ("terminals", MANY - 2)
    assert "bound to merchant 898000000000020" in str(caught.value)
    assert "unbind it through a case first" in str(caught.value)
    assert Terminal.objects.count() == before


def test_large_file_imports_then_reimports_unchanged(tmp_path):
    # given
    path = write(tmp_path, large_file())
    out = StringIO()

    # when
    call_command("import_registry", path, stdout=out)
    call_command("import_registry", path, stdout=out)

    # then
    lines = out.getvalue().splitlines()
    assert f"terminals: {MANY} created, 0 updated, 0 unchanged" in lines
    assert f"terminals: 0 created, 0 updated, {MANY} unchanged" in lines
    bound = sum(1 for n in range(1, MANY + 1) if n % 10)
    assert f"bindings: 0 created, 0 updated, {bound} unchanged" in lines
    assert Binding.objects.active().count() == bound
    assert Terminal.objects.filter(status=Terminal.Status.IN_STOCK).count() == (
        MANY - bound
    )


def _rows_written() -> dict[str, tuple[int, int, int]]:
    """Rows inserted, updated, deleted so far by this transaction, per table."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del"
            " FROM pg_stat_xact_user_tables WHERE relname = ANY(%s)",
            [list(REGISTRY_TABLES)],
        )
        return {name: tuple(counts) for name, *counts in cursor.fetchall()}


@needs_postgresql
def test_unchanged_reimport_writes_no_row(tmp_path):
    # given
    path = write(tmp_path, large_file())
    call_command("import_registry", path, stdout=StringIO())
    before = _rows_written()

    # when
    call_command("import_registry", path, stdout=StringIO())

    # then: not one row inserted, updated or deleted in any registry table
    assert _rows_written() == before


@needs_postgresql
def test_one_changed_record_updates_one_row(tmp_path):
    # given
    data = large_file()
    registry_import(data=data)
    data["terminals"][700]["model"] = "Sunmi P2"
    before = _rows_written()

    # when
    result = registry_import(data=data)

    # then
    after = _rows_written()
    assert result.terminals.updated == 1
    assert result.terminals.unchanged == MANY - 1
    assert after["terminals_terminal"][1] - before["terminals_terminal"][1] == 1
    assert after["terminals_merchant"] == before["terminals_merchant"]
    assert after["terminals_binding"] == before["terminals_binding"]
    assert Terminal.objects.get(
        serial_number=identifiers.make_serial_number(701)
    ).model == ("Sunmi P2")


@needs_postgresql
def test_staged_and_in_memory_paths_agree():
    """The SQLite path (in memory) and PostgreSQL's give the same counts and rows."""
    # given: a registry with a bound terminal, and a file that changes things
    registry_import(data=registry_file())
    data = registry_file()
    data["merchants"][1].update(kind="individual", service_fee_annual="120.00")
    data["terminals"][3].update(merchant_id=identifiers.make_merchant_id(2))
    data["terminals"][1].update(deposit="299.00", model="Landi A8")
    data["terminals"].append(terminal_record(9, 1))
    data["transactions"][0]["settled"] = True
    data["transactions"].append(transaction_record(9, 3, amount="1.5"))

    def snapshot() -> list:
        return [
            list(
                Merchant.objects.order_by("merchant_id").values_list(
                    "merchant_id", "kind", "service_fee_annual", "uscc"
                )
            ),
            list(
                Terminal.objects.order_by("serial_number").values_list(
                    "serial_number", "status", "model", "deposit"
                )
            ),
            list(
                Binding.objects.active()
                .order_by("terminal__serial_number")
                .values_list("terminal__serial_number", "merchant__merchant_id")
            ),
            list(
                Transaction.objects.order_by(
                    "terminal__serial_number", "occurred_at"
                ).values_list("terminal__serial_number", "amount", "settled")
            ),
        ]

    # when: each path on its own copy of the same registry
    with transaction.atomic():
        in_memory = importer._import_in_memory(
            (section, data[section]) for section in importer.SECTIONS
        )
        memory_rows = snapshot()
        transaction.set_rollback(True)
    staged = registry_import(data=data)

    # then
    assert staged.as_dict() == in_memory.as_dict()
    assert snapshot() == memory_rows
    assert staged.terminals.updated == 2
    assert staged.bindings.created == 2


def test_sections_in_any_order_and_null_sections(tmp_path):
    # given: transactions first, then terminals, then merchants; no-op nulls
    data = registry_file()
    path = tmp_path / "registry.json"
    path.write_text(
        json.dumps(
            {
                "transactions": data["transactions"],
                "terminals": data["terminals"],
                "merchants": data["merchants"],
            }
        ),
        encoding="utf-8",
    )
    nulls = tmp_path / "nulls.json"
    nulls.write_text('{"merchants": null, "terminals": [], "transactions": null}')

    # when
    call_command("import_registry", str(path), stdout=StringIO())
    out = StringIO()
    call_command("import_registry", str(nulls), stdout=out)

    # then
    assert Transaction.objects.count() == 3
    assert Binding.objects.active().count() == 3
    assert "terminals: 0 created, 0 updated, 0 unchanged" in out.getvalue()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[]", "must hold a JSON object"),
        (b'{"merchants": [], "shops": []}', "unknown section(s): shops"),
        (b'{"terminals": {"serial_number": "SN1"}}', "terminals: must be a list"),
        (b'{"terminals": [42]}', "terminals[0]: a record must be a JSON object"),
        (b'{"terminals": [], "terminals": []}', "terminals: the section appears twice"),
        (b'{"merchants": []} trailing', "not valid JSON"),
        (b'{"merchants": [{"merchant_id": "8981"', "not valid JSON"),
    ],
)
def test_file_structure_errors_are_clear(tmp_path, content, message):
    # given
    path = tmp_path / "registry.json"
    path.write_bytes(content)

    # when / then
    with pytest.raises(CommandError) as caught:
        call_command("import_registry", str(path), stdout=StringIO())
    assert message in str(caught.value)
    assert "Nothing was imported" in str(caught.value)


def test_a_json_float_in_the_file_is_still_refused(tmp_path):
    # given: ijson reads 12.5 as Decimal; the import still wants a string
    data = registry_file()
    data["transactions"][1]["amount"] = 12.5
    path = tmp_path / "registry.json"
    path.write_text(json.dumps(data), encoding="utf-8")

    # when
    with pytest.raises(CommandError, match=r"transactions\[1\].amount.*as a string"):
        call_command("import_registry", str(path), stdout=StringIO())

    # then
    assert not Merchant.objects.exists()


def test_money_terms_and_kinds_import_from_a_streamed_file(tmp_path):
    # given
    data = registry_file()
    data["merchants"][0].update(kind="micro", uscc=None, sim_fee="30.00")
    data["terminals"][0].update(deposit="299.00", service_fee_prorated=True)
    path = write(tmp_path, data)

    # when
    call_command("import_registry", path, stdout=StringIO())

    # then
    merchant = Merchant.objects.get(merchant_id=identifiers.make_merchant_id(1))
    assert (merchant.kind, merchant.uscc, merchant.sim_fee) == (
        "micro",
        None,
        Decimal("30.00"),
    )
    terminal = Terminal.objects.get(serial_number=identifiers.make_serial_number(1))
    assert terminal.deposit == Decimal("299.00")
    assert terminal.service_fee_prorated is True
