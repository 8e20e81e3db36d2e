"""The case queue: a paginator for large lists and the queue's own filters."""

import threading
from collections import OrderedDict
from functools import cached_property

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _


class EstimatedCountPaginator(Paginator):
    """Count the queue in one bounded query, whatever its size.

    On a table with a million rows COUNT(*) reads every matching row for
    each page view. A filtered or searched list is counted up to ``CAP``
    rows (``SELECT count(*) FROM (… LIMIT CAP + 1)``: at most CAP + 1 index
    entries read); beyond that the page says "more than CAP" and pages on
    (``capped``). The unfiltered list on PostgreSQL takes the table's row
    estimate (``pg_class.reltuples``, kept fresh by autovacuum) once the
    table holds CAP rows or more, and counts (capped) below that — in the
    same statement, so the page runs the same number of queries at 10,000
    and at 1,000,000 cases.
    """

    # 40 pages of 25: nobody pages further; the queue is worked from the top.
    CAP = 1_000

    capped = False  # the count stopped at CAP + 1
    estimated = False  # the count is the planner's row estimate

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet):
            return super().count
        connection = connections[queryset.db]
        if not queryset.query.where and connection.vendor == "postgresql":
            count, self.estimated = self._estimate_or_count(queryset, connection)
        else:
            count = queryset.order_by().values("pk")[: self.CAP + 1].count()
        self.capped = not self.estimated and count > self.CAP
        return count

    def _estimate_or_count(self, queryset: QuerySet, connection) -> tuple[int, bool]:
        table = connection.ops.quote_name(queryset.model._meta.db_table)
        with connection.cursor() as cursor:
            # The scalar subquery is an InitPlan: PostgreSQL runs it only when
            # the CASE reaches it (a small or never analysed table).
            cursor.execute(
                "SELECT CASE WHEN c.reltuples >= %s THEN c.reltuples::bigint "
                f"ELSE (SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT %s) s) END, "
                "c.reltuples >= %s FROM pg_class c WHERE c.oid = %s::regclass",
                [self.CAP, self.CAP + 1, self.CAP, table],
            )
            count, estimated = cursor.fetchone()
        return int(count), bool(estimated)


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


# --- the rows of the list ------------------------------------------------------------

# What the queue's columns read (cases/admin/case_page.py, list_display).
QUEUE_FIELDS = (
    "reference",
    "state",
    "reason",
    "review_due_at",
    "merchant__merchant_id",
    "merchant__name",
    "assigned_to__username",
)


class QueueChangeList(ChangeList):
    """The admin's change list, fetching only the columns the rows show.

    A case row has some forty columns, its merchant twenty; the page shows
    seven. Only the page's own query is narrowed: the actions and the CSV
    export get the full queryset (``get_queryset``), never deferred fields.
    """

    def get_results(self, request):
        queryset = self.queryset
        self.queryset = queryset.only(*QUEUE_FIELDS)
        try:
            super().get_results(request)
        finally:
            self.queryset = queryset


_PK = "__pk__"


def queue_rows(model_admin, cl) -> list[list[str]]:
    """The rows of ``cl``'s page as HTML, one ``[row]`` per case.

    What the admin's ``items_for_result`` renders (same cells, same classes,
    same link and checkbox), without its per-cell machinery: field lookups,
    ``display_for_value``, a form widget rendered through a template for
    each checkbox and a ``reverse()`` for each link. Those cost about 1.5 ms
    a row; this costs a few microseconds a cell. Every column of the queue's
    ``list_display`` is a method of the admin returning safe HTML or text.
    """
    from django.contrib.admin.templatetags.admin_urls import add_preserved_filters
    from django.urls import reverse
    from django.utils.html import conditional_escape, escape
    from django.utils.safestring import mark_safe

    # One reverse() for the page: the change URL with a placeholder for the pk
    # (the admin's <path:object_id>), the list's filters preserved after it.
    link = add_preserved_filters(
        {"preserved_filters": cl.preserved_filters, "opts": cl.opts},
        reverse(f"admin:{cl.opts.app_label}_{cl.opts.model_name}_change", args=[_PK]),
    )
    select_label = str(_("Select this object for an action - {}"))
    empty = conditional_escape(model_admin.get_empty_value_display())
    links = set(cl.list_display_links or ())
    columns = [
        (name, getattr(model_admin, name, None), name in links)
        for name in cl.list_display
    ]
    rows = []
    for obj in cl.result_list:
        cells = []
        for name, display, is_link in columns:
            if name == "action_checkbox":
                cells.append(
                    '<td class="action-checkbox"><input type="checkbox" '
                    f'name="_selected_action" value="{escape(obj.pk)}" '
                    f'class="action-select" aria-label="{escape(select_label.format(obj))}"></td>'
                )
                continue
            value = display(obj)
            text = empty if value is None or value == "" else conditional_escape(value)
            if is_link:
                href = escape(link.replace(_PK, str(obj.pk), 1))
                cells.append(
                    f'<th class="field-{name}"><a href="{href}">{text}</a></th>'
                )
            else:
                cells.append(f'<td class="field-{name}">{text}</td>')
        rows.append([mark_safe("".join(cells))])  # every part escaped above
    return rows


# --- the filter column ---------------------------------------------------------------

# Rendered filter columns by (language, query string); a few hundred at most.
_FILTER_COLUMNS: OrderedDict[tuple[str, str], str] = OrderedDict()
_FILTER_COLUMNS_MAX = 512
_FILTER_COLUMNS_LOCK = threading.Lock()


def filter_column(cl, request) -> str:
    """The queue's filter column as HTML (templates/admin/cases/case/filters.html).

    Every filter of the queue offers fixed choices (the model's choices, and
    the queue's own filters' fixed lookups; "assigned to me" is the same link
    for everyone): the column depends only on the language and the query
    string, its links being the query string with one parameter changed. It
    was the largest part of the page's template work (seven filters, each a
    template with a link per choice); it is rendered once per language and
    query string and kept in the process (at most ``_FILTER_COLUMNS_MAX``,
    the least recently used dropped). With counts shown (``_facets``) the
    column reads the database and is rendered every time.
    """
    from django.template.loader import render_to_string
    from django.utils import translation
    from django.utils.safestring import mark_safe

    if cl.add_facets:
        return render_to_string("admin/cases/case/filters.html", {"cl": cl})
    key = (translation.get_language() or "", request.GET.urlencode())
    with _FILTER_COLUMNS_LOCK:
        html = _FILTER_COLUMNS.get(key)
        if html is not None:
            _FILTER_COLUMNS.move_to_end(key)
            return mark_safe(html)  # rendered by the template below
    html = render_to_string("admin/cases/case/filters.html", {"cl": cl})
    with _FILTER_COLUMNS_LOCK:
        _FILTER_COLUMNS[key] = str(html)
        while len(_FILTER_COLUMNS) > _FILTER_COLUMNS_MAX:
            _FILTER_COLUMNS.popitem(last=False)
    return html
