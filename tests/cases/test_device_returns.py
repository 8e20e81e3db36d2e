"""Devices coming back after an unbinding: tracking page, admin, fsm, reminders."""

from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.conf import settings
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied
from django.core.files.storage import FileSystemStorage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_fsm import can_proceed

from cases.models import (
    CaseEvent,
    CaseState,
    DeviceReturn,
    DeviceReturnState,
    Document,
    ExecutionStep,
    Notification,
)
from cases.services import returns
from cases.services.execution import case_execute
from terminals.models import Terminal
from terminals.services import sims_deactivate
from tests import factories
from tests.filebuilders import png_bytes

S = DeviceReturnState


def completed_case_with_returns(*, terminals: int = 1, due_in_days: int = 14):
    """A case whose execution unbound ``terminals`` devices, expected back."""
    merchant = factories.MerchantFactory()
    bound = [
        factories.BindingFactory(merchant=merchant).terminal for _ in range(terminals)
    ]
    case = factories.CaseFactory(
        merchant=merchant,
        terminals=bound,
        state=CaseState.APPROVED,
        approved_at=timezone.now(),
    )
    case_execute(case_id=case.pk)
    case.refresh_from_db()
    assert case.state == CaseState.COMPLETED
    DeviceReturn.objects.filter(case=case).update(
        due_at=timezone.now() + timedelta(days=due_in_days)
    )
    return case


def changelist_action(client, action: str, ids: list[int]):
    return client.post(
        reverse("admin:cases_devicereturn_changelist"),
        {"action": action, ACTION_CHECKBOX_NAME: ids},
    )


# --- the execution -------------------------------------------------------------


@pytest.mark.django_db
def test_execution_opens_one_return_per_unbound_device_and_deactivates_sims(
    django_capture_on_commit_callbacks,
):
    # given: a case unbinding two devices and binding a replacement
    merchant = factories.MerchantFactory()
    old = [factories.BindingFactory(merchant=merchant).terminal for _ in range(2)]
    replacement = factories.TerminalFactory()
    case = factories.CaseFactory(
        merchant=merchant,
        terminals=old,
        replacement_terminal=replacement,
        state=CaseState.APPROVED,
        approved_at=timezone.now(),
    )

    # when: executed, then executed again (a second delivery)
    with django_capture_on_commit_callbacks(execute=True):
        case_execute(case_id=case.pk)
        case_execute(case_id=case.pk)

    # then: the two old devices are expected back, the replacement stays
    case.refresh_from_db()
    assert case.state == CaseState.COMPLETED
    rows = DeviceReturn.objects.filter(case=case)
    assert sorted(rows.values_list("terminal_id", flat=True)) == sorted(
        t.pk for t in old
    )
    assert set(rows.values_list("state", flat=True)) == {S.AWAITING_RETURN}
    due = rows.first().due_at - timezone.now()
    assert timedelta(days=settings.DEVICE_RETURN_DUE_DAYS - 1) < due
    assert due <= timedelta(days=settings.DEVICE_RETURN_DUE_DAYS)
    assert not DeviceReturn.objects.filter(terminal=replacement).exists()
    # the SIMs of the unbound devices are deactivated, not the replacement's
    sims = dict(Terminal.objects.values_list("pk", "sim_deactivated_at"))
    assert all(sims[t.pk] is not None for t in old)
    assert sims[replacement.pk] is None
    step = case.steps.get(step=ExecutionStep.Step.DEACTIVATE_SIM)
    assert step.status == ExecutionStep.Status.DONE
    # one audit line for the returns, shown to the merchant
    opened = CaseEvent.objects.filter(case=case, type=CaseEvent.Type.DEVICE_RETURN)
    assert opened.count() == 1
    assert opened.get().visible_to_merchant


@pytest.mark.django_db
def test_sim_deactivation_keeps_its_first_date():
    # given
    terminal = factories.BindingFactory().terminal
    first = timezone.now() - timedelta(days=2)
    sims_deactivate(terminals=[terminal], at=first)

    # when
    done = sims_deactivate(terminals=[terminal], at=timezone.now())

    # then
    terminal.refresh_from_db()
    assert done == []
    assert terminal.sim_deactivated_at == first


# --- the merchant's tracking page ----------------------------------------------


@pytest.mark.django_db
def test_merchant_enters_the_courier_and_tracking_number_on_the_tracking_page(
    client,
):
    # given
    case = completed_case_with_returns()
    device_return = case.device_returns.get()
    page = client.get(reverse("cases:detail", args=[case.tracking_token]))
    assert 'data-return-state="awaiting_return"' in page.text
    assert settings.RETURN_ADDRESS in page.text

    # when
    response = client.post(
        reverse("cases:return_ship", args=[case.tracking_token, device_return.pk]),
        {"courier": "SF Express", "tracking_number": "SF1234567890"},
        follow=True,
    )

    # then
    device_return.refresh_from_db()
    assert device_return.state == S.SHIPPED
    assert device_return.courier == "SF Express"
    assert device_return.tracking_number == "SF1234567890"
    assert 'data-return-state="shipped"' in response.text
    assert "SF1234567890" in response.text
    event = CaseEvent.objects.filter(
        case=case, type=CaseEvent.Type.DEVICE_RETURN, transition="ship"
    ).get()
    assert event.actor_kind == CaseEvent.Actor.MERCHANT
    assert event.payload["tracking_number"] == "SF1234567890"


@pytest.mark.django_db
def test_a_bad_tracking_number_changes_nothing(client):
    # given
    case = completed_case_with_returns()
    device_return = case.device_returns.get()
    events_before = CaseEvent.objects.count()

    # when
    response = client.post(
        reverse("cases:return_ship", args=[case.tracking_token, device_return.pk]),
        {"courier": "SF Express", "tracking_number": "<script>"},
    )

    # then
    assert response.status_code == 200
    assert "is-invalid" in response.text
    device_return.refresh_from_db()
    assert device_return.state == S.AWAITING_RETURN
    assert device_return.tracking_number == ""
    assert CaseEvent.objects.count() == events_before


@pytest.mark.django_db
def test_another_cases_return_is_not_found(client):
    # given: two cases; the token of one, the return of the other
    case = completed_case_with_returns()
    other = completed_case_with_returns()
    foreign = other.device_returns.get()

    # when
    response = client.post(
        reverse("cases:return_ship", args=[case.tracking_token, foreign.pk]),
        {"courier": "SF Express", "tracking_number": "SF1234567890"},
    )

    # then
    assert response.status_code == 404
    foreign.refresh_from_db()
    assert foreign.state == S.AWAITING_RETURN


@pytest.mark.django_db
def test_the_ship_form_needs_the_csrf_token():
    # given
    csrf_client = Client(enforce_csrf_checks=True)
    case = completed_case_with_returns()
    device_return = case.device_returns.get()

    # when
    response = csrf_client.post(
        reverse("cases:return_ship", args=[case.tracking_token, device_return.pk]),
        {"courier": "SF Express", "tracking_number": "SF1234567890"},
    )

    # then
    assert response.status_code == 403
    device_return.refresh_from_db()
    assert device_return.state == S.AWAITING_RETURN


@pytest.mark.django_db
def test_merchant_reports_a_stolen_device_with_the_police_report(client):
    # given
    case = completed_case_with_returns()
    device_return = case.device_returns.get()

    # when
    client.post(
        reverse("cases:return_lost", args=[case.tracking_token, device_return.pk]),
        {
            "police_report": SimpleUploadedFile(
                "report.png", png_bytes(), content_type="image/png"
            ),
            "note": "Stolen from the shop on Monday.",
        },
    )

    # then
    device_return.refresh_from_db()
    assert device_return.state == S.LOST
    report = device_return.police_report
    assert report.kind == Document.Kind.POLICE_REPORT
    assert report.case_id == case.pk
    assert report.content_type == "image/png"
    assert CaseEvent.objects.filter(
        case=case, type=CaseEvent.Type.DEVICE_RETURN, transition="report_lost"
    ).exists()


@pytest.mark.django_db
def test_a_police_report_that_is_not_a_document_is_refused(client):
    # given
    case = completed_case_with_returns()
    device_return = case.device_returns.get()

    # when
    response = client.post(
        reverse("cases:return_lost", args=[case.tracking_token, device_return.pk]),
        {
            "police_report": SimpleUploadedFile(
                "report.pdf", b"MZ\x90\x00 not a pdf", content_type="application/pdf"
            )
        },
    )

    # then
    assert response.status_code == 200
    device_return.refresh_from_db()
    assert device_return.state == S.AWAITING_RETURN
    assert not Document.objects.filter(kind=Document.Kind.POLICE_REPORT).exists()


# --- Operations in the admin ---------------------------------------------------


@pytest.mark.django_db
def test_operations_receive_inspect_and_restock_a_device_in_the_admin(
    client, operations
):
    # given: a device on its way back, with a deposit
    case = completed_case_with_returns()
    device_return = case.device_returns.get()
    Terminal.objects.filter(pk=device_return.terminal_id).update(
        deposit=Decimal("299.00")
    )
    returns.device_return_ship(
        return_id=device_return.pk, courier="EMS", tracking_number="EMS123456"
    )
    client.force_login(operations)

    # when
    changelist_action(client, "receive", [device_return.pk])
    changelist_action(client, "inspect_refurbish", [device_return.pk])
    changelist_action(client, "finish", [device_return.pk])

    # then
    device_return.refresh_from_db()
    assert device_return.state == S.IN_STOCK
    assert device_return.outcome == DeviceReturn.Outcome.REFURBISHED
    assert device_return.terminal.status == Terminal.Status.IN_STOCK
    trail = list(
        CaseEvent.objects.filter(
            case=case, type=CaseEvent.Type.DEVICE_RETURN, actor=operations
        ).values_list("transition", flat=True)
    )
    assert trail == ["receive", "inspect", "restock"]
    received = CaseEvent.objects.get(case=case, type=CaseEvent.Type.DEVICE_RECEIVED)
    assert received.payload["deposit"] == "299.00"


@pytest.mark.django_db
def test_operations_scrap_a_broken_device(client, operations):
    # given
    case = completed_case_with_returns()
    device_return = case.device_returns.get()
    client.force_login(operations)

    # when: collected by staff (no shipment), inspected, scrapped
    changelist_action(client, "receive", [device_return.pk])
    changelist_action(client, "inspect_scrap", [device_return.pk])
    changelist_action(client, "finish", [device_return.pk])

    # then
    device_return.refresh_from_db()
    assert device_return.state == S.SCRAPPED
    assert device_return.terminal.status == Terminal.Status.UNBOUND


@pytest.mark.django_db
def test_an_auditor_cannot_record_a_receipt(client, auditor):
    # given
    case = completed_case_with_returns()
    device_return = case.device_returns.get()
    client.force_login(auditor)
    assert client.get(reverse("admin:cases_devicereturn_changelist")).status_code == 200

    # when
    response = changelist_action(client, "receive", [device_return.pk])

    # then
    assert response.status_code in (200, 302, 403)
    device_return.refresh_from_db()
    assert device_return.state == S.AWAITING_RETURN
    with pytest.raises(PermissionDenied):
        returns.device_return_receive(return_id=device_return.pk, actor=auditor)


@pytest.mark.django_db
def test_staff_record_a_lost_device_with_its_police_report_in_the_admin(
    client, operations
):
    # given
    case = completed_case_with_returns()
    device_return = case.device_returns.get()
    client.force_login(operations)
    url = reverse("admin:cases_devicereturn_record", args=[device_return.pk])
    assert client.get(url).status_code == 200

    # when
    client.post(
        url,
        {
            "record": "lost",
            "police_report": SimpleUploadedFile(
                "report.png", png_bytes(), content_type="image/png"
            ),
            "note": "Lost by the courier",
        },
    )

    # then
    device_return.refresh_from_db()
    assert device_return.state == S.LOST
    assert device_return.police_report.kind == Document.Kind.POLICE_REPORT
    event = CaseEvent.objects.get(
        case=case, type=CaseEvent.Type.DEVICE_RETURN, transition="report_lost"
    )
    assert event.actor == operations


@pytest.mark.django_db
def test_staff_record_a_shipment_in_the_admin(client, operations):
    # given
    case = completed_case_with_returns()
    device_return = case.device_returns.get()
    client.force_login(operations)

    # when
    client.post(
        reverse("admin:cases_devicereturn_record", args=[device_return.pk]),
        {"record": "ship", "courier": "SF Express", "tracking_number": "SF99887766"},
    )

    # then
    device_return.refresh_from_db()
    assert device_return.state == S.SHIPPED
    assert device_return.tracking_number == "SF99887766"


@pytest.mark.django_db
def test_the_overdue_queue_lists_only_devices_past_their_date(client, operations):
    # given
    late = completed_case_with_returns(due_in_days=-3).device_returns.get()
    on_time = completed_case_with_returns(due_in_days=5).device_returns.get()
    shipped_late = completed_case_with_returns(due_in_days=-3).device_returns.get()
    returns.device_return_ship(
        return_id=shipped_late.pk, courier="EMS", tracking_number="EMS123456"
    )
    client.force_login(operations)

    # when
    response = client.get(
        reverse("admin:cases_devicereturn_changelist") + "?overdue=yes"
    )

    # then
    listed = response.context["cl"].result_list
    assert [r.pk for r in listed] == [late.pk]
    assert on_time.pk not in [r.pk for r in listed]
    by_state = client.get(
        reverse("admin:cases_devicereturn_changelist") + "?state__exact=shipped"
    )
    assert [r.pk for r in by_state.context["cl"].result_list] == [shipped_late.pk]


# --- the state machine -----------------------------------------------------------

TRANSITIONS = ["ship", "receive", "inspect", "restock", "scrap", "report_lost"]
ALLOWED = {
    S.AWAITING_RETURN: {
        "ship": S.SHIPPED,
        "receive": S.RECEIVED,
        "report_lost": S.LOST,
    },
    S.SHIPPED: {"receive": S.RECEIVED, "report_lost": S.LOST},
    S.RECEIVED: {"inspect": S.INSPECTED},
    S.INSPECTED: {"restock": S.IN_STOCK, "scrap": S.SCRAPPED},
    S.IN_STOCK: {},
    S.SCRAPPED: {},
    S.LOST: {},
}


@pytest.mark.parametrize("state", list(S))
@pytest.mark.parametrize("name", TRANSITIONS)
def test_the_transition_table(state, name):
    # given
    device_return = DeviceReturn(state=state)

    # when
    allowed = can_proceed(getattr(device_return, name))

    # then
    expected = ALLOWED[state].get(name)
    assert allowed == (expected is not None)
    if expected is not None:
        getattr(device_return, name)()
        assert device_return.state == expected


# --- reminders -------------------------------------------------------------------


@pytest.mark.django_db
def test_overdue_devices_remind_the_merchant_once_per_period(
    django_capture_on_commit_callbacks, mailoutbox, settings
):
    # given: a case with two overdue devices and one case not yet due
    settings.NOTIFICATION_CHANNELS = ["email", "sms"]
    case = completed_case_with_returns(terminals=2, due_in_days=-1)
    completed_case_with_returns(due_in_days=30)
    now = timezone.now()

    # when: the beat job runs, runs again the same day, then a period later
    with django_capture_on_commit_callbacks(execute=True):
        first = returns.device_returns_remind(now=now)
        again = returns.device_returns_remind(now=now + timedelta(hours=2))
        later = returns.device_returns_remind(
            now=now + timedelta(days=settings.DEVICE_RETURN_REMINDER_DAYS, hours=1)
        )

    # then: one notice (e-mail and SMS) per period, listing both devices
    assert (first, again, later) == (1, 0, 1)
    notices = Notification.objects.filter(
        case=case, kind=Notification.Kind.DEVICE_RETURN_REMINDER
    )
    assert sorted(notices.values_list("channel", flat=True)) == [
        "email",
        "email",
        "sms",
        "sms",
    ]
    email = notices.filter(channel="email").first()
    assert case.merchant.contact_email in email.recipients
    serials = sorted(
        case.device_returns.values_list("terminal__serial_number", flat=True)
    )
    assert sorted(email.context["serial_numbers"]) == serials
    assert set(case.device_returns.values_list("reminder_count", flat=True)) == {2}
    sent = [m for m in mailoutbox if case.reference in m.subject]
    assert sent
    assert settings.RETURN_ADDRESS in sent[0].body


@pytest.mark.django_db
def test_a_shipped_device_is_not_reminded():
    # given
    case = completed_case_with_returns(due_in_days=-5)
    device_return = case.device_returns.get()
    returns.device_return_ship(
        return_id=device_return.pk, courier="EMS", tracking_number="EMS123456"
    )

    # when
    reminded = returns.device_returns_remind()

    # then
    assert reminded == 0
    assert not Notification.objects.filter(
        kind=Notification.Kind.DEVICE_RETURN_REMINDER
    ).exists()


def test_the_beat_runs_the_reminders():
    # given
    from config.celery import app

    # when
    schedule = settings.CELERY_BEAT_SCHEDULE

    # then
    tasks = {entry["task"] for entry in schedule.values()}
    assert "cases.tasks.device_returns_remind_task" in tasks
    app.loader.import_default_modules()
    assert "cases.tasks.device_returns_remind_task" in app.tasks


@pytest.mark.django_db
def test_a_device_bound_again_is_not_put_back_in_stock(client, operations):
    # given: an inspected device that is (wrongly) bound to a merchant again
    case = completed_case_with_returns()
    device_return = case.device_returns.get()
    returns.device_return_receive(return_id=device_return.pk, actor=operations)
    returns.device_return_inspect(
        return_id=device_return.pk,
        outcome=DeviceReturn.Outcome.REFURBISHED,
        actor=operations,
    )
    factories.BindingFactory(terminal=device_return.terminal)
    client.force_login(operations)

    # when
    response = changelist_action(client, "finish", [device_return.pk])

    # then: a message, nothing changed
    assert response.status_code == 302
    device_return.refresh_from_db()
    assert device_return.state == S.INSPECTED
    assert not CaseEvent.objects.filter(transition="restock").exists()


@pytest.mark.django_db
def test_seed_demo_shows_a_device_on_its_way_back(client, operations):
    # when the demo is loaded twice
    call_command("seed_demo", stdout=StringIO(), stderr=StringIO())
    call_command("seed_demo", stdout=StringIO(), stderr=StringIO())

    # then one device is on its way back and one is overdue, once each
    shipped = DeviceReturn.objects.get(state=S.SHIPPED)
    assert shipped.tracking_number
    overdue = DeviceReturn.objects.overdue(now=timezone.now())
    assert overdue.count() == 1
    page = client.get(shipped.case.get_tracking_path())
    assert 'data-return-state="shipped"' in page.text
    client.force_login(operations)
    queue = client.get(reverse("admin:cases_devicereturn_changelist") + "?overdue=yes")
    assert [r.pk for r in queue.context["cl"].result_list] == [overdue.get().pk]


@pytest.mark.django_db
def test_a_police_report_that_cannot_be_stored_changes_nothing(client, monkeypatch):
    # given: the disk is full
    case = completed_case_with_returns()
    device_return = case.device_returns.get()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(FileSystemStorage, "save", disk_full)

    # when
    response = client.post(
        reverse("cases:return_lost", args=[case.tracking_token, device_return.pk]),
        {
            "police_report": SimpleUploadedFile(
                "report.png", png_bytes(), content_type="image/png"
            )
        },
        follow=True,
    )

    # then: a message, the device still awaited, no document
    assert response.status_code == 200
    assert "police report" in response.text
    device_return.refresh_from_db()
    assert device_return.state == S.AWAITING_RETURN
    assert not Document.objects.filter(kind=Document.Kind.POLICE_REPORT).exists()


@pytest.mark.django_db
def test_staff_see_when_a_terminals_sim_was_deactivated(admin_client):
    # given
    case = completed_case_with_returns()
    terminal = case.device_returns.get().terminal

    # when
    page = admin_client.get(
        reverse("admin:terminals_terminal_change", args=[terminal.pk])
    )

    # then
    assert page.status_code == 200
    assert "field-sim_deactivated_at" in page.text
    assert "SIM deactivated at" in page.text
