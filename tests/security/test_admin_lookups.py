"""Staff who type URLs: admin list filters reveal nothing the page conceals.

Django admin accepts ``?<field>__<lookup>=`` on any field of the model unless
``lookup_allowed`` says otherwise; a masked number could then be bisected
digit by digit. Only the parameters of ``list_filter``, the search box and
the date hierarchy may filter (issue 11).
"""

from http import HTTPStatus

import pytest
from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import Group
from django.db import models
from django.urls import reverse

from cases import roles
from cases.models import Notification
from tests import factories

pytestmark = pytest.mark.django_db


def _filter_paths(model_admin) -> set[str]:
    paths = {model_admin.date_hierarchy} if model_admin.date_hierarchy else set()
    for item in model_admin.list_filter:
        if isinstance(item, str):
            paths.add(item)
        elif isinstance(item, (list, tuple)):
            paths.add(item[0])
    return paths


def _concealed_lookups():
    """Yield (model admin, lookup) for a lookup on every field not filtered on."""
    for model, model_admin in admin.site._registry.items():
        paths = _filter_paths(model_admin)
        for field in model._meta.get_fields():
            if field.auto_created and not field.concrete:
                continue  # reverse relations
            if field.name in paths:
                continue
            yield model_admin, f"{field.name}__isnull", "0"
            if isinstance(field, models.CharField | models.TextField):
                yield model_admin, f"{field.name}__startswith", "1"
            if isinstance(field, models.JSONField):
                yield model_admin, f"{field.name}__code", "1"


def _refused(response) -> bool:
    """Django refuses a disallowed lookup with 400, or a redirect to ?e=1."""
    if response.status_code == HTTPStatus.BAD_REQUEST:
        return True
    return response.status_code == HTTPStatus.FOUND and response["Location"].endswith(
        "?e=1"
    )


def test_every_changelist_refuses_a_lookup_on_each_concealed_field(admin_client):
    # given
    lookups = list(_concealed_lookups())
    assert len({ma.model for ma, _l, _v in lookups}) >= 10  # the walk walked

    # when
    answers = {
        (ma.model._meta.label, lookup): admin_client.get(
            reverse(
                f"admin:{ma.model._meta.app_label}_{ma.model._meta.model_name}"
                "_changelist"
            ),
            {lookup: value},
        )
        for ma, lookup, value in lookups
    }

    # then
    narrowed = {key: r.status_code for key, r in answers.items() if not _refused(r)}
    assert narrowed == {}


@pytest.mark.parametrize(
    ("url", "lookup"),
    [
        ("admin:terminals_merchant_changelist", "legal_rep_id_number__startswith"),
        ("admin:terminals_merchant_changelist", "settlement_card_number__startswith"),
        ("admin:terminals_merchant_changelist", "contact_phone__startswith"),
        ("admin:cases_case_changelist", "token_salt__lt"),
        ("admin:cases_case_changelist", "merchant__legal_rep_id_number__startswith"),
    ],
)
def test_an_auditor_cannot_bisect_a_masked_number(client, auditor, url, lookup):
    # given
    factories.CaseFactory(state="submitted")
    client.force_login(auditor)

    # when
    response = client.get(reverse(url), {lookup: "1"})

    # then
    assert _refused(response)


@pytest.mark.parametrize(
    ("url", "query"),
    [
        ("admin:cases_case_changelist", {"state__exact": "submitted"}),
        ("admin:cases_case_changelist", {"overdue": "yes", "close_account__exact": 1}),
        ("admin:terminals_merchant_changelist", {"status__exact": "active"}),
        ("admin:terminals_binding_changelist", {"terminal__kind__exact": "chip"}),
        ("admin:cases_notification_changelist", {"created_at__year": "2026"}),
        ("admin:auth_user_changelist", {"groups__id__exact": "1"}),
    ],
)
def test_the_list_filters_and_date_hierarchy_still_filter(admin_client, url, query):
    # when
    response = admin_client.get(reverse(url), query)

    # then
    assert response.status_code == HTTPStatus.OK


def _code_notification() -> Notification:
    case = factories.CaseFactory(state="pending_verification")
    return Notification.objects.create(
        kind=Notification.Kind.VERIFICATION_CODE,
        recipients=[case.merchant.contact_email],
        case=case,
        context={"code": "918273", "ttl_minutes": 15},
        dedupe_key=f"case:{case.pk}:code:1",
    )


@pytest.mark.parametrize("who", ["admin", "auditor"])
def test_a_pending_verification_code_is_not_readable_in_the_notification_admin(
    request, client, who
):
    # given: a code not sent yet, so still in the row
    notification = _code_notification()
    user = (
        factories.UserFactory(is_staff=True, is_superuser=True)
        if who == "admin"
        else request.getfixturevalue("auditor")
    )
    client.force_login(user)
    changelist = reverse("admin:cases_notification_changelist")

    # when
    pages = [
        client.get(changelist),
        client.get(reverse("admin:cases_notification_change", args=[notification.pk])),
    ]
    search = client.get(changelist, {"q": "918273"})
    filters = [
        client.get(changelist, {"context__code": "918273"}),
        client.get(changelist, {"context__code__startswith": "9"}),
        client.get(changelist, {"context__icontains": "918273"}),
    ]

    # then
    for page in pages:
        assert page.status_code == HTTPStatus.OK
        assert "918273" not in page.content.decode()
    assert search.status_code == HTTPStatus.OK
    assert search.context["cl"].result_count == 0
    assert all(_refused(r) for r in filters)


def _failed_notice() -> Notification:
    case = factories.CaseFactory(state="completed")
    return Notification.objects.create(
        kind=Notification.Kind.COMPLETED,
        recipients=["merchant@shop.example.com"],
        case=case,
        status=Notification.Status.FAILED,
        dedupe_key=f"case:{case.pk}:completed",
    )


def test_an_auditor_also_in_operations_cannot_resend_a_notice(
    client, operations, django_capture_on_commit_callbacks
):
    # given: one user in both groups; the services refuse an auditor whatever else
    operations.groups.add(Group.objects.get(name=roles.AUDITOR))
    notification = _failed_notice()
    client.force_login(operations)

    # when
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(
            reverse("admin:cases_notification_changelist"),
            {"action": "resend", ACTION_CHECKBOX_NAME: [notification.pk]},
        )

    # then
    notification.refresh_from_db()
    assert notification.status == Notification.Status.FAILED
    assert notification.queued_at is None
    assert Notification.objects.count() == 1
    assert callbacks == []
    assert response.status_code in (HTTPStatus.FOUND, HTTPStatus.OK)


def test_operations_alone_can_still_resend_a_notice(
    client, operations, django_capture_on_commit_callbacks
):
    # given
    notification = _failed_notice()
    client.force_login(operations)

    # when
    with django_capture_on_commit_callbacks(execute=False):
        client.post(
            reverse("admin:cases_notification_changelist"),
            {"action": "resend", ACTION_CHECKBOX_NAME: [notification.pk]},
        )

    # then
    notification.refresh_from_db()
    assert notification.status == Notification.Status.PENDING
    assert notification.queued_at is not None
