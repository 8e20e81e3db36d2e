"""Staff two-factor (django-otp TOTP): username, password and verification code."""

from datetime import timedelta
from http import HTTPStatus

import pytest
from django.utils import timezone
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.plugins.otp_totp.models import TOTPDevice

from cases import roles
from tests.security.helpers import (
    current_code,
    enrol,
    logged_in_as,
    login,
    make_staff,
    wrong_code,
)

pytestmark = pytest.mark.django_db

NO_DEVICE = "no authenticator is set up for your account"


@pytest.fixture
def required(settings):
    settings.STAFF_OTP_REQUIRED = True
    return settings


def test_the_login_page_asks_for_username_password_and_code(client):
    # when
    response = client.get("/admin/login/")

    # then
    html = response.content.decode()
    assert response.status_code == HTTPStatus.OK
    for name in ("username", "password", "otp_token"):
        assert f'name="{name}"' in html
    assert "Verification code" in html


@pytest.mark.parametrize("group", [roles.APPROVER, roles.OPERATIONS, roles.REVIEWER])
def test_optional_mode_lets_staff_without_a_device_in(client, settings, group):
    # given: the default, STAFF_OTP_REQUIRED off
    assert settings.STAFF_OTP_REQUIRED is False
    make_staff("pat", group)

    # when
    response = login(client, "pat")

    # then
    assert response.status_code == HTTPStatus.FOUND
    assert client.get("/admin/").status_code == HTTPStatus.OK


@pytest.mark.parametrize("mode", ["optional", "required"])
def test_an_enrolled_user_needs_the_current_code(client, settings, mode):
    # given
    settings.STAFF_OTP_REQUIRED = mode == "required"
    user = make_staff("pat", roles.APPROVER)
    device = enrol(user)

    # when: password only, a wrong code, the right one at once (throttled),
    # then the right one once the device's back-off has passed
    no_code = login(client, "pat")
    after_no_code = logged_in_as(client)
    bad = login(client, "pat", code=wrong_code(device))
    after_bad = logged_in_as(client)
    too_soon = login(client, "pat", code=current_code(device))
    TOTPDevice.objects.filter(pk=device.pk).update(
        throttling_failure_timestamp=timezone.now() - timedelta(seconds=10)
    )
    good = login(client, "pat", code=current_code(device))

    # then
    assert no_code.status_code == HTTPStatus.OK
    assert "Enter the verification code" in no_code.content.decode()
    assert after_no_code is None
    assert bad.status_code == HTTPStatus.OK
    assert "verification code is not right" in bad.content.decode()
    assert after_bad is None
    assert "Too many wrong verification codes" in too_soon.content.decode()
    assert good.status_code == HTTPStatus.FOUND
    assert logged_in_as(client) == user
    assert client.session[DEVICE_ID_SESSION_KEY] == device.persistent_id
    assert client.get("/admin/").status_code == HTTPStatus.OK


def test_a_code_cannot_be_used_twice(client):
    # given
    user = make_staff("pat", roles.APPROVER)
    device = enrol(user)
    code = current_code(device)
    assert login(client, "pat", code=code).status_code == HTTPStatus.FOUND
    client.logout()

    # when: someone who watched the first login replays it
    replay = login(client, "pat", code=code)

    # then
    assert replay.status_code == HTTPStatus.OK
    assert logged_in_as(client) is None


@pytest.mark.parametrize("group", [roles.APPROVER, roles.OPERATIONS])
def test_required_mode_refuses_approver_and_operations_without_a_device(
    client, required, group
):
    # given
    make_staff("pat", group)

    # when
    response = login(client, "pat")

    # then
    assert response.status_code == HTTPStatus.OK
    assert NO_DEVICE in response.content.decode()
    assert logged_in_as(client) is None


@pytest.mark.parametrize("group", [roles.REVIEWER, roles.AUDITOR])
def test_required_mode_does_not_apply_to_other_roles(client, required, group):
    # given
    make_staff("pat", group)

    # when
    response = login(client, "pat")

    # then
    assert response.status_code == HTTPStatus.FOUND
    assert client.get("/admin/").status_code == HTTPStatus.OK


def test_required_mode_lets_an_enrolled_approver_in_with_the_code(client, required):
    # given
    user = make_staff("pat", roles.APPROVER)
    device = enrol(user)

    # when
    response = login(client, "pat", code=current_code(device))

    # then
    assert response.status_code == HTTPStatus.FOUND
    assert client.get("/admin/").status_code == HTTPStatus.OK


def test_an_unverified_session_of_a_required_user_is_sent_to_the_login(
    client, required
):
    # given: a session opened without the code (before the setting was turned on)
    user = make_staff("pat", roles.APPROVER)
    enrol(user)
    client.force_login(user)

    # when
    index = client.get("/admin/")
    cases = client.get("/admin/cases/case/")

    # then
    assert index.status_code == HTTPStatus.FOUND
    assert index["Location"].startswith("/admin/login/")
    assert cases.status_code == HTTPStatus.FOUND
    assert cases["Location"].startswith("/admin/login/")


def test_an_unconfirmed_device_does_not_count(client, required):
    # given: enrolment started but never confirmed
    user = make_staff("pat", roles.OPERATIONS)
    device = enrol(user)
    device.confirmed = False
    device.save()

    # when
    response = login(client, "pat", code=current_code(device))

    # then
    assert NO_DEVICE in response.content.decode()
    assert logged_in_as(client) is None


def test_a_superuser_sees_the_enrolment_qr_code_and_a_reviewer_cannot(client):
    # given
    admin_user = make_staff("root")
    admin_user.is_superuser = True
    admin_user.save()
    reviewer = make_staff("pat", roles.REVIEWER)
    device = enrol(reviewer)
    url = f"/admin/otp_totp/totpdevice/{device.pk}/config/"
    qr = f"/admin/otp_totp/totpdevice/{device.pk}/qrcode/"

    # when
    client.force_login(reviewer)
    client.session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    as_reviewer = [client.get(url).status_code, client.get(qr).status_code]
    client.logout()
    client.force_login(admin_user)
    page = client.get(url)
    image = client.get(qr)

    # then
    assert HTTPStatus.OK not in as_reviewer
    assert page.status_code == HTTPStatus.OK
    assert image.status_code == HTTPStatus.OK
    assert image["Content-Type"].startswith("image/svg")
