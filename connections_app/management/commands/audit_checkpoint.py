from django.core.management.base import BaseCommand, CommandError

from connections_app import checkpoints, vault


class Command(BaseCommand):
    help = (
        "Sign the audit chain's head with the Transit key and store the checkpoint in Vault, "
        "outside the database (after checking the chain since the newest one). --if-due: only "
        "when AUDIT_CHECKPOINT_EVENTS events or AUDIT_CHECKPOINT_MINUTES minutes have passed "
        "(for a schedule). --policy: print the Vault policy the app needs for this."
    )

    def add_arguments(self, parser):
        parser.add_argument("--if-due", action="store_true", help="sign only when one is due")
        parser.add_argument(
            "--policy", action="store_true", help="print the app's Vault policy for checkpoints"
        )

    def handle(self, *args, if_due: bool, policy: bool, **options):
        if policy:
            self.stdout.write(checkpoints.vault_policy(), ending="")
            return
        try:
            made = checkpoints.checkpoint_if_due() if if_due else checkpoints.checkpoint_now()
        except (vault.VaultError, checkpoints.CheckpointError) as exc:
            raise CommandError(f"No audit checkpoint signed: {exc.message}") from None
        if made is None:
            self.stdout.write(
                "No checkpoint due yet."
                if if_due
                else "Nothing to sign: the newest signed checkpoint covers the chain's head."
            )
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"Checkpoint of event {made.seq} signed at {made.signed_at} with Transit key "
                f"{checkpoints.key_location()}, stored at {checkpoints.store_location(made.name)}."
            )
        )
