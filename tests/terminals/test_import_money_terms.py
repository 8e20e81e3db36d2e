"""import_registry's optional money terms: deposit refund condition, service fee
plan and SIM fee, per terminal and as the merchant's defaults."""

import json
from datetime import date
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import translation

from terminals.models import Merchant, Terminal
from tests.terminals.test_import import merchant_record, terminal_record

pytestmark = pytest.mark.django_db

TERMS = {
    "deposit_refund_condition": "volume_reached",
    "deposit_refund_volume": "50000.00",
    "service_fee_annual": "365.00",
    "service_fee_paid_until": "2027-06-30",
    "service_fee_prorated": True,
    "sim_fee": "60",
    "sim_fee_paid_until": "2026-12-31",
}


@pytest.fixture(autouse=True)
def _english():
    with translation.override("en"):
        yield


def run_import(tmp_path, data: dict) -> None:
    path = tmp_path / "registry.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    call_command("import_registry", str(path), stdout=StringIO())


def test_money_terms_import_on_terminals_and_merchants_and_old_files_keep_them(
    tmp_path,
):
    # given a file with terms on a terminal and defaults on its merchant
    run_import(
        tmp_path,
        {
            "merchants": [
                {**merchant_record(1), "service_fee_annual": "120.00"},
            ],
            "terminals": [{**terminal_record(1, 1, deposit="299.00"), **TERMS}],
        },
    )

    # then the amounts are exact decimals and the dates dates
    terminal = Terminal.objects.get()
    assert terminal.deposit_refund_condition == "volume_reached"
    assert terminal.deposit_refund_volume == Decimal("50000.00")
    assert terminal.service_fee_annual == Decimal("365.00")
    assert terminal.service_fee_paid_until == date(2027, 6, 30)
    assert terminal.service_fee_prorated is True
    assert terminal.sim_fee == Decimal("60.00")
    assert terminal.sim_fee_paid_until == date(2026, 12, 31)
    assert Merchant.objects.get().service_fee_annual == Decimal("120.00")

    # when an old-format file without the terms is imported again
    run_import(
        tmp_path,
        {"merchants": [merchant_record(1)], "terminals": [terminal_record(1, 1)]},
    )

    # then the stored terms are kept
    terminal.refresh_from_db()
    assert terminal.sim_fee == Decimal("60.00")
    assert Merchant.objects.get().service_fee_annual == Decimal("120.00")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"sim_fee": 60.5}, "sim_fee"),
        ({"service_fee_annual": "-1.00"}, "negative"),
        ({"deposit_refund_condition": "volume_reached"}, "deposit_refund_volume"),
        ({"deposit_refund_condition": "someday"}, "deposit_refund_condition"),
        ({"service_fee_prorated": "yes"}, "service_fee_prorated"),
        ({"service_fee_paid_until": "30/06/2027"}, "service_fee_paid_until"),
    ],
)
def test_a_float_or_bad_term_rejects_the_whole_file(tmp_path, extra, message):
    # given / when / then
    with pytest.raises(CommandError, match=message):
        run_import(
            tmp_path,
            {
                "merchants": [merchant_record(1)],
                "terminals": [{**terminal_record(1, 1), **extra}],
            },
        )
    assert not Terminal.objects.exists()
