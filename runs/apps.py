from channels.management.commands import runworker
from django.apps import AppConfig
from django.conf import settings
from django.utils.module_loading import import_string

from providers.registry import registry


class RunsConfig(AppConfig):
    name = "runs"

    def ready(self) -> None:
        # Providers named by NEXUS_PROVIDER_PLUGINS join the registry through its own door.
        for name, path in settings.NEXUS_PROVIDER_PLUGINS.items():
            registry.register(name, import_string(path)())

        # `manage.py runworker` (channels' command) runs our worker, which outlives a Redis restart.
        # Imported here: the worker reaches the models, which load only once the apps are ready.

        from runs.worker import RunWorker

        runworker.Command.worker_class = RunWorker
