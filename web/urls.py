"""The browser pages: the chat at ``/``, sign-in and sign-out (templates and static files, no build step)."""

from django.urls import path

from web import views

urlpatterns = [
    path("", views.chat_page, name="nexus-chat"),
    path("login/", views.SignInView.as_view(), name="nexus-login"),
    path("logout/", views.SignOutView.as_view(), name="nexus-logout"),
]
