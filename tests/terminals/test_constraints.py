"""At most one active binding per terminal, enforced by the database."""

from datetime import timedelta

import pytest
from django.db import IntegrityError, OperationalError, connections, transaction
from django.utils import timezone

from terminals.models import Binding
from tests import factories

pytestmark = pytest.mark.django_db


def second_active_binding_is_refused(terminal) -> None:
    # given
    factories.BindingFactory(terminal=terminal)
    other = factories.MerchantFactory()

    # when / then
    with pytest.raises(IntegrityError), transaction.atomic():
        Binding.objects.create(
            terminal=terminal, merchant=other, started_at=timezone.now()
        )
    assert Binding.objects.filter(terminal=terminal).count() == 1


def ended_and_new_active_binding_coexist(terminal) -> None:
    # given
    old = factories.BindingFactory(terminal=terminal)
    old.ended_at = timezone.now()
    old.save(update_fields=["ended_at"])

    # when
    new = Binding.objects.create(
        terminal=terminal,
        merchant=factories.MerchantFactory(),
        started_at=timezone.now() + timedelta(seconds=1),
    )

    # then
    assert list(Binding.objects.active().filter(terminal=terminal)) == [new]
    assert Binding.objects.filter(terminal=terminal).count() == 2


def test_second_active_binding_raises_integrity_error():
    second_active_binding_is_refused(factories.TerminalFactory())


def test_ended_binding_and_new_active_binding_are_fine():
    ended_and_new_active_binding_coexist(factories.TerminalFactory())


def test_bulk_create_cannot_bypass_the_constraint():
    # given
    terminal = factories.TerminalFactory()
    merchants = factories.MerchantFactory.create_batch(2)

    # when / then
    with pytest.raises(IntegrityError), transaction.atomic():
        Binding.objects.bulk_create(
            [
                Binding(terminal=terminal, merchant=m, started_at=timezone.now())
                for m in merchants
            ]
        )
    assert not Binding.objects.exists()


def test_binding_cannot_end_before_it_started():
    # given
    binding = factories.BindingFactory()
    binding.ended_at = binding.started_at - timedelta(days=1)

    # when / then
    with pytest.raises(IntegrityError), transaction.atomic():
        binding.save(update_fields=["ended_at"])


@pytest.mark.postgres
def test_second_active_binding_raises_integrity_error_on_postgresql():
    second_active_binding_is_refused(factories.TerminalFactory())


@pytest.mark.postgres
def test_ended_and_new_active_binding_on_postgresql():
    ended_and_new_active_binding_coexist(factories.TerminalFactory())


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_racing_second_binding_waits_then_fails_on_postgresql():
    """A second connection binding the same terminal waits for the first, then fails."""
    # given
    terminal = factories.TerminalFactory()
    first, second = factories.MerchantFactory.create_batch(2)
    other = connections.create_connection("default")
    insert = (
        "INSERT INTO terminals_binding (terminal_id, merchant_id, started_at, "
        "ended_reason) VALUES (%s, %s, now(), '')"
    )
    try:
        with other.cursor() as cursor:
            cursor.execute("SET lock_timeout = '300ms'")
            # when: the first binding is not committed yet
            with transaction.atomic():
                Binding.objects.create(
                    terminal=terminal, merchant=first, started_at=timezone.now()
                )
                with pytest.raises(OperationalError, match="lock timeout"):
                    cursor.execute(insert, [terminal.pk, second.pk])
            # when: it is committed
            with pytest.raises(IntegrityError, match="one_active_binding"):
                cursor.execute(insert, [terminal.pk, second.pk])
    finally:
        other.close()

    # then
    assert Binding.objects.get(terminal=terminal).merchant == first
