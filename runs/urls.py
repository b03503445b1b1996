"""Realtime HTTP endpoints: invoke, stop, and the SSE streams (SPEC section 3)."""

urlpatterns: list = []
