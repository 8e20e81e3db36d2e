"""``{% case_statement case as statement %}``: a case's final statement in a template.

A tag rather than a context variable so that every page showing a case (the
tracking page, the staff case page, the approval confirmation) gets the same
statement from the one selector without each view having to pass it. Once
the case is approved, that is its latest frozen version (``statement.version``).
"""

from django import template

from cases.services.finance import case_statement_current
from cases.statements import LineKind, Statement

register = template.Library()


@register.simple_tag
def case_statement(case) -> Statement:
    if case is None or not case.pk:
        return Statement()  # the staff preview's unsaved sample case (pk 0)
    return case_statement_current(case=case)[0]


@register.simple_tag
def line_kind_label(kind: str) -> str:
    """The label of a statement line's kind, in the active language."""
    return str(LineKind.LABELS.get(kind, kind))
