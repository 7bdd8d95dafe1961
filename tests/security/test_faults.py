"""Fault injection against the real servers, each fault during an approval.

Every fault must end with a clear message, the request left where it can be retried from,
a complete audit trail (the chain verifies), nothing half-written, within a time budget
derived from the configured timeouts; and the retry, once the fault is gone, creates the
connection exactly once.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import uuid
from dataclasses import dataclass

import boto3
import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from connections_app import audit, devstack, eventbridge, services, vault
from connections_app.models import AuditEvent, ConnectionRequest, DocumentRevision, Target
from tests.faults import FaultProxy, aws_target, path_rule

R = ConnectionRequest
pytestmark = [pytest.mark.usefixtures("servers"), pytest.mark.django_db]

VAULT_TIMEOUT = 0.5
AWS_CONNECT_TIMEOUT = 0.5
AWS_READ_TIMEOUT = 1.0
AWS_MAX_ATTEMPTS = 2
SLACK = 3.0  # seconds on top of the timeouts for everything that is not waiting


@pytest.fixture(autouse=True)
def _short_timeouts(settings, servers):
    settings.VAULT_TIMEOUT = VAULT_TIMEOUT
    settings.AWS_CONNECT_TIMEOUT = AWS_CONNECT_TIMEOUT
    settings.AWS_READ_TIMEOUT = AWS_READ_TIMEOUT
    settings.AWS_MAX_ATTEMPTS = AWS_MAX_ATTEMPTS
    vault.reset_client()
    eventbridge.reset_clients()


# ---------------------------------------------------------------------------
# Helpers


def actions(request) -> list[str]:
    return list(
        AuditEvent.objects.filter(request_id=request.pk)
        .order_by("id")
        .values_list("action", flat=True)
    )


def connections_named(name: str) -> int:
    found = boto3.client("events").list_connections(NamePrefix=name)["Connections"]
    return sum(c["Name"] == name for c in found)


@dataclass
class Observed:
    status: str
    code: str
    message: str
    elapsed: float


def approve(request, approver) -> Observed:
    started = time.monotonic()
    services.request_approve(request=request, approver=approver, seen_hash=request.document_hash)
    elapsed = time.monotonic() - started
    row = R.objects.get(pk=request.pk)
    return Observed(row.status, row.error_code, row.error_message, elapsed)


def retry(request, approver) -> ConnectionRequest:
    services.request_retry(request=request, approver=approver, seen_hash=request.document_hash)
    return R.objects.get(pk=request.pk)


def assert_failed_cleanly(
    request, seen: Observed, *, codes, words, budget, canaries, aws_name=True
):
    """Clear message, retryable state, audit trail, nothing half-written, within the budget."""
    row = R.objects.get(pk=request.pk)
    assert seen.status == R.FAILED, (seen.status, seen.code, seen.message)
    assert seen.code in codes, seen.code
    assert words.lower() in seen.message.lower(), seen.message
    for value in canaries.values():
        assert value not in seen.message
    assert row.submit_attempts == 1
    assert row.connection_id is None  # no connection recorded
    assert DocumentRevision.objects.filter(request=row).count() == 1
    trail = actions(request)
    assert trail[:2] == ["connection.request.create", "connection.request.approve"]
    assert trail[-1] == "connection.create.failure"
    failure = audit.parsed(AuditEvent.objects.filter(request_id=request.pk).order_by("-id")[0])
    assert failure["error_code"] == seen.code
    assert audit.verify_chain().ok
    if aws_name:
        assert connections_named(request.name) == 0
    assert seen.elapsed < budget, f"{seen.elapsed:.2f} s > budget {budget:.2f} s"


def retried(request, approver, *, creates_before: int = 0) -> tuple[ConnectionRequest, str]:
    done = retry(request, approver)
    assert done.status == R.CREATED, (done.error_code, done.error_message)
    assert connections_named(request.name) == 1
    chain = audit.verify_chain()
    assert chain.ok
    last = actions(request)[-1]
    assert last in ("connection.create.success", "connection.create.adopt")
    return done, f"retry -> {done.status} ({last.rsplit('.', 1)[-1]}), 1 connection"


def trail_text(request) -> str:
    return " > ".join(a.split(".", 1)[1] for a in actions(request))


def summary(seen: Observed, budget: float, after: str, request) -> str:
    return (
        f"{seen.status} {seen.code}: “{seen.message}”; {after}; audit {trail_text(request)}, "
        f"chain verifies; {seen.elapsed:.2f} s (budget {budget:.1f} s)"
    )


# ---------------------------------------------------------------------------
# A second OpenBao, ours to stop, seal and restart


class SecondBao:
    def __init__(self, canaries: dict[str, str]):
        self.canaries = canaries
        self.token = f"fault-root-{uuid.uuid4().hex[:8]}"
        self.server = devstack.start_openbao(root_token=self.token)
        self.port = int(self.server.url.rsplit(":", 1)[1])
        self.seed()

    @property
    def url(self) -> str:
        return self.server.url

    def cli(self, *args: str) -> str:
        return devstack.bao(self.url, self.token, *args)

    def seed(self) -> None:
        c = self.canaries
        self.cli("kv", "put", "secret/canary/basic", "username=alice", f"password={c['password']}")
        self.cli("kv", "put", "secret/canary/oauth", f"client_secret={c['client_secret']}",
                 f"header_token={c['header_token']}")  # fmt: skip
        self.cli("kv", "put", "secret/canary/apikey", f"api_key={c['api_key']}")

    def up(self) -> None:
        if self.server.proc.poll() is None:
            return
        # Its old port may linger in TIME_WAIT: the restarted server may get another one.
        self.server = devstack.start_openbao(port=self.port, root_token=self.token)
        self.seed()

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture(scope="module")
def second_bao(canaries):
    bao = SecondBao(canaries)
    yield bao
    bao.stop()


@pytest.fixture
def on_second_bao(second_bao, settings):
    second_bao.up()
    settings.VAULT_ADDR = second_bao.url
    settings.VAULT_TOKEN = second_bao.token
    vault.reset_client()
    return second_bao


@pytest.fixture
def pending(requester, make_document):
    """A request made while everything works, with two distinct secrets to read."""
    return services.request_create(requester=requester, document=make_document("API_KEY"))


# ---------------------------------------------------------------------------
# Vault faults


def test_openbao_stopped(on_second_bao, requester, approver, make_document, canaries, settings,
                         security_report):  # fmt: skip
    request = services.request_create(requester=requester, document=make_document("BASIC"))
    on_second_bao.stop()
    seen = approve(request, approver)
    budget = VAULT_TIMEOUT + SLACK
    assert_failed_cleanly(request, seen, codes={"vault_unreachable"}, words="unreachable",
                          budget=budget, canaries=canaries)  # fmt: skip
    on_second_bao.up()  # restarted (a dev server starts empty: seeded again)
    settings.VAULT_ADDR = on_second_bao.url
    vault.reset_client()
    _, after = retried(request, approver)
    security_report.add("faults", "OpenBao stopped", summary(seen, budget, after, request))


def test_openbao_sealed(on_second_bao, requester, approver, make_document, canaries,
                        security_report):  # fmt: skip
    request = services.request_create(requester=requester, document=make_document("BASIC"))
    on_second_bao.cli("operator", "seal")
    try:
        seen = approve(request, approver)
    finally:
        on_second_bao.cli("operator", "unseal", on_second_bao.server.extra["unseal_key"])
    budget = VAULT_TIMEOUT + SLACK
    assert_failed_cleanly(request, seen, codes={"vault_sealed"}, words="sealed", budget=budget,
                          canaries=canaries)  # fmt: skip
    _, after = retried(request, approver)
    security_report.add("faults", "OpenBao sealed", summary(seen, budget, after, request))


def test_openbao_slow(pending, approver, openbao, settings, canaries, security_report):
    delay = 4 * VAULT_TIMEOUT
    with FaultProxy(openbao.url) as proxy:
        settings.VAULT_ADDR = proxy.url
        vault.reset_client()  # a cold mount cache: the mount lookup is slow too
        proxy.rules.append(path_rule("/v1/", ("delay", delay)))
        seen = approve(pending, approver)
        # Each reader makes at most two calls (mount, secret), each bounded by VAULT_TIMEOUT.
        budget = 2 * VAULT_TIMEOUT + SLACK
        assert_failed_cleanly(pending, seen, codes={"vault_unreachable"}, words="timed out",
                              budget=budget, canaries=canaries)  # fmt: skip
        assert seen.elapsed >= VAULT_TIMEOUT  # the timeout fired, not something else
        proxy.rules.clear()
        proxy.wait_idle()
        _, after = retried(pending, approver)
    security_report.add(
        "faults",
        f"OpenBao slow (proxy delays {delay:.1f} s, VAULT_TIMEOUT {VAULT_TIMEOUT} s)",
        summary(seen, budget, after, pending),
    )


def test_vault_answers_something_that_is_not_a_secret(pending, approver, openbao, settings,
                                                      canaries, security_report):  # fmt: skip
    """A proxy or another engine answers 200 with an odd body: a clear failure, not a crash."""
    odd = json.dumps({"data": {"data": "not an object", "metadata": ["x"]}}).encode()
    answer = ("status", 200, odd, {"Content-Type": "application/json"})
    with FaultProxy(openbao.url) as proxy:
        settings.VAULT_ADDR = proxy.url
        vault.reset_client()
        proxy.rules.append(path_rule("/v1/secret/data/canary/apikey", answer))
        seen = approve(pending, approver)
        budget = VAULT_TIMEOUT + SLACK
        assert_failed_cleanly(
            pending, seen, codes={"vault_unexpected_answer"}, words="not a KV secret",
            budget=budget, canaries=canaries,
        )  # fmt: skip
        proxy.rules.clear()
        _, after = retried(pending, approver)
    security_report.add(
        "faults", "Vault answers 200 with a body that is not a KV secret",
        summary(seen, budget, after, pending),
    )  # fmt: skip


def _child_token(bao_cli, *policies: str) -> str:
    args = [f"-policy={p}" for p in policies] or []
    created = json.loads(bao_cli("token", "create", "-format=json", *args))
    return created["auth"]["client_token"]


def test_token_revoked_between_two_secret_reads(pending, approver, openbao, bao_cli, settings,
                                                 canaries, security_report):  # fmt: skip
    token = _child_token(bao_cli)
    settings.VAULT_TOKEN = token
    # The revocation runs the bao CLI inside the proxy while the app waits for its answer: on a
    # loaded machine that outlasts the short fault timeout, so this test (not about timeouts)
    # gives Vault longer.
    settings.VAULT_TIMEOUT = 5.0
    vault.reset_client()
    reads = []

    def revoke_before_second_read(method, path):
        reads.append(path)
        if len(reads) == 2:
            bao_cli("token", "revoke", token)

    with FaultProxy(openbao.url) as proxy:
        settings.VAULT_ADDR = proxy.url
        vault.reset_client()
        proxy.rules.append(path_rule("/v1/secret/data/", None, then=revoke_before_second_read))
        seen = approve(pending, approver)
    budget = settings.VAULT_TIMEOUT + SLACK
    assert len(reads) == 2, reads
    assert_failed_cleanly(pending, seen, codes={"vault_permission_denied"}, words="denied",
                          budget=budget, canaries=canaries)  # fmt: skip
    settings.VAULT_ADDR = openbao.url
    settings.VAULT_TOKEN = _child_token(bao_cli)  # the operator issues a new token
    vault.reset_client()
    _, after = retried(pending, approver)
    security_report.add(
        "faults",
        "app's token revoked between two secret reads",
        summary(seen, budget, after, pending),
    )


def test_token_revoked_mid_way_with_approle_logs_in_again(pending, approver, openbao, bao_cli,
                                                          settings, security_report,
                                                          approle_login):  # fmt: skip
    _, _, mount = approle_login()
    logins, reads = [], []

    def revoke_before_second_read(method, path):
        reads.append(path)
        if len(reads) == 2:
            bao_cli("token", "revoke", vault._client.get().token)

    try:
        with FaultProxy(openbao.url) as proxy:
            settings.VAULT_ADDR = proxy.url
            vault.reset_client()
            proxy.rules += [
                path_rule(f"/v1/auth/{mount}/login", None, then=lambda m, p: logins.append(p)),
                path_rule("/v1/secret/data/", None, then=revoke_before_second_read),
            ]
            vault._client.get()  # the first login
            seen = approve(pending, approver)
    finally:
        vault.reset_client()
    assert seen.status == R.CREATED, (seen.code, seen.message)
    assert len(logins) >= 2
    assert connections_named(pending.name) == 1
    assert audit.verify_chain().ok
    security_report.add(
        "faults",
        "app's AppRole token revoked between two secret reads",
        f"{seen.status} without a retry: the app logged in again ({len(logins)} logins, "
        f"{len(reads)} secret reads); audit {trail_text(pending)}; "
        f"{seen.elapsed:.2f} s",
    )


def test_policy_removed(pending, approver, bao_cli, settings, canaries, security_report):
    policy = f"fault-policy-{uuid.uuid4().hex[:6]}"
    rules = 'path "secret/data/canary/*" { capabilities = ["read"] }'
    bao_cli("policy", "write", policy, "-", input_text=rules)
    settings.VAULT_TOKEN = _child_token(bao_cli, policy)
    vault.reset_client()
    request = services.request_create(requester=pending.requester, document={
        **pending.document, "Name": f"{pending.name}-p"})  # fmt: skip
    bao_cli("policy", "delete", policy)
    vault.reset_client()  # a fresh process: no mount cached from before
    seen = approve(request, approver)
    budget = VAULT_TIMEOUT + SLACK
    assert_failed_cleanly(request, seen, codes={"vault_permission_denied", "vault_mount_not_found"},
                          words="Vault", budget=budget, canaries=canaries)  # fmt: skip
    bao_cli("policy", "write", policy, "-", input_text=rules)
    _, after = retried(request, approver)
    bao_cli("policy", "delete", policy)
    security_report.add("faults", "app's policy deleted", summary(seen, budget, after, request))


# ---------------------------------------------------------------------------
# AWS faults


@pytest.fixture
def second_moto(monkeypatch):
    server = devstack.start_moto()
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
    eventbridge.reset_clients()
    yield server
    server.stop()


def test_moto_stopped(second_moto, requester, approver, make_document, canaries, monkeypatch,
                      security_report):  # fmt: skip
    request = services.request_create(requester=requester, document=make_document("API_KEY"))
    second_moto.stop()
    seen = approve(request, approver)
    budget = AWS_CONNECT_TIMEOUT + SLACK
    restarted = devstack.start_moto()  # a new, empty moto: retrying must create it there
    monkeypatch.setenv("AWS_ENDPOINT_URL", restarted.url)
    eventbridge.reset_clients()
    try:
        assert_failed_cleanly(request, seen, codes={"EndpointUnreachable"}, words="reached",
                              budget=budget, canaries=canaries)  # fmt: skip
        _, after = retried(request, approver)
    finally:
        restarted.stop()
    security_report.add("faults", "moto server stopped", summary(seen, budget, after, request))


@pytest.fixture
def aws_proxy(moto, monkeypatch):
    with FaultProxy(moto.url) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        eventbridge.reset_clients()
        yield proxy
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.url)
    eventbridge.reset_clients()


JSON = {"Content-Type": "application/x-amz-json-1.1"}
THROTTLED = ("status", 400, b'{"__type":"ThrottlingException","message":"Rate exceeded"}', JSON)
INTERNAL = ("status", 500, b'{"__type":"InternalException","message":"Internal failure"}', JSON)


def test_moto_slow_create_times_out_then_retry_adopts(pending, approver, aws_proxy, canaries,
                                                       security_report):  # fmt: skip
    delay = AWS_READ_TIMEOUT + 1.5
    aws_proxy.rules.append(aws_target("CreateConnection", ("delay", delay), times=1))
    seen = approve(pending, approver)
    budget = AWS_CONNECT_TIMEOUT + AWS_READ_TIMEOUT + SLACK  # one attempt: never resent
    assert_failed_cleanly(pending, seen, codes={"Timeout"}, words="timed out", budget=budget,
                          canaries=canaries, aws_name=False)  # fmt: skip
    assert seen.elapsed >= AWS_READ_TIMEOUT
    aws_proxy.wait_idle()  # the slow create did reach AWS after all
    assert aws_proxy.targets("CreateConnection") == 1
    _, after = retried(pending, approver)
    assert aws_proxy.targets("CreateConnection") == 1  # adopted, not created twice
    security_report.add(
        "faults",
        f"moto slow (CreateConnection delayed {delay:.1f} s, read timeout {AWS_READ_TIMEOUT} s)",
        summary(seen, budget, after, pending) + "; CreateConnection sent once in all",
    )


def test_moto_answers_500(pending, approver, aws_proxy, canaries, security_report):
    aws_proxy.rules.append(aws_target("CreateConnection", INTERNAL, times=1))
    seen = approve(pending, approver)
    budget = AWS_CONNECT_TIMEOUT + AWS_READ_TIMEOUT + SLACK
    assert_failed_cleanly(pending, seen, codes={"InternalException"}, words="internal error",
                          budget=budget, canaries=canaries)  # fmt: skip
    sent = aws_proxy.targets("CreateConnection")
    assert sent == 1  # not idempotent: never resent by the SDK
    _, after = retried(pending, approver)
    security_report.add(
        "faults", "moto answers 500 InternalException",
        summary(seen, budget, after, pending) + f"; CreateConnection sent {sent}x before the retry",
    )  # fmt: skip


def test_moto_throttles_every_attempt(pending, approver, aws_proxy, canaries, security_report):
    aws_proxy.rules.append(aws_target("CreateConnection", THROTTLED, times=AWS_MAX_ATTEMPTS))
    seen = approve(pending, approver)
    # Backoff sleeps at most 2**attempt seconds between attempts (full jitter).
    budget = (
        AWS_MAX_ATTEMPTS * (AWS_CONNECT_TIMEOUT + AWS_READ_TIMEOUT)
        + sum(2**a for a in range(AWS_MAX_ATTEMPTS - 1))
        + SLACK
    )
    assert_failed_cleanly(pending, seen, codes={"ThrottlingException"}, words="throttled",
                          budget=budget, canaries=canaries)  # fmt: skip
    sent = aws_proxy.targets("CreateConnection")
    assert sent == AWS_MAX_ATTEMPTS  # throttling happens before AWS acts: safe to resend
    _, after = retried(pending, approver)
    security_report.add(
        "faults", f"moto throttles (400 ThrottlingException x{AWS_MAX_ATTEMPTS})",
        summary(seen, budget, after, pending) + f"; CreateConnection tried {sent}x (the limit)",
    )  # fmt: skip


def test_moto_throttles_once_then_succeeds(pending, approver, aws_proxy, security_report):
    aws_proxy.rules.append(aws_target("CreateConnection", THROTTLED, times=1))
    seen = approve(pending, approver)
    assert seen.status == R.CREATED, (seen.code, seen.message)
    assert aws_proxy.targets("CreateConnection") == 2
    assert connections_named(pending.name) == 1
    security_report.add(
        "faults", "moto throttles once",
        f"{seen.status} without a retry (CreateConnection tried "
        f"{aws_proxy.targets('CreateConnection')}x), 1 connection; {seen.elapsed:.2f} s",
    )  # fmt: skip


NOT_FOUND = ("status", 400, b'{"__type":"ResourceNotFoundException","message":"not found"}', JSON)


@pytest.mark.parametrize(
    "answer, error", [(INTERNAL, "InternalException"), (NOT_FOUND, "")], ids=["500", "not-found"]
)
def test_describe_failing_after_create_still_records_the_connection(
    pending, approver, aws_proxy, canaries, security_report, answer, error
):
    """The connection exists once CreateConnection answers: a failing describe afterwards (every
    attempt answered 500, or not found yet) must not turn it into a failed request."""
    # A 500 is retried by the SDK, a not-found is not.
    times = AWS_MAX_ATTEMPTS if answer is INTERNAL else 1
    aws_proxy.rules.append(aws_target("DescribeConnection", answer, times=times))
    seen = approve(pending, approver)
    row = R.objects.get(pk=pending.pk)
    assert seen.status == R.CREATED, (seen.code, seen.message)
    assert aws_proxy.targets("CreateConnection") == 1
    assert connections_named(pending.name) == 1
    (arn,) = [
        c["ConnectionArn"]
        for c in boto3.client("events").list_connections(NamePrefix=pending.name)["Connections"]
        if c["Name"] == pending.name
    ]
    made = row.connection
    assert made.arn == arn and made.state and made.created_in_aws_at
    assert made.secret_arn == ""  # only describe_connection knows it
    assert actions(pending)[-1] == "connection.create.success"
    success = audit.parsed(AuditEvent.objects.filter(request_id=pending.pk).order_by("-id")[0])
    assert success.get("describe_error", "") == error
    assert audit.verify_chain().ok

    refreshed = services.connection_refresh(connection=made, actor=approver)  # the fault is over
    assert refreshed.secret_arn.startswith("arn:aws:secretsmanager:")
    refreshes = AuditEvent.objects.filter(arn=arn, action="connection.state.refresh")
    assert refreshes.count() == 1
    security_report.add(
        "faults",
        f"DescribeConnection answers {error or 'not found'} right after the create",
        f"{seen.status}, ARN and state from CreateConnection, CreateConnection sent once; "
        f"Refresh then records the secret ARN; audit {trail_text(pending)}",
    )


def test_only_idempotent_calls_are_resent(pending, approver, aws_proxy, security_report):
    """A 500 on DescribeConnection is retried by the SDK; on CreateConnection it is not."""
    assert approve(pending, approver).status == R.CREATED
    created = R.objects.get(pk=pending.pk)
    aws_proxy.seen.clear()
    aws_proxy.rules.append(aws_target("DescribeConnection", INTERNAL))
    with pytest.raises(eventbridge.EventBridgeError) as caught:
        services.connection_refresh(connection=created.connection, actor=approver)
    describes = aws_proxy.targets("DescribeConnection")
    assert caught.value.code == "InternalException"
    assert describes == AWS_MAX_ATTEMPTS
    client = eventbridge.events_client(Target.default(), retries=False)
    assert client.meta.config.retries["total_max_attempts"] == 1
    assert client.meta.config.read_timeout == AWS_READ_TIMEOUT
    assert client.meta.config.connect_timeout == AWS_CONNECT_TIMEOUT
    vault_timeout = vault._client.get().adapter._kwargs["timeout"]  # hvac keeps it there
    assert vault_timeout == VAULT_TIMEOUT
    security_report.add(
        "faults", "retries only for idempotent calls",
        f"DescribeConnection 500: sent {describes}x (AWS_MAX_ATTEMPTS {AWS_MAX_ATTEMPTS}); "
        f"CreateConnection client: total_max_attempts "
        f"{client.meta.config.retries['total_max_attempts']}, timeouts connect "
        f"{client.meta.config.connect_timeout} s / read {client.meta.config.read_timeout} s; "
        f"Vault client timeout {vault_timeout} s",
    )  # fmt: skip


# ---------------------------------------------------------------------------
# The database connection lost during an approval (PostgreSQL)


def on_postgres(test):
    """PostgreSQL only (pg_terminate_backend), and outside a test transaction."""
    for mark in (
        pytest.mark.postgres,
        pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL"),
        pytest.mark.django_db(transaction=True),
    ):
        test = mark(test)
    return test


@dataclass
class Lost:
    response: object
    page: str
    row: ConnectionRequest
    trail: list[str]
    elapsed: float
    killed: int


def _lose_database_during_create(client, request, aws_proxy) -> Lost:
    """Approve through the view; while CreateConnection is on its way, kill the app's session."""
    import psycopg

    params = connection.settings_dict
    killed = []

    def kill_app_session(method, path):
        with psycopg.connect(host=params["HOST"], port=params["PORT"] or 5432,
                             user=params["USER"], password=params["PASSWORD"] or None,
                             dbname=params["NAME"], autocommit=True) as killer:  # fmt: skip
            rows = killer.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
            killed.append(len(rows))

    aws_proxy.rules.append(aws_target("CreateConnection", None, times=1, then=kill_app_session))
    started = time.monotonic()
    response = client.post(
        reverse("request_approve", args=[request.pk]),
        {"document_hash": request.document_hash},
        follow=True,
    )
    elapsed = time.monotonic() - started
    connection.close()
    return Lost(
        response=response,
        page=response.content.decode(),
        row=R.objects.get(pk=request.pk),
        trail=actions(request),
        elapsed=elapsed,
        killed=killed[0] if killed else 0,
    )


@on_postgres
def test_database_connection_lost_during_approval(
    requester, approver, make_document, aws_proxy, settings, security_report
):
    request = services.request_create(requester=requester, document=make_document("API_KEY"))
    client = Client(raise_request_exception=False)
    client.force_login(approver)
    lost = _lose_database_during_create(client, request, aws_proxy)
    budget = AWS_CONNECT_TIMEOUT + AWS_READ_TIMEOUT + SLACK
    assert lost.killed >= 1
    shown = (
        " ".join(str(m) for m in lost.response.context["messages"])
        if (lost.response.status_code == 200 and lost.response.context)
        else lost.page
    )
    assert lost.response.status_code in (200, 500), lost.response.status_code
    assert lost.row.status == R.SUBMITTING and lost.row.submit_attempts == 1  # claimed, no more
    assert lost.trail == ["connection.request.create", "connection.request.approve"]
    assert audit.verify_chain().ok
    assert connections_named(request.name) == 1  # AWS did create it
    assert lost.elapsed < budget
    # Until SUBMIT_STALE_AFTER has passed the attempt may still be running: no Retry yet.
    detail = client.get(reverse("request_detail", args=[request.pk])).content.decode()
    assert "Retry submission" not in detail and 'data-testid="in-progress"' in detail
    settings.SUBMIT_STALE_AFTER = dt.timedelta(0)
    detail = client.get(reverse("request_detail", args=[request.pk])).content.decode()
    assert "Retry submission" in detail
    client.post(
        reverse("request_retry", args=[request.pk]), {"document_hash": request.document_hash}
    )
    done = R.objects.get(pk=request.pk)
    assert done.status == R.CREATED
    assert connections_named(request.name) == 1
    assert aws_proxy.targets("CreateConnection") == 1
    assert audit.verify_chain().ok
    words = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", shown)).strip()[:160]
    security_report.add(
        "faults", "database connection killed (pg_terminate_backend) while CreateConnection ran",
        f"HTTP {lost.response.status_code}: “{words}”; request left {lost.row.status} "
        f"(claimed, result not written), audit {' > '.join(lost.trail)}, "
        f"chain verifies; {lost.elapsed:.2f} s (budget {budget:.1f} s); retry after "
        f"SUBMIT_STALE_AFTER -> {done.status} by adopting, CreateConnection sent once, "
        f"audit {trail_text(request)}",
    )  # fmt: skip


@on_postgres
def test_database_loss_during_approval_says_what_happened(requester, approver, make_document,
                                                          aws_proxy):  # fmt: skip
    request = services.request_create(requester=requester, document=make_document("API_KEY"))
    client = Client(raise_request_exception=False)
    client.force_login(approver)
    lost = _lose_database_during_create(client, request, aws_proxy)
    assert lost.response.status_code == 200, "a generic 500 page"
    shown = " ".join(str(m) for m in lost.response.context["messages"])
    assert "database" in shown.lower() and "retry" in shown.lower(), shown
