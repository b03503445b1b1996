"""Page-number pagination for every list: ``?page=`` and ``?page_size=`` (1 to 100).

DRF quietly ignores a bad ``page_size``; here it is a 400 like any other bad input, so clients
learn about their mistake. A page past the end, or one that is not a whole number from 1, is a
404 (DRF's behaviour, here for an empty ``page=`` too, which DRF would serve as the first page).
"""

from __future__ import annotations

from typing import Any

from rest_framework import pagination
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.views import APIView


class PageNumberPagination(pagination.PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 100

    def get_page_size(self, request: Request) -> int | None:
        raw = request.query_params.getlist(self.page_size_query_param)
        if not raw:
            return self.page_size
        value = raw[-1].strip()
        if len(raw) > 1 or not value.isdigit() or not 1 <= int(value) <= self.max_page_size:
            raise ValidationError(
                {self.page_size_query_param: [f"A whole number from 1 to {self.max_page_size}."]}
            )
        return int(value)

    def paginate_queryset(self, queryset: Any, request: Request, view: APIView | None = None) -> Any:
        raw = request.query_params.getlist(self.page_query_param)
        if raw and (len(raw) > 1 or not raw[-1].strip().isdigit() or int(raw[-1]) < 1):
            raise NotFound("Invalid page: a whole number from 1.")
        return super().paginate_queryset(queryset, request, view)

    def get_schema_operation_parameters(self, view: APIView) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1, "maximum": self.max_page_size}
            if parameter["name"] == self.page_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1}
        return parameters
