"""The project's URLconf plus views that fail, with the JSON-aware error handlers registered."""

from django.urls import path
from rest_framework.views import APIView

from nexus.urls import urlpatterns as project_urlpatterns


def boom(request):
    raise RuntimeError("a bug with a secret: sk-should-never-be-shown")


class BoomApi(APIView):
    def get(self, request):
        raise RuntimeError("a bug with a secret: sk-should-never-be-shown")


urlpatterns = [
    path("api/boom-plain/", boom),
    path("api/boom-drf/", BoomApi.as_view()),
    path("boom-page/", boom),
    *project_urlpatterns,
]

handler404 = "core.exceptions.handler404"
handler500 = "core.exceptions.handler500"
