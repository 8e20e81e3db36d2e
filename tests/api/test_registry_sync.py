"""Registry sync: the core's records never undo a binding change made here."""

from datetime import timedelta

import pytest
from django.utils import timezone

from api.models import RegistryConflict, Scope
from terminals import identifiers
from terminals.models import Binding
from tests import factories
from tests.api.test_api import assert_problem, keyed_client

pytestmark = pytest.mark.django_db

URL = "/api/v1/registry/sync/"


def iso(moment) -> str:
    return moment.isoformat()


def terminal_record(terminal, merchant_id, **extra) -> dict:
    return {
        "serial_number": terminal.serial_number,
        "terminal_id": terminal.terminal_id,
        "model": terminal.model,
        "kind": terminal.kind,
        "merchant_id": merchant_id,
        **extra,
    }


def new_terminal_record(n: int, merchant_id) -> dict:
    return {
        "serial_number": identifiers.make_serial_number(9000 + n),
        "terminal_id": identifiers.make_terminal_id(9000 + n),
        "model": "PAX A920",
        "kind": "smart",
        "merchant_id": merchant_id,
    }


def unbound_locally(*, at):
    """A terminal whose binding to a merchant was ended here at ``at``."""
    binding = factories.BindingFactory(started_at=at - timedelta(days=100))
    Binding.objects.filter(pk=binding.pk).update(ended_at=at, ended_reason="case")
    return binding.terminal, binding.merchant


def test_sync_imports_through_the_registry_importer(merchant):
    # given
    client, _ = keyed_client(Scope.SYNC_REGISTRY)

    # when
    response = client.post(
        URL,
        {
            "as_of": iso(timezone.now()),
            "terminals": [new_terminal_record(1, merchant.merchant_id)],
        },
        format="json",
        HTTP_IDEMPOTENCY_KEY="sync-1",
    )

    # then
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["terminals"]["created"] == 1
    assert body["bindings"]["created"] == 1
    assert body["conflicts"] == []


def test_an_older_record_does_not_rebind_a_terminal_unbound_here():
    # given: unbound here an hour ago; the core's record is two hours old
    client, _ = keyed_client(Scope.SYNC_REGISTRY)
    now = timezone.now()
    terminal, merchant = unbound_locally(at=now - timedelta(hours=1))
    other = factories.MerchantFactory()

    # when
    response = client.post(
        URL,
        {
            "as_of": iso(now),
            "terminals": [
                terminal_record(
                    terminal,
                    merchant.merchant_id,
                    as_of=iso(now - timedelta(hours=2)),
                ),
                new_terminal_record(2, other.merchant_id),
            ],
        },
        format="json",
    )

    # then: the terminal stays unbound, the rest is imported, staff see why
    assert response.status_code == 200, response.content
    assert not Binding.objects.active().filter(terminal=terminal).exists()
    assert response.json()["terminals"]["created"] == 1
    conflict = RegistryConflict.objects.get()
    assert conflict.serial_number == terminal.serial_number
    assert conflict.api_key_name == "api:core"
    assert [c["serial_number"] for c in response.json()["conflicts"]] == [
        terminal.serial_number
    ]


def test_a_newer_record_does_rebind():
    client, _ = keyed_client(Scope.SYNC_REGISTRY)
    now = timezone.now()
    terminal, merchant = unbound_locally(at=now - timedelta(hours=1))

    response = client.post(
        URL,
        {
            "as_of": iso(now),
            "terminals": [terminal_record(terminal, merchant.merchant_id)],
        },
        format="json",
    )

    assert response.status_code == 200, response.content
    assert Binding.objects.active().get(terminal=terminal).merchant == merchant
    assert RegistryConflict.objects.count() == 0


def test_an_older_in_stock_record_does_not_undo_a_rebinding_here():
    # given: bound here (replacement device) a minute ago
    client, _ = keyed_client(Scope.SYNC_REGISTRY)
    now = timezone.now()
    binding = factories.BindingFactory(started_at=now - timedelta(minutes=1))

    # when
    response = client.post(
        URL,
        {
            "as_of": iso(now - timedelta(hours=1)),
            "terminals": [terminal_record(binding.terminal, None)],
        },
        format="json",
    )

    # then
    assert response.status_code == 200, response.content
    assert Binding.objects.active().get(terminal=binding.terminal) == binding
    assert RegistryConflict.objects.count() == 1


def test_a_bad_record_rejects_the_body_and_names_its_place(merchant):
    # given: the first record is a conflict (dropped), the second is bad
    client, _ = keyed_client(Scope.SYNC_REGISTRY)
    now = timezone.now()
    terminal, old_merchant = unbound_locally(at=now - timedelta(hours=1))
    bad = new_terminal_record(3, merchant.merchant_id)
    bad["kind"] = "toaster"

    # when
    response = client.post(
        URL,
        {
            "as_of": iso(now - timedelta(hours=2)),
            "terminals": [terminal_record(terminal, old_merchant.merchant_id), bad],
        },
        format="json",
    )

    # then
    body = assert_problem(response, 400)
    assert body["record"]["section"] == "terminals"
    assert body["record"]["index"] == 1
    assert RegistryConflict.objects.count() == 0


def test_as_of_is_required(merchant):
    client, _ = keyed_client(Scope.SYNC_REGISTRY)

    response = client.post(
        URL,
        {"terminals": [new_terminal_record(4, merchant.merchant_id)]},
        format="json",
    )

    assert assert_problem(response, 400)["record"]["field"] == "as_of"


def test_sync_needs_its_scope():
    client, _ = keyed_client(Scope.READ_CASES)

    assert_problem(client.post(URL, {"as_of": iso(timezone.now())}, format="json"), 403)


def test_staff_see_the_conflicts(admin_client):
    RegistryConflict.objects.create(
        kind=RegistryConflict.Kind.BINDING,
        serial_number="SN-CONFLICT-1",
        record_as_of=timezone.now(),
        local_changed_at=timezone.now(),
        api_key_name="api:core",
    )

    response = admin_client.get("/admin/api/registryconflict/")

    assert b"SN-CONFLICT-1" in response.content
