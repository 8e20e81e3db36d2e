"""Tracking tokens: one construction on salted_hmac, old links keep working."""

import hmac
from http import HTTPStatus

import pytest
from django.conf import settings
from django.utils.crypto import salted_hmac

from cases import tokens
from cases.models import Case
from tests import factories

pytestmark = pytest.mark.django_db


def _legacy_token(salt: str) -> str:
    """The construction cases were filed with before tokens used salted_hmac."""
    digest = hmac.new(
        settings.SECRET_KEY.encode(), f"case-token:{salt}".encode(), "sha256"
    ).digest()
    return tokens._encode(digest)


def test_a_token_is_a_salted_hmac_of_the_salt_under_its_own_key_salt():
    # given
    salt = tokens.new_token_salt()

    # when
    token = tokens.token_for_salt(salt)

    # then
    expected = salted_hmac(tokens.KEY_SALT, salt, algorithm="sha256").digest()
    assert token == tokens._encode(expected)
    assert len(token) == 32  # 192 bits, URL-safe
    assert token != _legacy_token(salt)


def test_a_new_case_is_found_by_its_token_and_nothing_else():
    # given
    case = factories.CaseFactory(state="submitted")

    # when
    token = case.tracking_token

    # then
    assert token == tokens.token_for_salt(case.token_salt)
    assert Case.objects.by_token(token).get() == case
    assert not Case.objects.by_token(token[:-1] + "A").exists()
    assert tokens.tracking_token_check(token_hash_stored=case.token_hash, token=token)


def test_a_case_filed_before_keeps_the_link_it_was_sent(client):
    # given: a case whose stored hash is of the earlier construction
    case = factories.CaseFactory(state="submitted")
    legacy = _legacy_token(case.token_salt)
    Case.objects.filter(pk=case.pk).update(token_hash=tokens.hash_secret(legacy))
    case.refresh_from_db()

    # when
    response = client.get(f"/requests/{legacy}/")

    # then
    assert case.tracking_token == legacy
    assert response.status_code == HTTPStatus.OK
    assert f'data-status="{case.state}"' in response.content.decode()
