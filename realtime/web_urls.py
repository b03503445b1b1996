"""The browser chat page at / (templates and static files, no build step)."""

from django.urls import path

from realtime import web_views

urlpatterns = [
    path("", web_views.chat_page, name="nexus-chat"),
    path("login/", web_views.SignInView.as_view(), name="nexus-login"),
    path("logout/", web_views.SignOutView.as_view(), name="nexus-logout"),
]
