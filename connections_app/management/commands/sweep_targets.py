from django.core.management.base import BaseCommand

from connections_app import services
from connections_app.models import Target


class Command(BaseCommand):
    help = "Sweep targets now (all, or those named): inventory in AWS, drift from Vault."

    def add_arguments(self, parser):
        parser.add_argument("names", nargs="*", help="target names (default: every target)")

    def handle(self, *args, names: list[str], **options):
        targets = Target.objects.order_by("name")
        if names:
            targets = targets.filter(name__in=names)
        for target in targets:
            swept = services.sweep_target(target.pk)
            if swept is None:
                self.stderr.write(f"{target.name}: skipped, another worker is sweeping it")
            elif swept.ok:
                figures = swept.figures
                self.stdout.write(
                    f"{target.name}: {figures.get('listed', 0)} connections, "
                    f"{figures.get('unmanaged_found', 0)} new unmanaged, "
                    f"{figures.get('drifted', 0)} drifted; {figures['aws_calls']} AWS calls, "
                    f"{figures['vault_reads']} Vault reads"
                )
            else:
                self.stderr.write(f"{target.name}: failed: {swept.error}")
