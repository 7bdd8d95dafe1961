"""Real servers for the tests that ask for them (`servers`): one OpenBao dev server and one moto
server on loopback, started on first use and kept for the session. Every other test has Vault
and AWS pointed at a closed loopback port, so nothing reaches a developer's own servers or AWS."""

from __future__ import annotations

import json
import os
import secrets
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from connections_app import checkpoints, devstack, eventbridge, health, roles, vault
from tests import faults
from tests.faults import FaultProxy

KV1 = devstack.KV1_MOUNT
# moto's server, with the EventBridge behaviour AWS documents and moto lacks (tests/moto_ext.py).
MOTO_EXT = str(Path(__file__).with_name("moto_ext.py"))


@pytest.fixture(scope="session")
def openbao():
    """The session's OpenBao, with Transit and the key that signs audit checkpoints, as the dev
    stack has them."""
    server = devstack.start_openbao()
    devstack.seed_audit_signing(server.url, server.extra["token"])
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto():
    server = devstack.start_moto(script=MOTO_EXT)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def canaries(openbao):
    """Unique secret values seeded in OpenBao; no page, row or log may ever contain one."""
    values = {name: f"CANARY{secrets.token_hex(10)}" for name in (
        "password", "client_secret", "api_key", "header_token", "v1_key", "old", "new"
    )}  # fmt: skip
    t = openbao.extra["token"]
    devstack.bao(openbao.url, t, "secrets", "enable", "-path", KV1, "-version=1", "kv")
    devstack.bao(openbao.url, t, "kv", "put", "secret/canary/basic", "username=alice",
                 f"password={values['password']}")  # fmt: skip
    devstack.bao(openbao.url, t, "kv", "put", "secret/canary/oauth",
                 f"client_secret={values['client_secret']}",
                 f"header_token={values['header_token']}")  # fmt: skip
    devstack.bao(
        openbao.url, t, "kv", "put", "secret/canary/apikey", f"api_key={values['api_key']}"
    )
    devstack.bao(openbao.url, t, "kv", "put", f"{KV1}/canary/v1", f"api_key={values['v1_key']}")
    devstack.bao(openbao.url, t, "kv", "put", "secret/canary/rotating", f"value={values['old']}")
    devstack.bao(openbao.url, t, "kv", "put", "secret/canary/rotating", f"value={values['new']}")
    return values


def _point_at(settings, monkeypatch, *, vault_url: str, vault_token: str, aws_url: str) -> None:
    settings.VAULT_ADDR = vault_url
    settings.VAULT_TOKEN = vault_token
    settings.VAULT_ROLE_ID = settings.VAULT_SECRET_ID = settings.VAULT_K8S_ROLE = ""
    settings.VAULT_NAMESPACE = ""
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    settings.AWS_REGION = "us-east-1"
    settings.AWS_MAX_ATTEMPTS = 2
    settings.AWS_READ_TIMEOUT = 5
    vault.reset_client()
    eventbridge.reset_clients()
    health.reset()  # /healthz's cached answer was about another test's servers


@pytest.fixture(autouse=True)
def _no_outside_calls(settings, monkeypatch):
    """Whatever the developer's environment says, a test reaches no Vault and no AWS of theirs:
    both point at a closed loopback port until a test asks for `servers`."""
    from django.core.cache import cache

    closed = f"http://127.0.0.1:{faults.closed_port()}"
    _point_at(settings, monkeypatch, vault_url=closed, vault_token="none", aws_url=closed)
    cache.clear()  # per-user counters (the Check budget) and cached fragments: per test
    yield
    checkpoints.join_background(30)  # nothing signs into the next test's database or store
    checkpoints.reset()
    vault.reset_client()
    eventbridge.reset_clients()
    health.reset()


@pytest.fixture
def servers(openbao, moto, canaries, settings, monkeypatch, _no_outside_calls):
    """The session's OpenBao (seeded with the canaries) and moto, for this test, with a
    checkpoint store of its own (the test's database starts empty; the store would not)."""
    token = openbao.extra["token"]
    _point_at(settings, monkeypatch, vault_url=openbao.url, vault_token=token, aws_url=moto.url)
    settings.AUDIT_CHECKPOINT_PATH = f"audit-checkpoints/test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def bao_cli(openbao):
    def run(*args, input_text=None):
        return devstack.bao(openbao.url, openbao.extra["token"], *args, input_text=input_text)

    return run


CANARY_READ = 'path "secret/data/canary/*" { capabilities = ["read"] }'


@pytest.fixture
def approle_login(servers, bao_cli, settings):
    """The app logged in with a real AppRole on a mount of its own: `login(policy, ttl=...)`
    sets VAULT_ROLE_ID and VAULT_SECRET_ID, and returns (role_id, secret_id, mount)."""
    made = []

    def login(policy: str | None = CANARY_READ, *, ttl: str = "1h") -> tuple[str, str, str]:
        mount = f"approle-{uuid.uuid4().hex[:8]}"
        name = f"policy-{mount}"
        bao_cli("auth", "enable", f"-path={mount}", "approle")
        made.append((mount, name if policy else None))
        if policy:
            bao_cli("policy", "write", name, "-", input_text=policy)
        bao_cli("write", f"auth/{mount}/role/app", f"token_policies={name if policy else ''}",
                f"token_ttl={ttl}", f"token_max_ttl={ttl}")  # fmt: skip
        role_id = json.loads(bao_cli("read", "-format=json", f"auth/{mount}/role/app/role-id"))
        secret_id = json.loads(
            bao_cli("write", "-f", "-format=json", f"auth/{mount}/role/app/secret-id")
        )
        settings.VAULT_TOKEN = ""
        settings.VAULT_APPROLE_MOUNT = mount
        settings.VAULT_ROLE_ID = role_id["data"]["role_id"]
        settings.VAULT_SECRET_ID = secret_id["data"]["secret_id"]
        vault.reset_client()
        return role_id["data"]["role_id"], secret_id["data"]["secret_id"], mount

    yield login
    vault.reset_client()
    for mount, policy in made:
        bao_cli("auth", "disable", mount)
        if policy:
            bao_cli("policy", "delete", policy)


@pytest.fixture
def checkpoint_approle(approle_login):
    """The app logged in with an AppRole whose only policy is the checkpoint policy (what
    `audit_checkpoint --policy` prints); yields its role id, secret id and mount."""
    return approle_login(checkpoints.vault_policy())


@pytest.fixture
def unique_name():
    return f"conn-{uuid.uuid4().hex[:12]}"


# ---------------------------------------------------------------------------
# Counting every call the app makes to Vault and to AWS


@pytest.fixture(scope="session")
def _vault_counter(openbao):
    with FaultProxy(openbao.url) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def _aws_counter(moto):
    with FaultProxy(moto.url) as proxy:
        yield proxy


@dataclass
class Calls:
    vault: FaultProxy
    aws: FaultProxy

    def reset(self) -> None:
        self.vault.seen.clear()
        self.aws.seen.clear()
        self.vault.rules.clear()
        self.aws.rules.clear()

    def total(self) -> tuple[int, int]:
        return len(self.vault.seen), len(self.aws.seen)

    def secret_reads(self) -> int:
        """Reads of a secret's data (KV v2 `data/` or a KV v1 path), not mount lookups."""
        return sum(
            1
            for method, path, _ in self.vault.seen
            if method == "GET"
            and path.startswith("/v1/")
            and "/sys/" not in path
            and "/auth/" not in path
        )


@pytest.fixture
def calls(servers, _vault_counter, _aws_counter, settings, monkeypatch) -> Calls:
    """The app reaches Vault and AWS through counting proxies for this test."""
    settings.VAULT_ADDR = _vault_counter.url
    monkeypatch.setenv("AWS_ENDPOINT_URL", _aws_counter.url)
    vault.reset_client()
    eventbridge.reset_clients()
    counted = Calls(_vault_counter, _aws_counter)
    counted.reset()
    yield counted
    counted.reset()


# ---------------------------------------------------------------------------
# Users


@pytest.fixture
def user_factory(db, django_user_model):
    from django.contrib.auth.models import Group

    def make(username=None, *, groups=(), superuser=False):
        username = username or f"user-{uuid.uuid4().hex[:8]}"
        user = django_user_model.objects.create_user(
            username=username,
            email=f"{username.strip('+@')}@example.com",  # where their notifications go
            password="pw-for-tests-only",  # noqa: S106
            is_superuser=superuser,
            is_staff=superuser,
        )
        user.groups.set(Group.objects.filter(name__in=groups))
        if roles.REQUESTERS in groups:  # the tests' requesters may reference their secrets
            _broad_scope()
        return user

    return make


@pytest.fixture
def requester(user_factory):
    return user_factory("requester", groups=[roles.REQUESTERS])


@pytest.fixture
def approver(user_factory):
    return user_factory("approver", groups=[roles.APPROVERS])


@pytest.fixture
def auditor(user_factory):
    return user_factory("auditor", groups=[roles.AUDITORS])


@pytest.fixture
def admin_user(user_factory):
    return user_factory("admin", superuser=True)


def _broad_scope() -> None:
    """The requesters group's scope in tests: every path the tests seed, and the OAuth host
    their documents use. Scope tests narrow it."""
    from django.contrib.auth.models import Group

    from connections_app.models import Scope

    Scope.objects.get_or_create(
        group=Group.objects.get(name=roles.REQUESTERS),
        defaults={"path_prefixes": f"secret/\n{KV1}/", "allowed_hosts": "auth.example.com"},
    )


def _client_for(user):
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def requester_client(requester):
    return _client_for(requester)


@pytest.fixture
def approver_client(approver):
    return _client_for(approver)


@pytest.fixture
def auditor_client(auditor):
    return _client_for(auditor)


@pytest.fixture
def admin_client_(admin_user):
    return _client_for(admin_user)


# ---------------------------------------------------------------------------
# Documents


@pytest.fixture
def make_document(unique_name):
    """A valid request document for each authorization type, referencing the canary secrets."""

    def make(kind="API_KEY", name=None, **extra):
        doc = {"Name": name or unique_name, "Description": "partner API", "AuthorizationType": kind}
        if kind == "BASIC":
            auth = {"BasicAuthParameters": {
                "Username": "alice",
                "Password": {"vault": "secret/canary/basic#password", "version": None},
            }}  # fmt: skip
        elif kind == "OAUTH_CLIENT_CREDENTIALS":
            auth = {"OAuthParameters": {
                "ClientParameters": {
                    "ClientID": "client-1",
                    "ClientSecret": {"vault": "secret/canary/oauth#client_secret", "version": None},
                },
                "AuthorizationEndpoint": "https://auth.example.com/oauth2/token",
                "HttpMethod": "POST",
                "OAuthHttpParameters": {"BodyParameters": [
                    {"Key": "grant_type", "Value": "client_credentials", "IsValueSecret": False},
                ]},
            }}  # fmt: skip
        else:
            auth = {"ApiKeyAuthParameters": {
                "ApiKeyName": "x-api-key",
                "ApiKeyValue": {"vault": "secret/canary/apikey#api_key", "version": None},
            }}  # fmt: skip
        auth["InvocationHttpParameters"] = {"HeaderParameters": [
            {"Key": "X-Token", "Value": {"vault": "secret/canary/oauth#header_token",
                                         "version": None}, "IsValueSecret": True},
            {"Key": "X-Plain", "Value": "plain-value", "IsValueSecret": False},
        ]}  # fmt: skip
        doc["AuthParameters"] = auth
        doc.update(extra)
        return doc

    return make


# ---------------------------------------------------------------------------
# Mail


class SMTPServer:
    """aiosmtpd on a loopback port, for the test that asks: `messages` (as received),
    `answer` (the reply to DATA; a 5xx refuses), `hold` (an Event DATA waits on)."""

    def __init__(self):
        from aiosmtpd.controller import Controller

        self.messages: list[bytes] = []
        self.answer = "250 OK"
        self.hold = None
        self.received = threading.Event()
        server = self

        class Handler:
            async def handle_DATA(self, smtp, session, envelope):
                import asyncio

                server.messages.append(envelope.original_content or envelope.content)
                server.received.set()
                while server.hold is not None and not server.hold.is_set():
                    await asyncio.sleep(0.05)
                return server.answer

        self.port = faults.closed_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def message_ids(self) -> list[str]:
        import email

        return [email.message_from_bytes(m)["Message-ID"] for m in self.messages]


@pytest.fixture
def smtp(settings):
    """A real SMTP server; Django's mail goes to it for this test."""
    server = SMTPServer()
    server.controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", server.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_TIMEOUT = 5
    yield server
    if server.hold is not None:
        server.hold.set()
    server.controller.stop()
