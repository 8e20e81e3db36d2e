from http import HTTPStatus

import pytest
from django.urls import reverse


@pytest.mark.django_db
def test_home_links_to_the_three_merchant_pages(client):
    response = client.get(reverse("home"))

    assert response.status_code == HTTPStatus.OK
    for name in ("terminals:status", "cases:new", "cases:track"):
        assert reverse(name) in response.content.decode()


@pytest.mark.django_db
def test_staff_groups_exist_with_the_contract_names():
    from django.contrib.auth.models import Group

    assert set(Group.objects.values_list("name", flat=True)) >= {
        "Reviewer",
        "Approver",
        "Operations",
        "Auditor",
    }
