"""Walk every admin URL as every role: the expected answer, never a 500.

The URLs are enumerated from the admin site itself (every registered
ModelAdmin's ``get_urls()`` and the site's own views), so a view added later
is walked too.
"""

from dataclasses import dataclass
from http import HTTPStatus

import pytest
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.apps import apps
from django.contrib import admin
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.contrib.sessions.models import Session
from django.urls import URLPattern
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from cases import roles
from cases.actions import STAFF_ACTIONS
from cases.models import (
    AgentMerchant,
    Case,
    CaseEvent,
    CaseState,
    CaseStatement,
    DeviceReturn,
    ExecutionStep,
    FinanceItem,
    LegalHold,
    MerchantSignIn,
    Notification,
    ReportExport,
)
from tests import factories
from tests.security.helpers import make_staff

pytestmark = pytest.mark.django_db

ROLES = [
    "anonymous",
    "staff_without_group",
    "reviewer",
    "approver",
    "operations",
    "auditor",
    "superuser",
]
# Models that only a superuser manages.
ADMIN_ONLY = {"auth", "axes", "otp_totp"}


@dataclass(frozen=True)
class AdminUrl:
    path: str
    name: str  # url name, e.g. cases_case_change
    model: str  # "app.model" or "" for the site's own views
    post_data: dict


def _sample_data() -> dict:
    """At least one row of every model the admin shows."""
    reviewer = make_staff("walk-reviewer", roles.REVIEWER)
    cases = {
        state: factories.CaseFactory(state=state)
        for state in (
            CaseState.SUBMITTED,
            CaseState.IN_REVIEW,
            CaseState.AWAITING_APPROVAL,
            CaseState.FAILED,
        )
    }
    Case.objects.filter(pk=cases[CaseState.IN_REVIEW].pk).update(assigned_to=reviewer)
    Case.objects.filter(pk=cases[CaseState.AWAITING_APPROVAL].pk).update(
        recommended_by=reviewer
    )
    case = cases[CaseState.IN_REVIEW]
    factories.DocumentFactory(case=case)
    CaseEvent.objects.create(
        case=case, type=CaseEvent.Type.values[0], actor_kind="system"
    )
    Notification.objects.create(
        case=case,
        kind=Notification.Kind.values[0],
        recipients=["merchant@shop.example.com"],
        dedupe_key="walk-1",
    )
    ExecutionStep.objects.create(
        case=cases[CaseState.FAILED], step=ExecutionStep.Step.values[0], position=1
    )
    factories.TransactionFactory(terminal=case.case_terminals.first().terminal)
    DeviceReturn.objects.create(
        case=cases[CaseState.FAILED],
        terminal=cases[CaseState.FAILED].case_terminals.first().terminal,
        due_at=timezone.now(),
    )
    LegalHold.objects.create(case=case, reason="walk", placed_by=reviewer)
    ReportExport.objects.create(kind=ReportExport.Kind.BINDING_CHANGES, actor=reviewer)
    statement = CaseStatement.objects.create(
        case=cases[CaseState.FAILED], version=1, data={"lines": []}
    )
    FinanceItem.objects.create(
        case=statement.case, statement=statement, line=0, kind="deposit",
        direction="to_merchant", amount="299.00", due_on=timezone.localdate(),
    )  # fmt: skip
    factories.SettlementBatchFactory() if hasattr(
        factories, "SettlementBatchFactory"
    ) else None
    TOTPDevice.objects.create(
        user=make_staff("walk-enrolled"), name="phone", confirmed=True
    )
    AccessAttempt.objects.create(
        username="someone", ip_address="203.0.113.7", failures_since_start=1,
        user_agent="x", path_info="/admin/login/", get_data="", post_data="",
    )  # fmt: skip
    AccessLog.objects.create(
        username="someone", ip_address="203.0.113.7", user_agent="x",
        path_info="/admin/login/", attempt_time=timezone.now(),
    )  # fmt: skip
    AccessFailureLog.objects.create(
        username="someone", ip_address="203.0.113.7", user_agent="x",
        path_info="/admin/login/", attempt_time=timezone.now(),
    )  # fmt: skip
    MerchantSignIn.objects.create(
        merchant=case.merchant, merchant_number=case.merchant.merchant_id, channel="sms"
    )
    AgentMerchant.objects.create(
        agent=make_staff("walk-agent", roles.AGENT), merchant=case.merchant
    )
    return {"cases": cases}


def _fill(route: str, model, obj) -> list[tuple[str, dict]]:
    """Concrete paths (and POST data) for one route of a ModelAdmin."""
    pk = str(obj.pk) if obj is not None else "1"
    path = (
        route.replace("<path:object_id>", pk)
        .replace("<int:pk>", pk)
        .replace("<id>", pk)
    )
    if "<str:name>" in path:
        return [
            (path.replace("<str:name>", name), {"note": "walk"})
            for name in STAFF_ACTIONS
        ]
    if "<str:kind>" in path:
        path = path.replace("<str:kind>", Notification.Kind.values[0])
        path = path.replace("<str:language>", "en")
    if path.endswith("review/"):
        return [(path, {"decision": "accept", "note": "walk"})]
    if path.endswith("fees/"):
        return [(path, {"fees_statement": "walk"})]
    if path.endswith("delete/"):
        return [(path, {"post": "yes"})]
    return [(path, {})]


def admin_urls() -> list[AdminUrl]:
    urls = []
    for model, model_admin in admin.site._registry.items():
        prefix = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        obj = model._default_manager.order_by("pk").first()
        for pattern in model_admin.get_urls():
            if not isinstance(pattern, URLPattern) or pattern.name is None:
                continue  # the bare "<object_id>/" redirect to change/
            for path, data in _fill(str(pattern.pattern), model, obj):
                urls.append(
                    AdminUrl(prefix + path, pattern.name, model._meta.label_lower, data)
                )
        # The changelist with every action the admin offers on the first row.
        if obj is not None:
            for action in [*(model_admin.actions or ()), "delete_selected"]:
                urls.append(
                    AdminUrl(
                        prefix,
                        f"action:{action}",
                        model._meta.label_lower,
                        {"action": action, "_selected_action": [obj.pk], "index": 0},
                    )
                )
    case = Case.objects.order_by("pk").first()
    content_type = ContentType.objects.get_for_model(Case)
    for path, name in [
        ("/admin/", "index"),
        ("/admin/cases/", "app_list"),
        ("/admin/auth/", "app_list"),
        ("/admin/password_change/", "password_change"),
        ("/admin/password_change/done/", "password_change_done"),
        ("/admin/jsi18n/", "jsi18n"),
        ("/admin/autocomplete/?app_label=cases&model_name=case&field_name=x", "autocomplete"),
        (f"/admin/r/{content_type.pk}/{case.pk}/", "view_on_site"),
    ]:  # fmt: skip
        urls.append(AdminUrl(path, name, "", {}))
    return urls


def db_snapshot() -> dict:
    """Every row of every model, except sessions and login bookkeeping."""
    skip = {Session, AccessAttempt, AccessLog, AccessFailureLog}
    return {
        model._meta.label: list(model._default_manager.order_by("pk").values())
        for model in apps.get_models()
        if model not in skip
    }


def user_for(role: str):
    if role == "anonymous":
        return None
    if role == "superuser":
        user = make_staff("walk-root")
        user.is_superuser = True
        user.save()
        return user
    group = {
        "staff_without_group": None,
        "reviewer": roles.REVIEWER,
        "approver": roles.APPROVER,
        "operations": roles.OPERATIONS,
        "auditor": roles.AUDITOR,
    }[role]
    return make_staff(f"walk-{role}", group)


def is_login_redirect(response) -> bool:
    return response.status_code == HTTPStatus.FOUND and response["Location"].startswith(
        "/admin/login/"
    )


def walk(client, role: str, method: str, urls: list[AdminUrl]) -> dict:
    answers = {}
    for url in urls:
        if method == "get" and url.name.startswith("action:"):
            continue
        if method == "get":
            response = client.get(url.path)
        else:
            response = client.post(url.path, url.post_data)
        answers[(url.path, url.name)] = response
    return answers


@pytest.fixture
def walk_setup(client, lockout):
    # The lockout on, as in production (its admin action needs the middleware).
    _sample_data()
    return client


def admin_only_snapshot() -> dict:
    """Users, groups, permissions and devices: what only a superuser manages."""
    snapshot = db_snapshot()
    return {
        label: rows
        for label, rows in snapshot.items()
        if label.partition(".")[0] in ADMIN_ONLY
    }


def check_anonymous(urls, gets, posts, before) -> None:
    not_redirected = {
        (method, key): r.status_code
        for method, answers in (("GET", gets), ("POST", posts))
        for key, r in answers.items()
        if not is_login_redirect(r)
    }
    assert not_redirected == {}
    assert db_snapshot() == before


def check_staff_without_group(urls, gets, posts, before) -> None:
    model_keys = {(u.path, u.name) for u in urls if u.model}
    shown = {
        k: r.status_code
        for k, r in gets.items()
        if k in model_keys and r.status_code == HTTPStatus.OK
    }
    assert shown == {}
    assert db_snapshot() == before


def check_group_role(urls, gets, posts, before) -> None:
    by_key = {(u.path, u.name): u for u in urls}
    # Users, groups, devices and lockouts: never reached, never changed.
    reached = {
        k: r.status_code
        for answers in (gets, posts)
        for k, r in answers.items()
        if by_key[k].model.partition(".")[0] in ADMIN_ONLY
        and not k[1].startswith("action:")
        and r.status_code < HTTPStatus.BAD_REQUEST
    }
    assert reached == {}
    # Cases, documents, events and the registry are never added or deleted
    # here. The one exception: Operations place legal holds (tests/cases/
    # test_records.py holds every other role to a 403 there).
    add_delete = {
        k: r.status_code
        for answers in (gets, posts)
        for k, r in answers.items()
        if by_key[k].model.startswith(("cases.", "terminals."))
        and k[1].endswith(("_add", "_delete"))
        and k[1] != "cases_legalhold_add"
        and r.status_code != HTTPStatus.FORBIDDEN
    }
    assert add_delete == {}
    assert admin_only_snapshot() == {
        k: v for k, v in before.items() if k.partition(".")[0] in ADMIN_ONLY
    }


def check_auditor(urls, gets, posts, before) -> None:
    check_group_role(urls, gets, posts, before)
    by_key = {(u.path, u.name): u for u in urls}
    readable = ("changelist", "change", "history", "download")
    reads = {
        k: r.status_code
        for k, r in gets.items()
        if (
            by_key[k].model.startswith(("cases.", "terminals."))
            and k[1].endswith(readable)
        )
        or k[1].startswith("cases_notification_preview")
    }
    assert len(reads) >= 30
    assert {k: s for k, s in reads.items() if s != HTTPStatus.OK} == {}
    # Every POST refused or harmless: nothing at all changed.
    assert db_snapshot() == before
    staff_actions = {
        k: r.status_code
        for k, r in posts.items()
        if k[1] in ("cases_case_transition", "cases_case_assign", "cases_case_fees",
                    "cases_document_review")
    }  # fmt: skip
    assert staff_actions
    assert set(staff_actions.values()) == {HTTPStatus.FORBIDDEN}


CHECKS = {
    "anonymous": check_anonymous,
    "staff_without_group": check_staff_without_group,
    "reviewer": check_group_role,
    "approver": check_group_role,
    "operations": check_group_role,
    "auditor": check_auditor,
    "superuser": lambda *args: None,
}


@pytest.mark.parametrize("role", ROLES)
def test_walk_every_admin_url(walk_setup, role):
    # given
    client = walk_setup
    user = user_for(role)
    if user is not None:
        client.force_login(user)
    urls = admin_urls()
    assert len(urls) > 100
    before = db_snapshot()

    # when: every URL with GET, then every URL with POST
    gets = walk(client, role, "get", urls)
    posts = walk(client, role, "post", urls)

    # then: never a server error, and what this role may do
    errors = {
        (method, *k): r.status_code
        for method, answers in (("GET", gets), ("POST", posts))
        for k, r in answers.items()
        if r.status_code >= HTTPStatus.INTERNAL_SERVER_ERROR
    }
    assert errors == {}
    CHECKS[role](urls, gets, posts, before)


def test_group_roles_keep_their_groups(walk_setup):
    # then: the walk's data matches the contract's groups
    assert set(Group.objects.values_list("name", flat=True)) >= set(roles.ALL)
