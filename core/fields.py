"""Serializer fields for JSON bodies that take only the JSON type their schema promises.

DRF's fields coerce: ``CharField`` turns ``5`` and ``-3.9e-293`` into strings, ``IntegerField``
and ``FloatField`` parse ``"5"``, ``BooleanField`` reads ``"yes"`` and ``1``. A body that breaks the
OpenAPI schema must get a 400, not be stored as something else (the schemathesis run sends such
bodies on purpose). Query strings and form bodies are text by nature: their serializers keep
DRF's own fields.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers


class _StringOnly:
    """For a ``CharField`` subclass: refuse anything but a JSON string before DRF's coercion."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid")  # type: ignore[attr-defined]
        return super().to_internal_value(data)  # type: ignore[misc]


class StrictCharField(_StringOnly, serializers.CharField):
    """A JSON string only."""


class StrictSlugField(_StringOnly, serializers.SlugField):
    """A JSON string only, and a slug."""


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer only (not a string of digits, not a boolean, not 2.0)."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictFloatField(serializers.FloatField):
    """A JSON number only (not a string, not a boolean)."""

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """A JSON boolean only (not ``"true"``, not ``1``)."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data
