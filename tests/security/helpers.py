"""Helpers for the attack tests: staff with passwords, TOTP devices, logins."""

from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from cases import roles
from tests import factories
from tests.fixtures import ensure_staff_groups

PASSWORD = "correct horse battery staple"


def make_staff(username: str, group: str | None = None):
    """Create an active staff user with ``PASSWORD``, in ``group`` if given."""
    from django.contrib.auth.models import Group

    ensure_staff_groups()
    user = factories.UserFactory(username=username, is_staff=True)
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user


def enrol(user) -> TOTPDevice:
    """Give ``user`` a confirmed TOTP device, as an admin would."""
    return TOTPDevice.objects.create(user=user, name="phone", confirmed=True)


def current_code(device: TOTPDevice) -> str:
    """Compute the code an authenticator app shows now for ``device``."""
    code = totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits)
    return f"{code:0{device.digits}d}"


def wrong_code(device: TOTPDevice) -> str:
    right = current_code(device)
    return f"{(int(right) + 500_000) % 1_000_000:06d}"


def login(client, username: str, password: str = PASSWORD, code: str = "", **extra):
    """POST the admin login form as a browser would."""
    data = {"username": username, "password": password, "next": "/admin/"}
    if code:
        data["otp_token"] = code
    return client.post("/admin/login/", data, **extra)


def logged_in_as(client):
    from django.contrib.auth import get_user_model

    user_id = client.session.get("_auth_user_id")
    return get_user_model().objects.get(pk=user_id) if user_id else None


ROLE_GROUPS = {
    "reviewer": roles.REVIEWER,
    "approver": roles.APPROVER,
    "operations": roles.OPERATIONS,
    "auditor": roles.AUDITOR,
}
