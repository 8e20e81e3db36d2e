"""The public binding-status page: two answers, no leak, throttled."""

import re
from http import HTTPStatus

import pytest
from django.urls import reverse

from terminals.selectors import binding_status_check
from tests import factories

pytestmark = pytest.mark.django_db

URL = reverse("terminals:status")


def check(client, merchant_id: str, serial_number: str, **extra):
    return client.get(
        URL, {"merchant_id": merchant_id, "serial_number": serial_number}, **extra
    )


def without_echo(html: str, *inputs: str) -> str:
    """Remove what the page legitimately echoes or varies per response."""
    for value in inputs:
        html = html.replace(value, "")
    return re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", html)


def test_selector_is_true_only_for_the_active_binding(
    merchant, django_assert_num_queries
):
    # given
    terminal = factories.BindingFactory(merchant=merchant).terminal
    other = factories.MerchantFactory()

    # when / then
    with django_assert_num_queries(1):
        assert binding_status_check(
            merchant_id=merchant.merchant_id, serial_number=terminal.serial_number
        )
    assert not binding_status_check(
        merchant_id=other.merchant_id, serial_number=terminal.serial_number
    )


def test_ended_binding_is_not_bound(client, merchant):
    # given
    binding = factories.BindingFactory(merchant=merchant)
    binding.ended_at = binding.started_at
    binding.save()

    # when
    response = check(client, merchant.merchant_id, binding.terminal.serial_number)

    # then
    assert 'data-binding="not-bound"' in response.content.decode()


def test_empty_page_shows_the_form_without_a_result(client):
    # when
    response = client.get(URL)

    # then
    assert response.status_code == HTTPStatus.OK
    html = response.content.decode()
    assert 'name="merchant_id"' in html
    assert 'name="serial_number"' in html
    assert "data-binding" not in html


def test_bound_terminal_says_bound_and_links_to_a_request(
    client, merchant, bound_terminal
):
    # when
    response = check(client, merchant.merchant_id, bound_terminal.serial_number)

    # then
    assert response.status_code == HTTPStatus.OK
    html = response.content.decode()
    assert 'data-binding="bound"' in html
    assert reverse("cases:new") in html


def test_input_is_normalised(client, merchant, bound_terminal):
    # given
    typed_sn = " " + bound_terminal.serial_number.lower().replace("sn", "s n") + " "
    typed_mid = f" {merchant.merchant_id[:5]} {merchant.merchant_id[5:]} "

    # when
    response = check(client, typed_mid, typed_sn)

    # then
    assert 'data-binding="bound"' in response.content.decode()


def test_every_negative_answer_is_the_same_page(client, merchant, bound_terminal):
    # given: a terminal bound to someone else, one in stock, an unknown merchant
    other_terminal = factories.BindingFactory().terminal
    in_stock = factories.TerminalFactory()
    unknown_merchant = "898999999999999"
    cases = [
        (merchant.merchant_id, "SN9999999999"),  # unknown serial
        (merchant.merchant_id, other_terminal.serial_number),  # someone else's
        (merchant.merchant_id, in_stock.serial_number),  # in stock
        (unknown_merchant, bound_terminal.serial_number),  # unknown merchant
    ]

    # when
    pages = []
    for merchant_id, serial in cases:
        response = check(client, merchant_id, serial)
        assert response.status_code == HTTPStatus.OK
        pages.append(without_echo(response.content.decode(), merchant_id, serial))

    # then
    assert 'data-binding="not-bound"' in pages[0]
    assert all(page == pages[0] for page in pages)


def test_bad_format_shows_a_form_error_and_no_result(client):
    # when
    response = check(client, "12345", "??")

    # then
    assert response.status_code == HTTPStatus.OK
    html = response.content.decode()
    assert "data-binding" not in html
    assert "is-invalid" in html
    assert response.context["form"].errors.keys() == {"merchant_id", "serial_number"}


def test_missing_serial_number_is_a_form_error(client, merchant):
    # when
    response = client.get(URL, {"merchant_id": merchant.merchant_id})

    # then
    assert "data-binding" not in response.content.decode()
    assert "serial_number" in response.context["form"].errors


def test_too_many_checks_from_one_address_get_429(client, settings, merchant):
    # given
    settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, "binding_status": "3/60"}
    for n in range(3):
        response = check(client, merchant.merchant_id, f"SN000000{n:04d}")
        assert response.status_code == HTTPStatus.OK

    # when
    response = check(client, merchant.merchant_id, "SN0000009999")

    # then
    assert response.status_code == HTTPStatus.TOO_MANY_REQUESTS
    html = response.content.decode()
    assert 'data-error="too-many-requests"' in html
    assert "data-binding" not in html


def test_one_merchant_number_is_throttled_across_addresses(client, settings, merchant):
    # given
    settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, "binding_status": "3/60"}
    for n in range(3):
        check(client, merchant.merchant_id, "SN00000001", REMOTE_ADDR=f"10.0.0.{n}")

    # when
    blocked = check(client, merchant.merchant_id, "SN00000001", REMOTE_ADDR="10.0.0.9")
    other = check(client, "898999999999999", "SN00000001", REMOTE_ADDR="10.0.0.8")

    # then
    assert blocked.status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert other.status_code == HTTPStatus.OK


def test_answer_is_never_cached(client, merchant, bound_terminal):
    # when
    response = check(client, merchant.merchant_id, bound_terminal.serial_number)

    # then
    assert (
        "no-cache" in response["Cache-Control"]
        or "no-store" in response["Cache-Control"]
    )


def test_post_is_not_allowed(client):
    # when
    response = client.post(URL, {})

    # then
    assert response.status_code == HTTPStatus.METHOD_NOT_ALLOWED
