"""The final statement of a case: every amount owed to or by the merchant.

``statement_build`` is a pure function of plain values (no database, no
floats): each line carries its amount as a ``Decimal`` in yuan with two
places (fen), its direction and the rule it comes from; the totals are the
sums of the lines, so a statement always balances. ``case_statement`` reads
what a case's statement is built from in a fixed number of queries, however
many terminals the case has.

Lines today:

- a deposit refund per terminal that carries a deposit in the registry
  (to the merchant);
- the unsettled funds of the case's terminals (to the merchant; by the
  merchant if refunds exceed payments). Once the execution settled them, the
  settled total is used instead of what is left unsettled (nothing);
- the fees staff stated in review, with their amount (by the merchant).

Freezing the statement at approval is a later addition: ``Statement.as_dict``
is the JSON to store (amounts as strings), and ``statement_build`` is what a
frozen version would be rebuilt and compared with.
"""

from dataclasses import dataclass, field
from decimal import Decimal

from django.db.models import Count, Sum
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from cases.connectors.local import settlement_reference
from cases.models import Case
from terminals.models import Terminal, Transaction

FEN = Decimal("0.01")
ZERO = Decimal("0.00")

# Bump when a rule changes, so that a frozen statement says which rules it used.
RULES_VERSION = 1


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

    LABELS = {
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


@dataclass(frozen=True)
class StatementLine:
    kind: str
    direction: str
    # Never negative; the direction says who owes it.
    amount: Decimal
    rule: str
    serial_number: str = ""

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
                }
                for line in self.lines
            ],
            "to_merchant": str(self.to_merchant),
            "by_merchant": str(self.by_merchant),
            "net": str(self.net),
            "notes": list(self.notes),
        }


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
    if source.settled_total is not None:
        settled = _money(source.settled_total)
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
        if unsettled or source.unsettled_count:
            lines.append(
                _signed_line(
                    LineKind.UNSETTLED_FUNDS,
                    unsettled,
                    _rule(LineKind.UNSETTLED_FUNDS, count=source.unsettled_count),
                )
            )
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


def _rule(kind: str, **params) -> str:
    """The rule's text in the active language (the page's or the e-mail's)."""
    return str(LineKind.RULES[kind]) % params


# ------------------------------------------------------------------------------
# Selector
# ------------------------------------------------------------------------------


def case_statement_input(*, case: Case) -> StatementInput:
    """Read what ``case``'s statement is built from: two queries, any terminal count."""
    deposits = tuple(
        Terminal.objects.filter(case_links__case=case)
        .order_by("serial_number")
        .values_list("serial_number", "deposit")
    )
    if case.settlement_total is not None:
        return StatementInput(
            deposits=deposits,
            settled_total=case.settlement_total,
            settlement_reference=_settlement_reference(case),
            fees_amount=case.fees_amount,
            fees_text=case.fees_statement,
        )
    unsettled = Transaction.objects.filter(
        terminal__case_links__case=case, settled=False
    ).aggregate(total=Sum("amount"), count=Count("pk"))
    return StatementInput(
        deposits=deposits,
        unsettled_total=unsettled["total"] or ZERO,
        unsettled_count=unsettled["count"],
        fees_amount=case.fees_amount,
        fees_text=case.fees_statement,
    )


def _settlement_reference(case: Case) -> str:
    return settlement_reference(case)


def case_statement(*, case: Case) -> Statement:
    """Return ``case``'s final statement as it stands now."""
    return statement_build(source=case_statement_input(case=case))
