"""Staff review in Django admin: the queue, one case, document review, the timeline.

The admin is a thin caller: every change goes through ``cases.services.review``
which locks the case, checks the role rules and writes the audit event. Cases,
documents and events are never edited through admin forms.
"""

import csv
import json
from collections.abc import Iterator
from functools import cached_property

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.functional import SimpleLazyObject
from django.utils.html import format_html
from django.utils.timesince import timesince
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from cases.admin_outbox import ExecutionStepInline, NotificationInline
from cases.models import Case, CaseEvent, CaseState, Document
from cases.selectors import (
    case_dashboard_counts,
    case_impact,
    case_list_for_staff,
    case_search_filter,
)
from cases.services.common import CaseActionError
from cases.services.review import (
    ASSIGNABLE_STATES,
    NOTE_REQUIRED,
    STAFF_TRANSITIONS,
    DocumentDecision,
    case_assign,
    case_fees_statement_set,
    case_transition,
    case_transition_check,
    case_transitions_for_user,
    document_review,
    is_case_staff,
    missing_for_recommendation,
)
from config.client_address import client_address
from terminals.masking import mask_email, mask_id_number, mask_phone

TRANSITION_LABELS = {
    "start_review": _("Start review"),
    "request_info": _("Request information"),
    "recommend": _("Recommend approval"),
    "send_back": _("Send back to review"),
    "approve": _("Approve and unbind"),
    "reject": _("Reject"),
    "retry": _("Retry execution"),
}
# What the confirmation page says will happen.
TRANSITION_EFFECTS = {
    "start_review": _(
        "The case moves to “In review” and is assigned to you. You then check "
        "each document and decide."
    ),
    "request_info": _(
        "The case moves to “Information requested”. Your note is shown to the "
        "merchant on the tracking page and e-mailed to the contact on file and "
        "the applicant. The case returns to the queue when the merchant answers."
    ),
    "recommend": _(
        "The case moves to “Awaiting approval”. An approver other than you must "
        "approve it before anything is unbound."
    ),
    "send_back": _(
        "The recommendation is withdrawn and the case goes back to “In review” "
        "for the reviewer."
    ),
    "approve": _(
        "The case is approved and the unbinding starts in the background right "
        "away: bindings checked, funds settled, history exported, terminals "
        "unbound. This cannot be undone. Read the impact below first."
    ),
    "reject": _(
        "The case is closed as rejected and its terminals become free for a new "
        "request. Your note is shown to the merchant and e-mailed. This cannot "
        "be undone."
    ),
    "retry": _(
        "The execution resumes in the background from the step that failed. "
        "Steps already done are not repeated."
    ),
}
# Visual weight of each button (CSS modifier in static/admin_cases/admin.css).
TRANSITION_STYLES = {
    "approve": "primary",
    "recommend": "primary",
    "start_review": "primary",
    "retry": "primary",
    "reject": "danger",
    "request_info": "default",
    "send_back": "default",
}


def _refused(request: HttpRequest, *, message, case: Case | None = None):
    """Answer 403 with the reason in words; nothing was changed."""
    return TemplateResponse(
        request,
        "admin/cases/refused.html",
        {
            **admin.site.each_context(request),
            "title": _("Not allowed"),
            "message": message,
            "case": case,
        },
        status=403,
    )


def _message_of(exc: PermissionDenied) -> str:
    return str(exc.args[0]) if exc.args else str(_("You are not allowed to do this."))


def _state_label(value: str) -> str:
    try:
        return str(CaseState(value).label)
    except ValueError:
        return value


def _timeline(case: Case) -> list[CaseEvent]:
    """Every event of the case, oldest first, with states and steps in words."""
    events = list(case.events.select_related("actor").order_by("created_at", "pk"))
    for event in events:
        event.from_label = _state_label(event.from_state) if event.from_state else ""
        event.to_label = _state_label(event.to_state) if event.to_state else ""
        event.transition_label = TRANSITION_LABELS.get(
            event.transition, event.transition
        )
    return events


# --- the list --------------------------------------------------------------------


class EstimatedCountPaginator(Paginator):
    """Count large lists from PostgreSQL's statistics instead of COUNT(*).

    On a table with a million rows COUNT(*) reads every matching row for
    each page view. The unfiltered list uses the table's row estimate
    (``pg_class.reltuples``, kept fresh by autovacuum); a filtered list asks
    the planner how many rows it expects (EXPLAIN, no execution). Only when
    the estimate is small is the list counted for real, which is then cheap.
    SQLite always counts. The page links are approximate for huge lists,
    which nobody pages through to the end anyway.
    """

    # Below this many rows a real count is cheap and the estimate may be stale.
    ESTIMATE_ABOVE = 10_000

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if isinstance(queryset, QuerySet):
            connection = connections[queryset.db]
            if connection.vendor == "postgresql":
                estimate = self._estimate(queryset, connection)
                if estimate is not None and estimate >= self.ESTIMATE_ABOVE:
                    return estimate
        return super().count

    @staticmethod
    def _estimate(queryset: QuerySet, connection) -> int | None:
        with connection.cursor() as cursor:
            if not queryset.query.where:
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE relname = %s",
                    [queryset.model._meta.db_table],
                )
                row = cursor.fetchone()
                return int(row[0]) if row else None
            sql, params = queryset.order_by().values("pk").query.sql_with_params()
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
            plan = cursor.fetchone()[0]
        if isinstance(plan, str):
            plan = json.loads(plan)
        return int(plan[0]["Plan"]["Plan Rows"])


class OverdueFilter(admin.SimpleListFilter):
    title = _("review due")
    parameter_name = "overdue"

    def lookups(self, request, model_admin):
        return [("yes", _("Overdue"))]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.overdue()
        return queryset


class AssigneeFilter(admin.SimpleListFilter):
    title = _("assigned to")
    parameter_name = "assignee"

    def lookups(self, request, model_admin):
        return [("me", _("Assigned to me")), ("none", _("Unassigned"))]

    def queryset(self, request, queryset):
        if self.value() == "me":
            return queryset.filter(assigned_to=request.user)
        if self.value() == "none":
            return queryset.filter(assigned_to__isnull=True)
        return queryset


class ReplacementFilter(admin.SimpleListFilter):
    title = _("replacement device")
    parameter_name = "replacement"

    def lookups(self, request, model_admin):
        return [("yes", _("With replacement")), ("no", _("Without replacement"))]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(replacement_terminal__isnull=False)
        if self.value() == "no":
            return queryset.filter(replacement_terminal__isnull=True)
        return queryset


# --- forms -----------------------------------------------------------------------


class TransitionForm(forms.Form):
    note = forms.CharField(
        label=_("Note"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 5, "cols": 80}),
        max_length=5000,
    )

    def __init__(self, *args, name: str, **kwargs):
        super().__init__(*args, **kwargs)
        note = self.fields["note"]
        if name in NOTE_REQUIRED:
            note.required = True
            note.label = _("Message to the merchant")
            note.help_text = _(
                "Required. Shown on the tracking page and e-mailed to the merchant."
            )
        else:
            note.help_text = _("Optional. Staff only; the merchant never sees it.")


class DocumentReviewForm(forms.Form):
    decision = forms.ChoiceField(choices=DocumentDecision.CHOICES)
    note = forms.CharField(required=False, max_length=2000)


class FeesForm(forms.Form):
    fees_statement = forms.CharField(
        label=_("Fees stated to the merchant"),
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
    )
    fees_amount = forms.DecimalField(
        label=_("Fees amount (CNY)"),
        required=False,
        min_value=0,
        max_digits=12,
        decimal_places=2,
        help_text=_("Owed by the merchant; a line of the final statement."),
    )


# --- CSV export --------------------------------------------------------------------


class _Echo:
    def write(self, value: str) -> str:
        return value


def _csv_safe(value) -> str:
    """Keep spreadsheet programs from running a cell as a formula."""
    text = "" if value is None else str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def _format_dt(value) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M") if value else ""


CSV_HEADER = [
    _("reference"),
    _("state"),
    _("reason"),
    _("merchant number"),
    _("merchant"),
    _("applicant"),
    _("applicant mobile"),
    _("applicant e-mail"),
    _("terminals"),
    _("close the merchant account"),
    _("replacement device"),
    _("assigned to"),
    _("submitted at"),
    _("review due"),
    _("closed at"),
]


def _csv_rows(queryset) -> Iterator[list[str]]:
    yield [str(h) for h in CSV_HEADER]
    queryset = queryset.select_related(
        "merchant", "assigned_to", "replacement_terminal"
    ).prefetch_related("case_terminals__terminal")
    for case in queryset.iterator(chunk_size=500):
        serials = " ".join(
            sorted(link.terminal.serial_number for link in case.case_terminals.all())
        )
        yield [
            _csv_safe(v)
            for v in (
                case.reference,
                case.get_state_display(),
                case.get_reason_display(),
                case.merchant.merchant_id,
                case.merchant.name,
                case.applicant_name,
                mask_phone(case.applicant_phone),
                mask_email(case.applicant_email),
                serials,
                _("yes") if case.close_account else _("no"),
                case.replacement_terminal.serial_number
                if case.replacement_terminal
                else "",
                case.assigned_to.get_username() if case.assigned_to else "",
                _format_dt(case.submitted_at),
                _format_dt(case.review_due_at),
                _format_dt(case.closed_at),
            )
        ]


def case_csv_response(queryset) -> StreamingHttpResponse:
    """Stream ``queryset`` as CSV with personal data masked.

    Starts with a UTF-8 byte order mark so that Excel reads Chinese names
    correctly.
    """
    writer = csv.writer(_Echo())

    def stream() -> Iterator[str]:
        yield "\ufeff"
        for row in _csv_rows(queryset):
            yield writer.writerow(row)

    filename = f"cases-{timezone.localtime():%Y%m%d-%H%M}.csv"
    response = StreamingHttpResponse(stream(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


# --- Case ---------------------------------------------------------------------------


@admin.register(Case)
class CaseAdmin(admin.ModelAdmin):
    # The due date comes second: it is the sort order and what a reviewer
    # scans for first.
    list_display = (
        "reference_display",
        "review_due",
        "state_badge",
        "merchant_display",
        "reason",
        "terminal_count_display",
        "assigned_to",
        "age",
    )
    list_display_links = ("reference_display",)
    list_filter = (
        "state",
        "reason",
        OverdueFilter,
        AssigneeFilter,
        "close_account",
        ReplacementFilter,
    )
    search_fields = ("reference",)  # handled by get_search_results
    search_help_text = _(
        "Exact reference, merchant number, merchant name (start of it) or "
        "terminal serial number."
    )
    list_select_related = ("merchant", "assigned_to")
    ordering = ("review_due_at", "pk")
    list_per_page = 50
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    actions = ("assign_to_me", "export_csv")
    inlines = (ExecutionStepInline, NotificationInline)
    change_form_template = "admin/cases/case/change_form.html"

    fieldsets = (
        (
            _("Request"),
            {
                "fields": (
                    "reference",
                    "state_badge",
                    "reason",
                    "reason_detail",
                    "close_account",
                    "replacement_terminal",
                    "language",
                )
            },
        ),
        (
            _("Merchant"),
            {
                "fields": (
                    "merchant_display",
                    "uscc",
                    "uscc_matches",
                    "legal_rep_name",
                    "legal_rep_id_masked",
                    "settlement_card_masked",
                    "contact_on_file",
                )
            },
        ),
        (
            _("Applicant"),
            {
                "fields": (
                    "applicant_name",
                    "applicant_is_legal_rep",
                    "applicant_phone",
                    "applicant_email",
                    "client_ip",
                )
            },
        ),
        (
            _("Review"),
            {
                "fields": (
                    "assigned_to",
                    "recommended_by",
                    "approved_by",
                    "fees_statement",
                    "decision_note",
                    "failure_step",
                    "failure_reason",
                )
            },
        ),
        (
            _("Dates"),
            {
                "fields": (
                    "created_at",
                    "submitted_at",
                    "review_due",
                    "approved_at",
                    "closed_at",
                )
            },
        ),
    )

    class Media:
        css = {"all": ("admin_cases/admin.css",)}

    # --- permissions: read-only model, changes only through the services -------

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_review_permission(self, request) -> bool:
        return is_case_staff(request.user)

    def get_readonly_fields(self, request, obj=None):
        return [f for _name, opts in self.fieldsets for f in opts["fields"]]

    # --- queryset and search ---------------------------------------------------

    def get_queryset(self, request):
        return case_list_for_staff(user=request.user)

    def get_search_results(self, request, queryset, search_term):
        if not search_term.strip():
            return queryset, False
        return queryset.filter(case_search_filter(term=search_term)), False

    # --- list columns ------------------------------------------------------------

    @admin.display(description=_("reference"), ordering="reference")
    def reference_display(self, obj: Case) -> str:
        return obj.reference or f"#{obj.pk}"

    @admin.display(description=_("merchant"), ordering="merchant__merchant_id")
    def merchant_display(self, obj: Case) -> str:
        return f"{obj.merchant.merchant_id} {obj.merchant.name}"

    @admin.display(description=_("state"), ordering="state")
    def state_badge(self, obj: Case):
        return format_html(
            '<span class="case-badge case-badge--{}">{}</span>',
            obj.state,
            obj.get_state_display(),
        )

    @admin.display(description=_("terminals"))
    def terminal_count_display(self, obj: Case) -> int:
        count = getattr(obj, "terminal_count", None)
        return obj.case_terminals.count() if count is None else count

    @admin.display(description=_("age"), ordering="submitted_at")
    def age(self, obj: Case) -> str:
        since = obj.submitted_at or obj.created_at
        return timesince(since, depth=1) if since else ""

    @admin.display(description=_("review due"), ordering="review_due_at")
    def review_due(self, obj: Case):
        if not obj.review_due_at:
            return "—"
        text = _format_dt(obj.review_due_at)
        if obj.is_overdue:
            return format_html(
                '<span class="case-overdue">{} · {}</span>', text, _("overdue")
            )
        return text

    # --- detail fields (masked) ----------------------------------------------------

    @admin.display(description=_("legal representative ID number"))
    def legal_rep_id_masked(self, obj: Case) -> str:
        return mask_id_number(obj.merchant.legal_rep_id_number)

    @admin.display(description=_("settlement bank card"))
    def settlement_card_masked(self, obj: Case) -> str:
        return obj.merchant.masked_settlement_card_number or "—"

    @admin.display(description=_("credit code matches the registry"), boolean=True)
    def uscc_matches(self, obj: Case) -> bool:
        return (obj.uscc or "").upper() == (obj.merchant.uscc or "").upper()

    @admin.display(description=_("contact on file"))
    def contact_on_file(self, obj: Case) -> str:
        return f"{obj.merchant.contact_email} · {obj.merchant.contact_phone}"

    # --- actions -------------------------------------------------------------------

    @admin.action(description=_("Assign to me"), permissions=["review"])
    def assign_to_me(self, request, queryset):
        done, refused = 0, []
        for case_id, reference in queryset.values_list("pk", "reference"):
            try:
                case_assign(case_id=case_id, actor=request.user, assignee=request.user)
            except (CaseActionError, PermissionDenied) as exc:
                reason = getattr(exc, "message", None) or _message_of(exc)
                refused.append(f"{reference}: {reason}")
            else:
                done += 1
        if done:
            self.message_user(
                request,
                _("%(count)d case(s) assigned to you.") % {"count": done},
                messages.SUCCESS,
            )
        if refused:
            self.message_user(
                request,
                _("Not assigned: %(list)s") % {"list": "; ".join(refused)},
                messages.WARNING,
            )

    @admin.action(description=_("Export selection as CSV"), permissions=["view"])
    def export_csv(self, request, queryset):
        return case_csv_response(queryset.order_by("review_due_at", "pk"))

    # --- the change page -------------------------------------------------------------

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/transition/<str:name>/",
                wrap(self.transition_view),
                name="cases_case_transition",
            ),
            path(
                "<path:object_id>/assign/",
                wrap(self.assign_view),
                name="cases_case_assign",
            ),
            path(
                "<path:object_id>/fees/",
                wrap(self.fees_view),
                name="cases_case_fees",
            ),
            *super().get_urls(),
        ]

    def _change_url(self, case_id) -> str:
        return reverse("admin:cases_case_change", args=[case_id])

    def _case_or_404(self, request, object_id) -> Case:
        case = self.get_object(request, object_id)
        if case is None:
            raise Http404
        if not self.has_view_permission(request, case):
            raise PermissionDenied
        return case

    def change_view(self, request, object_id, form_url="", extra_context=None):
        case = self.get_object(request, object_id)
        extra = {}
        if case is not None and self.has_view_permission(request, case):
            extra = self._case_context(request, case)
        return super().change_view(
            request,
            object_id,
            form_url,
            extra_context={**extra, **(extra_context or {})},
        )

    def _case_context(self, request, case: Case) -> dict:
        user = request.user
        transitions = [
            {
                "name": name,
                "label": TRANSITION_LABELS[name],
                "style": TRANSITION_STYLES[name],
                "url": reverse("admin:cases_case_transition", args=[case.pk, name]),
            }
            for name in case_transitions_for_user(case=case, user=user)
        ]
        may_work = is_case_staff(user)
        # What stands between the assignee and "Recommend approval", as a list.
        recommend_missing = (
            missing_for_recommendation(case)
            if may_work
            and case.state == CaseState.IN_REVIEW
            and case.assigned_to_id == user.pk
            else []
        )
        documents = list(
            case.documents.select_related("reviewed_by").order_by("kind", "pk")
        )
        required = set(case.required_document_kinds())
        present = {d.kind for d in documents}
        return {
            "case": case,
            "transitions": transitions,
            "recommend_missing": recommend_missing,
            "can_assign": may_work
            and case.state in ASSIGNABLE_STATES
            and case.assigned_to_id != user.pk,
            "assign_url": reverse("admin:cases_case_assign", args=[case.pk]),
            "can_review_documents": may_work
            and case.state == CaseState.IN_REVIEW
            and case.assigned_to_id == user.pk,
            "can_download": user.has_perm("cases.view_document"),
            "documents": documents,
            "missing_kinds": [
                Document.Kind(k).label for k in sorted(required - present)
            ],
            "required_kinds": required,
            "impact": case_impact(case=case),
            "timeline": _timeline(case),
            "fees_form": FeesForm(
                initial={
                    "fees_statement": case.fees_statement,
                    "fees_amount": case.fees_amount,
                }
            ),
            "fees_url": reverse("admin:cases_case_fees", args=[case.pk]),
            "can_state_fees": may_work
            and case.state == CaseState.IN_REVIEW
            and case.assigned_to_id == user.pk,
        }

    def transition_view(self, request, object_id, name):
        """GET: say what ``name`` will do; POST: do it through the service."""
        case = self._case_or_404(request, object_id)
        if name not in STAFF_TRANSITIONS:
            raise Http404
        change_url = self._change_url(case.pk)
        try:
            case_transition_check(case=case, name=name, actor=request.user)
        except PermissionDenied as exc:
            return _refused(request, message=_message_of(exc), case=case)
        except CaseActionError as exc:
            messages.error(request, exc.message)
            return HttpResponseRedirect(change_url)

        if request.method == "POST":
            form = TransitionForm(request.POST, name=name)
            if form.is_valid():
                try:
                    case_transition(
                        case_id=case.pk,
                        name=name,
                        actor=request.user,
                        note=form.cleaned_data["note"],
                        client_ip=client_address(request),
                    )
                except PermissionDenied as exc:
                    return _refused(request, message=_message_of(exc), case=case)
                except CaseActionError as exc:
                    messages.error(request, exc.message)
                    return HttpResponseRedirect(change_url)
                messages.success(
                    request,
                    _("%(action)s: done for %(case)s.")
                    % {"action": TRANSITION_LABELS[name], "case": case},
                )
                return HttpResponseRedirect(change_url)
        else:
            form = TransitionForm(name=name)

        target = getattr(case, name)._django_fsm.get_transition(case.state).target
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "target": target,
            "target_label": CaseState(target).label,
            "title": _("%(action)s — %(case)s")
            % {"action": TRANSITION_LABELS[name], "case": case},
            "case": case,
            "name": name,
            "label": TRANSITION_LABELS[name],
            "effect": TRANSITION_EFFECTS[name],
            "style": TRANSITION_STYLES[name],
            "irreversible": name in ("approve", "reject"),
            "form": form,
            "impact": case_impact(case=case) if name in ("approve", "retry") else None,
            "change_url": change_url,
            "media": self.media,
        }
        return TemplateResponse(
            request, "admin/cases/case/transition_confirm.html", context
        )

    def assign_view(self, request, object_id):
        """POST: assign the case to the current user (take it over)."""
        if request.method != "POST":
            return HttpResponse(status=405, headers={"Allow": "POST"})
        case = self._case_or_404(request, object_id)
        try:
            case_assign(case_id=case.pk, actor=request.user, assignee=request.user)
        except PermissionDenied as exc:
            return _refused(request, message=_message_of(exc), case=case)
        except CaseActionError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, _("The case is assigned to you."))
        return HttpResponseRedirect(self._change_url(case.pk))

    def fees_view(self, request, object_id):
        """POST: state the fees to the merchant."""
        if request.method != "POST":
            return HttpResponse(status=405, headers={"Allow": "POST"})
        case = self._case_or_404(request, object_id)
        form = FeesForm(request.POST)
        if not form.is_valid():
            messages.error(
                request,
                _("The fees amount is a number of yuan with at most two decimals.")
                if "fees_amount" in form.errors
                else _("The fees statement is too long."),
            )
            return HttpResponseRedirect(self._change_url(case.pk))
        try:
            case_fees_statement_set(
                case_id=case.pk,
                actor=request.user,
                text=form.cleaned_data["fees_statement"],
                amount=form.cleaned_data["fees_amount"],
            )
        except PermissionDenied as exc:
            return _refused(request, message=_message_of(exc), case=case)
        except CaseActionError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, _("The fees statement is saved."))
        return HttpResponseRedirect(self._change_url(case.pk))


# --- Document -------------------------------------------------------------------------


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = (
        "original_name",
        "kind",
        "case",
        "review_status",
        "size",
        "uploaded_at",
        "purged_at",
    )
    list_filter = ("review_status", "kind")
    list_select_related = ("case",)
    search_fields = ("case__reference",)
    show_full_result_count = False
    readonly_fields = (
        "case",
        "kind",
        "original_name",
        "content_type",
        "size",
        "sha256",
        "review_status",
        "review_note",
        "reviewed_by",
        "reviewed_at",
        "uploaded_at",
        "purged_at",
        "download_link",
    )
    fields = readonly_fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(case__reference=term.upper()), False

    @admin.display(description=_("file"))
    def download_link(self, obj: Document):
        if obj.purged_at or not obj.file:
            return _("purged at the end of the retention period")
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:cases_document_download", args=[obj.pk]),
            _("Download"),
        )

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/review/",
                wrap(require_POST(self.review_view)),
                name="cases_document_review",
            ),
            path(
                "<path:object_id>/download/",
                wrap(self.download_view),
                name="cases_document_download",
            ),
            *super().get_urls(),
        ]

    def review_view(self, request, object_id):
        """POST decision=accept|reject and note: record the review, back to the case."""
        document = get_object_or_404(Document, pk=object_id)
        back = reverse("admin:cases_case_change", args=[document.case_id])
        form = DocumentReviewForm(request.POST)
        if not form.is_valid():
            messages.error(request, _("Choose accept or reject."))
            return HttpResponseRedirect(back + "#documents")
        try:
            document_review(
                document_id=document.pk,
                decision=form.cleaned_data["decision"],
                note=form.cleaned_data["note"],
                actor=request.user,
            )
        except PermissionDenied as exc:
            return _refused(request, message=_message_of(exc), case=document.case)
        except CaseActionError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(
                request,
                _("“%(name)s”: %(decision)s.")
                % {
                    "name": document.original_name,
                    "decision": dict(DocumentDecision.CHOICES)[
                        form.cleaned_data["decision"]
                    ],
                },
            )
        return HttpResponseRedirect(back + "#documents")

    def download_view(self, request, object_id):
        """Hand out the stored file to staff allowed to view documents.

        An attachment by default; ``?inline=1`` shows an image in the page.
        Never a public URL: MEDIA_ROOT is not served.
        """
        if not request.user.has_perm("cases.view_document"):
            raise PermissionDenied
        document = get_object_or_404(Document, pk=object_id)
        if document.purged_at or not document.file:
            return _gone(request)
        try:
            handle = document.file.open("rb")
        except FileNotFoundError:
            return _gone(request)
        inline = request.GET.get("inline") == "1" and document.is_image
        response = FileResponse(
            handle,
            as_attachment=not inline,
            filename=document.original_name,
            content_type=document.content_type or "application/octet-stream",
        )
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = "default-src 'none'; sandbox"
        response["Cache-Control"] = "private, no-store"
        return response


def _gone(request):
    return TemplateResponse(
        request,
        "admin/cases/refused.html",
        {
            **admin.site.each_context(request),
            "title": _("Document no longer stored"),
            "message": _(
                "This document was deleted at the end of the retention period."
            ),
        },
        status=410,
    )


# --- CaseEvent ------------------------------------------------------------------------


@admin.register(CaseEvent)
class CaseEventAdmin(admin.ModelAdmin):
    """The audit trail: readable, never added to, changed or deleted here."""

    list_display = (
        "created_at",
        "case",
        "type",
        "transition",
        "from_state_label",
        "to_state_label",
        "actor_label",
        "visible_to_merchant",
    )
    list_filter = ("type", "actor_kind", "visible_to_merchant")

    @admin.display(description=_("from"), ordering="from_state")
    def from_state_label(self, event):
        return _state_label(event.from_state) if event.from_state else ""

    @admin.display(description=_("to"), ordering="to_state")
    def to_state_label(self, event):
        return _state_label(event.to_state) if event.to_state else ""

    list_select_related = ("case",)
    search_fields = ("case__reference",)
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    ordering = ("-created_at", "-pk")
    readonly_fields = (
        "case",
        "type",
        "actor_kind",
        "actor",
        "actor_label",
        "from_state",
        "to_state",
        "transition",
        "note",
        "payload",
        "visible_to_merchant",
        "client_ip",
        "created_at",
    )
    fields = readonly_fields

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(case__reference=term.upper()), False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


# --- the staff dashboard on the admin index ------------------------------------------

_each_context = admin.site.each_context


def _each_context_with_dashboard(request):
    """Add the case dashboard, computed only if a template reads it (the index)."""
    context = _each_context(request)
    user = getattr(request, "user", None)
    if user is not None and user.is_active and user.has_perm("cases.view_case"):
        context["case_dashboard"] = SimpleLazyObject(
            lambda: case_dashboard_counts(user=user)
        )
    return context


admin.site.each_context = _each_context_with_dashboard

from cases import admin_outbox  # noqa: E402,F401
