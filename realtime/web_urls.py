"""The browser chat page at / (templates and static files, no build step)."""

urlpatterns: list = []
