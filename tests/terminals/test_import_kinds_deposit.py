"""import_registry's optional fields: merchant ``kind`` (null USCC for micro) and
terminal ``deposit`` (CONTRACT.md, "Registry file for import_registry")."""

import json
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction
from django.utils import translation

from terminals import identifiers
from terminals.models import Merchant, Terminal
from tests import factories
from tests.terminals.test_import import merchant_record, terminal_record

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _english():
    with translation.override("en"):
        yield


def run_import(tmp_path, data: dict) -> None:
    path = tmp_path / "registry.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    call_command("import_registry", str(path), stdout=StringIO())


def test_kinds_null_uscc_for_micro_and_deposits_import(tmp_path):
    # given a file with the three kinds, a micro-merchant without a USCC and deposits
    data = {
        "merchants": [
            merchant_record(1),
            merchant_record(2, kind="individual"),
            merchant_record(3, kind="micro", uscc=None),
        ],
        "terminals": [
            terminal_record(1, 1, deposit="299.00"),
            terminal_record(2, 3, deposit=300),
            terminal_record(3, 3, deposit=None),
            terminal_record(4, 2),
        ],
    }

    # when
    run_import(tmp_path, data)

    # then
    kinds = dict(Merchant.objects.values_list("merchant_id", "kind"))
    assert kinds == {
        identifiers.make_merchant_id(1): "enterprise",
        identifiers.make_merchant_id(2): "individual",
        identifiers.make_merchant_id(3): "micro",
    }
    assert (
        Merchant.objects.get(merchant_id=identifiers.make_merchant_id(3)).uscc is None
    )
    deposits = dict(Terminal.objects.values_list("serial_number", "deposit"))
    assert deposits[identifiers.make_serial_number(1)] == Decimal("299.00")
    assert deposits[identifiers.make_serial_number(2)] == Decimal("300.00")
    assert deposits[identifiers.make_serial_number(3)] is None
    assert deposits[identifiers.make_serial_number(4)] is None


def test_old_file_without_the_optional_fields_keeps_stored_kind_and_deposit(tmp_path):
    # given a micro-merchant and a deposit imported once
    run_import(
        tmp_path,
        {
            "merchants": [merchant_record(1, kind="micro")],
            "terminals": [terminal_record(1, 1, deposit="299.00")],
        },
    )

    # when an old-format file (no kind, no deposit) is imported again
    run_import(
        tmp_path,
        {"merchants": [merchant_record(1)], "terminals": [terminal_record(1, 1)]},
    )

    # then nothing it does not mention changes
    assert Merchant.objects.get().kind == Merchant.Kind.MICRO
    assert Terminal.objects.get().deposit == Decimal("299.00")


def test_a_deposit_can_be_changed_and_removed(tmp_path):
    # given
    run_import(tmp_path, {"terminals": [terminal_record(1, None, deposit="299.00")]})

    # when / then
    run_import(tmp_path, {"terminals": [terminal_record(1, None, deposit="199.50")]})
    assert Terminal.objects.get().deposit == Decimal("199.50")
    run_import(tmp_path, {"terminals": [terminal_record(1, None, deposit=None)]})
    assert Terminal.objects.get().deposit is None


@pytest.mark.parametrize(
    ("merchants", "message"),
    [
        (
            [merchant_record(1), merchant_record(2, kind="chain")],
            "merchants[1].kind",
        ),
        ([merchant_record(1, uscc=None)], "merchants[0].uscc: only a micro-merchant"),
        (
            [merchant_record(1), merchant_record(2, kind="individual", uscc=None)],
            "merchants[1].uscc: only a micro-merchant",
        ),
        ([merchant_record(1, kind=None)], "merchants[0].kind: must be a string"),
    ],
)
def test_a_bad_kind_or_missing_uscc_rejects_the_whole_file(
    tmp_path, merchants, message
):
    # given a file whose other records are fine
    data = {"merchants": merchants, "terminals": [terminal_record(1, 1)]}

    # when
    with pytest.raises(CommandError) as caught:
        run_import(tmp_path, data)

    # then the record is named and nothing was imported
    assert message in str(caught.value)
    assert Merchant.objects.count() == 0
    assert Terminal.objects.count() == 0


def test_an_existing_enterprise_cannot_lose_its_uscc_in_an_old_file(tmp_path):
    # given an enterprise in the registry
    factories.MerchantFactory(merchant_id=identifiers.make_merchant_id(1))

    # when a file without a kind gives it no USCC
    with pytest.raises(CommandError) as caught:
        run_import(tmp_path, {"merchants": [merchant_record(1, uscc=None)]})

    # then
    assert "merchants[0].uscc: only a micro-merchant" in str(caught.value)
    assert Merchant.objects.get().uscc


@pytest.mark.parametrize(
    ("deposit", "message"),
    [
        (299.5, 'write the deposit as a string, e.g. "299.00"'),
        (True, 'write the deposit as a string, e.g. "299.00"'),
        ("-1.00", "the deposit cannot be negative"),
        ("299.001", "terminals[1].deposit"),
        ("abc", "terminals[1].deposit"),
        ("NaN", "terminals[1].deposit"),
    ],
)
def test_a_float_or_bad_deposit_rejects_the_whole_file(tmp_path, deposit, message):
    # given
    data = {
        "terminals": [
            terminal_record(1, None, deposit="10.00"),
            terminal_record(2, None, deposit=deposit),
        ]
    }

    # when
    with pytest.raises(CommandError) as caught:
        run_import(tmp_path, data)

    # then
    assert message in str(caught.value)
    assert Terminal.objects.count() == 0


def test_the_database_refuses_a_licensed_merchant_without_uscc():
    # given / when / then: the check constraint holds even outside the importer
    with pytest.raises(IntegrityError), transaction.atomic():
        factories.MerchantFactory(uscc=None, kind=Merchant.Kind.ENTERPRISE)
    micro = factories.MerchantFactory(uscc=None, kind=Merchant.Kind.MICRO)
    assert micro.pk


def test_merchant_address_imports_is_kept_when_absent_and_too_long_is_refused(
    tmp_path,
):
    # given: a merchant with its business address
    run_import(
        tmp_path,
        {"merchants": [merchant_record(1, address="广州市天河区体育西路 8 号")]},
    )
    assert Merchant.objects.get().address == "广州市天河区体育西路 8 号"

    # when: an old-format file (no address) is imported again
    run_import(tmp_path, {"merchants": [merchant_record(1)]})

    # then: the stored address is kept
    assert Merchant.objects.get().address == "广州市天河区体育西路 8 号"

    # when: a new address
    run_import(tmp_path, {"merchants": [merchant_record(1, address="深圳市南山区")]})
    assert Merchant.objects.get().address == "深圳市南山区"

    # and: an address over 200 characters rejects the file, naming the record
    with pytest.raises(CommandError, match=r"merchants\[1\]\.address"):
        run_import(
            tmp_path,
            {
                "merchants": [
                    merchant_record(1, address="北京"),
                    merchant_record(2, address="路" * 201),
                ]
            },
        )
    assert Merchant.objects.get().address == "深圳市南山区"
