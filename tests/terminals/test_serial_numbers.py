"""Issue 11: one normalisation of serial numbers, used wherever a serial is looked up.

The registry prints ``AB-1234``; a merchant types ``ab 1234`` or ``AB1234``.
Before, the importer and the status page kept the dashes and the request
form dropped them, so the same device was "bound" on one page and "not
yours" on the next.
"""

import importlib
from http import HTTPStatus

import pytest
from django.apps import apps as django_apps
from django.urls import reverse

from cases.models import Case
from terminals import identifiers, validators
from terminals.importer import registry_import
from terminals.models import Binding, Merchant, Terminal, Transaction
from tests import factories
from tests.cases.test_intake import form_data, pdf
from tests.terminals.test_import import merchant_record

PRINTED = "AB-1234-XY"
TYPED = ["AB-1234-XY", "ab-1234-xy", "AB 1234 XY", "ab1234xy", " Ab－1234－ｘｙ "]
CANONICAL = "AB1234XY"
# Registry numbers far from the factories' sequences.
N = 900


@pytest.mark.parametrize("typed", TYPED)
def test_every_way_of_typing_a_serial_has_one_canonical_form(typed):
    assert validators.normalise_serial_number(typed) == CANONICAL
    validators.validate_serial_number(validators.normalise_serial_number(typed))


def test_the_canonical_form_is_stable():
    assert validators.normalise_serial_number(CANONICAL) == CANONICAL


def registry_file(serial: str) -> dict:
    return {
        "merchants": [merchant_record(N)],
        "terminals": [
            {
                "serial_number": serial,
                "terminal_id": identifiers.make_terminal_id(N),
                "model": "PAX A920",
                "kind": "smart",
                "merchant_id": identifiers.make_merchant_id(N),
            }
        ],
        "transactions": [
            {
                "serial_number": serial.lower(),
                "amount": "12.00",
                "occurred_at": "2026-11-01T10:00:00+08:00",
                "settled": True,
            }
        ],
    }


@pytest.fixture
def imported(db):
    registry_import(data=registry_file(PRINTED))
    return Merchant.objects.get(), Terminal.objects.get()


def test_the_import_stores_the_canonical_serial(imported):
    _, terminal = imported

    assert terminal.serial_number == CANONICAL
    assert Transaction.objects.get().terminal == terminal


@pytest.mark.parametrize("typed", TYPED)
def test_reimporting_the_serial_typed_differently_changes_nothing(imported, typed):
    # when
    result = registry_import(data=registry_file(typed))

    # then
    assert result.terminals.unchanged == 1
    assert result.terminals.created == 0
    assert result.transactions.unchanged == 1
    assert Terminal.objects.count() == 1
    assert Binding.objects.active().count() == 1


@pytest.mark.parametrize("typed", TYPED)
def test_the_status_page_finds_the_serial_as_typed(client, imported, typed):
    merchant, _ = imported

    response = client.get(
        reverse("terminals:status"),
        {"merchant_id": merchant.merchant_id, "serial_number": typed},
    )

    assert 'data-binding="bound"' in response.content.decode()


@pytest.mark.parametrize("typed", TYPED)
def test_the_request_form_finds_the_serial_as_typed(hooks_client, imported, typed):
    merchant, terminal = imported

    response = hooks_client.post(
        reverse("cases:new"),
        form_data(merchant, [terminal], serial_numbers=typed),
    )

    assert response.status_code == HTTPStatus.FOUND, response.context["form"].errors
    assert [link.terminal for link in Case.objects.get().case_terminals.all()] == [
        terminal
    ]


def test_the_replacement_serial_is_found_as_typed(hooks_client, imported):
    merchant, terminal = imported
    registry_import(
        data={
            "terminals": [
                {
                    "serial_number": "NEW-0001",
                    "terminal_id": identifiers.make_terminal_id(N + 1),
                    "model": "PAX A920",
                    "kind": "smart",
                    "merchant_id": None,
                }
            ]
        }
    )

    response = hooks_client.post(
        reverse("cases:new"),
        form_data(
            merchant,
            [terminal],
            serial_numbers="ab 1234 xy",
            reason="device_replacement",
            replacement_serial_number="new 0001",
            replacement_documents=[pdf("new-device.pdf")],
        ),
    )

    assert response.status_code == HTTPStatus.FOUND, response.context["form"].errors
    assert Case.objects.get().replacement_terminal.serial_number == "NEW0001"


@pytest.mark.parametrize("typed", ["ab-1234-xy", "AB 1234 XY", "ab1234xy"])
@pytest.mark.parametrize("model", ["terminal", "binding", "transaction"])
def test_the_registry_admin_finds_the_serial_as_typed(
    admin_client, imported, model, typed
):
    # given
    _, terminal = imported
    other = factories.BindingFactory()
    factories.TransactionFactory(terminal=other.terminal)
    expected = {
        "terminal": (terminal, other.terminal),
        "binding": (Binding.objects.get(terminal=terminal), other),
        "transaction": (
            Transaction.objects.get(terminal=terminal),
            Transaction.objects.get(terminal=other.terminal),
        ),
    }[model]

    # when
    response = admin_client.get(
        reverse(f"admin:terminals_{model}_changelist"), {"q": typed}
    )

    # then
    results = list(response.context["cl"].result_list)
    assert expected[0] in results
    assert expected[1] not in results


@pytest.mark.parametrize("typed", ["ab-1234-xy", "AB 1234 XY", "Ab1234Xy"])
def test_the_case_admin_finds_a_case_by_the_serial_as_typed(
    hooks_client, admin_client, imported, typed
):
    # given
    merchant, terminal = imported
    hooks_client.post(reverse("cases:new"), form_data(merchant, [terminal]))
    case = Case.objects.get()

    # when
    response = admin_client.get(reverse("admin:cases_case_changelist"), {"q": typed})

    # then
    assert case in list(response.context["cl"].result_list)


def test_a_terminal_added_in_the_admin_is_stored_canonical(admin_client, db):
    response = admin_client.post(
        reverse("admin:terminals_terminal_add"),
        {
            "serial_number": "pax-a920 0001",
            "terminal_id": "A1B2C3D4",
            "model": "PAX A920",
            "kind": "smart",
            "bindings-TOTAL_FORMS": "0",
            "bindings-INITIAL_FORMS": "0",
        },
    )

    assert response.status_code == HTTPStatus.FOUND, response.context[
        "adminform"
    ].form.errors
    assert Terminal.objects.get().serial_number == "PAXA9200001"


# --- the data migration ---------------------------------------------------------

migration = importlib.import_module(
    "terminals.migrations.0003_canonical_serial_numbers"
)


@pytest.mark.django_db
def test_the_migration_canonicalises_stored_serials():
    # given: rows as the old importer stored them
    printed = factories.TerminalFactory(serial_number="AB-1234")
    plain = factories.TerminalFactory(serial_number="CD5678")
    Terminal.objects.filter(pk=printed.pk).update(serial_number="AB-1234")

    # when
    migration.canonicalise_serial_numbers(django_apps, None)

    # then
    printed.refresh_from_db()
    plain.refresh_from_db()
    assert (printed.serial_number, plain.serial_number) == ("AB1234", "CD5678")


@pytest.mark.django_db
def test_the_migration_refuses_two_serials_that_become_one():
    # given
    Terminal.objects.bulk_create(
        [
            Terminal(serial_number="AB-1234", terminal_id="00000001", kind="smart"),
            Terminal(serial_number="AB1234", terminal_id="00000002", kind="smart"),
        ]
    )

    # when / then
    with pytest.raises(RuntimeError, match="AB-1234"):
        migration.canonicalise_serial_numbers(django_apps, None)
    assert Terminal.objects.filter(serial_number="AB-1234").exists()
