from django.core.management.base import BaseCommand

from connections_app import eventbridge, services
from connections_app.models import ConnectionRequest

# States AWS moves on from by itself (CREATING and AUTHORIZING can last many minutes).
PASSING = ["CREATING", "UPDATING", "DELETING", "AUTHORIZING", "DEAUTHORIZING"]


class Command(BaseCommand):
    help = "describe_connection for every connection created here; record state changes."

    def add_arguments(self, parser):
        parser.add_argument(
            "--all", action="store_true", help="not only connections in a passing state"
        )

    def handle(self, *args, all: bool, **options):
        created = ConnectionRequest.objects.filter(status=ConnectionRequest.CREATED)
        if not all:
            created = created.filter(connection_state__in=PASSING)
        for request in created:
            try:
                request = services.connection_refresh(request=request)
                self.stdout.write(f"{request.name}: {request.connection_state}")
            except eventbridge.EventBridgeError as exc:
                self.stderr.write(f"{request.name}: {exc.message}")
