"""The staff admin through HTTP: queue, case page, document review and download,
CSV export, dashboard, and the read-only audit trail."""

import csv
import io
from datetime import timedelta
from http import HTTPStatus

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from cases.admin import EstimatedCountPaginator
from cases.admin.case_page import CaseAdmin
from cases.models import Case, CaseEvent, CaseState, Document
from tests import factories

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:cases_case_changelist"


def _change_url(case: Case) -> str:
    return reverse("admin:cases_case_change", args=[case.pk])


def _listed_references(response) -> list[str]:
    return [case.reference for case in response.context["cl"].result_list]


# --- the queue ---------------------------------------------------------------------


def test_the_queue_shows_the_columns_sorted_by_due_date(client, reviewer):
    # given
    later = factories.CaseFactory(state=CaseState.SUBMITTED)
    overdue = factories.CaseFactory(
        state=CaseState.IN_REVIEW,
        assigned_to=reviewer,
        review_due_at=timezone.now() - timedelta(days=1),
    )
    client.force_login(reviewer)

    # when
    response = client.get(reverse(CHANGELIST))

    # then
    assert response.status_code == HTTPStatus.OK
    assert _listed_references(response) == [overdue.reference, later.reference]
    html = response.content.decode()
    assert 'class="case-badge case-badge--in_review"' in html
    assert 'class="case-overdue"' in html
    assert overdue.merchant.name in html
    assert "reviewer" in html


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("overdue=yes", ["overdue"]),
        ("assignee=me", ["mine"]),
        ("assignee=none", ["overdue", "replacement", "closing"]),
        ("replacement=yes", ["replacement"]),
        ("close_account__exact=1", ["closing"]),
        ("state__exact=in_review", ["mine"]),
    ],
)
def test_the_queue_filters(client, reviewer, query, expected):
    # given
    cases = {
        "overdue": factories.CaseFactory(
            state=CaseState.SUBMITTED,
            review_due_at=timezone.now() - timedelta(days=1),
        ),
        "mine": factories.CaseFactory(state=CaseState.IN_REVIEW, assigned_to=reviewer),
        "replacement": factories.CaseFactory(
            state=CaseState.SUBMITTED,
            replacement_terminal=factories.TerminalFactory(),
        ),
        "closing": factories.CaseFactory(state=CaseState.SUBMITTED, close_account=True),
    }
    client.force_login(reviewer)

    # when
    response = client.get(reverse(CHANGELIST) + "?" + query)

    # then
    assert sorted(_listed_references(response)) == sorted(
        cases[name].reference for name in expected
    )


@pytest.mark.parametrize("field", ["reference", "merchant_id", "name", "serial"])
def test_the_queue_search(client, reviewer, field):
    # given
    wanted = factories.CaseFactory(state=CaseState.SUBMITTED)
    factories.CaseFactory(state=CaseState.SUBMITTED)
    terms = {
        "reference": wanted.reference.lower(),
        "merchant_id": wanted.merchant.merchant_id,
        "name": wanted.merchant.name,
        "serial": wanted.case_terminals.get().terminal.serial_number,
    }
    client.force_login(reviewer)

    # when
    response = client.get(reverse(CHANGELIST), {"q": terms[field]})

    # then
    assert _listed_references(response) == [wanted.reference]


QUEUE_VIEWS = [
    "",
    "state__exact=submitted",
    "state__exact=in_review",
    "reason__exact=device_replacement",
    "overdue=yes",
    "assignee=me",
    "assignee=none",
    "close_account__exact=1",
    "replacement=yes",
    "channel__exact=web",
    "o=4",  # sorted by merchant
]


def _queue_cases(reviewer, count: int) -> None:
    """``count`` cases of two kinds, so that each view of QUEUE_VIEWS lists some."""
    for _ in range(count):
        factories.CaseFactory(
            state=CaseState.SUBMITTED,
            reason="device_replacement",
            close_account=True,
            replacement_terminal=factories.TerminalFactory(),
            review_due_at=timezone.now() - timedelta(days=1),
        )
        factories.CaseFactory(state=CaseState.IN_REVIEW, assigned_to=reviewer)


@pytest.mark.parametrize("query", QUEUE_VIEWS)
def test_the_queue_runs_the_same_queries_for_a_few_cases_and_for_pages_of_them(
    client, reviewer, django_assert_num_queries, query
):
    # given
    client.force_login(reviewer)
    url = reverse(CHANGELIST) + "?" + query
    _queue_cases(reviewer, 1)
    client.get(url)  # warm the session and content types
    with CaptureQueriesContext(connection) as few:
        response = client.get(url)
    assert 1 <= len(response.context["cl"].result_list) <= 2

    # when
    _queue_cases(reviewer, 26)
    with django_assert_num_queries(len(few)):
        response = client.get(url)

    # then
    assert len(response.context["cl"].result_list) == 25  # a full page, then more
    assert len(few) <= 8, [q["sql"] for q in few.captured_queries]


def test_the_queue_rows_carry_the_checkbox_the_link_and_the_columns(
    client, reviewer, second_reviewer
):
    # given
    mine = factories.CaseFactory(state=CaseState.IN_REVIEW, assigned_to=reviewer)
    free = factories.CaseFactory(state=CaseState.SUBMITTED, reason="device_replacement")
    client.force_login(second_reviewer)

    # when
    response = client.get(reverse(CHANGELIST), {"state__exact": "in_review"})
    everything = client.get(reverse(CHANGELIST)).content.decode()

    # then
    html = response.content.decode()
    link = _change_url(mine) + "?_changelist_filters=state__exact%3Din_review"
    assert (
        f'<th class="field-reference_display"><a href="{link}">{mine.reference}</a></th>'
        in html
    )
    assert (
        f'<input type="checkbox" name="_selected_action" value="{mine.pk}" '
        'class="action-select"'
    ) in html
    assert f'<td class="field-assignee_display">{reviewer.username}</td>' in html
    assert free.reference not in html
    assert '<td class="field-assignee_display">-</td>' in everything
    assert '<td class="field-reason_short">Device replacement</td>' in everything
    assert '<td class="field-terminal_count_display">1</td>' in everything
    assert "1 case\n" in html  # the count under the list


def test_a_long_filtered_queue_is_counted_up_to_a_cap(client, reviewer, monkeypatch):
    # given
    monkeypatch.setattr(EstimatedCountPaginator, "CAP", 3)
    monkeypatch.setattr(CaseAdmin, "list_per_page", 2)
    factories.CaseFactory.create_batch(5, state=CaseState.SUBMITTED)
    client.force_login(reviewer)

    # when
    response = client.get(reverse(CHANGELIST), {"state__exact": "submitted"})

    # then
    cl = response.context["cl"]
    assert cl.paginator.capped
    assert cl.result_count == 4  # CAP + 1: "more", without counting them all
    assert len(cl.result_list) == 2
    html = response.content.decode()
    assert "more than 3 cases" in html
    assert "?p=2" in html
    assert 'class="question hidden"' not in html  # no "select all 4"


def test_the_paginator_counts_for_real_on_sqlite_or_a_filtered_list():
    # given
    factories.CaseFactory.create_batch(3)

    # when
    unfiltered = EstimatedCountPaginator(Case.objects.all(), 50)
    filtered = EstimatedCountPaginator(Case.objects.filter(state="submitted"), 50)

    # then
    assert unfiltered.count == 3
    assert filtered.count == 0


@pytest.mark.postgres
def test_the_paginator_reads_the_planner_estimate_on_postgresql():
    # given
    first, _second = factories.CaseFactory.create_batch(2)
    with connection.cursor() as cursor:
        # Pretend the statistics say the table is large.
        cursor.execute(
            "UPDATE pg_class SET reltuples = 1000000 WHERE relname = %s",
            [Case._meta.db_table],
        )

    # when
    paginator = EstimatedCountPaginator(Case.objects.order_by("pk"), 50)

    # then
    assert paginator.count == 1_000_000
    # A selective filter: the planner expects few rows, so it is counted.
    selective = Case.objects.filter(reference=first.reference)
    assert EstimatedCountPaginator(selective, 50).count == 1


# --- actions -----------------------------------------------------------------------


def test_assign_to_me_action(client, reviewer, second_reviewer):
    # given
    free = factories.CaseFactory(state=CaseState.SUBMITTED)
    taken = factories.CaseFactory(state=CaseState.IN_REVIEW, assigned_to=reviewer)
    closed = factories.CaseFactory(state=CaseState.COMPLETED)
    client.force_login(second_reviewer)

    # when
    response = client.post(
        reverse(CHANGELIST),
        {"action": "assign_to_me", "_selected_action": [free.pk, taken.pk, closed.pk]},
        follow=True,
    )

    # then
    assert response.status_code == HTTPStatus.OK
    assert set(
        Case.objects.filter(assigned_to=second_reviewer).values_list("pk", flat=True)
    ) == {free.pk, taken.pk}
    assert CaseEvent.objects.filter(type=CaseEvent.Type.ASSIGNED).count() == 2
    assert closed.reference in response.content.decode()


def test_an_auditor_has_no_assign_action(client, auditor):
    # given
    case = factories.CaseFactory(state=CaseState.SUBMITTED)
    client.force_login(auditor)

    # when
    response = client.post(
        reverse(CHANGELIST), {"action": "assign_to_me", "_selected_action": [case.pk]}
    )

    # then
    case.refresh_from_db()
    assert case.assigned_to is None
    assert not CaseEvent.objects.exists()
    assert response.status_code in (HTTPStatus.OK, HTTPStatus.FOUND)


def test_csv_export_streams_masked_rows_excel_can_read(client, auditor):
    # given
    case = factories.CaseFactory(
        state=CaseState.SUBMITTED,
        applicant_phone="13912345678",
        applicant_email="zhang.wei@shop.example.com",
        applicant_name="=HYPERLINK(evil)",
    )
    client.force_login(auditor)

    # when
    response = client.post(
        reverse(CHANGELIST), {"action": "export_csv", "_selected_action": [case.pk]}
    )

    # then
    assert response.status_code == HTTPStatus.OK
    assert response.streaming
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    body = b"".join(response.streaming_content).decode("utf-8")
    assert body.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(body.lstrip("\ufeff"))))
    assert len(rows) == 2
    row = dict(zip(rows[0], rows[1], strict=True))
    assert row["reference"] == case.reference
    assert row["merchant"] == case.merchant.name
    assert row["applicant mobile"] == "139****5678"
    assert row["applicant e-mail"] == "z***@shop.example.com"
    assert row["applicant"] == "'=HYPERLINK(evil)"
    assert "13912345678" not in body
    assert case.merchant.legal_rep_id_number not in body


# --- one case -------------------------------------------------------------------------


def test_the_case_page_masks_numbers_and_shows_impact_documents_and_timeline(
    client, reviewer
):
    # given
    case = factories.CaseFactory(state=CaseState.IN_REVIEW, assigned_to=reviewer)
    factories.TransactionFactory(
        terminal=case.case_terminals.get().terminal, amount="88.00"
    )
    image = factories.ImageDocumentFactory(case=case)
    CaseEvent.objects.create(
        case=case, type=CaseEvent.Type.FILED, actor_kind="merchant", note="filed it"
    )
    client.force_login(reviewer)

    # when
    response = client.get(_change_url(case))

    # then
    assert response.status_code == HTTPStatus.OK
    html = response.content.decode()
    merchant = case.merchant
    assert merchant.legal_rep_id_number not in html
    assert merchant.masked_legal_rep_id_number in html
    assert merchant.settlement_card_number not in html
    assert merchant.masked_settlement_card_number in html
    assert "88.00" in html
    download = reverse("admin:cases_document_download", args=[image.pk])
    assert f'src="{download}?inline=1"' in html
    assert reverse("admin:cases_document_review", args=[image.pk]) in html
    assert "filed it" in html
    assert ' style="' not in html.split('id="actions"')[1]
    assert "<script>" not in html


def _case_page_material(case: Case, count: int) -> None:
    for i in range(count):
        factories.DocumentFactory(case=case, original_name=f"extra-{i}.pdf")
        CaseEvent.objects.create(
            case=case, type=CaseEvent.Type.FILED, actor_kind="merchant", note=f"n{i}"
        )


def test_the_case_page_reads_documents_and_events_in_a_constant_number_of_queries(
    client, reviewer
):
    # given
    case = factories.CaseFactory(state=CaseState.IN_REVIEW, assigned_to=reviewer)
    _case_page_material(case, 1)
    client.force_login(reviewer)
    client.get(_change_url(case))  # previews requested, session warm
    with CaptureQueriesContext(connection) as few:
        client.get(_change_url(case))

    # when
    _case_page_material(case, 5)
    client.get(_change_url(case))  # the new documents' previews requested
    with CaptureQueriesContext(connection) as many:
        response = client.get(_change_url(case))

    # then
    assert "extra-4.pdf" in response.content.decode()
    assert len(many) == len(few), [q["sql"] for q in many.captured_queries]
    documents = [
        q for q in many.captured_queries if 'FROM "cases_document"' in q["sql"]
    ]
    assert len(documents) == 1, documents


def test_the_case_page_shows_only_the_buttons_the_user_may_press(
    client, reviewer, approver
):
    # given
    case = factories.CaseFactory(
        state=CaseState.AWAITING_APPROVAL, assigned_to=reviewer, recommended_by=reviewer
    )
    factories.accepted_documents_for(case)

    # when
    client.force_login(reviewer)
    as_reviewer = client.get(_change_url(case)).content.decode()
    client.force_login(approver)
    as_approver = client.get(_change_url(case)).content.decode()

    # then
    assert 'data-transition="approve"' not in as_reviewer
    assert 'data-transition="reject"' not in as_reviewer
    for name in ("approve", "send_back", "reject"):
        assert f'data-transition="{name}"' in as_approver
    assert 'data-transition="start_review"' not in as_approver


def test_the_case_page_has_no_save_or_delete_for_a_superuser(admin_client):
    # given
    case = factories.CaseFactory(state=CaseState.SUBMITTED)

    # when
    response = admin_client.get(_change_url(case))
    post = admin_client.post(_change_url(case), {"state": "approved"})

    # then
    html = response.content.decode()
    assert 'name="_save"' not in html
    assert "deletelink" not in html
    assert post.status_code == HTTPStatus.FORBIDDEN
    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTED
    assert admin_client.get(reverse("admin:cases_case_add")).status_code == (
        HTTPStatus.FORBIDDEN
    )


def test_the_approve_confirmation_states_the_impact(client, reviewer, approver):
    # given
    case = factories.CaseFactory(
        state=CaseState.AWAITING_APPROVAL,
        recommended_by=reviewer,
        close_account=True,
    )
    factories.TransactionFactory(
        terminal=case.case_terminals.get().terminal, amount="12.34"
    )
    client.force_login(approver)

    # when
    response = client.get(
        reverse("admin:cases_case_transition", args=[case.pk, "approve"])
    )

    # then
    assert response.status_code == HTTPStatus.OK
    html = response.content.decode()
    assert "cannot be undone" in html
    assert "12.34" in html
    assert "The merchant account will be closed." in html
    assert "csrfmiddlewaretoken" in html
    case.refresh_from_db()
    assert case.state == CaseState.AWAITING_APPROVAL


def test_a_transition_post_without_the_required_note_changes_nothing(client, reviewer):
    # given
    case = factories.CaseFactory(state=CaseState.IN_REVIEW, assigned_to=reviewer)
    client.force_login(reviewer)

    # when
    response = client.post(
        reverse("admin:cases_case_transition", args=[case.pk, "reject"]), {"note": ""}
    )

    # then
    assert response.status_code == HTTPStatus.OK
    assert response.context["form"].errors["note"]
    case.refresh_from_db()
    assert case.state == CaseState.IN_REVIEW
    assert not CaseEvent.objects.filter(case=case).exists()


def test_the_transition_page_is_csrf_protected(reviewer):
    # given
    from django.test import Client

    case = factories.CaseFactory(state=CaseState.SUBMITTED)
    client = Client(enforce_csrf_checks=True)
    client.force_login(reviewer)

    # when
    response = client.post(
        reverse("admin:cases_case_transition", args=[case.pk, "start_review"])
    )

    # then
    assert response.status_code == HTTPStatus.FORBIDDEN
    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTED


def test_an_unknown_transition_is_not_found(client, reviewer):
    # given
    case = factories.CaseFactory(state=CaseState.SUBMITTED)
    client.force_login(reviewer)

    # when
    response = client.get(
        reverse("admin:cases_case_transition", args=[case.pk, "complete"])
    )

    # then
    assert response.status_code == HTTPStatus.NOT_FOUND


def test_take_over_from_the_case_page(client, reviewer, second_reviewer):
    # given
    case = factories.CaseFactory(state=CaseState.IN_REVIEW, assigned_to=reviewer)
    client.force_login(second_reviewer)

    # when
    response = client.post(reverse("admin:cases_case_assign", args=[case.pk]))

    # then
    assert response.status_code == HTTPStatus.FOUND
    case.refresh_from_db()
    assert case.assigned_to == second_reviewer


def test_fees_statement_from_the_case_page(client, reviewer):
    # given
    case = factories.CaseFactory(state=CaseState.IN_REVIEW, assigned_to=reviewer)
    client.force_login(reviewer)

    # when
    response = client.post(
        reverse("admin:cases_case_fees", args=[case.pk]),
        {"fees_statement": "No fees."},
    )

    # then
    assert response.status_code == HTTPStatus.FOUND
    case.refresh_from_db()
    assert case.fees_statement == "No fees."


# --- document review --------------------------------------------------------------------


def test_document_review_through_the_admin(client, reviewer):
    # given
    case = factories.CaseFactory(state=CaseState.IN_REVIEW, assigned_to=reviewer)
    document = factories.DocumentFactory(case=case)
    client.force_login(reviewer)
    url = reverse("admin:cases_document_review", args=[document.pk])

    # when
    rejected_without_note = client.post(url, {"decision": "reject", "note": ""})
    rejected = client.post(url, {"decision": "reject", "note": "expired licence"})

    # then
    assert rejected_without_note.status_code == HTTPStatus.FOUND
    assert rejected.status_code == HTTPStatus.FOUND
    assert rejected["Location"] == _change_url(case) + "#documents"
    document.refresh_from_db()
    assert document.review_status == Document.ReviewStatus.REJECTED
    assert document.review_note == "expired licence"
    assert (
        CaseEvent.objects.filter(
            case=case, type=CaseEvent.Type.DOCUMENT_REVIEWED
        ).count()
        == 1
    )


def test_document_review_is_post_only(client, reviewer):
    # given
    document = factories.DocumentFactory(
        case=factories.CaseFactory(state=CaseState.IN_REVIEW, assigned_to=reviewer)
    )
    client.force_login(reviewer)

    # when
    response = client.get(reverse("admin:cases_document_review", args=[document.pk]))

    # then
    assert response.status_code == HTTPStatus.METHOD_NOT_ALLOWED


def test_an_auditor_reviewing_a_document_gets_403(client, reviewer, auditor):
    # given
    document = factories.DocumentFactory(
        case=factories.CaseFactory(state=CaseState.IN_REVIEW, assigned_to=reviewer)
    )
    client.force_login(auditor)

    # when
    response = client.post(
        reverse("admin:cases_document_review", args=[document.pk]),
        {"decision": "accept"},
    )

    # then
    assert response.status_code == HTTPStatus.FORBIDDEN
    document.refresh_from_db()
    assert document.review_status == Document.ReviewStatus.PENDING


# --- download ------------------------------------------------------------------------


def test_download_needs_a_login(client):
    # given
    document = factories.DocumentFactory()

    # when
    response = client.get(reverse("admin:cases_document_download", args=[document.pk]))

    # then
    assert response.status_code == HTTPStatus.FOUND
    assert reverse("admin:login") in response["Location"]


def test_download_needs_the_view_document_permission(client):
    # given
    document = factories.DocumentFactory()
    staff = factories.UserFactory(username="helpdesk", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_case"))
    client.force_login(staff)

    # when
    response = client.get(reverse("admin:cases_document_download", args=[document.pk]))

    # then
    assert response.status_code == HTTPStatus.FORBIDDEN


def test_download_is_an_attachment_that_is_never_sniffed(client, auditor):
    # given
    document = factories.DocumentFactory(original_name="营业执照.pdf")
    client.force_login(auditor)

    # when
    response = client.get(reverse("admin:cases_document_download", args=[document.pk]))

    # then
    assert response.status_code == HTTPStatus.OK
    assert response["Content-Disposition"].startswith("attachment")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response["Content-Security-Policy"]
    assert b"".join(response.streaming_content) == b"%PDF-1.4\n%%EOF\n"


def test_an_image_preview_is_inline_but_a_pdf_never_is(client, auditor):
    # given
    image = factories.ImageDocumentFactory()
    pdf = factories.DocumentFactory()
    client.force_login(auditor)

    # when
    image_response = client.get(
        reverse("admin:cases_document_download", args=[image.pk]) + "?inline=1"
    )
    pdf_response = client.get(
        reverse("admin:cases_document_download", args=[pdf.pk]) + "?inline=1"
    )

    # then
    assert image_response["Content-Disposition"].startswith("inline")
    assert image_response["Content-Type"] == "image/png"
    assert pdf_response["Content-Disposition"].startswith("attachment")


def test_a_purged_document_is_gone(client, auditor):
    # given
    document = factories.DocumentFactory(purged_at=timezone.now(), file="")
    client.force_login(auditor)

    # when
    response = client.get(reverse("admin:cases_document_download", args=[document.pk]))

    # then
    assert response.status_code == HTTPStatus.GONE
    assert "retention period" in response.content.decode()


# --- audit trail and documents admin ---------------------------------------------------


def test_case_events_cannot_be_added_changed_or_deleted_even_by_a_superuser(
    admin_client,
):
    # given
    case = factories.CaseFactory()
    event = CaseEvent.objects.create(
        case=case, type=CaseEvent.Type.FILED, actor_kind="merchant"
    )

    # when
    add = admin_client.get(reverse("admin:cases_caseevent_add"))
    change = admin_client.post(
        reverse("admin:cases_caseevent_change", args=[event.pk]), {"note": "edited"}
    )
    delete = admin_client.post(
        reverse("admin:cases_caseevent_delete", args=[event.pk]), {"post": "yes"}
    )
    listing = admin_client.get(reverse("admin:cases_caseevent_changelist"))

    # then
    assert add.status_code == HTTPStatus.FORBIDDEN
    assert change.status_code == HTTPStatus.FORBIDDEN
    assert delete.status_code == HTTPStatus.FORBIDDEN
    assert listing.status_code == HTTPStatus.OK
    event.refresh_from_db()
    assert event.note == ""


def test_documents_cannot_be_edited_in_the_admin(admin_client):
    # given
    document = factories.DocumentFactory()

    # when
    response = admin_client.post(
        reverse("admin:cases_document_change", args=[document.pk]),
        {"review_status": "accepted"},
    )

    # then
    assert response.status_code == HTTPStatus.FORBIDDEN
    document.refresh_from_db()
    assert document.review_status == Document.ReviewStatus.PENDING


# --- dashboard ----------------------------------------------------------------------


def test_the_admin_index_is_a_dashboard_and_keeps_the_app_list(client, reviewer):
    # given
    factories.CaseFactory(state=CaseState.IN_REVIEW, assigned_to=reviewer)
    factories.CaseFactory(
        state=CaseState.SUBMITTED, review_due_at=timezone.now() - timedelta(days=2)
    )
    factories.CaseFactory(state=CaseState.COMPLETED, closed_at=timezone.now())
    client.force_login(reviewer)

    # when
    response = client.get(reverse("admin:index"))

    # then
    assert response.status_code == HTTPStatus.OK
    dashboard = response.context["case_dashboard"]
    assert dashboard.my_queue == 1
    assert dashboard.overdue == 1
    assert dashboard.completed_this_week == 1
    html = response.content.decode()
    assert 'data-count="my_queue"' in html
    assert reverse("admin:cases_case_changelist") in html
    assert 'id="content-main"' in html
