"""Fixtures shared by every test module (registered in tests/conftest.py)."""

import importlib

import pytest
from django.contrib.auth.models import Group

from cases import roles
from tests import factories


@pytest.fixture
def merchant(db):
    return factories.MerchantFactory()


@pytest.fixture
def bound_terminal(merchant):
    return factories.BindingFactory(merchant=merchant).terminal


# The data migrations that create the staff groups, in order.
STAFF_GROUP_MIGRATIONS = (
    "cases.migrations.0002_staff_groups",
    "cases.migrations.0017_service_agent_groups",
)
STAFF_GROUP_NAMES = (*roles.ALL, roles.SERVICE, roles.AGENT, roles.FINANCE)


def ensure_staff_groups() -> None:
    """Recreate the staff groups if a transactional test flushed them."""
    if Group.objects.filter(name__in=STAFF_GROUP_NAMES).count() == len(
        STAFF_GROUP_NAMES
    ):
        return
    from django.apps import apps
    from django.contrib.auth.management import create_permissions
    from django.contrib.auth.models import Permission

    for app_config in apps.get_app_configs():
        create_permissions(app_config, verbosity=0)
    groups = {}
    for module in STAFF_GROUP_MIGRATIONS:
        groups.update(importlib.import_module(module).GROUPS)
    finance = importlib.import_module("cases.migrations.0020_finance_group")
    groups[roles.FINANCE] = finance.PERMISSIONS
    for name, codenames in groups.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.set(
            [
                Permission.objects.get(content_type__app_label=app, codename=codename)
                for app, codename in codenames
            ]
        )
    # Later migrations grant more: any cases migration with a GRANTS table
    # ({group: [cases codenames]}) is applied the same way.
    import pkgutil

    import cases.migrations

    for info in pkgutil.iter_modules(cases.migrations.__path__):
        grants = getattr(
            importlib.import_module(f"cases.migrations.{info.name}"), "GRANTS", {}
        )
        for name, codenames in grants.items():
            group, _ = Group.objects.get_or_create(name=name)
            group.permissions.add(
                *Permission.objects.filter(
                    content_type__app_label="cases", codename__in=codenames
                )
            )


def _staff(username: str, group: str | None):
    ensure_staff_groups()
    user = factories.UserFactory(username=username, is_staff=True)
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user


@pytest.fixture
def reviewer(db):
    return _staff("reviewer", roles.REVIEWER)


@pytest.fixture
def second_reviewer(db):
    return _staff("reviewer2", roles.REVIEWER)


@pytest.fixture
def approver(db):
    return _staff("approver", roles.APPROVER)


@pytest.fixture
def operations(db):
    return _staff("ops", roles.OPERATIONS)


@pytest.fixture
def auditor(db):
    return _staff("auditor", roles.AUDITOR)


@pytest.fixture
def service(db):
    """Files cases for merchants who phone in or come to a branch."""
    return _staff("service", roles.SERVICE)


@pytest.fixture
def agent(db):
    """An agent (代理商) that was also put in every reviewing group by mistake.

    The outsourcing rule holds whatever other groups an agent is in.
    """
    user = _staff("agent", roles.AGENT)
    user.groups.add(
        *Group.objects.filter(
            name__in=(roles.REVIEWER, roles.APPROVER, roles.OPERATIONS)
        )
    )
    return user


@pytest.fixture
def pure_agent(db):
    """An agent in the Agent group only."""
    return _staff("pure_agent", roles.AGENT)


@pytest.fixture
def hooks_client(client, django_capture_on_commit_callbacks):
    """A test client whose requests run their on-commit callbacks afterwards.

    Test transactions never commit, so without this the e-mails and tasks a
    view queues with ``transaction.on_commit`` would never be dispatched.
    """
    original = client.request

    def request(**kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return original(**kwargs)

    client.request = request
    return client


def issued_submission_key(client) -> str:
    """Open the request form in ``client`` and return the submission key it got."""
    import re

    html = client.get("/requests/new/").content.decode()
    return re.search(r'name="submission_key" value="([0-9a-f]{32})"', html).group(1)
