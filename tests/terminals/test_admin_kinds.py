"""The registry admin shows and filters merchants by kind, and terminals' deposits."""

from decimal import Decimal
from http import HTTPStatus

import pytest
from django.urls import reverse

from terminals.models import Merchant
from tests import factories

pytestmark = pytest.mark.django_db


def test_merchants_are_filtered_by_kind(admin_client):
    # given one merchant of each kind
    micro = factories.MerchantFactory(kind=Merchant.Kind.MICRO, uscc=None)
    enterprise = factories.MerchantFactory()

    # when
    response = admin_client.get(
        reverse("admin:terminals_merchant_changelist"), {"kind__exact": "micro"}
    )

    # then
    html = response.content.decode()
    assert response.status_code == HTTPStatus.OK
    assert micro.merchant_id in html
    assert enterprise.merchant_id not in html
    assert "Micro-merchant (小微商户)" in html


def test_a_micro_merchant_can_be_saved_without_uscc_but_an_enterprise_cannot(
    admin_client,
):
    # given
    merchant = factories.MerchantFactory()
    url = reverse("admin:terminals_merchant_change", args=[merchant.pk])
    form = admin_client.get(url).context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None}
    data.update(
        {
            "uscc": "",
            "bindings-TOTAL_FORMS": "0",
            "bindings-INITIAL_FORMS": "0",
        }
    )

    # when an enterprise loses its USCC
    response = admin_client.post(url, data)

    # then it is refused with the rule
    assert response.status_code == HTTPStatus.OK
    assert "Only a micro-merchant may have no unified social credit code." in (
        response.content.decode()
    )

    # when it is a micro-merchant instead
    response = admin_client.post(url, {**data, "kind": "micro"})

    # then
    assert response.status_code == HTTPStatus.FOUND
    merchant.refresh_from_db()
    assert (merchant.kind, merchant.uscc) == ("micro", None)


def test_the_terminal_list_shows_the_deposit(admin_client):
    # given
    terminal = factories.TerminalFactory(deposit=Decimal("299.00"))

    # when
    html = admin_client.get(reverse("admin:terminals_terminal_changelist")).content

    # then
    assert terminal.serial_number in html.decode()
    assert "299.00" in html.decode()
