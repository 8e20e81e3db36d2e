"""Staff review in Django admin, one module per concern.

- ``queue``: the paginator and the filters of the case list;
- ``case_page``: the case page, its transitions, assignment and fees;
- ``documents``: document rows, review and download;
- ``outbox``: notifications and execution steps, with e-mail previews;
- ``audit``: the read-only audit trail;
- ``export``: the CSV export of the queue;
- ``returns``: devices coming back (the Operations queue of returns);
- ``records``: legal holds, the purge report and the regulator's binding report;
- ``finance``: finance items (pay, confirm, waive) and frozen statements.

The admin is a thin caller: every change goes through ``cases.services``
which locks the case, checks the role rules and writes the audit event. Cases,
documents and events are never edited through admin forms. The staff
dashboard on the index page belongs to the site (``config.admin_site``).
"""

from cases.admin import (  # noqa: F401
    audit,
    case_page,
    documents,
    finance,
    outbox,
    records,
    returns,
)
from cases.admin.queue import EstimatedCountPaginator

__all__ = ["EstimatedCountPaginator"]
