from django.core.management.base import BaseCommand, CommandError

from connections_app import audit


class Command(BaseCommand):
    help = (
        "Recompute the audit hash chain, and check the secret-use index against the events; exit "
        "non-zero naming the first bad event. When intact, record a checkpoint so that event "
        "pages verify from there instead of from the start."
    )

    def handle(self, *args, **options):
        result = audit.verify_chain()
        if not result.ok:
            raise CommandError(
                f"Audit chain broken at event {result.bad_event}: {result.reason} "
                f"({result.checked} events verified before it)."
            )
        uses = audit.verify_secret_uses()
        if not uses.ok:
            raise CommandError(
                f"Audit chain intact, but its secret-use index is wrong at event "
                f"{uses.bad_event}: {uses.reason} (rebuild it from the events' data)."
            )
        checkpoint = audit.checkpoint_record(result)
        where = f"; checkpoint at event {checkpoint.seq}" if checkpoint else ""
        self.stdout.write(
            self.style.SUCCESS(f"Audit chain intact: {result.checked} events{where}.")
        )
