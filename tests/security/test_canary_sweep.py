"""Canary sweep: every flow run with every logger at DEBUG; no canary anywhere, in any encoding.

Each test captures every log record (botocore, urllib3, hvac, django and SQL included), every
response, the mail outbox and every row of every table, then searches them for each canary
raw, base64 (at each byte offset), URL-encoded, JSON- and HTML-escaped, and for its random
cores alone. The first test proves the search finds what is there.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import logging
import re
import secrets
import threading
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlencode

import boto3
import pytest
import requests
from botocore.stub import Stubber
from django.core import mail
from django.core.management import call_command
from django.urls import URLPattern, get_resolver, reverse
from django.utils import timezone

from connections_app import audit, eventbridge, notify, roles, services, tasks, vault
from connections_app import document as doc
from connections_app.models import (
    AuditEvent,
    Connection,
    ConnectionRequest,
    Notification,
    Target,
)
from tests.faults import FaultProxy, aws_target, path_rule
from tests.security.canary import Capture, Corpus, make_canary, needles, search
from tests.security.forms import MAIN_REF, form, refs_of

R = ConnectionRequest
pytestmark = [pytest.mark.usefixtures("servers"), pytest.mark.django_db]
ADMINS = [("ops", "ops@example.com")]


def _name(tag: str) -> str:
    return f"sweep-{tag}-{uuid.uuid4().hex[:8]}"


class Web:
    """One recording client per role, and the flows they walk."""

    def __init__(self, capture: Capture, users: dict):
        self.capture = capture
        self.users = users
        self.c = {role: capture.client(user, role) for role, user in users.items()}
        self.c["anonymous"] = capture.client(None, "anonymous")

    def said(self) -> str:
        """The messages the last approve or retry showed."""
        return " ".join(str(m) for m in self.last.context["messages"])

    def flow(self, text: str) -> None:
        self.capture.flows.append(text)

    def file(self, kind: str, name: str, **kwargs) -> ConnectionRequest:
        data = form(kind, name, **kwargs)
        requester = self.c["requester"]
        requester.get(reverse("request_new"))
        requester.post(reverse("request_new"), dict(data, _check="all"))
        for ref in refs_of(data):
            assert requester.post(reverse("reference_check"), {"reference": ref}).json()["ok"]
        response = requester.post(reverse("request_new"), data)
        assert response.status_code == 302, response.content.decode()[:2000]
        obj = R.objects.get(name=name)
        requester.get(reverse("request_detail", args=[obj.pk]))
        requester.get(reverse("request_edit", args=[obj.pk]))
        requester.get(reverse("request_mine"))
        return obj

    def approve(self, obj: ConnectionRequest, who: str = "approver") -> ConnectionRequest:
        client = self.c[who]
        client.get(reverse("approval_queue"))
        client.get(reverse("request_detail", args=[obj.pk]))
        self.last = client.post(
            reverse("request_approve", args=[obj.pk]),
            {"document_hash": obj.document_hash, "comment": "looks right"},
            follow=True,
        )
        return R.objects.get(pk=obj.pk)  # a new instance: callers compare before and after

    def retry(self, obj: ConnectionRequest) -> ConnectionRequest:
        self.last = self.c["approver"].post(
            reverse("request_retry", args=[obj.pk]),
            {"document_hash": obj.document_hash},
            follow=True,
        )
        return R.objects.get(pk=obj.pk)  # a new instance: callers compare before and after


@pytest.fixture
def sweep(request, settings, sweep_canaries, canaries, requester, approver, auditor,
          admin_user, user_factory, security_report):  # fmt: skip
    """A Capture around the test, searched for every canary when the test's flows are done."""
    settings.ADMINS = ADMINS
    assert settings.DEBUG is False
    users = {
        "requester": requester,
        "requester2": user_factory("requester2", groups=[roles.REQUESTERS]),
        "approver": approver,
        "approver2": user_factory("approver2", groups=[roles.APPROVERS]),
        "auditor": auditor,
        "admin": admin_user,
    }
    values = {**{f"sweep {ref}": v for ref, v in sweep_canaries.items()}, **canaries}
    with Capture() as capture:
        web = Web(capture, users)
        web.canaries = values
        yield web
        capture.collect()
    hits, searched = search(capture.corpus, values)
    corpus = capture.corpus
    decoded = sum(searched.values()) - sum(
        map(len, (corpus.logs, corpus.responses, corpus.mails, corpus.rows, corpus.other))
    )
    encodings = len(needles(next(iter(values.values()))))
    for flow in capture.flows:
        security_report.add("flows swept", request.node.name, flow)
    security_report.add(
        "canary hits",
        request.node.name,
        f"{len(hits)} hits for {len(values)} canaries x {encodings} encodings in "
        f"{len(corpus.logs)} log records, {len(corpus.responses)} responses, "
        f"{len(corpus.mails)} mails, {len(corpus.rows)} rows of {len(capture.tables)} tables, "
        f"{len(corpus.other)} command outputs, {decoded} decoded cookie/session blobs",
    )
    assert capture.flows, "the sweep ran no flow"
    assert corpus.logs and corpus.responses and corpus.rows
    assert not hits, "\n".join(
        f"{h.canary} as {h.encoding} in {h.source}: {h.where}" for h in hits[:20]
    )


def seed(web: Web, bao_cli, path: str, key: str = "value", versions: int = 1) -> str:
    """A fresh canary secret (each version a canary); the sweep searches for each one."""
    for version in range(1, versions + 1):
        value = make_canary(key[:3])
        bao_cli("kv", "put", path, f"{key}={value}")
        web.canaries[f"{path}#{key} v{version}"] = value
    return f"{path}#{key}"


# ---------------------------------------------------------------------------
# The search itself finds what is there


def test_search_finds_every_encoding_and_the_filter_is_what_hides_bodies(
    sweep_canaries, canaries, requester, approver, make_document, settings, security_report
):
    settings.ADMINS = ADMINS
    value = next(iter(sweep_canaries.values()))
    corpus = Corpus()
    for encoding, text in needles(value).items():
        corpus.other.append((encoding, f"prefix {text} suffix"))
    for offset in range(3):
        blob = base64.b64encode(b"x" * offset + value.encode()).decode()
        corpus.other.append((f"inside base64 at offset {offset}", f"a{blob}b"))
    hits, _ = search(corpus, {"c": value})
    found = {h.where for h in hits}
    assert found == {label for label, _ in corpus.other}

    # Live: with the app's filter taken off botocore.endpoint, the same capture sees the value.
    endpoint = logging.getLogger("botocore.endpoint")
    filters = list(endpoint.filters)
    assert filters, "eventbridge.py installs no filter on botocore.endpoint"
    request = services.request_create(requester=requester, document=make_document("API_KEY"))
    with Capture() as capture:
        for f in filters:
            endpoint.removeFilter(f)
        try:
            services.request_approve(
                request=request, approver=approver, seen_hash=request.document_hash
            )
        finally:
            for f in filters:
                endpoint.addFilter(f)
        # Pages, mail and tables are captured too: a reference (not a secret) shows in each.
        capture.client(approver).get(reverse("request_detail", args=[request.pk]))
        mail.mail_admins("positive control", "the reference is secret/canary/apikey#api_key")
        capture.collect()
    unfiltered, _ = search(capture.corpus, {"api_key": canaries["api_key"]})
    planted, _ = search(capture.corpus, {"ref": "secret/canary/apikey#api_key"})
    sources = {h.source for h in planted}
    security_report.add(
        "canary hits",
        "positive control",
        f"{len(found)} of {len(corpus.other)} planted encodings found; botocore at DEBUG "
        f"without the app's filter: {len(unfiltered)} hits (so the sweep can see a leak); a "
        f"reference text found in {sorted(sources)}",
    )
    assert unfiltered
    assert sources >= {"logs", "responses", "mail", "database"}


# ---------------------------------------------------------------------------
# The flows

KINDS = list(MAIN_REF)


def test_sweep_every_authorization_type_to_a_connection(sweep):
    for kind in KINDS:
        obj = sweep.file(kind, _name(kind[:5].lower()))
        edited = form(kind, obj.name, description="sweep, edited")
        sweep.c["requester"].post(reverse("request_edit", args=[obj.pk]), edited, follow=True)
        obj.refresh_from_db()
        assert obj.revision == 2
        obj = sweep.approve(obj)
        assert obj.status == R.CREATED, obj.error_message
        stored = boto3.client("secretsmanager").get_secret_value(SecretId=obj.connection.secret_arn)
        leaves = set(_strings(json.loads(stored["SecretString"])))
        sent = sum(v in leaves for v in sweep.canaries.values())
        sweep.c["approver"].get(reverse("connection_list"))
        sweep.c["approver"].post(
            reverse("connection_refresh", args=[obj.connection.pk]), follow=True
        )
        sweep.c["approver"].get(reverse("connection_detail", args=[obj.connection.pk]))
        sweep.c["requester"].get(reverse("request_detail", args=[obj.pk]))
        sweep.flow(
            f"{kind}: form, Check all, Check button x{len(refs_of(edited))}, save, edit "
            f"(revision {obj.revision}), approve -> {obj.status} {obj.connection.state}, "
            f"refresh; {sent} canary values reached AWS's secret"
        )
        assert sent >= 3  # the values really went through: main secret and parameters


def _strings(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


def _limited_token(bao_cli) -> str:
    name = f"sweep-nothing-{uuid.uuid4().hex[:6]}"
    bao_cli(
        "policy", "write", name, "-", input_text='path "sys/nothing" { capabilities = ["read"] }'
    )
    created = json.loads(bao_cli("token", "create", f"-policy={name}", "-format=json"))
    return created["auth"]["client_token"]


def test_sweep_failure_paths(sweep, bao_cli, settings, moto, monkeypatch):

    def outcome(obj):
        return f"{obj.status} ({obj.error_code})"

    # Vault: the secret deleted after review, then restored.
    path = f"secret/sweep/gone-{uuid.uuid4().hex[:6]}"
    obj = sweep.file("BASIC", _name("deleted"), main_ref=seed(sweep, bao_cli, path, "password"))
    bao_cli("kv", "delete", path)
    failed = sweep.approve(obj)
    bao_cli("kv", "undelete", "-versions=1", path)
    done = sweep.retry(obj)
    sweep.flow(
        f"Vault secret deleted: approve -> {outcome(failed)}; undelete, retry -> {done.status}"
    )
    assert (failed.status, done.status) == (R.FAILED, R.CREATED)

    # Vault: the pinned version destroyed.
    path = f"secret/sweep/destroyed-{uuid.uuid4().hex[:6]}"
    ref = seed(sweep, bao_cli, path, "api_key", versions=2)
    obj = sweep.file("API_KEY", _name("destroyed"), main_ref=f"{ref}@1")
    bao_cli("kv", "destroy", "-versions=1", path)
    failed = sweep.approve(obj)
    sweep.flow(f"Vault version destroyed: approve -> {outcome(failed)}")
    assert failed.error_code == "vault_version_destroyed"

    # Vault: the app's token loses its rights, then gets them back.
    obj = sweep.file("OAUTH_CLIENT_CREDENTIALS", _name("denied"))
    own_token = settings.VAULT_TOKEN
    settings.VAULT_TOKEN = _limited_token(bao_cli)
    vault.reset_client()
    failed = sweep.approve(obj)
    settings.VAULT_TOKEN = own_token
    vault.reset_client()
    done = sweep.retry(obj)
    sweep.flow(f"Vault permission denied: approve -> {outcome(failed)}; retry -> {done.status}")
    assert (failed.status, done.status) == (R.FAILED, R.CREATED)

    # A value AWS would refuse (":" in a password): caught before AWS, named by reference.
    path = f"secret/sweep/colon-{uuid.uuid4().hex[:6]}"
    value = f"sw{uuid.uuid4().hex}:with a colon"
    bao_cli("kv", "put", path, f"password={value}")
    sweep.canaries["colon value"] = value
    obj = sweep.file("BASIC", _name("colon"), main_ref=f"{path}#password")
    failed = sweep.approve(obj)
    sweep.flow(f"secret value breaking AWS's rules: approve -> {outcome(failed)}")
    assert failed.error_code == "value_invalid"

    # AWS errors moto cannot produce, through Stubber on the app's own client.
    obj = sweep.file("API_KEY", _name("denied-aws"))
    with Stubber(eventbridge.events_client(Target.default(), retries=False)) as stub:
        stub.add_client_error("create_connection", "AccessDeniedException", http_status_code=400)
        failed = sweep.approve(obj)
    done = sweep.retry(obj)
    sweep.flow(f"AWS AccessDenied (Stubber): approve -> {outcome(failed)}; retry -> {done.status}")
    assert (failed.status, done.status) == (R.FAILED, R.CREATED)

    # AWS errors on the wire, through a proxy in front of moto: the real botocore paths.
    settings.AWS_READ_TIMEOUT = 1
    throttled = b'{"__type":"ThrottlingException","message":"Rate exceeded"}'
    internal = b'{"__type":"InternalException","message":"Internal failure"}'
    json_type = {"Content-Type": "application/x-amz-json-1.1"}
    cases = [
        ("AWS 500 InternalException", ("status", 500, internal, json_type), 1),
        ("AWS throttling on every attempt", ("status", 400, throttled, json_type), 2),
        ("AWS response lost (connection dropped after AWS acted)", ("drop_response",), 1),
    ]
    with FaultProxy(moto.url) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        eventbridge.reset_clients()
        for label, action, times in cases:
            obj = sweep.file("BASIC", _name("aws"))
            proxy.rules[:] = [aws_target("CreateConnection", action, times=times)]
            failed = sweep.approve(obj)
            proxy.wait_idle()
            done = sweep.retry(obj)
            sweep.flow(f"{label}: approve -> {outcome(failed)}; retry -> {done.status}")
            assert (failed.status, done.status) == (R.FAILED, R.CREATED)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.url)
    eventbridge.reset_clients()

    # Decisions other than approval, and refusals shown as messages.
    obj = sweep.file("BASIC", _name("reject"))
    sweep.c["approver2"].post(reverse("request_reject", args=[obj.pk]), {"reason": ""}, follow=True)
    sweep.c["approver2"].post(
        reverse("request_reject", args=[obj.pk]), {"reason": "wrong partner"}, follow=True
    )
    obj.refresh_from_db()
    cancelled = sweep.file("API_KEY", _name("cancel"))
    sweep.c["requester"].post(reverse("request_cancel", args=[cancelled.pk]), follow=True)
    cancelled.refresh_from_db()
    expired = sweep.file("OAUTH_CLIENT_CREDENTIALS", _name("expire"))
    R.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    shown = sweep.c["approver"].get(reverse("request_detail", args=[expired.pk]))
    assert 'data-testid="status">Expired<' in shown.content.decode()
    sweep.c["approver"].post(reverse("request_approve", args=[expired.pk]), follow=True)
    expired.refresh_from_db()  # the page showed it expired; the refused approval recorded it
    created = R.objects.filter(status=R.CREATED).first()
    again = sweep.approve(created)
    refusal = sweep.said()
    sweep.flow(
        f"reject (empty reason refused, then with reason) -> {obj.status}; cancel -> "
        f"{cancelled.status}; past its time, approve -> {expired.status}; "
        "approving a created request -> "
        f"{again.status} (“{refusal}”)"
    )
    assert (obj.status, cancelled.status, expired.status) == (R.REJECTED, R.CANCELLED, R.EXPIRED)

    # No dead ends: each closed request's page, and its form filled in again (File again); a
    # pending one's Cancel asks first.
    for closed in (obj, cancelled, expired):
        sweep.c["requester"].get(reverse("request_detail", args=[closed.pk]))
        sweep.c["requester"].get(reverse("request_new"), {"from": closed.pk})
    waiting = sweep.file("BASIC", _name("confirm"))
    sweep.c["requester"].get(reverse("request_cancel", args=[waiting.pk]))
    sweep.flow("closed requests filed again (forms filled in), a pending one's Cancel confirmation")


def test_sweep_server_error_and_error_pages(sweep, settings):
    """DEBUG off, ADMINS set: a crash inside the SDK call mails a report and shows the 500 page."""
    obj = sweep.file("OAUTH_CLIENT_CREDENTIALS", _name("crash"))
    approver = sweep.capture.client(sweep.users["approver"], "approver (no raise)",
                                    raise_request_exception=False)  # fmt: skip

    def boom(**kwargs):
        raise RuntimeError("injected fault: the SDK failed while sending CreateConnection")

    events = eventbridge.events_client(Target.default(), retries=False).meta.events
    events.register("before-send.eventbridge.CreateConnection", boom)
    try:
        response = approver.post(
            reverse("request_approve", args=[obj.pk]), {"document_hash": obj.document_hash}
        )
    finally:
        events.unregister("before-send.eventbridge.CreateConnection", boom)
    obj.refresh_from_db()
    mails = len(mail.outbox)
    html_reports = sum(bool(getattr(m, "alternatives", None)) for m in mail.outbox)
    settings.SUBMIT_STALE_AFTER = dt.timedelta(0)
    done = sweep.retry(obj)
    sweep.flow(
        f"crash inside create_connection: HTTP {response.status_code}, request left "
        f"{obj.status}, {mails} error mail(s) ({html_reports} with the HTML report); "
        f"retry -> {done.status}"
    )
    assert response.status_code == 500
    assert mails >= 1 and done.status == R.CREATED

    # Vault answers a body the app does not expect, holding a value: whatever happens, the
    # value shows in no page, log or error report.
    value = make_canary("odd")
    sweep.canaries["value in a malformed Vault answer"] = value
    odd = json.dumps({"data": {"data": {"password": value}, "metadata": ["unexpected"]}}).encode()
    obj = sweep.file("BASIC", _name("odd-vault"))
    sweep.capture.keep_mail()  # swept at the end with the rest; the count below starts afresh
    with FaultProxy(settings.VAULT_ADDR) as proxy:
        proxy.rules.append(
            path_rule(
                "/v1/secret/data/sweep/basic",
                ("status", 200, odd, {"Content-Type": "application/json"}),
            )
        )
        settings.VAULT_ADDR = proxy.url
        vault.reset_client()
        response = approver.post(
            reverse("request_approve", args=[obj.pk]), {"document_hash": obj.document_hash}
        )
    obj.refresh_from_db()
    sweep.flow(
        f"Vault answers a malformed body holding a value: HTTP {response.status_code}, request "
        f"{obj.status} {obj.error_code}, {len(mail.outbox)} error mail(s)"
    )
    assert proxy.seen, "the approval never reached the faked Vault answer"

    pages = []
    requester = sweep.c["requester"]
    pages.append(("404 unknown request", requester.get("/requests/999999/").status_code))
    pages.append(("404 unknown page", requester.get("/no-such-page/").status_code))
    other = sweep.c["requester2"].get(reverse("request_detail", args=[obj.pk]))
    pages.append(("404 another requester's request", other.status_code))
    pages.append(("403 queue as requester", requester.get(reverse("approval_queue")).status_code))
    pages.append(
        ("405 GET on approve", requester.get(reverse("request_approve", args=[obj.pk])).status_code)
    )
    strict = sweep.capture.client(
        sweep.users["requester"], "requester (csrf)", enforce_csrf_checks=True
    )
    csrf = strict.post(reverse("request_new"), form("BASIC", _name("csrf")))
    pages.append(("403 POST without CSRF token", csrf.status_code))
    many = form("BASIC", _name("many")) | {f"junk{i}": "x" for i in range(1100)}
    pages.append(("400 too many fields", requester.post(reverse("request_new"), many).status_code))
    sweep.flow("error pages with DEBUG off: " + ", ".join(f"{n} -> {s}" for n, s in pages))
    assert [s for _, s in pages] == [404, 404, 404, 403, 405, 403, 400]


def _audit_urls(events: list[int], references: list[str], fingerprints: list[str]):
    """(name, url) for every URL whose name starts with "audit", with the arguments it takes.

    A URL of a shape this does not know fails the sweep, so that it is added here.
    """
    out = []
    for pattern in get_resolver().url_patterns:
        for p in getattr(pattern, "url_patterns", [pattern]):
            if not isinstance(p, URLPattern) or not (p.name or "").startswith("audit"):
                continue
            converters = list(p.pattern.converters)
            if converters == ["pk"]:
                out += [(p.name, reverse(p.name, kwargs={"pk": pk})) for pk in events]
                continue
            assert not converters, f"the sweep does not know how to call {p.name}"
            url = reverse(p.name)
            if "secret" in p.name:  # where a reference or a fingerprint was used
                out += [(p.name, f"{url}?{urlencode({'reference': r})}") for r in references]
                out += [(p.name, f"{url}?{urlencode({'fingerprint': f})}") for f in fingerprints]
                # The search box: a reference, its path prefix, a fingerprint.
                prefixes = sorted({r.rpartition("/")[0] + "/" for r in references})
                out += [(p.name, url)]
                out += [(p.name, f"{url}?{urlencode({'q': q})}") for q in references[:3]]
                out += [(p.name, f"{url}?{urlencode({'q': q})}") for q in prefixes]
                out += [(p.name, f"{url}?{urlencode({'q': q})}") for q in fingerprints[:3]]
            else:  # the log and its exports, whole and filtered
                out += [(p.name, url), (p.name, f"{url}?action=connection.vault.resolve")]
    return out


def _audit_arguments() -> tuple[list[int], list[str], list[str]]:
    """Every audit event's id, every reference filed, every fingerprint recorded."""
    events = list(AuditEvent.objects.order_by("id").values_list("id", flat=True))
    references = sorted({str(vault.Reference.from_leaf(leaf)) for r in R.objects.all()
                         for _, leaf in doc.secret_leaves(r.document)})  # fmt: skip
    data = " ".join(AuditEvent.objects.values_list("data", flat=True))
    fingerprints = sorted(set(re.findall(r"hmac-sha256:[0-9a-f]{64}", data)))
    return events, references, fingerprints


def test_sweep_pages_admin_audit_exports_and_commands(sweep):
    from django.contrib import admin

    for kind in KINDS:
        sweep.approve(sweep.file(kind, _name("pages")))
    sweep.file("BASIC", _name("pending"))

    auditor, admin_client = sweep.c["auditor"], sweep.c["admin"]
    events, references, fingerprints = _audit_arguments()
    urls = _audit_urls(events, references, fingerprints)
    statuses = [auditor.get(url).status_code for _, url in urls]
    auditor.get(reverse("audit_list") + f"?before={events[-1]}")
    names = sorted({name for name, _ in urls})
    sweep.flow(
        f"audit pages and exports as auditor: {', '.join(names)} ({len(urls)} URLs: every "
        f"event, {len(references)} references, {len(fingerprints)} fingerprints)"
    )
    assert set(statuses) == {200}, list(zip(statuses, urls, strict=True))
    assert fingerprints and references

    checked = 0
    admin_client.get(reverse("admin:index"))
    for model in admin.site._registry:
        prefix = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        admin_client.get(reverse(f"{prefix}_changelist"))
        for pk in model.objects.values_list("pk", flat=True)[:25]:
            for view in ("change", "history"):
                status = admin_client.get(reverse(f"{prefix}_{view}", args=[pk])).status_code
                assert status == 200, (prefix, view, status)
                checked += 1
    sweep.flow(
        f"admin: index, {len(admin.site._registry)} changelists, {checked} change/history views"
    )

    for role in ("requester", "approver", "auditor", "admin", "anonymous"):
        client = sweep.c[role]
        for name in ("home", "request_mine", "approval_queue", "connection_list", "status",
                     "notifications"):  # fmt: skip
            client.get(reverse(name), follow=True)
    sweep.c["anonymous"].get(reverse("healthz"))
    sweep.c["anonymous"].get(reverse("login"))
    sweep.flow("home, lists, status and health pages as every role and anonymous")

    for command in ("verify_audit_chain", "refresh_connection_states", "expire_requests"):
        out, err = io.StringIO(), io.StringIO()
        call_command(command, stdout=out, stderr=err)
        sweep.capture.add_text(command, out.getvalue() + err.getvalue())
    sweep.flow(
        "management commands: verify_audit_chain, refresh_connection_states, expire_requests"
    )
    assert audit.verify_chain().ok


def _connection_urls(connection) -> list[str]:
    """Every page about a connection, by URL name: a URL of a shape this does not know fails
    the sweep, so that it is added here."""
    out = []
    for pattern in get_resolver().url_patterns:
        for p in getattr(pattern, "url_patterns", [pattern]):
            if not isinstance(p, URLPattern) or not (p.name or "").startswith("connection_"):
                continue
            converters = list(p.pattern.converters)
            if converters == ["pk"]:
                out.append(reverse(p.name, kwargs={"pk": connection.pk}))
            else:
                assert not converters, f"the sweep does not know how to call {p.name}"
                out.append(reverse(p.name))
    return out


def test_sweep_connection_lifecycle(sweep, bao_cli):
    """Update, rotate (after a new Vault version), deauthorize, re-authorize and delete through
    the pages, every connection page seen by every role on the way."""
    key = seed(sweep, bao_cli, f"secret/sweep/life-{uuid.uuid4().hex[:8]}", "api_key")
    made = sweep.approve(sweep.file("API_KEY", _name("life"), main_ref=key)).connection
    requester, approver = sweep.c["requester"], sweep.c["approver"]
    urls = _connection_urls(made)
    seen = {"events": set(), "urls": 0}

    def visit():
        for role in ("requester", "approver", "auditor", "admin"):
            for url in urls:
                sweep.c[role].get(url)
            sweep.c[role].get(reverse("connection_list"), {"state": "live"})

    def audit_pages():
        """The log, its exports and the secret-use pages again, and each new event's page."""
        events, references, fingerprints = _audit_arguments()
        new = [pk for pk in events if pk not in seen["events"]]
        seen["events"].update(new)
        audit_urls = _audit_urls(new, references, fingerprints)
        statuses = [sweep.c["auditor"].get(url).status_code for _, url in audit_urls]
        assert set(statuses) == {200}, list(zip(statuses, audit_urls, strict=True))
        assert {name for name, _ in audit_urls} >= {
            "audit_list", "audit_detail", "audit_export_csv", "audit_export_jsonl"
        }  # fmt: skip
        seen["urls"] += len(audit_urls)

    def decide(obj):
        approver.get(reverse("request_detail", args=[obj.pk]))
        done = sweep.approve(obj)
        assert done.status == R.DONE, done.error_message
        call_command("refresh_connection_states", stdout=io.StringIO())
        visit()
        audit_pages()

    visit()
    update = form("API_KEY", made.name, main_ref=key, description="sweep, updated")
    response = requester.post(reverse("connection_update", args=[made.pk]), update)
    assert response.status_code == 302, response.content.decode()[:1000]
    decide(R.objects.get(connection=made, kind=R.UPDATE))

    value = make_canary("rot")
    bao_cli("kv", "put", key.partition("#")[0], f"api_key={value}")
    sweep.canaries["rotated api key"] = value
    requester.get(reverse("connection_rotate", args=[made.pk]))
    assert requester.post(reverse("connection_rotate", args=[made.pk]), {}).status_code == 302
    decide(R.objects.get(connection=made, kind=R.ROTATE))
    stored = boto3.client("secretsmanager").get_secret_value(
        SecretId=Connection.objects.get(pk=made.pk).secret_arn
    )
    # The new value reached AWS, and only AWS.
    assert value in set(_strings(json.loads(stored["SecretString"])))

    reason = {"reason": "sweep: cut off"}
    requester.post(reverse("connection_deauthorize", args=[made.pk]), reason)
    decide(R.objects.get(connection=made, kind=R.DEAUTHORIZE))
    again = form("API_KEY", made.name, main_ref=key)
    assert (
        requester.post(reverse("connection_reauthorize", args=[made.pk]), again).status_code == 302
    )
    decide(R.objects.filter(connection=made, kind=R.UPDATE).latest("id"))
    requester.get(reverse("connection_delete", args=[made.pk]))
    requester.post(reverse("connection_delete", args=[made.pk]), {"reason": ""})
    decide(R.objects.get(connection=made, kind=R.DELETE))
    made.refresh_from_db()
    # Every notification the flow wrote goes out (to the test mail outbox, which is searched),
    # and every role reads its notifications page.
    sent = notify.send_due()
    for role in ("requester", "approver", "auditor", "admin"):
        sweep.c[role].get(reverse("notifications"))
    kinds = list(made.changes.order_by("id").values_list("kind", "status"))
    sweep.flow(
        f"connection pages ({len(urls)} URLs x 4 roles after each step); update, rotate "
        f"(new Vault version reached AWS's secret), deauthorize, re-authorize, delete -> "
        f"{made.state}; changes {kinds}; {sent['sent']} notifications sent (bodies searched); "
        f"audit log, exports and secret uses after each step, every event's page "
        f"({seen['urls']} audit URLs, {len(seen['events'])} events)"
    )
    assert made.state == "DELETED"
    actions = set(AuditEvent.objects.filter(arn=made.arn).values_list("action", flat=True))
    assert {"connection.update.success", "connection.deauthorize.success",
            "connection.delete.success"} <= actions, actions  # fmt: skip
    assert seen["events"] == set(AuditEvent.objects.values_list("id", flat=True))
    assert audit.verify_chain().ok


class _ChatHook:
    """A chat service (Apprise's json://) on loopback: every post it receives is searched."""

    def __init__(self, capture: Capture):
        received = self.received = []

        class Hook(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(body.decode("utf-8", errors="replace"))
                capture.add_text(f"chat post {len(received)}", received[-1])
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _partner(moto) -> Target:
    """A target with an account of its own: its sweep sees only this test's connections."""
    account = f"{secrets.randbelow(9 * 10**11) + 10**11}"
    role = f"arn:aws:iam::{account}:role/eventbridge-connections"
    trust = {"role_arn": role, "external_id": "sweep-ext"}
    requests.post(f"{moto.url}/moto-ext/sts/role", json=trust, timeout=10).raise_for_status()
    return Target.objects.create(
        name=_name("target"), region="us-east-1", role_arn=role, external_id="sweep-ext"
    )


def _partner_events(target: Target):
    """The target's account as a person with its role (the AWS console, say)."""
    creds = boto3.client("sts").assume_role(
        RoleArn=target.role_arn, RoleSessionName="sweep", ExternalId=target.external_id
    )["Credentials"]
    return boto3.client(
        "events",
        region_name=target.region,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )


def test_sweep_every_notification_kind_written_and_sent(sweep, bao_cli, moto, settings):
    """Every kind of message notify.py writes, made by the flows that make it with canary
    secrets in Vault, then sent by email and to a chat channel: the outbox table, the mails,
    the chat posts and the logs are searched."""
    chat = _ChatHook(sweep.capture)
    settings.NOTIFY_APPRISE = {roles.APPROVERS: chat.url}
    settings.OURS_WITHIN = dt.timedelta(0)  # the console edits come a moment after our pushes
    partner = _partner(moto)
    approver = sweep.c["approver"]

    def made(tag: str, key: str = "") -> Connection:
        fields = {"target": str(partner.pk)} | ({"main_ref": key} if key else {})
        obj = sweep.approve(sweep.file("API_KEY", _name(tag), **fields))
        assert obj.status == R.CREATED, obj.error_message
        return obj.connection

    try:
        # Waiting and created (each filing and approval), then drift, the three flags and a
        # rotation (done), all on connections whose secrets are canaries.
        drift_path = f"secret/sweep/drift-{uuid.uuid4().hex[:6]}"
        drifted = made("drift", seed(sweep, bao_cli, drift_path, "api_key"))
        deauthorized = made("deauth", seed(sweep, bao_cli, f"{drift_path}-d", "api_key"))
        edited, deleted = made("edited"), made("deleted")
        value = make_canary("drv")
        bao_cli("kv", "put", drift_path, f"api_key={value}")
        sweep.canaries[f"{drift_path}#api_key v2"] = value
        account = partner.role_arn.split(":")[4]
        requests.post(f"{moto.url}/moto-ext/connection/state", json={
            "account_id": account, "region": partner.region, "name": deauthorized.name,
            "state": "DEAUTHORIZED", "state_reason": "Authorization failed: the partner said 401",
        }, timeout=10).raise_for_status()  # fmt: skip
        aws = _partner_events(partner)
        aws.update_connection(Name=edited.name, Description="edited in the console")
        aws.delete_connection(Name=deleted.name)
        aws.list_connections()  # settles DELETING: gone
        swept = services.sweep_target(partner.pk)
        assert swept is not None and swept.ok, swept and swept.error
        for row in (drifted, deauthorized, edited, deleted):
            approver.get(reverse("connection_detail", args=[row.pk]))
        sweep.c["requester"].post(reverse("connection_rotate", args=[drifted.pk]), {})
        rotated = sweep.approve(R.objects.get(connection=drifted, kind=R.ROTATE))
        assert rotated.status == R.DONE, rotated.error_message

        # Failed (the secret deleted after review), rejected, expired.
        gone_path = f"secret/sweep/failing-{uuid.uuid4().hex[:6]}"
        failing = sweep.file("BASIC", _name("failing"),
                             main_ref=seed(sweep, bao_cli, gone_path, "password"))  # fmt: skip
        bao_cli("kv", "delete", gone_path)
        assert sweep.approve(failing).status == R.FAILED
        rejected = sweep.file("BASIC", _name("rejected"))
        sweep.c["approver2"].post(
            reverse("request_reject", args=[rejected.pk]), {"reason": "wrong partner"}
        )
        expiring = sweep.file("OAUTH_CLIENT_CREDENTIALS", _name("expired"))
        R.objects.filter(pk=expiring.pk).update(expires_at=timezone.now() - dt.timedelta(1))
        call_command("expire_requests", stdout=io.StringIO())

        # The daily reminder and the last call, for one that waited long and ends soon.
        late = sweep.file("API_KEY", _name("late"))
        R.objects.filter(pk=late.pk).update(
            created_at=timezone.now() - dt.timedelta(days=2),
            expires_at=timezone.now() + dt.timedelta(hours=1),
        )
        assert tasks.remind() >= 1 and tasks.last_calls() == 1

        written = Counter(Notification.objects.values_list("kind", flat=True))
        sent = Counter()
        for _ in range(10):  # the worker's turns, 200 a turn
            result = tasks.send_notifications()
            assert not result["retry"] and not result["failed"], result
            sent.update(result)
            if not result["sent"]:
                break
        for role in ("requester", "approver", "auditor", "admin"):
            sweep.c[role].get(reverse("notifications"))
    finally:
        chat.close()

    missing = set(notify.KINDS) - set(written)
    unsent = Notification.objects.exclude(status=Notification.SENT)
    told = {n.kind: n for n in Notification.objects.filter(channel=Notification.EMAIL)}
    sweep.flow(
        f"every notification kind ({len(written)} kinds, {sum(written.values())} messages: "
        f"{', '.join(f'{k} x{n}' for k, n in sorted(written.items()))}); sent: "
        f"{len(mail.outbox)} mails, {len(chat.received)} chat posts (bodies, subjects, the "
        "outbox table and the logs searched)"
    )
    assert not missing, f"no flow wrote {sorted(missing)}"
    assert not unsent.exists(), list(unsent.values_list("kind", "status", "last_error"))
    assert sent["sent"] == len(mail.outbox) + len(chat.received) == sum(written.values())
    assert set(notify.KINDS) <= set(told), "every kind reaches someone by email"
    assert "pushed version 1, current version 2" in told["connection.drift"].body
    assert "DEAUTHORIZED (was AUTHORIZED)" in told["connection.deauthorized_by_aws"].body
    # Not a value (the sweep's search), and not a fingerprint either, anywhere they went.
    said = [f"{n.subject} {n.body}" for n in Notification.objects.all()]
    said += [m.message().as_string() for m in mail.outbox] + chat.received
    assert not [text for text in said if "hmac-sha256" in text]
