"""The final statement of a case: every amount owed to or by the merchant.

``statement_build`` is a pure function of plain values (no database, no
floats): each line carries its amount as a ``Decimal`` in yuan with two
places (fen), its direction and the rule it comes from; the totals are the
sums of the lines, so a statement always balances. ``case_statement`` reads
what a case's statement is built from in a fixed number of queries, however
many terminals the case has.

Lines, each with the rule it follows (README "Money"):

- a deposit refund per terminal that carries a deposit in the registry, as
  its refund condition says: ``none`` (refunded), ``device_returned``
  (refunded once the device is back; the finance item waits for it) or
  ``volume_reached`` (refunded if the terminal's card volume reached the
  threshold, else kept: a 0.00 line that says why);
- the service fee: with a prorated plan, the unused part refunded,
  ``annual × days left / 365``; without, nothing refunded (a 0.00 line); paid
  only until a past date, the days since then owed the same way;
- the SIM / data-card fee: owed by the merchant if unpaid at the statement
  date; a paid one is not refunded (0.00 line);
- the unsettled funds of the case's terminals (to the merchant; by the
  merchant if refunds exceed payments). Once the execution settled them, the
  settled total is used instead of what is left unsettled (nothing);
- the chargeback reserve: ``CHARGEBACK_RESERVE_RATE`` of the funds paid to
  the merchant, held back until ``CHARGEBACK_RESERVE_DAYS`` after the
  statement date (by the merchant now; paid out on that date);
- the fees staff stated in review, with their amount (by the merchant).

Rounding: a computed amount (a prorated fee, the reserve) is rounded to the
fen half up (ROUND_HALF_UP, 四舍五入), the rule merchants and their
accountants apply by hand, so a merchant can check every line; banker's
rounding would sometimes round a half fen against them without a reason
they can see. Amounts from the registry are already fen exact.

``Statement.as_dict`` is the JSON frozen at approval (``CaseStatement``,
amounts as strings); ``Statement.from_dict`` reads a frozen version back.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.db.models import Count, Q, Sum
from django.utils import timezone
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from cases.models import Case
from terminals.models import MONEY_TERM_FIELDS, Terminal, Transaction

FEN = Decimal("0.01")
ZERO = Decimal("0.00")

# Bump when a rule changes, so that a frozen statement says which rules it used.
RULES_VERSION = 2
DAYS_PER_YEAR = 365


class Direction:
    TO_MERCHANT = "to_merchant"
    BY_MERCHANT = "by_merchant"

    LABELS = {
        TO_MERCHANT: _("to the merchant"),
        BY_MERCHANT: _("by the merchant"),
    }


class LineKind:
    DEPOSIT = "deposit"
    UNSETTLED_FUNDS = "unsettled_funds"
    SETTLED_FUNDS = "settled_funds"
    FEES = "fees"
    SERVICE_FEE = "service_fee"
    SIM_FEE = "sim_fee"
    RESERVE = "chargeback_reserve"

    LABELS = {
        SERVICE_FEE: _("Service fee (服务费)"),
        SIM_FEE: _("SIM / data-card fee (流量卡费)"),
        RESERVE: _("Chargeback reserve"),
        DEPOSIT: _("Deposit refund (押金)"),
        UNSETTLED_FUNDS: _("Unsettled funds"),
        SETTLED_FUNDS: _("Funds paid out in the final settlement"),
        FEES: _("Fees (可能产生的费用)"),
    }

    RULES = {
        DEPOSIT: _(
            "The deposit paid for terminal %(serial)s is refunded once the "
            "terminal is unbound."
        ),
        UNSETTLED_FUNDS: _(
            "Card payments of these terminals not yet paid out (%(count)d "
            "transactions) are settled to the merchant's account before unbinding."
        ),
        SETTLED_FUNDS: _(
            "Card payments not yet paid out at unbinding were settled to the "
            "merchant's account (batch %(batch)s)."
        ),
        FEES: _("Fees stated by the reviewer: %(text)s"),
    }

    # Rules with more than one case, by (kind, case).
    CASE_RULES = {
        ("deposit", "device_returned"): _(
            "The deposit paid for terminal %(serial)s is refunded once the "
            "device is returned to the provider."
        ),
        ("deposit", "volume_reached"): _(
            "The deposit paid for terminal %(serial)s is refunded: its card "
            "volume ¥%(volume)s reached ¥%(threshold)s."
        ),
        ("deposit", "volume_missed"): _(
            "The deposit paid for terminal %(serial)s (¥%(deposit)s) is kept: its "
            "card volume ¥%(volume)s did not reach ¥%(threshold)s."
        ),
        ("service_fee", "prorated"): _(
            "Terminal %(serial)s: the annual service fee ¥%(annual)s is paid "
            "until %(until)s; the unused %(days)d days are refunded "
            "(¥%(annual)s × %(days)d / 365, rounded half up to the fen)."
        ),
        ("service_fee", "not_prorated"): _(
            "Terminal %(serial)s: the annual service fee ¥%(annual)s is paid "
            "until %(until)s and is not prorated: nothing is refunded."
        ),
        ("service_fee", "owed"): _(
            "Terminal %(serial)s: the annual service fee ¥%(annual)s was paid "
            "only until %(until)s; the %(days)d days since are owed "
            "(¥%(annual)s × %(days)d / 365, rounded half up to the fen)."
        ),
        ("sim_fee", "paid"): _(
            "Terminal %(serial)s: the SIM / data-card fee is paid until "
            "%(until)s; a used SIM card's fee is not refunded."
        ),
        ("sim_fee", "owed"): _(
            "Terminal %(serial)s: the SIM / data-card fee ¥%(fee)s was paid only "
            "until %(until)s and is owed."
        ),
        ("chargeback_reserve", ""): _(
            "%(rate)s%% of the funds paid to the merchant is held back until "
            "%(until)s against chargebacks, then paid out."
        ),
    }


@dataclass(frozen=True)
class StatementLine:
    kind: str
    direction: str
    # Never negative; the direction says who owes it.
    amount: Decimal
    rule: str
    serial_number: str = ""
    # What the payment waits for: "device_returned", or "" (nothing).
    condition: str = ""
    # When the amount falls due, if not at completion (the reserve's release).
    due_on: date | None = None

    @property
    def label(self) -> str | Promise:
        return LineKind.LABELS[self.kind]

    @property
    def direction_label(self) -> str | Promise:
        return Direction.LABELS[self.direction]

    @property
    def is_to_merchant(self) -> bool:
        return self.direction == Direction.TO_MERCHANT


@dataclass(frozen=True)
class Statement:
    lines: tuple[StatementLine, ...] = ()
    to_merchant: Decimal = ZERO
    by_merchant: Decimal = ZERO
    # Fees stated in words only, without an amount: shown, not counted.
    notes: tuple[str, ...] = field(default=())
    # Set on a statement read back from its frozen version (CaseStatement).
    version: int | None = None

    @property
    def net(self) -> Decimal:
        """What the provider pays the merchant in the end (negative: is owed)."""
        return self.to_merchant - self.by_merchant

    @property
    def net_amount(self) -> Decimal:
        return abs(self.net)

    @property
    def net_direction(self) -> str:
        return Direction.TO_MERCHANT if self.net >= 0 else Direction.BY_MERCHANT

    @property
    def net_direction_label(self) -> str | Promise:
        return Direction.LABELS[self.net_direction]

    def as_dict(self) -> dict:
        """Return the statement as JSON-ready data, amounts as strings (for freezing)."""
        return {
            "rules_version": RULES_VERSION,
            "lines": [
                {
                    "kind": line.kind,
                    "direction": line.direction,
                    "amount": str(line.amount),
                    "rule": str(line.rule),
                    "serial_number": line.serial_number,
                    "condition": line.condition,
                    "due_on": line.due_on.isoformat() if line.due_on else "",
                }
                for line in self.lines
            ],
            "to_merchant": str(self.to_merchant),
            "by_merchant": str(self.by_merchant),
            "net": str(self.net),
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: dict, *, version: int | None = None) -> "Statement":
        """Read a frozen statement back (the rules' text as it was frozen)."""
        return cls(
            lines=tuple(
                StatementLine(
                    kind=line["kind"],
                    direction=line["direction"],
                    amount=Decimal(line["amount"]),
                    rule=line["rule"],
                    serial_number=line.get("serial_number", ""),
                    condition=line.get("condition", ""),
                    due_on=(
                        date.fromisoformat(line["due_on"])
                        if line.get("due_on")
                        else None
                    ),
                )
                for line in data["lines"]
            ),
            to_merchant=Decimal(data["to_merchant"]),
            by_merchant=Decimal(data["by_merchant"]),
            notes=tuple(data.get("notes", ())),
            version=version,
        )


@dataclass(frozen=True)
class TerminalTerms:
    """One terminal's money terms, the merchant's defaults already applied."""

    serial_number: str
    deposit: Decimal | None = None
    refund_condition: str = ""
    refund_volume: Decimal | None = None
    # The terminal's card volume (all its payments), for ``volume_reached``.
    volume: Decimal = ZERO
    service_fee_annual: Decimal | None = None
    service_fee_paid_until: date | None = None
    service_fee_prorated: bool = False
    sim_fee: Decimal | None = None
    sim_fee_paid_until: date | None = None


@dataclass(frozen=True)
class StatementInput:
    """What a statement is built from: plain values, no model instances."""

    # (serial number, deposit or None) per terminal of the case.
    deposits: tuple[tuple[str, Decimal | None], ...] = ()
    unsettled_total: Decimal = ZERO
    unsettled_count: int = 0
    # Set once the execution settled the funds: the batch's total replaces
    # the unsettled sum.
    settled_total: Decimal | None = None
    settlement_reference: str = ""
    fees_amount: Decimal | None = None
    fees_text: str = ""
    # Terminals with their full terms (``deposits`` holds plain deposits).
    terminals: tuple[TerminalTerms, ...] = ()
    # The statement's date: days left of a fee and the reserve's release.
    as_of: date | None = None
    reserve_rate: Decimal = ZERO
    reserve_days: int = 0


def _round(value: Decimal) -> Decimal:
    """Round a computed amount to the fen, half up (see the module docstring)."""
    return value.quantize(FEN, rounding=ROUND_HALF_UP)


def _money(value: Decimal) -> Decimal:
    if not isinstance(value, Decimal):
        # An int would be exact, but a float is not: refuse both for clarity.
        raise TypeError(f"amounts are Decimal, not {type(value).__name__}")
    return value.quantize(FEN)


def _signed_line(
    kind: str, amount: Decimal, rule: str | Promise, serial: str = ""
) -> StatementLine:
    """A line owed to the merchant when ``amount`` is positive, by it when negative."""
    return StatementLine(
        kind=kind,
        direction=Direction.TO_MERCHANT if amount >= 0 else Direction.BY_MERCHANT,
        amount=abs(amount),
        rule=rule,
        serial_number=serial,
    )


def statement_build(*, source: StatementInput) -> Statement:
    """Itemise ``source`` into lines and totals; the totals are the lines' sums."""
    lines: list[StatementLine] = []
    for serial, deposit in source.deposits:
        if deposit is None:
            continue
        lines.append(
            StatementLine(
                kind=LineKind.DEPOSIT,
                direction=Direction.TO_MERCHANT,
                amount=_money(deposit),
                rule=_rule(LineKind.DEPOSIT, serial=serial),
                serial_number=serial,
            )
        )
    for terms in source.terminals:
        lines.extend(_terminal_lines(terms, as_of=source.as_of))
    funds = ZERO
    if source.settled_total is not None:
        settled = _money(source.settled_total)
        funds = settled
        if settled:
            lines.append(
                _signed_line(
                    LineKind.SETTLED_FUNDS,
                    settled,
                    _rule(LineKind.SETTLED_FUNDS, batch=source.settlement_reference),
                )
            )
    else:
        unsettled = _money(source.unsettled_total)
        funds = unsettled
        if unsettled or source.unsettled_count:
            lines.append(
                _signed_line(
                    LineKind.UNSETTLED_FUNDS,
                    unsettled,
                    _rule(LineKind.UNSETTLED_FUNDS, count=source.unsettled_count),
                )
            )
    reserve = _reserve_line(source, funds=funds)
    if reserve is not None:
        lines.append(reserve)
    notes: tuple[str, ...] = ()
    if source.fees_amount is not None:
        lines.append(
            StatementLine(
                kind=LineKind.FEES,
                direction=Direction.BY_MERCHANT,
                amount=_money(source.fees_amount),
                rule=_rule(LineKind.FEES, text=source.fees_text or "—"),
            )
        )
    elif source.fees_text:
        notes = (source.fees_text,)
    return Statement(
        lines=tuple(lines),
        to_merchant=sum(
            (line.amount for line in lines if line.is_to_merchant), start=ZERO
        ),
        by_merchant=sum(
            (line.amount for line in lines if not line.is_to_merchant), start=ZERO
        ),
        notes=notes,
    )


def _rule(kind: str, case: str | None = None, **params) -> str:
    """The rule's text in the active language (the page's or the e-mail's)."""
    text = LineKind.RULES[kind] if case is None else LineKind.CASE_RULES[kind, case]
    return str(text) % params


def _days(annual: Decimal, days: int) -> Decimal:
    return _round(_money(annual) * days / DAYS_PER_YEAR)


def _deposit_line(terms: TerminalTerms) -> StatementLine:
    deposit = _money(terms.deposit)
    serial = terms.serial_number
    line = StatementLine(
        kind=LineKind.DEPOSIT,
        direction=Direction.TO_MERCHANT,
        amount=deposit,
        rule=_rule(LineKind.DEPOSIT, serial=serial),
        serial_number=serial,
    )
    if terms.refund_condition == "device_returned":
        return replace(
            line,
            condition="device_returned",
            rule=_rule("deposit", "device_returned", serial=serial),
        )
    if terms.refund_condition == "volume_reached":
        threshold = _money(terms.refund_volume or ZERO)
        volume = _money(terms.volume)
        params = {
            "serial": serial,
            "volume": volume,
            "threshold": threshold,
            "deposit": deposit,
        }
        if volume >= threshold:
            return replace(line, rule=_rule("deposit", "volume_reached", **params))
        return replace(
            line, amount=ZERO, rule=_rule("deposit", "volume_missed", **params)
        )
    return line


def _terminal_lines(terms: TerminalTerms, *, as_of: date | None) -> list[StatementLine]:
    """The deposit, service fee and SIM fee lines of one terminal."""
    lines = []
    serial = terms.serial_number
    if terms.deposit is not None:
        lines.append(_deposit_line(terms))
    annual, until = terms.service_fee_annual, terms.service_fee_paid_until
    if annual is not None and until is not None and as_of is not None:
        days = (until - as_of).days
        params = {"serial": serial, "annual": _money(annual), "until": until}
        if days > 0 and terms.service_fee_prorated:
            amount, direction = _days(annual, days), Direction.TO_MERCHANT
            rule = _rule("service_fee", "prorated", days=days, **params)
        elif days > 0:
            amount, direction = ZERO, Direction.TO_MERCHANT
            rule = _rule("service_fee", "not_prorated", **params)
        else:
            amount, direction = _days(annual, -days), Direction.BY_MERCHANT
            rule = _rule("service_fee", "owed", days=-days, **params)
        lines.append(
            StatementLine(
                kind=LineKind.SERVICE_FEE,
                direction=direction,
                amount=amount,
                rule=rule,
                serial_number=serial,
            )
        )
    fee, until = terms.sim_fee, terms.sim_fee_paid_until
    if fee is not None and until is not None and as_of is not None:
        owed = until < as_of
        lines.append(
            StatementLine(
                kind=LineKind.SIM_FEE,
                direction=Direction.BY_MERCHANT if owed else Direction.TO_MERCHANT,
                amount=_money(fee) if owed else ZERO,
                rule=_rule(
                    "sim_fee",
                    "owed" if owed else "paid",
                    serial=serial,
                    fee=_money(fee),
                    until=until,
                ),
                serial_number=serial,
            )
        )
    return lines


def _reserve_line(source: StatementInput, *, funds: Decimal) -> StatementLine | None:
    """The part of the funds paid to the merchant held back against chargebacks."""
    rate = source.reserve_rate
    if not isinstance(rate, Decimal):
        raise TypeError(f"the reserve rate is a Decimal, not {type(rate).__name__}")
    if funds <= 0 or rate <= 0 or source.as_of is None:
        return None
    amount = _round(funds * rate)
    if not amount:
        return None
    until = source.as_of + timedelta(days=source.reserve_days)
    return StatementLine(
        kind=LineKind.RESERVE,
        direction=Direction.BY_MERCHANT,
        amount=amount,
        rule=_rule(
            LineKind.RESERVE,
            "",
            # 0.10 reads "10", 0.125 "12.5" (never "1E+1").
            rate=format((rate * 100).normalize(), "f"),
            until=until,
        ),
        due_on=until,
    )


# ------------------------------------------------------------------------------
# Selector
# ------------------------------------------------------------------------------


def case_statement_input(
    *,
    case: Case,
    as_of: date | None = None,
    terminals: Iterable[Terminal] | None = None,
) -> StatementInput:
    """Read what ``case``'s statement is built from: two queries, any terminal count.

    ``as_of`` is the statement's date (today unless given): the days left of
    a fee and the reserve's release count from it. ``terminals``: the case's
    terminals when the caller already read them (full rows), saving a query.
    """
    merchant = case.merchant
    if terminals is None:
        rows = list(
            Terminal.objects.filter(case_links__case=case)
            .order_by("serial_number")
            .values("serial_number", "deposit", *MONEY_TERM_FIELDS)
        )
    else:
        rows = sorted(
            (
                {
                    name: getattr(terminal, name)
                    for name in ("serial_number", "deposit", *MONEY_TERM_FIELDS)
                }
                for terminal in terminals
            ),
            key=lambda row: row["serial_number"],
        )
    # Volume per terminal and what is still unsettled, in one grouped query.
    sums = list(
        Transaction.objects.filter(terminal__case_links__case=case)
        .values_list("terminal__serial_number")
        .annotate(
            total=Sum("amount"),
            unsettled=Sum("amount", filter=Q(settled=False)),
            unsettled_count=Count("pk", filter=Q(settled=False)),
        )
        .order_by()
    )
    volumes = {serial: total for serial, total, _unsettled, _count in sums}

    def term(row: dict, name: str):
        value = row[name]
        if value is None or value == "":
            return getattr(merchant, name)
        return value

    terminals = tuple(
        TerminalTerms(
            serial_number=row["serial_number"],
            deposit=row["deposit"],
            refund_condition=term(row, "deposit_refund_condition") or "",
            refund_volume=term(row, "deposit_refund_volume"),
            volume=volumes.get(row["serial_number"]) or ZERO,
            service_fee_annual=term(row, "service_fee_annual"),
            service_fee_paid_until=term(row, "service_fee_paid_until"),
            service_fee_prorated=bool(term(row, "service_fee_prorated")),
            sim_fee=term(row, "sim_fee"),
            sim_fee_paid_until=term(row, "sim_fee_paid_until"),
        )
        for row in rows
    )
    common = {
        "terminals": terminals,
        "fees_amount": case.fees_amount,
        "fees_text": case.fees_statement,
        "as_of": as_of or timezone.localdate(),
        "reserve_rate": settings.CHARGEBACK_RESERVE_RATE,
        "reserve_days": settings.CHARGEBACK_RESERVE_DAYS,
    }
    if case.settlement_total is not None:
        return StatementInput(
            settled_total=case.settlement_total,
            settlement_reference=case.settlement_reference,
            **common,
        )
    return StatementInput(
        unsettled_total=sum((row[2] or ZERO for row in sums), ZERO),
        unsettled_count=sum(row[3] for row in sums),
        **common,
    )


def case_statement(
    *, case: Case, terminals: Iterable[Terminal] | None = None
) -> Statement:
    """Return ``case``'s final statement as it stands now (``terminals``: as above)."""
    return statement_build(source=case_statement_input(case=case, terminals=terminals))
