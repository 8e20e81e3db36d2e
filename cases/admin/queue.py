"""The case queue: a paginator for large lists and the queue's own filters."""

import json
from functools import cached_property

from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _


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
