from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from connections_app import audit, checkpoints, vault


class Command(BaseCommand):
    help = (
        "Prove the audit log was not altered: check every signed checkpoint in the Vault store "
        "with the Transit key's public key, recompute the hash chain and hold it against them "
        "(a rewritten, cut or emptied log no longer passes), then check the secret-use index "
        "against the events. Exits non-zero naming the first problem."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--database-only",
            action="store_true",
            help="only the hashes in the database (when Vault is unavailable): this does not "
            "prove anything against someone who controls the database",
        )

    def handle(self, *args, database_only: bool, **options):
        proof = None
        if database_only:
            result = audit.verify_chain()
        else:
            try:
                proof = checkpoints.verify_log()
            except (vault.VaultError, checkpoints.CheckpointError) as exc:
                raise CommandError(
                    f"Cannot check the signed audit checkpoints: {exc.message} Until this is "
                    "fixed nothing outside the database vouches for the log (--database-only "
                    "checks its hashes alone)."
                ) from None
            if proof.forged:
                raise CommandError(f"Forged or altered audit checkpoint: {proof.forged_message()}")
            result = proof.chain
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
        if proof is None:
            self.stdout.write(
                self.style.WARNING(
                    f"Audit chain's hashes consistent: {result.checked} events (database only: "
                    "not checked against the signed checkpoints, so no proof against someone "
                    "who controls the database)."
                )
            )
            return
        self.stdout.write(self.style.SUCCESS(f"Audit chain intact: {result.checked} events."))
        newest = proof.newest
        if newest is not None:
            self.stdout.write(
                f"Signed checkpoints in {checkpoints.store_location()}: "
                f"{len(proof.checkpoints)}, every signature sound; the chain passes through each "
                f"and reaches the newest, of event {newest.seq}, signed at {newest.signed_at} "
                f"with Transit key {checkpoints.key_location()}."
            )
        else:
            self.stdout.write(
                f"No signed checkpoint exists yet in {checkpoints.store_location()}: nothing "
                "outside the database vouches for these events (manage.py audit_checkpoint "
                "signs one)."
            )
        first = (newest.seq if newest else 0) + 1
        if result.last_seq >= first:
            due = checkpoints.due_after(proof)
            self.stdout.write(
                f"Events {first} to {result.last_seq} are not covered by a signed checkpoint "
                + (
                    "and one is due: is the checkpoint schedule running? (see the log, or run "
                    "manage.py audit_checkpoint)."
                    if due
                    else f"yet (one is due after {settings.AUDIT_CHECKPOINT_EVENTS} events or "
                    f"{settings.AUDIT_CHECKPOINT_MINUTES:g} minutes)."
                )
            )
