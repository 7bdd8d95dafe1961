from django.core.management.base import BaseCommand

from connections_app import services


class Command(BaseCommand):
    help = "Expire pending requests older than REQUEST_TTL (they then can no longer be approved)."

    def handle(self, *args, **options):
        self.stdout.write(f"Expired {services.requests_expire_due()} request(s).")
