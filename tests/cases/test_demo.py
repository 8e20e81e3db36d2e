"""seed_demo shows the merchants as they come: a micro-merchant and a chain."""

from decimal import Decimal
from http import HTTPStatus
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse

from cases.models import (
    AgentMerchant,
    Case,
    CaseChannel,
    CaseEvent,
    CaseState,
    Document,
    DocumentPreview,
    LegalHold,
)
from terminals.models import Merchant, Terminal

pytestmark = pytest.mark.django_db


def test_seed_demo_has_a_micro_merchant_and_a_chain_of_300(client, admin_client):
    # when the demo is loaded twice
    call_command("seed_demo", stdout=StringIO(), stderr=StringIO())
    counts = (Merchant.objects.count(), Terminal.objects.count(), Case.objects.count())
    call_command("seed_demo", stdout=StringIO(), stderr=StringIO())

    # then it is idempotent
    assert (
        Merchant.objects.count(),
        Terminal.objects.count(),
        Case.objects.count(),
    ) == counts

    # and a micro-merchant without USCC filed without a licence
    micro = Merchant.objects.get(kind=Merchant.Kind.MICRO)
    assert micro.uscc is None
    micro_case = Case.objects.get(merchant=micro)
    assert not micro_case.documents.filter(kind=Document.Kind.BUSINESS_LICENCE).exists()

    # and a chain's case of 300 terminals with deposits awaits approval
    chain_case = Case.objects.get(merchant__name__startswith="好邻居")
    assert chain_case.state == CaseState.AWAITING_APPROVAL
    assert chain_case.case_terminals.count() == 300
    assert set(
        Terminal.objects.filter(case_links__case=chain_case).values_list(
            "deposit", flat=True
        )
    ) == {Decimal("299.00")}

    # and its pages render
    page = client.get(chain_case.get_tracking_path())
    assert page.status_code == HTTPStatus.OK
    assert 'data-amount="299.00"' in page.content.decode()
    staff_page = admin_client.get(
        reverse("admin:cases_case_change", args=[chain_case.pk])
    )
    assert staff_page.status_code == HTTPStatus.OK


def test_seed_demo_has_a_chain_stopped_half_way_for_operations(client, admin_client):
    # when
    call_command("seed_demo", stdout=StringIO(), stderr=StringIO())

    # then: a failed chain, 117 of 120 unbound, the 3 refused named
    case = Case.objects.get(merchant__name__startswith="鲜果多")
    assert case.state == CaseState.FAILED
    assert case.failure_step == "unbind"
    refused = case.case_terminals.filter(execution_status="failed")
    assert refused.count() == 3
    for link in refused.select_related("terminal"):
        assert link.terminal.serial_number in case.failure_reason
    assert case.case_terminals.filter(execution_status="done").count() == 117
    staff_page = admin_client.get(reverse("admin:cases_case_change", args=[case.pk]))
    assert 'data-progress-done="117"' in staff_page.content.decode()
    page = client.get(case.get_tracking_path())
    assert 'data-progress-done="117" data-progress-total="120"' in page.content.decode()


def test_seed_demo_shows_previews_and_a_legal_hold():
    # when the demo is loaded twice
    call_command("seed_demo", stdout=StringIO(), stderr=StringIO())
    call_command("seed_demo", stdout=StringIO(), stderr=StringIO())

    # then every demo PDF has its pages rendered, and a completed case is held
    pdfs = Document.objects.filter(content_type="application/pdf")
    assert pdfs.exists()
    assert DocumentPreview.objects.filter(status="ready").count() == pdfs.count()
    hold = LegalHold.objects.get()
    assert hold.is_active
    assert hold.case.state == CaseState.COMPLETED
    assert hold.placed_by.username == "operations"
    assert hold.case.events.filter(type="legal_hold").count() == 1


def test_seed_demo_has_service_and_agent_logins_and_a_branch_case():
    # when
    out = StringIO()
    call_command("seed_demo", stdout=out, stderr=StringIO())
    call_command("seed_demo", stdout=StringIO(), stderr=StringIO())

    # then: the logins are printed
    printed = out.getvalue()
    assert "service" in printed
    assert "Service" in printed
    assert "Agent" in printed
    assert "/merchant/" in printed
    # the agent collects for its own merchants only
    assert AgentMerchant.objects.filter(agent__username="agent").count() == 2
    # a branch request, identity checked offline by Service, in the queue
    branch = Case.objects.get(channel=CaseChannel.BRANCH)
    assert branch.state == CaseState.SUBMITTED
    assert branch.filed_by.username == "service"
    assert branch.documents.filter(kind=Document.Kind.IDENTITY_CHECK).count() == 1
    assert branch.events.filter(type=CaseEvent.Type.IDENTITY_CHECKED).count() == 1


def test_seed_demo_has_a_refund_waiting_for_finance(client):
    # when
    call_command("seed_demo", stdout=StringIO(), stderr=StringIO())

    # then a completed case has a frozen statement and finance items
    case = Case.objects.get(merchant__name__startswith="青岛")
    assert case.state == CaseState.COMPLETED
    assert case.statements.count() == 1
    states = dict(case.finance_items.values_list("kind", "state").distinct())
    assert states["deposit"] == "waiting"
    assert states["service_fee"] == "open"
    # and a Finance user sees the overdue refund on the dashboard
    client.login(username="finance", password="demo-pass-2026")
    page = client.get(reverse("admin:index"))
    assert page.status_code == HTTPStatus.OK
    assert 'data-count="finance_overdue"><span class="case-tile__n">2</span>' in (
        page.content.decode()
    )
