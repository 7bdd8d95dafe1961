"""Synthetic audit events for benchmarks: realistic request stories appended to the real chain.

Development only: it refuses to run with DEBUG off, and nothing on the web reaches it.
"""

import hashlib
import random
import uuid
import zlib
from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.utils import timezone

from connections_app import audit
from connections_app.models import AuditEvent, AuditSecretUse

# Synthetic request and user ids start here, far above any real ones, so they never meet.
ID_BASE = 1_000_000_000
FIRST = ("alice", "bruno", "chen", "dana", "emeka", "fatima", "gus", "hana", "ivan", "jo")
LAST = ("ops", "platform", "payments", "data", "integrations", "sre")
AREAS = ("billing", "crm", "shipping", "search", "ledger", "partner", "webhooks", "identity")
STATES = ("AUTHORIZED", "AUTHORIZED", "AUTHORIZED", "AUTHORIZING", "DEAUTHORIZED")
USE_COLUMNS = ("event_id", "path", "reference", "version", "fingerprint")


def _stable(text: str) -> int:
    return zlib.crc32(text.encode())


class Story:
    """One request's life: create, maybe edit, then approve and submit, reject, cancel, expire."""

    def __init__(self, gen, request_id: int):
        rnd = gen.rnd
        self.gen, self.request_id = gen, request_id
        self.name = f"{rnd.choice(AREAS)}-{rnd.randrange(gen.names):05d}"
        self.requester = rnd.randrange(len(gen.users))
        self.kind = rnd.choice(("BASIC", "OAUTH_CLIENT_CREDENTIALS", "API_KEY"))
        self.headers = rnd.randint(4, 8)
        self.arn = self.state = ""
        ending = rnd.random()
        steps = ["create"] + ["edit"] * (rnd.random() < 0.15)
        if ending < 0.08:
            steps.append("reject")
        elif ending < 0.12:
            steps.append("cancel")
        elif ending < 0.15:
            steps.append("expire")
        else:
            steps += ["approve", "resolve"]
            if rnd.random() < 0.1:
                steps += ["failure", "retry", "resolve"]
            steps += ["success"] + ["refresh"] * rnd.randint(0, 2)
        self.steps = steps[::-1]

    def reference(self, key: str) -> str:
        # A few connections share a partner's secret: the same reference, hence the same value.
        shared = _stable(self.name + key) % 10 == 0
        where = (
            f"shared/partner-{_stable(self.name) % 20}" if shared else f"eventbridge/{self.name}"
        )
        return f"secret/{where}#{key}"

    def document(self, *, resolved: bool) -> dict:
        def secret(key):
            ref = self.reference(key)
            leaf = {"vault": ref, "version": None, "redacted": True}
            if resolved:
                leaf["version"], leaf["fingerprint"] = self.gen.secret_version(ref)
            return leaf

        area = self.name.split("-")[0]
        auth = {
            "BASIC": lambda: {
                "BasicAuthParameters": {"Username": "svc-eventbridge", "Password": secret("pw")}
            },
            "OAUTH_CLIENT_CREDENTIALS": lambda: {
                "OAuthParameters": {
                    "ClientParameters": {
                        "ClientID": f"client-{self.name}",
                        "ClientSecret": secret("client_secret"),
                    },
                    "AuthorizationEndpoint": f"https://auth.{self.name}.example.com/oauth2/token",
                    "HttpMethod": "POST",
                    "OAuthHttpParameters": {
                        "BodyParameters": [
                            {
                                "Key": "grant_type",
                                "Value": "client_credentials",
                                "IsValueSecret": False,
                            },
                            {"Key": "scope", "Value": "events/write", "IsValueSecret": False},
                        ]
                    },
                }
            },  # fmt: skip
            "API_KEY": lambda: {
                "ApiKeyAuthParameters": {
                    "ApiKeyName": "x-api-key",
                    "ApiKeyValue": secret("api_key"),
                }
            },
        }[self.kind]()
        headers = [
            {"Key": "X-Token", "Value": secret("header_token"), "IsValueSecret": True},
            {"Key": "X-Request-Source", "Value": "eventbridge", "IsValueSecret": False},
            {"Key": "X-Tenant", "Value": f"tenant-{self.request_id % 97}", "IsValueSecret": False},
            {"Key": "X-Route", "Value": f"/v2/{self.name}/events", "IsValueSecret": False},
            {"Key": "X-Signing-Key", "Value": secret("signing_key"), "IsValueSecret": True},
            {"Key": "Accept", "Value": "application/json", "IsValueSecret": False},
            {"Key": "X-Environment", "Value": "production", "IsValueSecret": False},
            {"Key": "X-Team", "Value": f"{area}-team", "IsValueSecret": False},
        ][: self.headers]
        query = [
            {"Key": "source", "Value": "aws", "IsValueSecret": False},
            {"Key": "region", "Value": "us-east-1", "IsValueSecret": False},
            {"Key": "format", "Value": "cloudevents", "IsValueSecret": False},
        ]
        auth["InvocationHttpParameters"] = {
            "HeaderParameters": headers,
            "QueryStringParameters": query,
        }
        return {
            "Name": self.name,
            "Description": f"Sends {area} domain events to the partner endpoint of {self.name}; "
            f"owned by the {area} team (on call: #{area}-oncall).",
            "AuthorizationType": self.kind,
            "AuthParameters": auth,
        }

    def next_event(self) -> dict | None:
        if not self.steps:
            return None
        step, gen, rnd = self.steps.pop(), self.gen, self.gen.rnd
        approver = rnd.randrange(len(gen.users))
        doc_hash = hashlib.sha256(f"{self.request_id}:{len(self.steps)}".encode()).hexdigest()
        actor, outcome, data = self.requester, "success", {}
        if step in ("create", "edit"):
            action = f"connection.request.{step}"
            data = {"document": self.document(resolved=False), "document_hash": doc_hash}
            if step == "edit":
                self.headers += 1
                data.update(previous_hash=doc_hash[::-1], revision=2)
        elif step in ("approve", "retry"):
            action, actor, outcome = f"connection.request.{step}", approver, "approved"
            data = {"document_hash": doc_hash, "comment": "ok" if step == "approve" else "",
                    "attempt": 1 + (step == "retry")}  # fmt: skip
        elif step == "reject":
            action, actor, outcome = "connection.request.reject", approver, "rejected"
            data = {"reason": "Use the shared partner credentials.", "document_hash": doc_hash}
        elif step == "cancel":
            action = "connection.request.cancel"
        elif step == "expire":
            action, actor, outcome = "connection.request.expire", None, "expired"
            data = {"expired_at": gen.now.isoformat()}
        elif step == "resolve":
            action, actor = "connection.vault.resolve", approver
            data = {"document": self.document(resolved=True), "document_hash": doc_hash}
        elif step == "failure":
            action, actor, outcome = "connection.create.failure", approver, "failure"
            data = {"error_code": "ThrottlingException", "error": "Rate exceeded; retry later."}
        else:  # success or refresh
            previous = self.state
            self.arn = self.arn or (
                f"arn:aws:events:us-east-1:123456789012:connection/{self.name}/{uuid.uuid4()}"
            )
            self.state = rnd.choice(STATES)
            action = (
                "connection.create.success" if step == "success" else "connection.state.refresh"
            )
            actor = approver if step == "success" else None
            data = {
                "secret_arn": f"arn:aws:secretsmanager:us-east-1:123456789012:secret:"
                f"events!connection/{self.name}/{self.request_id}",
                "state_reason": "",
                "authorization_type": self.kind,
                "creation_time": gen.now.isoformat(),
                "last_modified_time": gen.now.isoformat(),
            }
            if step == "refresh":
                data["previous_state"] = previous
        return {"action": action, "actor": actor, "outcome": outcome, "data": data}


class Generator:
    def __init__(self, seed: int, request_base: int):
        self.rnd = random.Random(seed)  # noqa: S311 - synthetic data, reproducible by seed
        self.users = [f"{f}.{last}" for f in FIRST for last in LAST]
        self.names = 5000
        self.next_request = request_base
        self.versions: dict[str, int] = {}
        self.stories: list[Story] = []
        self.now = timezone.now()

    def secret_version(self, ref: str) -> tuple[int, str]:
        """The version read now, and a stand-in fingerprint (no value exists behind it)."""
        version = self.versions.get(ref, self.rnd.randint(1, 3))
        if self.rnd.random() < 0.05:
            version += 1  # rotated since it was last read
        self.versions[ref] = version
        # Now and then two references hold the same value: the reuse correlation shows it.
        same = f"pool-{_stable(ref) % 50}" if _stable(ref) % 25 == 0 else f"{ref}@{version}"
        return version, audit.FINGERPRINT_PREFIX + hashlib.sha256(same.encode()).hexdigest()

    def entry(self) -> tuple[Story, dict]:
        while True:
            if len(self.stories) < 40:
                self.stories.append(Story(self, self.next_request))
                self.next_request += 1
            story = self.rnd.choice(self.stories)
            entry = story.next_event()
            if entry is not None:
                return story, entry
            self.stories.remove(story)


class Command(BaseCommand):
    help = "Append N realistic synthetic audit events to the chain (DEBUG only, for benchmarks)."

    def add_arguments(self, parser):
        parser.add_argument("count", type=int)
        parser.add_argument("--days", type=int, default=365, help="spread over this many days")
        parser.add_argument("--batch", type=int, default=20000)
        parser.add_argument("--seed", type=int, default=5)

    def handle(self, *args, count, days, batch, seed, **options):
        if not settings.DEBUG:
            raise CommandError(
                "generate_audit_events writes synthetic events into the audit log; it runs only "
                "with DEBUG on, never against a production database."
            )
        if count < 1:
            raise CommandError("Give a number of events from 1.")
        last = AuditEvent.objects.order_by("-id").values_list("created_at", flat=True).first()
        top = AuditEvent.objects.filter(request_id__gte=ID_BASE).order_by("-request_id")
        top_request = top.values_list("request_id", flat=True).first()
        gen = Generator(seed, (top_request or ID_BASE - 1) + 1)
        start = max(gen.now - timedelta(days=days), last or gen.now - timedelta(days=days))
        step = (gen.now - start) / count
        done = 0
        while done < count:
            n = min(batch, count - done)
            times = [start + step * (done + i + 1) for i in range(n)]
            self._append(gen, times)
            done += n
            if options["verbosity"] > 1:
                self.stdout.write(f"{done}/{count} events")
        if options["verbosity"]:
            self.stdout.write(self.style.SUCCESS(f"Appended {count} events."))

    @transaction.atomic
    def _append(self, gen: Generator, times: list) -> None:
        seq, prev = audit.lock_head()
        rows, uses = [], []
        for created in times:
            story, entry = gen.entry()
            actor = entry["actor"]
            seq += 1
            fields = {  # as audit.append() builds them
                "id": seq,
                "created_at": created,
                "actor_id": None if actor is None else ID_BASE + actor,
                "actor_username": "system" if actor is None else gen.users[actor],
                "action": entry["action"],
                "request_id": story.request_id,
                "connection_name": story.name,
                "outcome": entry["outcome"],
                "arn": story.arn,
                "connection_state": story.state,
                "data": entry["data"],
            }
            prev = audit.seal(fields, prev)
            rows.append(tuple(fields[column] for column in audit.COLUMNS))
            for use in audit.secret_uses(entry["data"]):
                uses.append((seq, *(use[column] for column in USE_COLUMNS[1:])))
        self._write(AuditEvent, audit.COLUMNS, rows)
        self._write(AuditSecretUse, USE_COLUMNS, uses)
        audit.advance_head(seq, prev)

    def _write(self, model, columns, rows) -> None:
        if connection.vendor == "postgresql":  # COPY: fills the 1M-event bench log in minutes
            table = connection.ops.quote_name(model._meta.db_table)
            sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
            with connection.cursor() as cursor, cursor.copy(sql) as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            objs = [model(**dict(zip(columns, row, strict=True))) for row in rows]
            model.objects.bulk_create(objs, batch_size=500)
