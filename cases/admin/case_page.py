"""The case page: fields, the staff transitions, assignment and fees."""

from functools import partial

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.templatetags.admin_list import result_headers
from django.core.exceptions import PermissionDenied
from django.db.models import Prefetch, prefetch_related_objects
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import mark_safe
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from cases import roles
from cases.actions import STAFF_ACTIONS
from cases.admin import filing
from cases.admin.common import (
    exception_message,
    reason_short_label,
    refused_response,
    service_answer,
    state_label,
)
from cases.admin.export import case_csv_response
from cases.admin.outbox import ExecutionStepInline, NotificationInline
from cases.admin.queue import (
    AssigneeFilter,
    EstimatedCountPaginator,
    OverdueFilter,
    QueueChangeList,
    ReplacementFilter,
    filter_column,
    queue_rows,
)
from cases.models import Case, CaseEvent, CaseState, Document
from cases.selectors import (
    case_actions_for_user,
    case_impact,
    case_list_for_staff,
    case_search_filter,
)
from cases.services.chains import case_abandon_summary, case_terminal_progress
from cases.services.common import CaseActionError
from cases.services.previews import document_preview_for_page
from cases.services.review import (
    case_assign,
    case_fees_statement_set,
    case_transition,
    case_transition_check,
)
from config.admin_site import ReadOnlyAdminMixin
from config.client_address import client_address
from terminals.masking import mask_id_number


def _timeline(case: Case) -> list[CaseEvent]:
    """Every event of the case, oldest first, with states and steps in words."""
    events = list(case.events.all())  # prefetched in order (_case_prefetch)
    for event in events:
        event.from_label = state_label(event.from_state) if event.from_state else ""
        event.to_label = state_label(event.to_state) if event.to_state else ""
        action = STAFF_ACTIONS.get(event.transition)
        event.transition_label = action.label if action else event.transition
    return events


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
        if STAFF_ACTIONS[name].note_required:
            note.required = True
            note.label = _("Message to the merchant")
            note.help_text = _(
                "Required. Shown on the tracking page and e-mailed to the merchant."
            )
        else:
            note.help_text = _("Optional. Staff only; the merchant never sees it.")


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


@admin.register(Case)
class CaseAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    # The due date comes second: it is the sort order and what a reviewer
    # scans for first.
    list_display = (
        "reference_display",
        "review_due",
        "state_badge",
        "merchant_display",
        "reason_short",
        "terminal_count_display",
        "assignee_display",
    )
    list_display_links = ("reference_display",)
    list_filter = (
        "state",
        "reason",
        OverdueFilter,
        AssigneeFilter,
        "close_account",
        ReplacementFilter,
        "channel",
    )
    search_fields = ("reference",)  # handled by get_search_results
    search_help_text = _(
        "Exact reference, merchant number, merchant name (start of it) or "
        "terminal serial number."
    )
    list_select_related = ("merchant", "assigned_to")
    ordering = ("review_due_at", "pk")
    # Two screens of work: a reviewer with forty cases sees the most urgent
    # first (the due date is the order) and pages on; the rows are rendered by
    # queue_rows (cases/admin/queue.py), not cell by cell by the admin.
    list_per_page = 25
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
                    "channel",
                    "filed_by",
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

    def has_review_permission(self, request) -> bool:
        return roles.is_case_staff(request.user)

    def get_readonly_fields(self, request, obj=None):
        return [f for _name, opts in self.fieldsets for f in opts["fields"]]

    # --- queryset and search ---------------------------------------------------

    def get_queryset(self, request):
        return case_list_for_staff(user=request.user)

    def get_changelist(self, request, **kwargs):
        return QueueChangeList

    def changelist_view(self, request, extra_context=None):
        # The queue is a working screen: without the app sidebar it fits a
        # 1280-pixel screen with the filter column open (tests/browser).
        response = super().changelist_view(
            request, {"is_nav_sidebar_enabled": False, **(extra_context or {})}
        )
        context = getattr(response, "context_data", None) or {}
        if "cl" in context:
            # The rows, rendered once here (templates/admin/cases/case/change_list.html).
            cl = context["cl"]
            headers = list(result_headers(cl))
            context["queue_headers"] = headers
            context["queue_sorted_fields"] = sum(
                1 for header in headers if header["sortable"] and header["sorted"]
            )
            context["queue_rows"] = queue_rows(self, cl)
            context["queue_filters"] = filter_column(cl, request)
        return response

    def get_search_results(self, request, queryset, search_term):
        if not search_term.strip():
            return queryset, False
        return queryset.filter(case_search_filter(term=search_term)), False

    # --- list columns ------------------------------------------------------------

    @admin.display(description=_("reference"), ordering="reference")
    def reference_display(self, obj: Case) -> str:
        return obj.reference or f"#{obj.pk}"

    @admin.display(description=_("merchant"), ordering="merchant__merchant_id")
    def merchant_display(self, obj: Case):
        # The name is cut to the column's width; the full name is its title.
        # Written out (escaped here): format_html costs more than the row.
        name = escape(obj.merchant.name)
        return mark_safe(
            f'{escape(obj.merchant.merchant_id)}<br><span class="case-cut" '
            f'title="{name}">{name}</span>'
        )

    @admin.display(description=_("reason"), ordering="reason")
    def reason_short(self, obj: Case) -> str:
        """The reason without its Chinese gloss in brackets (the list is narrow)."""
        return reason_short_label(obj.reason)

    @admin.display(description=_("state"), ordering="state")
    def state_badge(self, obj: Case):
        return mark_safe(
            f'<span class="case-badge case-badge--{escape(obj.state)}">'
            f"{escape(state_label(obj.state))}</span>"
        )

    @admin.display(description=_("terminals"))
    def terminal_count_display(self, obj: Case) -> int:
        count = getattr(obj, "terminal_count", None)
        return obj.case_terminals.count() if count is None else count

    @admin.display(description=_("assigned to"), ordering="assigned_to")
    def assignee_display(self, obj: Case) -> str | None:
        return obj.assigned_to.get_username() if obj.assigned_to_id else None

    @admin.display(description=_("review due"), ordering="review_due_at")
    def review_due(self, obj: Case):
        if not obj.review_due_at:
            return "—"
        # Month, day and time: the year is this one or the next, the column narrow.
        text = timezone.localtime(obj.review_due_at).strftime("%m-%d %H:%M")
        if obj.is_overdue:
            return mark_safe(
                f'<span class="case-overdue">{escape(text)} · '
                f"{escape(gettext('overdue'))}</span>"
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
                reason = getattr(exc, "message", None) or exception_message(exc)
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
            # Phone-in, branch and agent filing (cases/admin/filing.py).
            path(
                "file/",
                wrap(partial(filing.case_file_for_merchant_view, self)),
                name="cases_case_file",
            ),
            path(
                "<path:object_id>/identity/",
                wrap(partial(filing.case_identity_view, self)),
                name="cases_case_identity",
            ),
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

    def get_object(self, request, object_id, from_field=None):
        # Once per request: the case page reads it before the admin's own view.
        cache = request.__dict__.setdefault("_case_objects", {})
        key = (object_id, from_field)
        if key not in cache:
            cache[key] = super().get_object(request, object_id, from_field)
        return cache[key]

    def _case_context(self, request, case: Case) -> dict:
        user = request.user
        _case_prefetch(case)
        allowed = case_actions_for_user(case=case, user=user)
        return {
            "case": case,
            "transitions": [
                {
                    "name": action.name,
                    "label": action.label,
                    "style": action.style,
                    "url": reverse(
                        "admin:cases_case_transition", args=[case.pk, action.name]
                    ),
                }
                for action in allowed.actions
            ],
            "recommend_missing": allowed.missing_for_recommendation,
            "can_assign": allowed.can_assign,
            "assign_url": reverse("admin:cases_case_assign", args=[case.pk]),
            "can_review_documents": allowed.can_review_documents,
            "can_download": user.has_perm("cases.view_document"),
            "documents": _documents_with_previews(case),
            "missing_kinds": allowed.missing_kinds,
            "required_kinds": set(case.required_document_kinds()),
            "impact": case_impact(case=case),
            "progress": case_terminal_progress(case=case),
            "timeline": _timeline(case),
            "fees_form": FeesForm(
                initial={
                    "fees_statement": case.fees_statement,
                    "fees_amount": case.fees_amount,
                }
            ),
            "fees_url": reverse("admin:cases_case_fees", args=[case.pk]),
            "can_state_fees": allowed.can_state_fees,
        }

    def transition_view(self, request, object_id, name):
        """GET: say what ``name`` will do; POST: do it through the service."""
        case = self._case_or_404(request, object_id)
        action = STAFF_ACTIONS.get(name)
        if action is None:
            raise Http404
        change_url = self._change_url(case.pk)
        try:
            case_transition_check(case=case, name=name, actor=request.user)
        except PermissionDenied as exc:
            return refused_response(request, message=exception_message(exc), case=case)
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
                    return refused_response(
                        request, message=exception_message(exc), case=case
                    )
                except CaseActionError as exc:
                    messages.error(request, exc.message)
                    return HttpResponseRedirect(change_url)
                messages.success(
                    request,
                    _("%(action)s: done for %(case)s.")
                    % {"action": action.label, "case": case},
                )
                return HttpResponseRedirect(change_url)
        else:
            form = TransitionForm(name=name)

        target = next(
            t.target for t in case.get_available_state_transitions() if t.name == name
        )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "target": target,
            "target_label": CaseState(target).label,
            "title": _("%(action)s — %(case)s")
            % {"action": action.label, "case": case},
            "case": case,
            "name": name,
            "label": action.label,
            "effect": action.effect,
            "style": action.style,
            "irreversible": action.irreversible,
            "form": form,
            "impact": case_impact(case=case) if action.shows_impact else None,
            "abandon_summary": (
                case_abandon_summary(case=case) if action.shows_steps else None
            ),
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
        return service_answer(
            request,
            call=lambda: case_assign(
                case_id=case.pk, actor=request.user, assignee=request.user
            ),
            case=case,
            success=_("The case is assigned to you."),
            back=self._change_url(case.pk),
        )

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
        return service_answer(
            request,
            call=lambda: case_fees_statement_set(
                case_id=case.pk,
                actor=request.user,
                text=form.cleaned_data["fees_statement"],
                amount=form.cleaned_data["fees_amount"],
            ),
            case=case,
            success=_("The fees statement is saved."),
            back=self._change_url(case.pk),
        )


def _case_prefetch(case: Case) -> None:
    """Read the case's documents (with previews) and events once for the page.

    The page's parts — the actions, the checklist, the documents, the
    identity panel, the timeline — all read them; with the prefetch each
    ``case.documents.all()`` and ``case.events.all()`` is served from memory.
    """
    prefetch_related_objects(
        [case],
        Prefetch(
            "documents",
            queryset=Document.objects.select_related("reviewed_by", "preview").order_by(
                "kind", "pk"
            ),
        ),
        Prefetch(
            "events",
            queryset=CaseEvent.objects.select_related("actor").order_by(
                "created_at", "pk"
            ),
        ),
    )


def _documents_with_previews(case: Case) -> list:
    """The case's documents, each with ``page_preview`` (rendering queued if missing)."""
    documents = list(case.documents.all())  # prefetched in order (_case_prefetch)
    for document in documents:
        document.page_preview = document_preview_for_page(document=document)
    return documents
