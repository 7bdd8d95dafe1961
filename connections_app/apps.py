from django.apps import AppConfig
from django.db.models.signals import post_migrate


class ConnectionsAppConfig(AppConfig):
    name = "connections_app"
    verbose_name = "EventBridge connections"

    def ready(self) -> None:
        from . import roles

        # Groups are set up after every migrate (and test-database flush), once permissions exist.
        post_migrate.connect(roles.ensure_groups, sender=self)
