from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"

    def ready(self) -> None:
        from django.conf import settings
        from django.utils.module_loading import import_string

        from providers.registry import registry

        # Providers named by NEXUS_PROVIDER_PLUGINS join the registry through its own door.
        for name, path in settings.NEXUS_PROVIDER_PLUGINS.items():
            registry.register(name, import_string(path)())
