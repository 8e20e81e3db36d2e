"""The API from a calling system's side: real keys through DRF's APIClient."""

import io
from datetime import timedelta

import pytest
from django.core import mail
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from api.models import APIAuditEntry, APIKey, IdempotencyRecord, Scope
from api.services import api_key_create
from cases.models import Case, CaseEvent, CaseState
from tests import factories
from tests.cases.test_intake import code_from_mail, form_data

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"


def keyed_client(*scopes, staff_user=None, **kwargs) -> tuple[APIClient, APIKey]:
    api_key, key = api_key_create(
        name="core", scopes=list(scopes), staff_user=staff_user, **kwargs
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return client, api_key


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith(PROBLEM)
    body = response.json()
    assert {"type", "title", "status", "detail"} <= set(body)
    assert body["status"] == status
    return body


# --- keys ----------------------------------------------------------------------


def test_create_api_key_prints_the_key_alone_on_its_last_line_and_keeps_a_hash():
    # given
    out = io.StringIO()

    # when
    call_command("create_api_key", "acquiring-core", stdout=out)

    # then
    key = out.getvalue().strip().splitlines()[-1]
    assert " " not in key
    assert "." in key
    api_key = APIKey.objects.get(name="acquiring-core")
    assert key not in api_key.hashed_key
    assert key not in api_key.pk
    assert APIKey.objects.get_from_key(key) == api_key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    case = factories.CaseFactory(state=CaseState.SUBMITTED)
    assert client.get(f"/api/v1/cases/{case.reference}/").status_code == 200


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Api-Key nope.nope",
        "Bearer abc",
        "Api-Key ",
        "Api-Key revoked",
        "Api-Key expired",
    ],
)
def test_a_missing_or_wrong_key_is_401_and_says_nothing_more(header):
    # given
    case = factories.CaseFactory(state=CaseState.SUBMITTED)
    revoked, revoked_key = api_key_create(name="old", scopes=[Scope.READ_CASES])
    revoked.revoked = True
    revoked.save()
    _expired, expired_key = api_key_create(
        name="exp",
        scopes=[Scope.READ_CASES],
        expiry_date=timezone.now() - timedelta(minutes=1),
    )
    header = {
        "Api-Key revoked": f"Api-Key {revoked_key}",
        "Api-Key expired": f"Api-Key {expired_key}",
    }.get(header, header)
    client = APIClient()
    if header:
        client.credentials(HTTP_AUTHORIZATION=header)

    # when
    known = client.get(f"/api/v1/cases/{case.reference}/")
    unknown = client.get("/api/v1/cases/UB-0000-999999/")

    # then: the same answer whether the case exists or not
    body = assert_problem(known, 401)
    assert assert_problem(unknown, 401) == body
    assert case.reference not in known.content.decode()


def test_a_key_without_the_scope_is_refused():
    # given
    client, _ = keyed_client(Scope.FILE_CASES)
    case = factories.CaseFactory(state=CaseState.SUBMITTED)

    # when
    response = client.get(f"/api/v1/cases/{case.reference}/")

    # then
    assert_problem(response, 403)


def test_each_key_has_its_own_throttle(monkeypatch):
    # given
    from api.auth import APIKeyRateThrottle

    monkeypatch.setattr(APIKeyRateThrottle, "rate", "2/min", raising=False)
    first, _ = keyed_client(Scope.READ_CASES)
    second, _ = keyed_client(Scope.READ_CASES)
    case = factories.CaseFactory(state=CaseState.SUBMITTED)
    url = f"/api/v1/cases/{case.reference}/"

    # when
    answers = [first.get(url).status_code for _ in range(3)]
    other = second.get(url).status_code

    # then
    assert answers == [200, 200, 429]
    assert other == 200


# --- case detail -----------------------------------------------------------------


def test_case_detail_shows_the_contract_fields_with_personal_data_masked():
    # given
    client, _ = keyed_client(Scope.READ_CASES)
    case = factories.CaseFactory(
        state=CaseState.IN_REVIEW,
        applicant_phone="13912345678",
        applicant_email="zhang@shop.example.com",
    )
    serial = case.case_terminals.get().terminal.serial_number

    # when
    response = client.get(f"/api/v1/cases/{case.reference}/")

    # then
    assert response.status_code == 200
    body = response.json()
    assert body["reference"] == case.reference
    assert body["state"] == "in_review"
    assert body["merchant_id"] == case.merchant.merchant_id
    assert body["serial_numbers"] == [serial]
    assert body["updated_at"]
    assert body["applicant_phone"] == "139****5678"
    assert body["applicant_email"] == "z***@shop.example.com"
    assert "13912345678" not in response.content.decode()
    assert case.merchant.legal_rep_id_number not in response.content.decode()


def test_an_unknown_reference_is_a_404_problem():
    client, _ = keyed_client(Scope.READ_CASES)

    assert_problem(client.get("/api/v1/cases/UB-2026-999999/"), 404)
    assert_problem(client.get("/api/v1/nothing-here/"), 404)


def test_reads_are_logged_not_stored(caplog):
    # given
    client, _ = keyed_client(Scope.READ_CASES)
    case = factories.CaseFactory(state=CaseState.SUBMITTED)

    # when
    with caplog.at_level("INFO", logger="api.access"):
        client.get(f"/api/v1/cases/{case.reference}/")

    # then
    assert APIAuditEntry.objects.count() == 0
    assert "key=core" in caplog.text
    assert case.reference in caplog.text


# --- binding check ---------------------------------------------------------------


def test_binding_check_answers_bound_only_for_the_merchants_own_terminal(
    merchant, bound_terminal
):
    # given
    client, _ = keyed_client(Scope.READ_CASES)
    other = factories.BindingFactory().terminal
    stock = factories.TerminalFactory()
    url = "/api/v1/terminals/{}/binding/"
    query = {"merchant_id": merchant.merchant_id}

    # when
    own = client.get(url.format(bound_terminal.serial_number), query)
    foreign = client.get(url.format(other.serial_number), query)
    in_stock = client.get(url.format(stock.serial_number), query)
    unknown = client.get(url.format("SN000UNKNOWN01"), query)

    # then
    assert own.json() == {"bound": True}
    assert foreign.json() == {"bound": False}
    assert in_stock.json() == {"bound": False}
    assert unknown.json() == {"bound": False}
    assert foreign.content == in_stock.content == unknown.content


def test_binding_check_without_a_merchant_is_a_400_problem(bound_terminal):
    client, _ = keyed_client(Scope.READ_CASES)

    response = client.get(f"/api/v1/terminals/{bound_terminal.serial_number}/binding/")

    assert "merchant_id" in assert_problem(response, 400)["errors"]


# --- schema and docs -------------------------------------------------------------


def test_the_schema_is_served_without_a_key():
    response = APIClient().get("/api/schema/?format=json")

    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert "/api/v1/cases/{reference}/" in schema["paths"]
    assert "/api/v1/terminals/{serial_number}/binding/" in schema["paths"]


def test_the_docs_page_uses_only_the_products_own_scripts(client):
    # when
    page = client.get("/api/docs/")
    script = client.get("/api/docs/?script=")

    # then
    html = page.content.decode()
    assert page.status_code == 200
    assert "cdn" not in html.lower()
    assert "https://" not in html
    assert "<script>" not in html  # no inline script under CSP 'self'
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in html
    assert "script-src 'self'" in page["Content-Security-Policy"]
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")


# --- idempotency and filing ------------------------------------------------------


@pytest.fixture
def registry():
    merchant = factories.MerchantFactory(
        legal_rep_name="张伟", contact_email="contact@onfile.example.com"
    )
    terminals = [factories.BindingFactory(merchant=merchant).terminal]
    return merchant, terminals


def test_filing_through_the_api_waits_for_the_code_sent_to_the_contact_on_file(
    registry, django_capture_on_commit_callbacks
):
    # given
    merchant, terminals = registry
    client, _ = keyed_client(Scope.FILE_CASES, Scope.READ_CASES)

    # when
    with django_capture_on_commit_callbacks(execute=True):
        filed = client.post(
            "/api/v1/cases/",
            form_data(merchant, terminals),
            format="multipart",
            HTTP_IDEMPOTENCY_KEY="file-1",
        )

    # then: the case exists but is not in the queue
    assert filed.status_code == 201, filed.content
    reference = filed.json()["reference"]
    assert filed.json()["state"] == "pending_verification"
    case = Case.objects.get(reference=reference)
    assert case.state == CaseState.PENDING_VERIFICATION
    assert [m.to for m in mail.outbox] == [["contact@onfile.example.com"]]
    assert APIAuditEntry.objects.get().actor_label == "api:core"

    # when: a wrong code, then the right one
    wrong = client.post(
        f"/api/v1/cases/{reference}/verify/", {"code": "000000"}, format="json"
    )
    with django_capture_on_commit_callbacks(execute=True):
        right = client.post(
            f"/api/v1/cases/{reference}/verify/",
            {"code": code_from_mail(mail.outbox[0])},
            format="json",
        )

    # then
    assert_problem(wrong, 400)
    assert right.status_code == 200
    assert right.json()["state"] == "submitted"


def test_filing_with_the_same_idempotency_key_files_once(registry):
    # given
    merchant, terminals = registry
    client, _ = keyed_client(Scope.FILE_CASES)

    # when
    first = client.post(
        "/api/v1/cases/",
        form_data(merchant, terminals),
        format="multipart",
        HTTP_IDEMPOTENCY_KEY="same",
    )
    again = client.post(
        "/api/v1/cases/",
        form_data(merchant, terminals),
        format="multipart",
        HTTP_IDEMPOTENCY_KEY="same",
    )

    # then
    assert first.status_code == 201
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert Case.objects.count() == 1
    assert IdempotencyRecord.objects.count() == 1


def test_an_invalid_filing_is_a_400_problem_with_the_forms_errors(registry):
    merchant, terminals = registry
    client, _ = keyed_client(Scope.FILE_CASES)

    response = client.post(
        "/api/v1/cases/",
        form_data(merchant, terminals, declaration=None, uscc="91110000000000000X"),
        format="multipart",
    )

    errors = assert_problem(response, 400)["errors"]
    assert "declaration" in errors
    assert Case.objects.count() == 0


def test_an_idempotency_key_reused_for_another_request_is_refused(registry):
    client, _ = keyed_client(Scope.FILE_CASES)
    case = factories.CaseFactory(state=CaseState.PENDING_VERIFICATION)

    client.post(
        f"/api/v1/cases/{case.reference}/verify/",
        {"code": "111111"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="k",
    )
    other = client.post(
        f"/api/v1/cases/{case.reference}/verify/",
        {"code": "222222"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="k",
    )

    assert_problem(other, 422)


# --- list ------------------------------------------------------------------------


def test_the_case_list_filters_and_pages_with_a_cursor():
    # given
    client, _ = keyed_client(Scope.READ_CASES)
    merchant = factories.MerchantFactory()
    mine = [
        factories.CaseFactory(merchant=merchant, state=CaseState.SUBMITTED)
        for _ in range(3)
    ]
    factories.CaseFactory(state=CaseState.SUBMITTED)
    factories.CaseFactory(merchant=merchant, state=CaseState.REJECTED)

    # when
    first = client.get(
        "/api/v1/cases/",
        {"merchant_id": merchant.merchant_id, "state": "submitted", "page_size": 2},
    )
    second = client.get(first.json()["next"])

    # then
    assert [c["reference"] for c in first.json()["results"]] == [
        mine[2].reference,
        mine[1].reference,
    ]
    assert [c["reference"] for c in second.json()["results"]] == [mine[0].reference]
    assert second.json()["next"] is None


def test_the_case_list_refuses_an_unknown_state():
    client, _ = keyed_client(Scope.READ_CASES)

    assert_problem(client.get("/api/v1/cases/", {"state": "nope"}), 400)


# --- staff actions ---------------------------------------------------------------


def test_a_key_acts_as_its_staff_user_through_the_review_service(reviewer):
    # given
    client, _ = keyed_client(Scope.ACT_ON_CASES, staff_user=reviewer)
    case = factories.CaseFactory(state=CaseState.SUBMITTED)

    # when
    response = client.post(
        f"/api/v1/cases/{case.reference}/actions/start_review/",
        {},
        format="json",
        HTTP_IDEMPOTENCY_KEY="a1",
    )
    again = client.post(
        f"/api/v1/cases/{case.reference}/actions/start_review/",
        {},
        format="json",
        HTTP_IDEMPOTENCY_KEY="a1",
    )

    # then
    assert response.status_code == 200, response.content
    assert again.json() == response.json()
    case.refresh_from_db()
    assert case.state == CaseState.IN_REVIEW
    assert case.assigned_to == reviewer
    event = CaseEvent.objects.get(case=case, transition="start_review")
    assert event.actor == reviewer
    entries = list(APIAuditEntry.objects.values_list("actor_label", "object_reference"))
    assert entries == [("api:core", case.reference)]


def test_maker_checker_holds_for_a_key(approver):
    # given: the key's user recommended the case
    client, _ = keyed_client(Scope.ACT_ON_CASES, staff_user=approver)
    case = factories.CaseFactory(
        state=CaseState.AWAITING_APPROVAL, recommended_by=approver
    )

    # when
    response = client.post(
        f"/api/v1/cases/{case.reference}/actions/approve/", {}, format="json"
    )

    # then
    assert_problem(response, 403)
    case.refresh_from_db()
    assert case.state == CaseState.AWAITING_APPROVAL


def test_a_key_without_the_act_scope_or_a_staff_user_cannot_act(reviewer):
    case = factories.CaseFactory(state=CaseState.SUBMITTED)
    no_scope, _ = keyed_client(Scope.READ_CASES, staff_user=reviewer)
    no_user, _ = keyed_client(Scope.ACT_ON_CASES)
    url = f"/api/v1/cases/{case.reference}/actions/start_review/"

    assert_problem(no_scope.post(url, {}, format="json"), 403)
    assert_problem(no_user.post(url, {}, format="json"), 403)
    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTED


def test_an_action_not_allowed_in_this_state_is_a_409(reviewer):
    client, _ = keyed_client(Scope.ACT_ON_CASES, staff_user=reviewer)
    case = factories.CaseFactory(state=CaseState.COMPLETED)

    response = client.post(
        f"/api/v1/cases/{case.reference}/actions/start_review/", {}, format="json"
    )

    assert_problem(response, 409)


def test_resending_the_code_mails_the_contact_on_file_and_is_throttled(
    registry, django_capture_on_commit_callbacks
):
    # given: a case filed through the API a while ago
    merchant, terminals = registry
    client, _ = keyed_client(Scope.FILE_CASES)
    with django_capture_on_commit_callbacks(execute=True):
        reference = client.post(
            "/api/v1/cases/", form_data(merchant, terminals), format="multipart"
        ).json()["reference"]
    Case.objects.filter(reference=reference).update(
        code_sent_at=timezone.now() - timedelta(minutes=5)
    )
    url = f"/api/v1/cases/{reference}/resend-code/"

    # when
    with django_capture_on_commit_callbacks(execute=True):
        sent = client.post(url)
    too_soon = client.post(url)

    # then
    assert sent.status_code == 202, sent.content
    assert [m.to for m in mail.outbox] == [["contact@onfile.example.com"]] * 2
    assert code_from_mail(mail.outbox[0]) != code_from_mail(mail.outbox[1])
    assert_problem(too_soon, 429)
    assert "Retry-After" in too_soon


def test_the_case_list_has_the_queues_overdue_and_unassigned_filters(reviewer):
    client, _ = keyed_client(Scope.READ_CASES)
    overdue = factories.CaseFactory(
        state=CaseState.SUBMITTED, review_due_at=timezone.now() - timedelta(days=1)
    )
    factories.CaseFactory(state=CaseState.SUBMITTED)
    factories.CaseFactory(
        state=CaseState.IN_REVIEW,
        assigned_to=reviewer,
        review_due_at=timezone.now() - timedelta(days=1),
    )

    late = client.get("/api/v1/cases/", {"overdue": "true", "unassigned": "true"})

    assert [c["reference"] for c in late.json()["results"]] == [overdue.reference]


def test_an_idempotency_key_left_unanswered_by_a_dead_process_can_be_used_again():
    # given: the first request's process died before answering
    client, api_key = keyed_client(Scope.FILE_CASES)
    case = factories.CaseFactory(state=CaseState.PENDING_VERIFICATION)
    url = f"/api/v1/cases/{case.reference}/verify/"
    client.post(url, {"code": "111111"}, format="json", HTTP_IDEMPOTENCY_KEY="k")
    record = IdempotencyRecord.objects.get(api_key=api_key, key="k")
    IdempotencyRecord.objects.filter(pk=record.pk).update(status_code=None, body="")

    # when: retried at once, then after ten minutes
    running = client.post(
        url, {"code": "111111"}, format="json", HTTP_IDEMPOTENCY_KEY="k"
    )
    IdempotencyRecord.objects.filter(pk=record.pk).update(
        created_at=timezone.now() - timedelta(minutes=11)
    )
    later = client.post(
        url, {"code": "111111"}, format="json", HTTP_IDEMPOTENCY_KEY="k"
    )

    # then
    assert_problem(running, 409)
    assert_problem(later, 400)  # the wrong code, answered this time
    assert IdempotencyRecord.objects.get(key="k").status_code == 400


def test_staff_create_a_key_in_admin_and_see_it_once(admin_client):
    # when
    response = admin_client.post(
        "/admin/api/apikey/add/",
        {"name": "tms", "scopes": [Scope.READ_CASES], "staff_user": ""},
        follow=True,
    )

    # then
    api_key = APIKey.objects.get(name="tms")
    assert api_key.scopes == [Scope.READ_CASES]
    shown = [str(m) for m in response.context["messages"]]
    key = next(m for m in shown if "tms" in m).split(": ")[1].split(" ")[0]
    assert APIKey.objects.get_from_key(key) == api_key
    assert key not in api_key.hashed_key
    page = admin_client.get(f"/admin/api/apikey/{api_key.pk}/change/")
    assert key not in page.content.decode()


def test_a_refusal_the_api_does_not_know_yet_is_a_400_not_a_500(monkeypatch):
    # given: the intake service refuses with a result added after this view
    from cases.services import intake

    client, _ = keyed_client(Scope.FILE_CASES)
    case = factories.CaseFactory(state=CaseState.PENDING_VERIFICATION)
    monkeypatch.setattr(intake, "case_verify", lambda **kwargs: "merchant_limit")

    # when
    response = client.post(
        f"/api/v1/cases/{case.reference}/verify/", {"code": "123456"}, format="json"
    )

    # then
    assert "code" in assert_problem(response, 400)["errors"]
