"""Start the embedded dev stack (OpenBao + moto), seed it, create demo users; optionally serve."""

import os
import signal
import subprocess
import sys
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

from connections_app import checkpoints, devstack, roles
from connections_app.models import Scope, Target

DEMO_USERS = [
    ("requester", [roles.REQUESTERS], False),
    ("approver", [roles.APPROVERS], False),
    ("auditor", [roles.AUDITORS], False),
    ("admin", [], True),
]
DEFAULT_DEMO_PASSWORD = "demo-password-123"
# Two more accounts for the fleet, in moto (the default target is the app's own credentials).
DEMO_TARGETS = [("partner-a", "111111111111"), ("partner-b", "222222222222")]
MOTO_EXT = Path(__file__).resolve().parents[3] / "tests" / "moto_ext.py"
AWS_KEYS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EVENTS", "AWS_ACCESS_KEY_ID", "AWS_PROFILE")


class Command(BaseCommand):
    help = "Start a dev OpenBao and moto server on loopback (unless configured), seed, and serve."

    def add_arguments(self, parser):
        parser.add_argument("--serve", action="store_true", help="also run the app server")
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))

    def handle(self, *args, serve: bool, port: int, **options):
        # A terminate or hang-up stops the stack as Ctrl-C does (the servers run in their own
        # sessions, so only this process can stop them).
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.default_int_handler)
        started: list[devstack.Server] = []
        env = dict(os.environ)
        # Notifications are printed by the worker (console mail), with links to this app.
        env.setdefault("EMAIL_URL", "consolemail://")
        env.setdefault("SITE_URL", f"http://127.0.0.1:{port}")
        try:
            if not os.environ.get("VAULT_ADDR"):
                bao = devstack.start_openbao(port=8200)
                started.append(bao)
                refs = devstack.seed_demo_secrets(bao.url, bao.extra["token"])
                devstack.seed_audit_signing(bao.url, bao.extra["token"])
                env.update(VAULT_ADDR=bao.url, VAULT_TOKEN=bao.extra["token"])
            else:
                refs = {}
                self.stdout.write(
                    f"Using the Vault at {os.environ['VAULT_ADDR']} (nothing started)."
                )
            if not any(os.environ.get(key) for key in AWS_KEYS):
                # moto with the EventBridge behaviour AWS documents and moto lacks (deauthorize,
                # states, paging, describes without secret values): the tests' own extension.
                moto = devstack.start_moto(port=5001, script=str(MOTO_EXT))
                started.append(moto)
                env.update(
                    AWS_ENDPOINT_URL=moto.url,
                    AWS_ACCESS_KEY_ID="testing",
                    AWS_SECRET_ACCESS_KEY="testing",  # noqa: S105 - moto's dummy credentials
                    AWS_REGION=env.get("AWS_REGION", "us-east-1"),
                    AWS_DEFAULT_REGION=env.get("AWS_REGION", "us-east-1"),
                )
                self._demo_targets(moto.url, env["AWS_REGION"])
            else:
                self.stdout.write("Using the AWS settings from the environment (nothing started).")
            password = os.environ.get("DEMO_PASSWORD") or DEFAULT_DEMO_PASSWORD
            self._demo_users(password)
            self._report(env, refs, port, password)
            if serve:
                # The task worker (sweeps, state follow-up, expiry, audit checkpoints), then
                # the app; both stop with the stack.
                worker = subprocess.Popen(
                    [sys.executable, "manage.py", "qcluster"], env=env, start_new_session=True
                )
                app = subprocess.Popen(
                    [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
                    env=env,
                )
                try:
                    app.wait()
                finally:
                    for proc in (app, worker):
                        if proc.poll() is None:
                            proc.terminate()
                            proc.wait(15)
            else:
                signal.pause()
        except KeyboardInterrupt:
            pass
        finally:
            for server in reversed(started):
                server.stop()
            self.stdout.write("Dev stack stopped.")

    def _demo_targets(self, moto_url: str, region: str) -> None:
        """Two demo accounts reached through AssumeRole (moto honours it; the extension checks
        the external ID), one of them with a connection made by hand for a sweep to find."""
        import json
        import urllib.request

        for name, account in DEMO_TARGETS:
            role = f"arn:aws:iam::{account}:role/eventbridge-connections"
            trust = {"role_arn": role, "external_id": f"{name}-external-id"}
            ask = urllib.request.Request(  # noqa: S310 - the loopback moto just started
                f"{moto_url}/moto-ext/sts/role",
                data=json.dumps(trust).encode(),
                headers={"Content-Type": "application/json"},
            )
            urllib.request.urlopen(ask, timeout=10).close()  # noqa: S310
            Target.objects.update_or_create(
                name=name,
                defaults={
                    "account_id": account,
                    "region": region,
                    "role_arn": role,
                    "external_id": trust["external_id"],
                },  # fmt: skip
            )
        seed = urllib.request.Request(  # noqa: S310
            f"{moto_url}/moto-ext/connections/seed",
            data=json.dumps(
                {"count": 3, "prefix": "made-by-hand-", "account_id": DEMO_TARGETS[0][1]}
            ).encode(),
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(seed, timeout=10).close()  # noqa: S310

    def _demo_users(self, password: str) -> None:
        # What the demo groups may reference, and where their secrets may go (approvers name
        # secrets when they adopt a connection).
        for name in (roles.REQUESTERS, roles.APPROVERS):
            Scope.objects.get_or_create(
                group=Group.objects.get(name=name),
                defaults={
                    "path_prefixes": f"secret/eventbridge/\n{devstack.KV1_MOUNT}/eventbridge/",
                    "allowed_hosts": "auth.example.com\nauth.partner.example",
                },
            )
        users = get_user_model()
        for username, groups, superuser in DEMO_USERS:
            user, _ = users.objects.get_or_create(username=username)
            user.email = f"{username}@example.com"  # the console mail shows their notifications
            user.is_staff = user.is_superuser = superuser
            user.set_password(password)
            user.save()
            user.groups.set(Group.objects.filter(name__in=groups))

    def _report(self, env: dict, refs: dict, port: int, password: str) -> None:
        w = self.stdout.write
        w("")
        w(self.style.SUCCESS(f"App:        http://127.0.0.1:{port}/"))
        w(f"Demo users: requester, approver, auditor, admin (password: {password})")
        w("Targets: default (the app's own credentials), partner-a and partner-b (AssumeRole")
        w("  into two more moto accounts; partner-a has 3 connections made by hand to adopt).")
        w("The task worker (manage.py qcluster) sweeps every target every SWEEP_MINUTES.")
        if refs:
            w("Demo Vault references:")
            for ref, what in refs.items():
                w(f"  {ref:55} {what}")
            w(
                f"Audit checkpoints: signed with Transit key {checkpoints.key_location()}, kept "
                f"in {checkpoints.store_location()} (policy {devstack.AUDIT_POLICY})"
            )
        w("")
        w("For the bao and aws command lines against this stack:")
        w(f"  export VAULT_ADDR={env.get('VAULT_ADDR', '')}")
        if "VAULT_TOKEN" in env:
            w(f"  export VAULT_TOKEN={env['VAULT_TOKEN']}")
        if env.get("AWS_ENDPOINT_URL"):
            w(f"  export AWS_ENDPOINT_URL={env['AWS_ENDPOINT_URL']}")
            w("  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing")
            w(f"  export AWS_REGION={env.get('AWS_REGION', 'us-east-1')}")
        w("Ctrl-C stops everything started here.")
        w("")
