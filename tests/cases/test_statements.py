"""The final statement: itemised, exact (Decimal, never float) and always balanced."""

from datetime import date
from decimal import Decimal
from http import HTTPStatus

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import translation
from hypothesis import given
from hypothesis import strategies as st

from cases.models import CaseEvent, CaseState
from cases.services import review
from cases.statements import (
    Direction,
    LineKind,
    Statement,
    StatementInput,
    TerminalTerms,
    case_statement,
    statement_build,
)
from tests import factories

amounts = st.decimals(
    min_value=Decimal("0.00"),
    max_value=Decimal("9999999999.99"),
    places=2,
    allow_nan=False,
    allow_infinity=False,
)
signed_amounts = st.decimals(
    min_value=Decimal("-9999999999.99"),
    max_value=Decimal("9999999999.99"),
    places=2,
    allow_nan=False,
    allow_infinity=False,
)
sources = st.builds(
    StatementInput,
    deposits=st.lists(
        st.tuples(st.from_regex(r"SN[0-9]{8}", fullmatch=True), st.none() | amounts),
        max_size=30,
    ).map(tuple),
    unsettled_total=signed_amounts,
    unsettled_count=st.integers(min_value=0, max_value=10_000),
    settled_total=st.none() | signed_amounts,
    settlement_reference=st.just("UB-2026-000001-FINAL"),
    fees_amount=st.none() | amounts,
    fees_text=st.text(max_size=50),
    terminals=st.lists(
        st.builds(
            TerminalTerms,
            serial_number=st.from_regex(r"SN[0-9]{8}", fullmatch=True),
            deposit=st.none() | amounts,
            refund_condition=st.sampled_from(
                ["", "none", "device_returned", "volume_reached"]
            ),
            refund_volume=st.none() | amounts,
            volume=amounts,
            service_fee_annual=st.none() | amounts,
            service_fee_paid_until=st.none() | st.dates(),
            service_fee_prorated=st.booleans(),
            sim_fee=st.none() | amounts,
            sim_fee_paid_until=st.none() | st.dates(),
        ),
        max_size=10,
    ).map(tuple),
    as_of=st.none() | st.dates(min_value=date(2000, 1, 1), max_value=date(9000, 1, 1)),
    reserve_rate=st.decimals(
        min_value=Decimal("0"), max_value=Decimal("1"), places=4, allow_nan=False
    ),
    reserve_days=st.integers(min_value=0, max_value=730),
)


def _no_float(value) -> bool:
    if isinstance(value, float):
        return False
    if isinstance(value, dict):
        return all(_no_float(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_no_float(v) for v in value)
    return True


@given(source=sources)
def test_a_statement_always_balances_and_holds_no_float(source):
    # when
    statement = statement_build(source=source)

    # then the totals are the sums of the lines, per direction
    to_merchant = [
        line.amount for line in statement.lines if line.direction == "to_merchant"
    ]
    by_merchant = [
        line.amount for line in statement.lines if line.direction == "by_merchant"
    ]
    assert sum(to_merchant, Decimal(0)) == statement.to_merchant
    assert sum(by_merchant, Decimal(0)) == statement.by_merchant
    assert statement.net == statement.to_merchant - statement.by_merchant
    assert statement.net_amount == abs(statement.net)
    # every amount is an exact, non-negative Decimal in fen
    for line in statement.lines:
        assert isinstance(line.amount, Decimal)
        assert line.amount >= 0
        assert line.amount.as_tuple().exponent == -2
        assert line.direction in (Direction.TO_MERCHANT, Direction.BY_MERCHANT)
        assert str(line.rule)
    assert isinstance(statement.to_merchant, Decimal)
    assert isinstance(statement.by_merchant, Decimal)
    # and the frozen form round-trips exactly, without a float
    frozen = statement.as_dict()
    assert _no_float(frozen)
    assert (
        sum((Decimal(line["amount"]) for line in frozen["lines"]), Decimal(0))
        == statement.to_merchant + statement.by_merchant
    )
    # every deposit is a line of its own
    assert len([line for line in statement.lines if line.kind == "deposit"]) == len(
        [d for _sn, d in source.deposits if d is not None]
    ) + len([t for t in source.terminals if t.deposit is not None])
    # the reserve never holds back more than the funds it is taken from
    reserve = [line for line in statement.lines if line.kind == "chargeback_reserve"]
    assert len(reserve) <= 1
    for line in reserve:
        assert line.due_on is not None
        assert line.amount <= max(source.unsettled_total, source.settled_total or 0)
    # and the frozen form reads back to the same statement
    assert Statement.from_dict(frozen).as_dict() == frozen


def test_a_float_amount_is_refused():
    # given / when / then
    with pytest.raises(TypeError):
        statement_build(source=StatementInput(deposits=(("SN00000001", 299.0),)))


def test_lines_deposits_unsettled_funds_and_fees():
    # given
    source = StatementInput(
        deposits=(("SN00000001", Decimal("299.00")), ("SN00000002", None)),
        unsettled_total=Decimal("-12.50"),
        unsettled_count=3,
        fees_amount=Decimal("50.00"),
        fees_text="年费按月折算",
    )

    # when
    statement = statement_build(source=source)

    # then
    assert [(line.kind, line.direction, line.amount) for line in statement.lines] == [
        (LineKind.DEPOSIT, Direction.TO_MERCHANT, Decimal("299.00")),
        (LineKind.UNSETTLED_FUNDS, Direction.BY_MERCHANT, Decimal("12.50")),
        (LineKind.FEES, Direction.BY_MERCHANT, Decimal("50.00")),
    ]
    assert "SN00000001" in statement.lines[0].rule
    assert "年费按月折算" in statement.lines[2].rule
    assert statement.net == Decimal("236.50")


def test_the_rules_of_each_line_with_half_up_rounding():
    # given one terminal of each kind of term, on 2026-12-01
    as_of = date(2026, 12, 1)
    source = StatementInput(
        as_of=as_of,
        terminals=(
            TerminalTerms(
                serial_number="SN00000001",
                deposit=Decimal("299.00"),
                refund_condition="device_returned",
                # 1.00 × 15 / 365 = 0.04109…; 100.00 × 1/365 = 0.27397…
                service_fee_annual=Decimal("73.00"),
                service_fee_paid_until=date(2026, 12, 6),  # 5 days: exactly 1.00
                service_fee_prorated=True,
                sim_fee=Decimal("60.00"),
                sim_fee_paid_until=date(2026, 11, 30),
            ),
            TerminalTerms(
                serial_number="SN00000002",
                deposit=Decimal("199.00"),
                refund_condition="volume_reached",
                refund_volume=Decimal("50000.00"),
                volume=Decimal("49999.99"),
                service_fee_annual=Decimal("365.00"),
                service_fee_paid_until=date(2027, 12, 1),
                service_fee_prorated=False,
                sim_fee=Decimal("60.00"),
                sim_fee_paid_until=date(2027, 1, 1),
            ),
            TerminalTerms(
                serial_number="SN00000003",
                deposit=Decimal("99.00"),
                refund_condition="volume_reached",
                refund_volume=Decimal("100.00"),
                volume=Decimal("100.00"),
                # 0.73 × 1 / 365 = 0.002 → 0.00; 1.825 × 1/365: half a fen
                service_fee_annual=Decimal("1.83"),
                service_fee_paid_until=date(2026, 11, 26),  # 5 days owed
                service_fee_prorated=True,
            ),
        ),
        unsettled_total=Decimal("100.05"),
        unsettled_count=2,
        reserve_rate=Decimal("0.10"),
        reserve_days=180,
    )

    # when
    with translation.override("en"):
        statement = statement_build(source=source)

    # then every amount is there, either way, with its rule
    rows = [
        (line.kind, line.serial_number, line.direction, line.amount)
        for line in statement.lines
    ]
    assert rows == [
        ("deposit", "SN00000001", "to_merchant", Decimal("299.00")),
        ("service_fee", "SN00000001", "to_merchant", Decimal("1.00")),
        ("sim_fee", "SN00000001", "by_merchant", Decimal("60.00")),
        ("deposit", "SN00000002", "to_merchant", Decimal("0.00")),
        ("service_fee", "SN00000002", "to_merchant", Decimal("0.00")),
        ("sim_fee", "SN00000002", "to_merchant", Decimal("0.00")),
        ("deposit", "SN00000003", "to_merchant", Decimal("99.00")),
        # 1.83 × 5 / 365 = 0.025068… → 0.03
        ("service_fee", "SN00000003", "by_merchant", Decimal("0.03")),
        ("unsettled_funds", "", "to_merchant", Decimal("100.05")),
        # 10.005 rounds half up to 10.01 (banker's would give 10.00)
        ("chargeback_reserve", "", "by_merchant", Decimal("10.01")),
    ]
    deposit, _fee, _sim, kept, not_prorated, sim_paid, *_rest, reserve = statement.lines
    assert deposit.condition == "device_returned"
    assert "returned" in deposit.rule
    assert "did not reach" in kept.rule
    assert "not prorated" in not_prorated.rule
    assert "not refunded" in sim_paid.rule
    assert reserve.due_on == date(2027, 5, 30)
    assert "held back until 2027-05-30" in reserve.rule
    assert reserve.rule.startswith("10% of the funds")
    assert statement.net == Decimal("299.00") + 1 - 60 + 99 - Decimal("0.03") + Decimal(
        "100.05"
    ) - Decimal("10.01")


def test_a_float_reserve_rate_is_refused():
    # given / when / then
    with pytest.raises(TypeError):
        statement_build(
            source=StatementInput(
                as_of=date(2026, 12, 1),
                unsettled_total=Decimal("1.00"),
                reserve_rate=0.1,
            )
        )


@pytest.mark.django_db
def test_case_statement_applies_the_merchants_default_terms(settings):
    # given a merchant whose default plan is a prorated 365.00 fee, paid a year
    settings.CHARGEBACK_RESERVE_RATE = Decimal("0")
    merchant = factories.MerchantFactory(
        service_fee_annual=Decimal("365.00"),
        service_fee_paid_until=date(2027, 1, 1),
        service_fee_prorated=True,
    )
    own = factories.BindingFactory(merchant=merchant).terminal
    own.service_fee_annual = Decimal("730.00")  # the terminal's own plan wins
    own.save()
    default = factories.BindingFactory(merchant=merchant).terminal
    case = factories.CaseFactory(merchant=merchant, terminals=[own, default])

    # when
    statement = case_statement_with(case=case, as_of=date(2026, 12, 1))

    # then 31 days are refunded at each terminal's rate
    assert sorted(
        (line.serial_number, line.amount) for line in statement.lines
    ) == sorted(
        [
            (own.serial_number, Decimal("62.00")),
            (default.serial_number, Decimal("31.00")),
        ]
    )


def case_statement_with(*, case, as_of):
    from cases.statements import case_statement_input

    return statement_build(source=case_statement_input(case=case, as_of=as_of))


@pytest.mark.django_db
def test_case_statement_reads_deposits_unsettled_and_settled_funds():
    # given a case of two terminals, one with a deposit and unsettled payments
    merchant = factories.MerchantFactory()
    with_deposit = factories.BindingFactory(merchant=merchant).terminal
    with_deposit.deposit = Decimal("299.00")
    with_deposit.save()
    other = factories.BindingFactory(merchant=merchant).terminal
    factories.TransactionFactory(terminal=with_deposit, amount=Decimal("100.10"))
    factories.TransactionFactory(terminal=other, amount=Decimal("28.40"))
    factories.TransactionFactory(terminal=other, amount=Decimal("5.00"), settled=True)
    case = factories.CaseFactory(merchant=merchant, terminals=[with_deposit, other])

    # when
    statement = case_statement(case=case)

    # then
    assert statement.to_merchant == Decimal("427.50")
    # 10% of the 128.50 of funds held back against chargebacks (settings)
    assert statement.by_merchant == Decimal("12.85")

    # when the execution settled the funds
    case.settlement_total = Decimal("128.50")
    case.save()
    settled = case_statement(case=case)

    # then the settled total replaces the unsettled sum
    assert [line.kind for line in settled.lines] == [
        "deposit",
        "settled_funds",
        "chargeback_reserve",
    ]
    assert settled.to_merchant == Decimal("427.50")


# --- the pages ------------------------------------------------------------------


def chain_case(n: int, *, state=CaseState.AWAITING_APPROVAL):
    merchant = factories.MerchantFactory()
    terminals = []
    for _ in range(n):
        terminal = factories.BindingFactory(merchant=merchant).terminal
        terminal.deposit = Decimal("299.00")
        terminals.append(terminal)
    type(terminals[0]).objects.bulk_update(terminals, ["deposit"])
    for terminal in terminals[:3]:
        factories.TransactionFactory(terminal=terminal, amount=Decimal("10.00"))
    return factories.CaseFactory(merchant=merchant, terminals=terminals, state=state)


@pytest.mark.django_db
def test_the_tracking_page_shows_the_deposit_as_299_00(client):
    # given
    case = chain_case(1)

    # when
    page = client.get(case.get_tracking_path(), HTTP_ACCEPT_LANGUAGE="zh-hans")

    # then
    html = page.content.decode()
    assert page.status_code == HTTPStatus.OK
    assert 'id="statement"' in html
    assert "299.00" in html
    assert 'data-amount="299.00"' in html
    assert 'data-total="to_merchant">¥309.00' in html


@pytest.mark.django_db
def test_the_approval_confirmation_shows_the_statement(admin_client):
    # given a case awaiting approval with a deposit and stated fees
    case = chain_case(2)
    type(case).objects.filter(pk=case.pk).update(
        fees_amount=Decimal("80.00"), fees_statement="年费"
    )

    # when
    page = admin_client.get(
        reverse("admin:cases_case_transition", args=[case.pk, "approve"])
    )

    # then
    html = page.content.decode()
    assert page.status_code == HTTPStatus.OK
    assert 'id="statement"' in html
    assert 'data-amount="299.00"' in html
    # the fees and 10% of the 20.00 of funds held back against chargebacks
    assert 'data-total="by_merchant">¥82.00' in html
    assert 'data-total="net">¥536.00' in html


@pytest.mark.django_db
def test_the_assignee_states_the_fees_amount(reviewer):
    # given a case in review assigned to the reviewer
    case = chain_case(1, state=CaseState.IN_REVIEW)
    type(case).objects.filter(pk=case.pk).update(assigned_to=reviewer)

    # when
    review.case_fees_statement_set(
        case_id=case.pk, actor=reviewer, text="年费", amount=Decimal("80.00")
    )

    # then the statement carries the fee, and the audit trail records it
    case.refresh_from_db()
    statement = case_statement(case=case)
    assert [line.kind for line in statement.lines][-1] == "fees"
    assert statement.by_merchant == Decimal("81.00")  # and the 1.00 reserve
    event = case.events.latest("pk")
    assert event.type == CaseEvent.Type.FEES_STATED
    assert event.payload == {"fees_amount": "80.00"}


def _queries(fn) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = fn()
    assert response.status_code == HTTPStatus.OK
    return len(captured)


@pytest.mark.django_db
@pytest.mark.parametrize("page", ["tracking", "admin_case"])
def test_pages_do_not_grow_with_the_terminal_count(
    client, admin_client, django_assert_num_queries, page
):
    """The same number of queries at 3 and at 300 terminals (no N+1)."""

    def get(case):
        if page == "tracking":
            return client.get(case.get_tracking_path())
        return admin_client.get(reverse("admin:cases_case_change", args=[case.pk]))

    # given the count at 3 terminals (after a first request warmed the caches)
    small = chain_case(3)
    get(small)
    expected = _queries(lambda: get(small))

    # when / then the same at 300
    large = chain_case(300)
    with django_assert_num_queries(expected):
        response = get(large)
    assert response.content.decode().count('data-line="deposit"') == 300


@pytest.mark.django_db
def test_the_fees_amount_is_stated_from_the_case_page(client, reviewer):
    # given a case in review assigned to the reviewer
    case = chain_case(1, state=CaseState.IN_REVIEW)
    type(case).objects.filter(pk=case.pk).update(assigned_to=reviewer)
    client.force_login(reviewer)
    url = reverse("admin:cases_case_fees", args=[case.pk])

    # when a negative amount is posted, then nothing changes
    client.post(url, {"fees_statement": "年费", "fees_amount": "-1"})
    case.refresh_from_db()
    assert case.fees_amount is None

    # when a valid amount is posted
    response = client.post(url, {"fees_statement": "年费", "fees_amount": "80.5"})

    # then it is stored exactly and the merchant's statement owes it
    assert response.status_code == HTTPStatus.FOUND
    case.refresh_from_db()
    assert case.fees_amount == Decimal("80.50")
    page = client.get(case.get_tracking_path()).content.decode()
    assert 'data-line="fees"' in page
    assert 'data-total="by_merchant">¥81.50' in page  # and the 1.00 reserve
