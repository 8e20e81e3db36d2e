"""Staff login lockout (django-axes): 5 failures lock username + address."""

from datetime import timedelta
from http import HTTPStatus

import pytest
from axes.models import AccessAttempt
from django.utils import timezone

from tests.security.helpers import (
    current_code,
    enrol,
    logged_in_as,
    login,
    make_staff,
    wrong_code,
)

pytestmark = pytest.mark.django_db

ATTACKER = {"REMOTE_ADDR": "203.0.113.7"}
COLLEAGUE = {"REMOTE_ADDR": "198.51.100.20"}


def fail(client, username: str, times: int, **extra) -> list[int]:
    return [
        login(client, username, password="wrong password", **extra).status_code
        for _ in range(times)
    ]


def test_five_wrong_passwords_lock_the_account_on_that_address(client, lockout):
    # given
    user = make_staff("alice")

    # when
    statuses = fail(client, "alice", 5, **ATTACKER)
    response = login(client, "alice", **ATTACKER)

    # then: even the right password is refused, with the lockout page
    assert statuses == [HTTPStatus.OK] * 4 + [HTTPStatus.TOO_MANY_REQUESTS]
    assert response.status_code == HTTPStatus.TOO_MANY_REQUESTS
    html = response.content.decode()
    assert 'data-error="locked-out"' in html
    assert "5 failed sign-in attempts" in html
    assert "30 minutes" in html
    assert response["Retry-After"] == str(30 * 60)
    assert logged_in_as(client) is None
    attempt = AccessAttempt.objects.get(username=user.username)
    assert attempt.ip_address == ATTACKER["REMOTE_ADDR"]
    assert attempt.failures_since_start >= 5


def test_the_lock_is_per_username_and_address(client, lockout):
    # given
    make_staff("alice")
    make_staff("bob")
    fail(client, "alice", 5, **ATTACKER)

    # when: alice from her own desk, bob from the attacker's address
    alice = login(client, "alice", **COLLEAGUE)
    alice_in = logged_in_as(client)
    client.logout()
    bob = login(client, "bob", **ATTACKER)

    # then
    assert alice.status_code == HTTPStatus.FOUND
    assert alice_in.username == "alice"
    assert bob.status_code == HTTPStatus.FOUND
    assert logged_in_as(client).username == "bob"


def test_a_successful_login_resets_the_count(client, lockout):
    # given
    make_staff("alice")
    fail(client, "alice", 4, **ATTACKER)
    assert login(client, "alice", **ATTACKER).status_code == HTTPStatus.FOUND
    client.logout()

    # when: four more failures, then the right password
    statuses = fail(client, "alice", 4, **ATTACKER)
    response = login(client, "alice", **ATTACKER)

    # then
    assert statuses == [HTTPStatus.OK] * 4
    assert response.status_code == HTTPStatus.FOUND


def test_the_lock_ends_after_the_cool_off(client, lockout):
    # given
    make_staff("alice")
    fail(client, "alice", 5, **ATTACKER)
    assert login(client, "alice", **ATTACKER).status_code == (
        HTTPStatus.TOO_MANY_REQUESTS
    )

    # when: 31 minutes pass
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=31))
    response = login(client, "alice", **ATTACKER)

    # then
    assert response.status_code == HTTPStatus.FOUND
    assert logged_in_as(client).username == "alice"


def test_the_limit_and_cool_off_come_from_settings(client, lockout):
    # given
    lockout.AXES_FAILURE_LIMIT = 2
    lockout.AXES_COOLOFF_TIME = timedelta(minutes=5)
    make_staff("alice")

    # when
    statuses = fail(client, "alice", 2, **ATTACKER)
    response = login(client, "alice", **ATTACKER)

    # then
    assert statuses == [HTTPStatus.OK, HTTPStatus.TOO_MANY_REQUESTS]
    assert response.status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert "5 minutes" in response.content.decode()


def test_wrong_verification_codes_count_towards_the_lock(client, lockout):
    # given: the password is known to the attacker, the phone is not
    user = make_staff("alice")
    device = enrol(user)

    # when
    statuses = [
        login(client, "alice", code=wrong_code(device), **ATTACKER).status_code
        for _ in range(5)
    ]
    response = login(client, "alice", code=current_code(device), **ATTACKER)

    # then
    assert HTTPStatus.TOO_MANY_REQUESTS in statuses
    assert response.status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert logged_in_as(client) is None


def test_lockout_off_means_no_lock(client, settings):
    # given: the test settings (AXES_ENABLED = False)
    assert settings.AXES_ENABLED is False
    make_staff("alice")

    # when
    fail(client, "alice", 8, **ATTACKER)
    response = login(client, "alice", **ATTACKER)

    # then
    assert response.status_code == HTTPStatus.FOUND


def test_a_request_without_a_client_address_can_still_log_in(client, lockout):
    # given: e.g. gunicorn on a unix socket leaves REMOTE_ADDR empty
    make_staff("alice")

    # when
    failed = login(client, "alice", password="wrong", REMOTE_ADDR="")
    attempt = AccessAttempt.objects.get(username="alice")
    response = login(client, "alice", REMOTE_ADDR="")

    # then: recorded without an address, no server error (PostgreSQL: inet)
    assert failed.status_code == HTTPStatus.OK
    assert attempt.ip_address is None
    assert response.status_code == HTTPStatus.FOUND
