from rest_framework.pagination import CursorPagination


class CaseCursorPagination(CursorPagination):
    """Newest cases first; the cursor stays valid while cases are added."""

    ordering = "-pk"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


class FinanceItemCursorPagination(CaseCursorPagination):
    """Newest finance items first."""
