"""REST API routes (SPEC section 3). The realtime endpoints (invoke, stop, SSE) are in runs/urls.py."""

urlpatterns: list = []
