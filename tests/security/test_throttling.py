"""Every abusable public endpoint answers 429 past its limit, per address and per
merchant or case, and other clients are not affected."""

from dataclasses import dataclass
from http import HTTPStatus

import pytest

from cases.models import CaseState
from cases.tokens import token_for_salt
from tests import factories

pytestmark = pytest.mark.django_db

LIMIT = 3
ATTACKER = "203.0.113.7"
SOMEONE_ELSE = "198.51.100.20"


@dataclass(frozen=True)
class Endpoint:
    scope: str
    method: str
    # "merchant", "case" or None: the second key besides the client address.
    second_key: str | None
    state: str | None = None
    suffix: str = ""


ENDPOINTS = {
    "binding status": Endpoint("binding_status", "get", "merchant"),
    "request form POST": Endpoint("request_new", "post", "merchant"),
    "verify POST": Endpoint(
        "verify", "post", "case", CaseState.PENDING_VERIFICATION, "verify/"
    ),
    "resend": Endpoint(
        "resend", "post", "case", CaseState.PENDING_VERIFICATION, "resend/"
    ),
    "tracking page": Endpoint("tracking", "get", None, CaseState.SUBMITTED),
    "track form": Endpoint("tracking", "post", None),
    "respond": Endpoint(
        "tracking", "post", "case", CaseState.INFO_REQUESTED, "respond/"
    ),
    "withdraw POST": Endpoint(
        "tracking", "post", "case", CaseState.SUBMITTED, "withdraw/"
    ),
}


class Target:
    """One merchant (or case) to aim at: its URL and request data."""

    def __init__(self, name: str, endpoint: Endpoint):
        self.endpoint = endpoint
        merchant = factories.MerchantFactory()
        self.data: dict = {}
        if name == "binding status":
            self.url = "/terminals/status/"
            self.data = {"merchant_id": merchant.merchant_id, "serial_number": "SN1"}
        elif name == "request form POST":
            self.url = "/requests/new/"
            # Incomplete on purpose: cheap to refuse, nothing is stored.
            self.data = {"merchant_id": merchant.merchant_id}
        elif name == "track form":
            self.url = "/requests/track/"
            self.data = {"link": "x" * 32}
        else:
            case = factories.CaseFactory(merchant=merchant, state=endpoint.state)
            token = token_for_salt(case.token_salt)
            self.url = f"/requests/{token}/{endpoint.suffix}"
            if name == "verify POST":
                self.data = {"code": "000000"}
            if name == "respond":
                self.data = {"message": "hello"}

    def hit(self, client, address: str):
        send = getattr(client, self.endpoint.method)
        return send(self.url, self.data, REMOTE_ADDR=address)


@pytest.fixture
def strict(settings):
    settings.THROTTLE_RATES = dict.fromkeys(settings.THROTTLE_RATES, f"{LIMIT}/3600")
    return settings


def assert_throttled(response) -> None:
    assert response.status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert 'data-error="too-many-requests"' in response.content.decode()
    assert int(response["Retry-After"]) > 0


@pytest.mark.parametrize("name", ENDPOINTS)
def test_one_address_is_stopped_after_the_limit(client, strict, name):
    # given
    target = Target(name, ENDPOINTS[name])

    # when
    allowed = [target.hit(client, ATTACKER) for _ in range(LIMIT)]
    refused = target.hit(client, ATTACKER)

    # then
    assert all(r.status_code < HTTPStatus.BAD_REQUEST for r in allowed), [
        r.status_code for r in allowed
    ]
    assert_throttled(refused)


@pytest.mark.parametrize("name", ENDPOINTS)
def test_another_address_on_another_target_is_not_affected(client, strict, name):
    # given: the attacker is throttled
    endpoint = ENDPOINTS[name]
    attacked = Target(name, endpoint)
    for _ in range(LIMIT + 1):
        attacked.hit(client, ATTACKER)
    other = Target(name, endpoint)

    # when
    response = other.hit(client, SOMEONE_ELSE)

    # then
    assert response.status_code < HTTPStatus.BAD_REQUEST


@pytest.mark.parametrize(
    "name", [name for name, e in ENDPOINTS.items() if e.second_key is not None]
)
def test_spreading_over_addresses_does_not_help(client, strict, name):
    # given: one merchant / case, a new address for every request
    target = Target(name, ENDPOINTS[name])
    for number in range(LIMIT):
        target.hit(client, f"192.0.2.{number + 1}")

    # when
    response = target.hit(client, "192.0.2.200")

    # then
    assert_throttled(response)


def test_a_throttled_filing_stores_nothing(client, strict):
    # given
    from cases.models import Case, Notification

    target = Target("request form POST", ENDPOINTS["request form POST"])
    for _ in range(LIMIT):
        target.hit(client, ATTACKER)

    # when
    response = target.hit(client, ATTACKER)

    # then
    assert_throttled(response)
    assert Case.objects.count() == 0
    assert Notification.objects.count() == 0


def test_the_limits_are_configured_for_every_scope(settings):
    # then: every scope used by the views has a "<count>/<seconds>" rate
    for scope in {e.scope for e in ENDPOINTS.values()}:
        count, _, seconds = settings.THROTTLE_RATES[scope].partition("/")
        assert int(count) > 0
        assert int(seconds) > 0


@pytest.mark.django_db
def test_retry_after_is_the_scope_window(client, settings):
    # given a binding-status limit of 1 request per 120 seconds
    settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, "binding_status": "1/120"}
    url = "/terminals/status/"

    # when the limit is passed
    client.get(url)
    response = client.get(url)

    # then the client is told to come back when the window ends
    assert response.status_code == 429
    assert response["Retry-After"] == "120"
