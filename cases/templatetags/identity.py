"""``{% case_identity case as identity %}``: the channel and identity check of a case.

A tag, as ``case_statement``: the case page and the approval confirmation
show the same facts from the one selector.
"""

from django import template

from cases import roles
from cases.selectors import CaseIdentity
from cases.selectors import case_identity as _case_identity

register = template.Library()


@register.simple_tag
def case_identity(case) -> CaseIdentity:
    return _case_identity(case=case)


@register.filter
def may_file_for_merchants(user) -> bool:
    """Tell whether ``user`` may file requests for merchants (Service, Agent)."""
    return roles.may_file_for_merchants(user)
