from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_delete


def _blob_forget(sender: Any, instance: Any, **kwargs: Any) -> None:
    from files.services import blob_forget

    blob_forget(file=instance)


class FilesConfig(AppConfig):
    name = "files"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # the bytes go with the row however it goes (a user's deletion cascades to their files)
        post_delete.connect(_blob_forget, sender="files.StoredFile", dispatch_uid="files.blob_forget")
