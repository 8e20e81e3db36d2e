"""Registry admin: lists, search and filters, masked numbers, no N+1, read-only history."""

from decimal import Decimal
from http import HTTPStatus

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from terminals.masking import mask_card_number, mask_id_number
from terminals.models import Binding, SettlementBatch, Terminal
from tests import factories

pytestmark = pytest.mark.django_db

MODELS = ("merchant", "terminal", "binding", "transaction", "settlementbatch")


def changelist(model: str) -> str:
    return reverse(f"admin:terminals_{model}_changelist")


def make_rows(count: int) -> None:
    """``count`` merchants, each with a bound terminal, a transaction and a batch."""
    for _ in range(count):
        binding = factories.BindingFactory()
        batch = factories.SettlementBatchFactory(merchant=binding.merchant)
        factories.TransactionFactory(
            terminal=binding.terminal, settled=True, settlement_batch=batch
        )
    factories.TerminalFactory()  # one in stock


@pytest.fixture
def staff_client(request, client, admin_user, auditor):
    """A client logged in as a superuser or as an Auditor (parametrised)."""
    client.force_login(admin_user if request.param == "superuser" else auditor)
    return client


both_roles = pytest.mark.parametrize(
    "staff_client", ["superuser", "auditor"], indirect=True
)


@both_roles
@pytest.mark.parametrize("model", MODELS)
def test_changelists_open(staff_client, model):
    # given
    make_rows(3)

    # when
    response = staff_client.get(changelist(model))

    # then
    assert response.status_code == HTTPStatus.OK


@both_roles
@pytest.mark.parametrize("model", MODELS)
def test_changelist_query_count_does_not_grow_with_rows(
    staff_client, model, django_assert_max_num_queries
):
    # given: count the queries for 5 rows, then allow no more for 50
    make_rows(5)
    with CaptureQueriesContext(connection) as few:
        assert staff_client.get(changelist(model)).status_code == HTTPStatus.OK
    make_rows(45)

    # when / then
    with django_assert_max_num_queries(len(few.captured_queries)):
        response = staff_client.get(changelist(model))
    assert response.status_code == HTTPStatus.OK
    assert len(response.context["cl"].result_list) >= 50


@both_roles
def test_merchant_list_shows_only_masked_numbers(staff_client):
    # given
    merchant = factories.MerchantFactory()

    # when
    html = staff_client.get(changelist("merchant")).content.decode()

    # then
    assert mask_id_number(merchant.legal_rep_id_number) in html
    assert mask_card_number(merchant.settlement_card_number) in html
    assert merchant.legal_rep_id_number not in html
    assert merchant.settlement_card_number not in html


def test_auditor_sees_the_merchant_read_only_and_masked(client, auditor):
    # given
    merchant = factories.MerchantFactory()
    factories.BindingFactory(merchant=merchant)
    client.force_login(auditor)

    # when
    response = client.get(
        reverse("admin:terminals_merchant_change", args=[merchant.pk])
    )

    # then
    assert response.status_code == HTTPStatus.OK
    html = response.content.decode()
    assert mask_id_number(merchant.legal_rep_id_number) in html
    assert mask_card_number(merchant.settlement_card_number) in html
    assert merchant.legal_rep_id_number not in html
    assert merchant.settlement_card_number not in html
    assert 'name="legal_rep_id_number"' not in html


def test_superuser_edits_the_raw_numbers_in_the_change_form(admin_client):
    # given
    merchant = factories.MerchantFactory()

    # when
    response = admin_client.get(
        reverse("admin:terminals_merchant_change", args=[merchant.pk])
    )

    # then
    html = response.content.decode()
    assert 'name="legal_rep_id_number"' in html
    assert f'value="{merchant.legal_rep_id_number}"' in html


def test_merchant_page_lists_its_terminals(admin_client):
    # given
    binding = factories.BindingFactory()

    # when
    response = admin_client.get(
        reverse("admin:terminals_merchant_change", args=[binding.merchant.pk])
    )

    # then
    assert binding.terminal.serial_number in response.content.decode()


@both_roles
def test_terminal_page_shows_the_binding_history(staff_client):
    # given
    old = factories.BindingFactory()
    old.ended_at = timezone.now()
    old.ended_reason = "device_replacement"
    old.save()
    current = factories.BindingFactory(terminal=old.terminal)

    # when
    response = staff_client.get(
        reverse("admin:terminals_terminal_change", args=[old.terminal.pk])
    )

    # then
    html = response.content.decode()
    assert response.status_code == HTTPStatus.OK
    assert old.merchant.merchant_id in html
    assert current.merchant.merchant_id in html
    assert "device_replacement" in html


@both_roles
@pytest.mark.parametrize(
    ("model", "query", "found", "missed"),
    [
        ("merchant", "merchant_id", "a", "b"),
        ("merchant", "uscc", "a", "b"),
        ("merchant", "name", "a", "b"),
        ("terminal", "serial_number", "ta", "tb"),
        ("terminal", "terminal_id", "ta", "tb"),
        ("terminal", "merchant_id", "ta", "tb"),
        ("binding", "serial_number", "ba", "bb"),
        ("binding", "merchant_id", "ba", "bb"),
    ],
)
def test_search(staff_client, model, query, found, missed):
    # given
    a = factories.BindingFactory(merchant__name="甲商贸")
    b = factories.BindingFactory(merchant__name="乙餐饮")
    objects = {
        "a": a.merchant,
        "b": b.merchant,
        "ta": a.terminal,
        "tb": b.terminal,
        "ba": a,
        "bb": b,
    }
    term = {
        "merchant_id": a.merchant.merchant_id,
        "uscc": a.merchant.uscc,
        "name": "甲商贸",
        "serial_number": a.terminal.serial_number,
        "terminal_id": a.terminal.terminal_id,
    }[query]

    # when
    response = staff_client.get(changelist(model), {"q": term})

    # then
    results = list(response.context["cl"].result_list)
    assert objects[found] in results
    assert objects[missed] not in results


@both_roles
def test_terminal_filters_by_status_and_kind(staff_client):
    # given
    bound = factories.BindingFactory(terminal__kind=Terminal.Kind.QR).terminal
    in_stock = factories.TerminalFactory(kind=Terminal.Kind.QR)
    chip = factories.TerminalFactory(kind=Terminal.Kind.CHIP)

    # when
    by_status = staff_client.get(changelist("terminal"), {"status__exact": "in_stock"})
    by_kind = staff_client.get(changelist("terminal"), {"kind__exact": "qr"})

    # then
    assert set(by_status.context["cl"].result_list) == {in_stock, chip}
    assert set(by_kind.context["cl"].result_list) == {bound, in_stock}


@both_roles
def test_binding_filter_by_active(staff_client):
    # given
    active = factories.BindingFactory()
    ended = factories.BindingFactory(ended_at=timezone.now())

    # when
    response = staff_client.get(changelist("binding"), {"active": "yes"})
    ended_response = staff_client.get(changelist("binding"), {"active": "no"})

    # then
    assert list(response.context["cl"].result_list) == [active]
    assert list(ended_response.context["cl"].result_list) == [ended]


@pytest.mark.parametrize("model", ["binding", "transaction", "settlementbatch"])
def test_history_is_read_only_even_for_a_superuser(admin_client, model):
    # given
    make_rows(1)
    obj = {
        "binding": Binding.objects.first,
        "transaction": lambda: factories.TransactionFactory(),
        "settlementbatch": SettlementBatch.objects.first,
    }[model]()

    # when
    add = admin_client.get(reverse(f"admin:terminals_{model}_add"))
    delete = admin_client.get(reverse(f"admin:terminals_{model}_delete", args=[obj.pk]))
    change = admin_client.get(reverse(f"admin:terminals_{model}_change", args=[obj.pk]))

    # then
    assert add.status_code == HTTPStatus.FORBIDDEN
    assert delete.status_code == HTTPStatus.FORBIDDEN
    assert change.status_code == HTTPStatus.OK
    assert 'type="submit"' not in change.content.decode().split('id="content-main"')[1]


def test_auditor_cannot_change_a_merchant(client, auditor):
    # given
    merchant = factories.MerchantFactory(name="原名")
    client.force_login(auditor)

    # when
    response = client.post(
        reverse("admin:terminals_merchant_change", args=[merchant.pk]),
        {"name": "改名"},
    )

    # then
    assert response.status_code == HTTPStatus.FORBIDDEN
    merchant.refresh_from_db()
    assert merchant.name == "原名"


def test_settlement_batch_list_shows_the_total(admin_client):
    # given
    batch = factories.SettlementBatchFactory(total=Decimal("1234.50"))

    # when
    html = admin_client.get(changelist("settlementbatch")).content.decode()

    # then
    assert batch.reference in html
    assert "1234.50" in html or "1,234.50" in html
