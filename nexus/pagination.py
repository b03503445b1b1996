"""Page-number pagination for every list: ``?page=`` and ``?page_size=`` (at most 100)."""

from __future__ import annotations

from rest_framework import pagination


class PageNumberPagination(pagination.PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 100
