"""The client address behind a proxy: X-Forwarded-For only from trusted proxies.

One helper (config.client_address) answers for the throttles, the staff
lockout and the audit events; these tests run each of them in both set-ups.
"""

from http import HTTPStatus

import pytest
from axes.models import AccessAttempt
from django.test import RequestFactory

from cases.models import CaseEvent, CaseState
from cases.tokens import token_for_salt
from config.client_address import client_address
from tests import factories
from tests.security.helpers import login, make_staff

pytestmark = pytest.mark.django_db

PROXY = "10.0.0.2"
CLIENT_A = "203.0.113.7"
CLIENT_B = "198.51.100.20"
LIMIT = 3


@pytest.fixture
def strict(settings):
    settings.THROTTLE_RATES = dict.fromkeys(settings.THROTTLE_RATES, f"{LIMIT}/3600")
    return settings


@pytest.fixture
def behind_proxy(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/24"]
    return settings


def status_check(client, merchant_id: str, **meta):
    data = {"merchant_id": merchant_id, "serial_number": "SN1"}
    return client.get("/terminals/status/", data, **meta)


def address(remote: str, forwarded: str | None = None) -> str | None:
    meta = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        meta["HTTP_X_FORWARDED_FOR"] = forwarded
    return client_address(RequestFactory().get("/", **meta))


# --- the helper ---------------------------------------------------------------


def test_without_trusted_proxies_the_header_is_ignored(settings):
    # given
    settings.TRUSTED_PROXIES = []

    # when / then
    assert address(CLIENT_A, forwarded=CLIENT_B) == CLIENT_A
    assert address(PROXY, forwarded=CLIENT_B) == PROXY


def test_behind_a_trusted_proxy_the_forwarded_client_is_taken(behind_proxy):
    # when / then: the proxy's own hop and any trusted hops are peeled off
    assert address(PROXY, forwarded=CLIENT_A) == CLIENT_A
    assert address(PROXY, forwarded=f"{CLIENT_A}, 10.0.0.3") == CLIENT_A
    # a client-supplied (spoofed) left part does not move the answer
    assert address(PROXY, forwarded=f"1.2.3.4, {CLIENT_A}") == CLIENT_A
    # an untrusted hop speaking directly is the client, whatever it forwards
    assert address(CLIENT_B, forwarded=CLIENT_A) == CLIENT_B
    # the proxy sent no header: the proxy is all there is
    assert address(PROXY) == PROXY


def test_an_unknown_address_is_none_never_a_placeholder(behind_proxy):
    # when / then
    assert address("") is None
    assert address("not-an-address", forwarded=CLIENT_A) is None
    assert address(PROXY, forwarded="garbage") == PROXY


# --- throttling ---------------------------------------------------------------


def test_without_a_trusted_proxy_a_spoofed_header_does_not_dodge_the_throttle(
    client, strict, settings
):
    # given
    settings.TRUSTED_PROXIES = []
    merchants = [factories.MerchantFactory() for _ in range(LIMIT + 1)]

    # when: one address, a new X-Forwarded-For (and merchant) each time
    responses = [
        status_check(
            client,
            merchant.merchant_id,
            REMOTE_ADDR=CLIENT_A,
            HTTP_X_FORWARDED_FOR=f"192.0.2.{n}",
        )
        for n, merchant in enumerate(merchants)
    ]

    # then
    assert [r.status_code for r in responses[:LIMIT]] == [HTTPStatus.OK] * LIMIT
    assert responses[LIMIT].status_code == HTTPStatus.TOO_MANY_REQUESTS


def test_behind_a_trusted_proxy_clients_are_throttled_separately(
    client, strict, behind_proxy
):
    # given: every request arrives from the proxy
    merchants = [factories.MerchantFactory() for _ in range(LIMIT + 2)]
    via_proxy = {"REMOTE_ADDR": PROXY}

    # when: client A uses its whole allowance, then B comes
    a = [
        status_check(client, m.merchant_id, HTTP_X_FORWARDED_FOR=CLIENT_A, **via_proxy)
        for m in merchants[: LIMIT + 1]
    ]
    b = status_check(
        client, merchants[-1].merchant_id, HTTP_X_FORWARDED_FOR=CLIENT_B, **via_proxy
    )

    # then: A is stopped, B (same proxy) is not
    assert a[LIMIT].status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert b.status_code == HTTPStatus.OK


def test_behind_a_trusted_proxy_an_untrusted_hops_header_is_ignored(
    client, strict, behind_proxy
):
    # given: a client connecting directly (not through the proxy)
    merchants = [factories.MerchantFactory() for _ in range(LIMIT + 1)]

    # when: it claims a new forwarded address each time
    responses = [
        status_check(
            client,
            m.merchant_id,
            REMOTE_ADDR=CLIENT_A,
            HTTP_X_FORWARDED_FOR=f"192.0.2.{n}",
        )
        for n, m in enumerate(merchants)
    ]

    # then: still one client
    assert responses[LIMIT].status_code == HTTPStatus.TOO_MANY_REQUESTS


# --- staff lockout ------------------------------------------------------------


def test_behind_a_trusted_proxy_the_lockout_keys_on_the_real_client(
    client, lockout, behind_proxy
):
    # given
    make_staff("alice")
    attacker = {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": CLIENT_A}
    colleague = {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": CLIENT_B}

    # when: five wrong passwords from the attacker, through the proxy
    for _ in range(5):
        login(client, "alice", password="wrong", **attacker)
    attacker_again = login(client, "alice", **attacker)
    alice = login(client, "alice", **colleague)

    # then: the attacker is locked out, alice (same proxy) signs in
    assert attacker_again.status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert alice.status_code == HTTPStatus.FOUND
    attempt = AccessAttempt.objects.get(username="alice", ip_address=CLIENT_A)
    assert attempt.failures_since_start >= 5


# --- audit events -------------------------------------------------------------


def test_audit_events_record_the_forwarded_client(client, behind_proxy):
    # given
    case = factories.CaseFactory(state=CaseState.SUBMITTED)
    token = token_for_salt(case.token_salt)

    # when
    client.post(
        f"/requests/{token}/withdraw/",
        REMOTE_ADDR=PROXY,
        HTTP_X_FORWARDED_FOR=CLIENT_A,
    )

    # then
    event = CaseEvent.objects.filter(case=case).latest("pk")
    assert event.client_ip == CLIENT_A


def test_audit_events_without_an_address_store_none(client):
    # given: e.g. gunicorn on a unix socket leaves REMOTE_ADDR empty
    case = factories.CaseFactory(state=CaseState.SUBMITTED)
    token = token_for_salt(case.token_salt)

    # when
    response = client.post(f"/requests/{token}/withdraw/", REMOTE_ADDR="")

    # then: no "unknown" in an inet column
    assert response.status_code == HTTPStatus.FOUND
    event = CaseEvent.objects.filter(case=case).latest("pk")
    assert event.client_ip is None
