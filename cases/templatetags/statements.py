"""``{% case_statement case as statement %}``: a case's final statement in a template.

A tag rather than a context variable so that every page showing a case (the
tracking page, the staff case page, the approval confirmation) gets the same
statement from the one selector without each view having to pass it.
"""

from django import template

from cases.statements import Statement
from cases.statements import case_statement as _case_statement

register = template.Library()


@register.simple_tag
def case_statement(case) -> Statement:
    return _case_statement(case=case)
