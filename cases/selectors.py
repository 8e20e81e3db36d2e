"""Reads for the staff side: the case queue, the dashboard and a case's impact."""

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.core.cache import cache
from django.db.models import (
    Count,
    F,
    IntegerField,
    OuterRef,
    Prefetch,
    Q,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from cases import roles
from cases.actions import STAFF_ACTIONS, StaffAction
from cases.models import (
    ASSIGNABLE_STATES,
    CLOSED_STATES,
    Case,
    CaseEvent,
    CaseState,
    CaseTerminal,
    DeviceReturn,
    Document,
)
from cases.services.review import case_transitions_for_user
from terminals.masking import mask_email, mask_phone
from terminals.models import Binding, Merchant, Terminal, Transaction
from terminals.validators import normalise_serial_number


def _terminal_count_subquery() -> Subquery:
    # A correlated subquery rather than Count() with GROUP BY: the database
    # evaluates it only for the rows of the page, not for the whole table.
    return Coalesce(
        Subquery(
            CaseTerminal.objects.filter(case=OuterRef("pk"))
            .order_by()
            .values("case")
            .annotate(n=Count("pk"))
            .values("n"),
            output_field=IntegerField(),
        ),
        Value(0),
    )


def case_list_for_staff(
    *,
    user=None,
    state: str | None = None,
    overdue: bool = False,
    assigned_to_me: bool = False,
    unassigned: bool = False,
    now=None,
):
    """Return the staff queue: cases with merchant and assignee joined and the
    number of terminals annotated, ordered by review due date."""
    queryset = (
        Case.objects.select_related("merchant", "assigned_to")
        .annotate(terminal_count=_terminal_count_subquery())
        .order_by("review_due_at", "pk")
    )
    if state:
        queryset = queryset.filter(state=state)
    if overdue:
        queryset = queryset.overdue(now=now)
    if assigned_to_me and user is not None:
        queryset = queryset.filter(assigned_to=user)
    if unassigned:
        queryset = queryset.filter(assigned_to__isnull=True)
    return queryset


DASHBOARD_CACHE_KEY = "cases:dashboard:state-counts"
DASHBOARD_CACHE_SECONDS = 60


@dataclass
class DashboardCounts:
    per_state: list[tuple[str, str, int]]
    overdue: int
    my_queue: int
    unassigned: int
    completed_this_week: int
    total_open: int


def case_dashboard_counts(*, user, now=None) -> DashboardCounts:
    """Count cases per state, overdue, in the user's queue and completed this week.

    Per-state and overdue counts are cached for a minute and shared by all
    staff; "my queue" and "completed this week" are counted live on indexes.
    """
    now = now or timezone.now()
    by_state, overdue = cache.get(DASHBOARD_CACHE_KEY) or (None, None)
    if by_state is None:
        # Counting a million rows per state takes a moment: share the result
        # between staff for a minute. The user's own numbers stay live.
        by_state = dict(
            Case.objects.order_by()
            .values_list("state")
            .annotate(n=Count("pk"))
            .values_list("state", "n")
        )
        overdue = Case.objects.overdue(now=now).count()
        cache.set(DASHBOARD_CACHE_KEY, (by_state, overdue), DASHBOARD_CACHE_SECONDS)
    per_state = [
        (value, str(label), by_state.get(value, 0))
        for value, label in CaseState.choices
    ]
    local_now = timezone.localtime(now)
    week_start = (local_now - timedelta(days=local_now.weekday())).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    my_queue = (
        Case.objects.filter(assigned_to=user).exclude(state__in=CLOSED_STATES).count()
        if user is not None and user.is_authenticated
        else 0
    )
    completed_this_week = Case.objects.filter(
        state=CaseState.COMPLETED, closed_at__gte=week_start
    ).count()
    unassigned = by_state.get(CaseState.SUBMITTED, 0)
    total_open = sum(n for value, n in by_state.items() if value not in CLOSED_STATES)
    return DashboardCounts(
        per_state=per_state,
        overdue=overdue,
        my_queue=my_queue,
        unassigned=unassigned,
        completed_this_week=completed_this_week,
        total_open=total_open,
    )


@dataclass
class TerminalImpact:
    terminal: Terminal
    binding: Binding | None
    # True when the terminal is bound to the case's merchant right now.
    bound_to_merchant: bool
    unsettled_count: int = 0
    unsettled_total: Decimal = Decimal("0.00")


@dataclass
class CaseImpact:
    terminals: list[TerminalImpact] = field(default_factory=list)
    unsettled_count: int = 0
    unsettled_total: Decimal = Decimal("0.00")
    close_account: bool = False
    # Terminals of the merchant bound now but not named in the case; closing
    # the account leaves them without a merchant.
    other_bound_count: int = 0
    replacement: Terminal | None = None
    replacement_binding: Binding | None = None

    @property
    def problems(self) -> list[str]:
        return [
            t.terminal.serial_number for t in self.terminals if not t.bound_to_merchant
        ]


def case_impact(*, case: Case) -> CaseImpact:
    """Describe what approving ``case`` will do: the consequences step.

    Which terminals will be unbound (with their current binding), the
    unsettled transactions settled first (counted and summed by the database),
    whether the account is closed, and the replacement device.
    """
    terminals = list(
        Terminal.objects.filter(case_links__case=case).order_by("serial_number")
    )
    terminal_ids = [t.pk for t in terminals]
    bindings = {
        b.terminal_id: b
        for b in Binding.objects.active()
        .filter(terminal_id__in=terminal_ids)
        .select_related("merchant")
    }
    unsettled = {
        row["terminal_id"]: row
        for row in Transaction.objects.filter(
            terminal_id__in=terminal_ids, settled=False
        )
        .order_by()
        .values("terminal_id")
        .annotate(n=Count("pk"), total=Sum("amount"))
    }
    impact = CaseImpact(close_account=case.close_account)
    for terminal in terminals:
        binding = bindings.get(terminal.pk)
        row = unsettled.get(terminal.pk, {})
        item = TerminalImpact(
            terminal=terminal,
            binding=binding,
            bound_to_merchant=binding is not None
            and binding.merchant_id == case.merchant_id,
            unsettled_count=row.get("n", 0),
            unsettled_total=row.get("total") or Decimal("0.00"),
        )
        impact.terminals.append(item)
        impact.unsettled_count += item.unsettled_count
        impact.unsettled_total += item.unsettled_total
    if case.close_account:
        impact.other_bound_count = (
            Binding.objects.active()
            .filter(merchant_id=case.merchant_id)
            .exclude(terminal_id__in=terminal_ids)
            .count()
        )
    if case.replacement_terminal_id:
        impact.replacement = case.replacement_terminal
        impact.replacement_binding = (
            Binding.objects.active()
            .filter(terminal_id=case.replacement_terminal_id)
            .select_related("merchant")
            .first()
        )
    return impact


# At most this many merchants or cases come from one search branch; a term
# that matches more is too vague to be useful in a queue anyway.
SEARCH_BRANCH_LIMIT = 500


def case_search_filter(*, term: str) -> Q:
    """Return a filter for cases whose reference, merchant number, merchant name
    (prefix) or terminal serial number matches ``term``.

    Each branch is an exact or prefix lookup on a unique or indexed column,
    resolved to a short list of ids first, so the final query is an OR of
    index lookups on the case table rather than LIKE over joins.
    """
    term = term.strip()
    if not term:
        return Q()
    conditions = Q(reference=term.upper())
    if term.isdigit():
        merchants = (
            Merchant.objects.filter(merchant_id=term)
            if len(term) == 15
            else Merchant.objects.filter(merchant_id__startswith=term)
        )
    else:
        merchants = Merchant.objects.filter(name__startswith=term)
    merchant_ids = list(
        merchants.order_by().values_list("pk", flat=True)[:SEARCH_BRANCH_LIMIT]
    )
    if merchant_ids:
        # Resolve to case ids first: an OR over merchant_id makes the planner
        # walk the due-date index and discard most rows; a lookup by merchant
        # then a sort of the few matches is cheap (figures: docs/benchmarks.md).
        merchant_case_ids = list(
            Case.objects.filter(merchant_id__in=merchant_ids)
            .order_by("review_due_at", "pk")
            .values_list("pk", flat=True)[:SEARCH_BRANCH_LIMIT]
        )
        if merchant_case_ids:
            conditions |= Q(pk__in=merchant_case_ids)
    if not term.isdigit():
        case_ids = list(
            CaseTerminal.objects.filter(
                terminal__serial_number=normalise_serial_number(term)
            )
            .order_by()
            .values_list("case_id", flat=True)[:SEARCH_BRANCH_LIMIT]
        )
        if case_ids:
            conditions |= Q(pk__in=case_ids)
    return conditions


@dataclass(frozen=True)
class CaseActions:
    """What one staff user may do on one case now: what a staff page needs."""

    # The staff actions allowed now, in button order (``cases.actions``).
    actions: list[StaffAction]
    can_assign: bool
    can_review_documents: bool
    can_state_fees: bool
    # What stands between the assignee and "Recommend approval", in words.
    missing_for_recommendation: list[str]
    # Required document kinds with no document at all, in words.
    missing_kinds: list[str]


def case_actions_for_user(*, case: Case, user) -> CaseActions:
    """Return what ``user`` may do on ``case`` now, by the rules of the services."""
    may_work = roles.is_case_staff(user)
    works_on_it = (
        may_work
        and case.state == CaseState.IN_REVIEW
        and case.assigned_to_id == user.pk
    )
    required = set(case.required_document_kinds())
    present = {d.kind for d in case.documents.all()}
    return CaseActions(
        actions=[
            STAFF_ACTIONS[name]
            for name in case_transitions_for_user(case=case, user=user)
        ],
        can_assign=may_work
        and case.state in ASSIGNABLE_STATES
        and case.assigned_to_id != user.pk,
        can_review_documents=works_on_it,
        can_state_fees=works_on_it,
        missing_for_recommendation=case.missing_for_recommendation()
        if works_on_it
        else [],
        missing_kinds=[Document.Kind(k).label for k in sorted(required - present)],
    )


def case_get_by_token(*, token: str) -> Case | None:
    """Return the case whose tracking token is ``token``, with its merchant, or None."""
    return Case.objects.select_related("merchant").by_token(token).first()


def case_code_resend_wait_seconds(*, case: Case) -> int:
    """Return how many seconds the merchant waits before a new code may be sent."""
    if not case.code_sent_at:
        return 0
    left = (
        case.code_sent_at + settings.CASE_VERIFICATION_RESEND_INTERVAL - timezone.now()
    )
    return max(0, int(left / timedelta(seconds=1)))


def device_returns_for_case(*, case: Case) -> list[DeviceReturn]:
    """The devices the case unbound and their way back, by serial number."""
    return list(
        DeviceReturn.objects.filter(case=case)
        .select_related("terminal", "police_report")
        .order_by("terminal__serial_number")
    )


def device_return_of_case(*, case: Case, return_id: int) -> DeviceReturn | None:
    """The return ``return_id`` if it belongs to ``case``, else None."""
    return DeviceReturn.objects.filter(case=case, pk=return_id).first()


@dataclass(frozen=True)
class MerchantOverview:
    """What a signed-in merchant sees on the merchant page."""

    merchant: Merchant
    bindings: list
    cases: list
    contact_phone_masked: str
    contact_email_masked: str


def merchant_overview(*, merchant: Merchant) -> MerchantOverview:
    """The merchant's bindings (current first, then ended) and cases, newest
    first, each with its devices on their way back."""
    bindings = list(
        Binding.objects.filter(merchant=merchant)
        .select_related("terminal")
        .order_by(F("ended_at").desc(nulls_first=True), "-started_at", "pk")
    )
    cases = list(
        Case.objects.filter(merchant=merchant)
        .exclude(state=CaseState.PENDING_VERIFICATION)
        .prefetch_related(
            "case_terminals__terminal",
            Prefetch(
                "device_returns",
                queryset=DeviceReturn.objects.select_related("terminal").order_by(
                    "terminal__serial_number"
                ),
            ),
        )
        .order_by("-created_at", "-pk")
    )
    return MerchantOverview(
        merchant=merchant,
        bindings=bindings,
        cases=cases,
        contact_phone_masked=mask_phone(merchant.contact_phone or ""),
        contact_email_masked=mask_email(merchant.contact_email or ""),
    )


@dataclass(frozen=True)
class CaseIdentity:
    """How a case reached us and how the merchant's identity was checked."""

    channel: str
    channel_label: str
    filed_by: str
    checks: list  # CaseEvent rows of IDENTITY_CHECKED, oldest first
    evidence: list  # Document rows of kind IDENTITY_CHECK


def case_identity(*, case: Case) -> CaseIdentity:
    """What the approver reads about the filing and the identity check of ``case``."""
    return CaseIdentity(
        channel=case.channel,
        channel_label=str(case.get_channel_display()),
        filed_by=case.filed_by.get_username() if case.filed_by_id else "",
        checks=_prefetched(
            case, "events", lambda e: e.type == CaseEvent.Type.IDENTITY_CHECKED
        )
        if _is_prefetched(case, "events")
        else list(
            CaseEvent.objects.filter(
                case=case, type=CaseEvent.Type.IDENTITY_CHECKED
            ).order_by("created_at", "pk")
        ),
        evidence=_prefetched(
            case, "documents", lambda d: d.kind == Document.Kind.IDENTITY_CHECK
        )
        if _is_prefetched(case, "documents")
        else list(
            Document.objects.filter(case=case, kind=Document.Kind.IDENTITY_CHECK)
        ),
    )


def _is_prefetched(case: Case, relation: str) -> bool:
    return relation in getattr(case, "_prefetched_objects_cache", {})


def _prefetched(case: Case, relation: str, keep) -> list:
    """The rows of ``relation`` the case page prefetched (in its order) that ``keep``."""
    return [row for row in getattr(case, relation).all() if keep(row)]
