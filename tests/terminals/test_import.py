"""The registry import: atomic, idempotent by natural keys, clear about bad records."""

import json
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.core.management import base as management_base
from django.utils import translation

from terminals import identifiers
from terminals.importer import RegistryImportError, registry_import
from terminals.management.commands.import_registry import (
    Command as ImportRegistryCommand,
)
from terminals.models import Binding, Merchant, Terminal, Transaction
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _english():
    with translation.override("en"):
        yield


def merchant_record(n: int, **overrides) -> dict:
    record = {
        "merchant_id": identifiers.make_merchant_id(n),
        "uscc": identifiers.make_uscc(n),
        "name": f"示例商户{n}",
        "legal_rep_name": "李娜",
        "legal_rep_id_number": identifiers.make_resident_id(n),
        "contact_email": f"m{n}@shop.example.com",
        "contact_phone": "13800138000",
    }
    return {**record, **overrides}


def terminal_record(n: int, merchant: int | None, **overrides) -> dict:
    record = {
        "serial_number": identifiers.make_serial_number(n),
        "terminal_id": identifiers.make_terminal_id(n),
        "model": "PAX A920",
        "kind": "smart",
        "merchant_id": identifiers.make_merchant_id(merchant) if merchant else None,
    }
    return {**record, **overrides}


def transaction_record(terminal: int, hour: int, **overrides) -> dict:
    record = {
        "serial_number": identifiers.make_serial_number(terminal),
        "amount": "128.50",
        "occurred_at": f"2026-11-01T{hour:02d}:00:00+08:00",
        "settled": False,
    }
    return {**record, **overrides}


def registry_file() -> dict:
    """Two merchants, three bound terminals, one in stock, three transactions."""
    return {
        "merchants": [merchant_record(1), merchant_record(2)],
        "terminals": [
            terminal_record(1, 1),
            terminal_record(2, 1),
            terminal_record(3, 2),
            terminal_record(4, None),
        ],
        "transactions": [
            transaction_record(1, 10),
            transaction_record(1, 11, amount="7"),
            transaction_record(3, 12, settled=True),
        ],
    }


def write(tmp_path, data) -> str:
    path = tmp_path / "registry.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return str(path)


def test_good_file_creates_merchants_terminals_bindings_and_transactions():
    # given
    data = registry_file()

    # when
    result = registry_import(data=data)

    # then
    assert result.as_dict() == {
        "merchants": {"created": 2, "updated": 0, "unchanged": 0},
        "terminals": {"created": 4, "updated": 0, "unchanged": 0},
        "bindings": {"created": 3, "updated": 0, "unchanged": 0},
        "transactions": {"created": 3, "updated": 0, "unchanged": 0},
    }
    bound = Binding.objects.active().filter(merchant__merchant_id="898000000000001")
    assert sorted(bound.values_list("terminal__serial_number", flat=True)) == [
        "SN0000000001",
        "SN0000000002",
    ]
    assert Terminal.objects.get(serial_number="SN0000000001").status == "active"
    assert Transaction.objects.get(amount=Decimal("7.00")).terminal.serial_number == (
        "SN0000000001"
    )
    assert Transaction.objects.filter(settled=True).count() == 1


def test_in_stock_terminal_has_no_binding():
    # given
    data = registry_file()

    # when
    registry_import(data=data)

    # then
    terminal = Terminal.objects.get(serial_number="SN0000000004")
    assert terminal.status == Terminal.Status.IN_STOCK
    assert not terminal.bindings.exists()


def test_reimport_changes_nothing_and_counts_unchanged():
    # given
    registry_import(data=registry_file())
    binding_pks = set(Binding.objects.values_list("pk", flat=True))

    # when
    result = registry_import(data=registry_file())

    # then
    assert result.as_dict() == {
        "merchants": {"created": 0, "updated": 0, "unchanged": 2},
        "terminals": {"created": 0, "updated": 0, "unchanged": 4},
        "bindings": {"created": 0, "updated": 0, "unchanged": 3},
        "transactions": {"created": 0, "updated": 0, "unchanged": 3},
    }
    assert Merchant.objects.count() == 2
    assert Terminal.objects.count() == 4
    assert set(Binding.objects.values_list("pk", flat=True)) == binding_pks
    assert Transaction.objects.count() == 3


def test_reimport_updates_changed_fields_by_natural_key():
    # given
    registry_import(data=registry_file())
    data = registry_file()
    data["merchants"][0]["name"] = "新名字商贸有限公司"
    data["terminals"][3]["model"] = "Newland N910"
    data["transactions"][0]["settled"] = True

    # when
    result = registry_import(data=data)

    # then
    assert result.merchants.updated == 1
    assert result.terminals.updated == 1
    assert result.transactions.updated == 1
    assert Merchant.objects.get(merchant_id="898000000000001").name == (
        "新名字商贸有限公司"
    )
    assert Terminal.objects.get(serial_number="SN0000000004").model == "Newland N910"
    assert Transaction.objects.filter(settled=True).count() == 2


def test_same_amount_written_differently_is_the_same_transaction():
    # given
    registry_import(data=registry_file())
    data = registry_file()
    data["transactions"][0]["amount"] = "128.5"
    data["transactions"][0]["occurred_at"] = "2026-11-01T02:00:00Z"

    # when
    result = registry_import(data=data)

    # then
    assert result.transactions.unchanged == 3
    assert Transaction.objects.count() == 3


def test_terminal_bound_later_gets_an_active_binding():
    # given
    registry_import(data=registry_file())
    data = registry_file()
    data["terminals"][3]["merchant_id"] = identifiers.make_merchant_id(2)

    # when
    result = registry_import(data=data)

    # then
    assert result.bindings.created == 1
    terminal = Terminal.objects.get(serial_number="SN0000000004")
    assert terminal.status == Terminal.Status.ACTIVE
    assert terminal.bindings.get().merchant.merchant_id == "898000000000002"


def test_bad_record_in_the_middle_imports_nothing_and_names_the_index():
    # given
    data = registry_file()
    data["terminals"].insert(2, terminal_record(9, 1, terminal_id="bad"))

    # when
    with pytest.raises(RegistryImportError) as caught:
        registry_import(data=data)

    # then
    assert caught.value.section == "terminals"
    assert caught.value.index == 2
    assert "terminals[2].terminal_id" in str(caught.value)
    assert "8 digits or capital letters" in str(caught.value)
    assert not Merchant.objects.exists()
    assert not Terminal.objects.exists()
    assert not Binding.objects.exists()
    assert not Transaction.objects.exists()


def test_conflict_found_after_writes_started_rolls_everything_back():
    # given: the last transaction names a terminal nobody knows
    data = registry_file()
    data["transactions"].append(transaction_record(77, 9))

    # when
    with pytest.raises(RegistryImportError, match=r"transactions\[3\]"):
        registry_import(data=data)

    # then
    assert not Merchant.objects.exists()
    assert not Terminal.objects.exists()


@pytest.mark.parametrize(
    ("section", "index", "change", "reason"),
    [
        ("merchants", 1, {"uscc": "911100000000000000"}, "check character"),
        ("merchants", 1, {"legal_rep_id_number": "110101198001010000"}, "resident"),
        ("merchants", 1, {"contact_phone": "2800138000"}, "mobile"),
        ("merchants", 1, {"contact_email": "not-an-address"}, "email address"),
        ("merchants", 1, {"merchant_id": "8981"}, "15 digits"),
        ("merchants", 1, {"settlement_card_number": "6222020000000001"}, "check"),
        ("merchants", 1, {"name": ""}, "blank"),
        ("merchants", 1, {"fax": "010-1234"}, "unknown field"),
        ("terminals", 1, {"kind": "floppy"}, "not a valid choice"),
        ("terminals", 1, {"serial_number": "S"}, "serial number"),
        ("terminals", 1, {"merchant_id": "898999999999999"}, "neither in the file"),
        ("transactions", 1, {"amount": 12.5}, "as a string"),
        ("transactions", 1, {"amount": "abc"}, "number"),
        ("transactions", 1, {"occurred_at": "2026-11-01T10:00:00"}, "offset"),
        ("transactions", 1, {"occurred_at": "yesterday"}, "ISO 8601"),
        ("transactions", 1, {"settled": "no"}, "true or false"),
    ],
)
def test_each_kind_of_bad_record_is_reported(section, index, change, reason):
    # given
    data = registry_file()
    data[section][index].update(change)

    # when
    with pytest.raises(RegistryImportError) as caught:
        registry_import(data=data)

    # then
    assert (caught.value.section, caught.value.index) == (section, index)
    assert reason in str(caught.value)
    assert not Merchant.objects.exists()


def test_duplicate_records_in_the_file_are_rejected():
    # given
    data = registry_file()
    data["terminals"].append(terminal_record(1, 2, terminal_id="99999999"))

    # when
    with pytest.raises(RegistryImportError) as caught:
        registry_import(data=data)

    # then
    assert (caught.value.section, caught.value.index) == ("terminals", 4)
    assert "already appears in record 0" in str(caught.value)


def test_file_binding_to_another_merchant_than_the_active_one_is_an_error():
    # given
    registry_import(data=registry_file())
    data = registry_file()
    data["terminals"][0]["merchant_id"] = identifiers.make_merchant_id(2)

    # when
    with pytest.raises(RegistryImportError) as caught:
        registry_import(data=data)

    # then
    assert (caught.value.section, caught.value.index) == ("terminals", 0)
    assert "bound to merchant 898000000000001" in str(caught.value)
    terminal = Terminal.objects.get(serial_number="SN0000000001")
    assert terminal.bindings.get().merchant.merchant_id == "898000000000001"


def test_file_listing_a_bound_terminal_in_stock_is_an_error():
    # given
    registry_import(data=registry_file())
    data = registry_file()
    data["terminals"][0]["merchant_id"] = None

    # when
    with pytest.raises(RegistryImportError, match=r"terminals\[0\].*in stock"):
        registry_import(data=data)

    # then
    assert Binding.objects.active().count() == 3


def test_identifier_held_by_another_row_is_an_error():
    # given
    other = factories.MerchantFactory(
        merchant_id=identifiers.make_merchant_id(50), uscc=identifiers.make_uscc(2)
    )

    # when
    with pytest.raises(RegistryImportError) as caught:
        registry_import(data=registry_file())

    # then
    assert (caught.value.section, caught.value.index) == ("merchants", 1)
    assert other.merchant_id in str(caught.value)


def test_closed_merchant_cannot_get_a_terminal():
    # given
    factories.MerchantFactory(
        merchant_id=identifiers.make_merchant_id(5),
        uscc=identifiers.make_uscc(5),
        status=Merchant.Status.CLOSED,
    )
    data = registry_file()
    data["terminals"].append(terminal_record(5, 5))

    # when
    with pytest.raises(RegistryImportError, match="closed"):
        registry_import(data=data)

    # then
    assert not Terminal.objects.exists()


def test_terminal_may_name_a_merchant_already_in_the_registry():
    # given
    merchant = factories.MerchantFactory()
    data = {"terminals": [terminal_record(1, None, merchant_id=merchant.merchant_id)]}

    # when
    result = registry_import(data=data)

    # then
    assert result.bindings.created == 1
    assert Binding.objects.active().get().merchant == merchant


def test_input_is_normalised():
    # given
    data = registry_file()
    data["merchants"][0]["uscc"] = data["merchants"][0]["uscc"].lower()
    data["terminals"][0]["serial_number"] = " sn 0000000001 "

    # when
    registry_import(data=data)

    # then
    assert Terminal.objects.filter(serial_number="SN0000000001").exists()
    assert Merchant.objects.filter(uscc=identifiers.make_uscc(1)).exists()


def test_command_prints_counts(tmp_path):
    # given
    path = write(tmp_path, registry_file())
    out = StringIO()

    # when
    call_command("import_registry", path, stdout=out)
    call_command("import_registry", path, stdout=out)

    # then
    lines = out.getvalue().splitlines()
    assert "merchants: 2 created, 0 updated, 0 unchanged" in lines
    assert "terminals: 4 created, 0 updated, 0 unchanged" in lines
    assert "bindings: 3 created, 0 updated, 0 unchanged" in lines
    assert "transactions: 3 created, 0 updated, 0 unchanged" in lines
    assert "terminals: 0 created, 0 updated, 4 unchanged" in lines
    assert Terminal.objects.count() == 4


def test_command_fails_with_the_record_index(tmp_path):
    # given
    data = registry_file()
    data["merchants"][1]["uscc"] = "91110000000000000X"
    path = write(tmp_path, data)

    # when
    with pytest.raises(CommandError) as caught:
        call_command("import_registry", path, stdout=StringIO())

    # then
    assert "merchants[1].uscc" in str(caught.value)
    assert "Nothing was imported" in str(caught.value)
    assert not Merchant.objects.exists()


def test_command_exits_non_zero_with_the_index_on_stderr(tmp_path, capsys, monkeypatch):
    # given
    data = registry_file()
    data["terminals"][2]["kind"] = "floppy"
    path = write(tmp_path, data)
    # run_from_argv closes the connections at the end, which would end the
    # test's transaction.
    monkeypatch.setattr(management_base.connections, "close_all", lambda: None)

    # when
    with pytest.raises(SystemExit) as caught:
        ImportRegistryCommand().run_from_argv(
            ["manage.py", "import_registry", "--skip-checks", path]
        )

    # then
    assert caught.value.code != 0
    assert "terminals[2].kind" in capsys.readouterr().err
    assert not Terminal.objects.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"{not json", "not valid JSON"), (b"\xff\xfe\x00", "not valid JSON")],
)
def test_command_rejects_unreadable_json(tmp_path, content, message):
    # given
    path = tmp_path / "registry.json"
    path.write_bytes(content)

    # when
    with pytest.raises(CommandError, match=message):
        call_command("import_registry", str(path))

    # then
    assert not Merchant.objects.exists()


def test_command_reports_a_missing_file(tmp_path):
    # when / then
    with pytest.raises(CommandError, match="cannot read"):
        call_command("import_registry", str(tmp_path / "missing.json"))
