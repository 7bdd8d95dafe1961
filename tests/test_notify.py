"""Notifications: written in the transaction of the event they announce, sent by the worker
to a real SMTP server (aiosmtpd) or an Apprise URL, retried, never duplicated, never holding
a secret."""

import json
import socket
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.urls import reverse
from django.utils import timezone

from connections_app import notify, services
from connections_app.models import AuditEvent, ConnectionRequest, Notification, NotificationMute

R = ConnectionRequest
N = Notification
pytestmark = [pytest.mark.usefixtures("servers"), pytest.mark.django_db]


@pytest.fixture
def pending(requester, approver, make_document):
    return services.request_create(requester=requester, document=make_document("API_KEY"))


def _to(user, **filters):
    return list(N.objects.filter(recipient=user, **filters).order_by("id"))


def test_a_filed_change_is_announced_to_its_approvers_in_the_same_transaction(
    requester, approver, user_factory, make_document
):
    other = user_factory("approver-other", groups=["connection-approvers"])
    request = services.request_create(requester=requester, document=make_document())
    [note] = _to(approver)
    assert note.kind == "change.waiting" and note.channel == N.EMAIL
    assert (
        note.event_id
        == AuditEvent.objects.get(request_id=request.pk, action="connection.request.create").pk
    )
    assert (
        request.name in note.subject and reverse("request_detail", args=[request.pk]) in note.link
    )
    assert _to(other) and not _to(requester)  # never to the requester about their own
    # Refused: nothing filed, nothing announced (the outbox shares the transaction).
    with pytest.raises(services.DocumentInvalid):
        services.request_create(requester=requester, document=make_document(name=request.name))
    assert N.objects.filter(kind="change.waiting").count() == 2


def test_the_requester_hears_the_outcome(pending, requester, approver, make_document):
    done = services.request_approve(
        request=pending, approver=approver, seen_hash=pending.document_hash
    )
    [result] = _to(requester, kind="change.created")
    assert "approved and carried out" in result.body and done.connection.state in result.body
    other = services.request_create(
        requester=requester, document=make_document(name=f"{pending.name}-2")
    )
    services.request_reject(request=other, approver=approver, reason="wrong partner")
    [rejected] = _to(requester, kind="change.rejected")
    assert "wrong partner" in rejected.body
    third = services.request_create(
        requester=requester, document=make_document(name=f"{pending.name}-3")
    )
    R.objects.filter(pk=third.pk).update(expires_at=timezone.now())
    services.requests_expire_due()
    assert _to(requester, kind="change.expired")


def test_sending_reaches_a_real_smtp_server_with_a_stable_message_id(pending, approver, smtp):
    result = notify.send_due()
    assert result["sent"] == 1
    [note] = _to(approver)
    assert note.status == N.SENT and note.sent_at
    assert smtp.message_ids() == [note.message_id]
    assert notify.send_due()["sent"] == 0  # sent once


def test_a_refusing_smtp_server_gives_retries_then_a_failure_the_admin_sees(
    pending, approver, smtp, settings, admin_client_
):
    settings.NOTIFY_MAX_ATTEMPTS = 3
    smtp.answer = "554 5.7.1 Relaying refused"
    for attempt in range(1, 4):
        notify.send_due()
        note = _to(approver)[0]
        assert note.attempts == attempt
        if attempt < 3:
            assert note.status == N.PENDING and note.next_attempt_at > timezone.now()
            N.objects.filter(pk=note.pk).update(next_attempt_at=timezone.now())  # time passes
    assert note.status == N.FAILED and "Relaying refused" in note.last_error
    assert len(smtp.messages) == 3 and len(set(smtp.message_ids())) == 1
    page = admin_client_.get(reverse("admin:connections_app_notification_changelist"), {
        "status__exact": "failed"
    }).content.decode()  # fmt: skip
    assert "Relaying refused" in page


def test_approval_does_not_wait_for_mail(requester, approver, make_document, settings):
    """A mail server that accepts the connection and never answers: the approval returns at
    once (it writes the outbox; the worker sends)."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", silent.getsockname()[1]
    settings.EMAIL_TIMEOUT = 1
    try:
        request = services.request_create(requester=requester, document=make_document())
        started = time.perf_counter()
        done = services.request_approve(
            request=request, approver=approver, seen_hash=request.document_hash
        )
        elapsed = time.perf_counter() - started
        assert done.status == R.CREATED and elapsed < 1.0
        assert _to(requester, kind="change.created")[0].status == N.PENDING
        result = notify.send_due()  # the worker's turn: it waits, times out, retries later
        assert result["retry"] >= 1
    finally:
        silent.close()


def test_muted_email_is_not_written_but_reminders_are(
    requester, approver, make_document, approver_client
):
    approver_client.post(reverse("notifications"), {})  # the email box unticked
    assert NotificationMute.objects.filter(user=approver).exists()
    request = services.request_create(requester=requester, document=make_document())
    assert not _to(approver, kind="change.waiting")
    R.objects.filter(pk=request.pk).update(created_at=timezone.now() - timedelta(days=2))
    assert notify.remind_approvers() == 1
    [reminder] = _to(approver, kind="change.reminder")
    assert request.name in reminder.body
    assert notify.remind_approvers() == 1 and len(_to(approver, kind="change.reminder")) == 1
    R.objects.filter(pk=request.pk).update(expires_at=timezone.now() + timedelta(hours=2))
    notify.last_calls()
    notify.last_calls()
    assert len(_to(approver, kind="change.last_call")) == 1
    page = approver_client.get(reverse("notifications")).content.decode()
    assert "waiting for approval over a day" in page


def test_chat_channels_per_group_through_apprise(
    requester, approver, make_document, settings, canaries
):
    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"json://127.0.0.1:{server.server_address[1]}/hook"
        settings.NOTIFY_APPRISE = {"connection-approvers": url}
        services.request_create(requester=requester, document=make_document())
        [chat] = N.objects.filter(channel=N.APPRISE)
        assert chat.group.name == "connection-approvers" and chat.recipient is None
        assert notify.send_due()["sent"] == 2  # the approver's email, and the group's chat
        [body] = received
        message = json.loads(body)
        assert "Waiting for approval" in message["title"]
        assert all(value not in body.decode() for value in canaries.values())
    finally:
        server.shutdown()


def test_messages_hold_no_secret_and_no_fingerprint(
    requester, approver, make_document, canaries, smtp
):
    request = services.request_create(
        requester=requester, document=make_document("OAUTH_CLIENT_CREDENTIALS")
    )
    services.request_approve(request=request, approver=approver, seen_hash=request.document_hash)
    notify.send_due()
    stored = " ".join(f"{n.subject} {n.body} {n.link} {n.last_error}" for n in N.objects.all())
    sent = b" ".join(smtp.messages).decode(errors="replace")
    for text in (stored, sent):
        assert "hmac-sha256:" not in text
        assert all(value not in text for value in canaries.values())
    assert len(smtp.messages) == N.objects.count() >= 2


def test_chat_goes_to_the_targets_approver_groups_never_the_requesters(
    requester, approver, make_document, settings, user_factory
):
    from django.contrib.auth.models import Group

    from connections_app.models import Target

    prod = Target.objects.create(name="prod", region="us-east-1", account_id="111122223333")
    prod_approvers = Group.objects.create(name="prod-approvers")
    prod.approver_groups.add(prod_approvers)
    user_factory("prod-approver", groups=["connection-approvers", "prod-approvers"])
    settings.NOTIFY_APPRISE = {
        "connection-approvers": "json://127.0.0.1:9/all",
        "prod-approvers": "json://127.0.0.1:9/prod",
        "connection-requesters": "json://127.0.0.1:9/requesters",
    }
    services.request_create(requester=requester, document=make_document(), target=prod)
    chats = set(N.objects.filter(channel=N.APPRISE).values_list("group__name", flat=True))
    assert chats == {"prod-approvers"}  # not every approver's channel, not the requesters'
    request = services.request_create(requester=requester, document=make_document(name="x-2"))
    services.request_reject(request=request, approver=approver, reason="no")
    rejected = N.objects.filter(kind="change.rejected")
    assert set(rejected.values_list("channel", flat=True)) == {N.EMAIL}  # the requester only


def test_flag_messages_name_the_state_and_each_drifted_versions_never_a_fingerprint(
    requester, approver, make_document, canaries
):
    request = services.request_create(requester=requester, document=make_document("API_KEY"))
    connection = services.request_approve(
        request=request, approver=approver, seen_hash=request.document_hash
    ).connection
    where = "AuthParameters.ApiKeyAuthParameters.ApiKeyValue"
    connection.drift = [
        {"path": where, "vault": "secret/a#k", "why": "newer version", "pushed": 1, "current": 3,
         "fingerprint": "hmac-sha256:" + "0" * 64},
        {"path": where, "vault": "secret/b#k", "why": "pushed version deleted or destroyed",
         "pushed": 2, "current": None},
        {"path": where, "vault": "kv1/c#k", "why": "value changed"},
        {"path": where, "vault": "secret/d#k", "why": "unreadable",
         "message": f"permission denied near {canaries['api_key']}"},
    ]  # fmt: skip
    notify.connection_flagged(connection, "drift")
    [drift] = _to(requester, kind="connection.drift")
    assert f"- secret/a#k ({where}): pushed version 1, current version 3" in drift.body
    assert "- secret/b#k" in drift.body and "version 2 was deleted or destroyed, no current" in (
        drift.body
    )
    assert "kv1/c#k" in drift.body and "secret/d#k" in drift.body
    assert "hmac-sha256" not in drift.body and canaries["api_key"] not in drift.body
    assert _to(approver, kind="connection.drift")  # the target's approvers too

    connection.state, connection.state_reason = "DEAUTHORIZED", "Authorization failed."
    notify.connection_flagged(connection, "deauthorized_by_aws", was="AUTHORIZED")
    [told] = _to(requester, kind="connection.deauthorized_by_aws")
    assert "ConnectionState: DEAUTHORIZED (was AUTHORIZED). StateReason: Authorization failed." in (
        told.body
    )


def test_approvers_told_are_exactly_those_who_may_approve(user_factory, requester):
    """notify._approvers is roles.may_approve as one query: group or own permission, the
    target's approver groups when it has some, superusers holding the permission, no one
    inactive, never the requester."""
    from django.contrib.auth.models import Group, Permission

    from connections_app.models import Target
    from connections_app.roles import may_approve

    team = Group.objects.create(name="prod-approvers")
    team.permissions.add(Permission.objects.get(codename="approve_connectionrequest"))
    prod = Target.objects.create(name="prod-n", account_id="111122223333", region="eu-west-1")
    prod.approver_groups.add(team)
    people = [
        user_factory("plain-approver", groups=["connection-approvers"]),
        user_factory("prod-approver", groups=["prod-approvers"]),
        user_factory("both", groups=["connection-approvers", "prod-approvers"]),
        user_factory("own-perm"),
        user_factory("root", groups=["connection-approvers"]),
        user_factory("gone", groups=["prod-approvers"]),
        user_factory("auditor-only", groups=["auditors"]),
        requester,
    ]
    people[3].user_permissions.add(Permission.objects.get(codename="approve_connectionrequest"))
    people[4].is_superuser = True
    people[4].save()
    people[5].is_active = False
    people[5].save()
    requester.groups.add(team)
    for target in (Target.default(), prod):
        told = {p.username for p in notify.approvers_of(target, but=requester.pk)}
        fresh = [type(p).objects.get(pk=p.pk) for p in people]  # no cached permissions
        expected = {
            p.username
            for p in fresh
            if p.is_active and p.pk != requester.pk and may_approve(p, target)
        }
        assert told == expected, target.name
    assert told == {"prod-approver", "both", "root"}
