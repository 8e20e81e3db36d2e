"""Fixtures shared by every test module (registered in tests/conftest.py)."""

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


def _staff(username: str, group: str | None):
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
