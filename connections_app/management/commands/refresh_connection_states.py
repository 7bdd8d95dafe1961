from django.core.management.base import BaseCommand

from connections_app import services


class Command(BaseCommand):
    help = (
        "describe_connection for every connection in a passing state (CREATING, UPDATING, "
        "AUTHORIZING, DEAUTHORIZING, DELETING; --all: every live one); record state changes."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--all", action="store_true", help="not only connections in a passing state"
        )

    def handle(self, *args, all: bool, **options):
        for connection, error in services.connections_refresh_passing(everything=all):
            if error:
                self.stderr.write(f"{connection.name}: {error}")
            else:
                self.stdout.write(f"{connection.name}: {connection.state}")
