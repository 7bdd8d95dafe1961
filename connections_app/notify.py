"""Notifications: an outbox written in the transaction of the event each one announces, and
sent by the task worker (email through Django's mail, chat through Apprise; the only module
that imports apprise). A crash neither loses nor duplicates one: a message is claimed with a
lease before it is sent and marked after; a sender killed in between leaves it to be sent once
more, with the same Message-ID, when the lease runs out.

Messages carry the page, names, kinds, states and version numbers: never a secret value, a
fingerprint or a Vault answer.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.mail import EmailMessage, get_connection
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

from .models import Connection, ConnectionRequest, Notification, NotificationMute
from .roles import CAN_APPROVE

log = logging.getLogger(__name__)
R = ConnectionRequest
N = Notification
APPROVE = CAN_APPROVE.partition(".")[2]  # the permission's codename
# Kinds that reach approvers even when they muted the channel.
REMINDERS = ("change.reminder", "change.last_call")


# ---------------------------------------------------------------------------
# Who


def approvers_of(target, *, but=None) -> list:
    """Active people holding the approve permission (through a group or their own) who may
    approve the target's changes (roles.may_approve, as one query: a sweep flags many
    connections at once); `but`: never the requester."""
    holds = Q(groups__permissions__codename=APPROVE) | Q(user_permissions__codename=APPROVE)
    people = get_user_model().objects.filter(holds, is_active=True)
    limits = list(target.approver_groups.values_list("pk", flat=True))
    if limits:  # the target's approver groups only (superusers always may)
        people = people.filter(Q(is_superuser=True) | Q(groups__in=limits))
    if but is not None:
        people = people.exclude(pk=but)
    return list(people.distinct())


def _owners(connection: Connection) -> list:
    """Whoever filed a change of it."""
    ids = connection.changes.values_list("requester_id", flat=True).distinct()
    return list(get_user_model().objects.filter(pk__in=ids, is_active=True))


def _approver_channels(target, *, but=None) -> list[Group]:
    """The chat channels (NOTIFY_APPRISE) of the groups that approve the target: its approver
    groups when it has some, else the groups holding the approve permission; never a group
    the requester (`but`) is in."""
    names = set(settings.NOTIFY_APPRISE)
    if not names:
        return []
    groups = target.approver_groups.all()
    if not groups.exists():
        groups = Group.objects.filter(permissions__codename="approve_connectionrequest")
    groups = groups.filter(name__in=names)
    if but is not None:
        groups = groups.exclude(user=but)
    return list(groups.distinct())


# ---------------------------------------------------------------------------
# Writing the outbox (inside the transaction of the event)


def _link(name: str, pk: int) -> str:
    return settings.SITE_URL.rstrip("/") + reverse(name, args=[pk])


def _write(people, *, kind: str, key: str, subject: str, body: str, link: str, event=None, chat=()):
    """One row per person (email) and per chat channel; a key already written is skipped."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("notifications are written in the transaction of their event")
    muted = set(
        NotificationMute.objects.filter(user__in=people, channel=N.EMAIL).values_list(
            "user_id", flat=True
        )
    )
    rows = [
        dict(recipient=person, channel=N.EMAIL)
        for person in people
        if person.email and (person.pk not in muted or kind in REMINDERS)
    ]
    rows += [dict(group=group, channel=N.APPRISE) for group in chat]
    for row in rows:
        try:
            with transaction.atomic():  # a savepoint: a duplicate key skips only this row
                N.objects.create(
                    **row,
                    kind=kind,
                    key=key,
                    subject=subject[:200],
                    body=f"{body}\n\n{link}\n",
                    link=link,
                    event_id=getattr(event, "pk", None),
                    message_id=f"<{uuid.uuid4().hex}@{settings.NOTIFY_DOMAIN}>",
                )
        except IntegrityError:
            continue


def _describe(request: R) -> str:
    what = request.get_kind_display().lower()
    return f"{what} of {request.name} (target {request.target.name}), request #{request.pk}"


def change_waiting(request: R, event=None) -> None:
    """A new or edited change waits for approvers who may decide it."""
    _write(
        approvers_of(request.target, but=request.requester_id),
        kind="change.waiting",
        key=f"waiting:{request.pk}:{request.revision}",
        subject=f"Waiting for approval: {request.get_kind_display()} {request.name}",
        body=(
            f"{request.requester.get_username()} asks for the {_describe(request)}"
            f"{' (revision ' + str(request.revision) + ')' if request.revision > 1 else ''}. "
            f"It expires on {request.expires_at:%Y-%m-%d %H:%M} UTC."
        ),
        link=_link("request_detail", request.pk),
        event=event,
        chat=_approver_channels(request.target, but=request.requester_id),
    )


def change_result(request: R, event=None) -> None:
    """To the requester: carried out, failed (with the message), rejected (with the reason)
    or expired."""
    if request.status in R.SUCCEEDED:
        state = request.connection.state if request.connection else ""
        subject = f"Done: {request.get_kind_display()} {request.name}"
        body = f"The {_describe(request)} was approved and carried out. ConnectionState: {state}."
    elif request.status == R.FAILED:
        subject = f"Failed: {request.get_kind_display()} {request.name}"
        body = f"The {_describe(request)} failed: {request.error_message}"
    elif request.status == R.REJECTED:
        subject = f"Rejected: {request.get_kind_display()} {request.name}"
        body = (
            f"{request.decided_by.get_username()} rejected the {_describe(request)}: "
            f"{request.decision_comment}"
        )
    elif request.status == R.EXPIRED:
        subject = f"Expired: {request.get_kind_display()} {request.name}"
        body = f"Nobody decided the {_describe(request)} in time; file it again if still needed."
    else:
        return
    _write(
        [request.requester],
        kind=f"change.{request.status}",
        key=f"result:{request.pk}:{request.status}:{request.submit_attempts}",
        subject=subject,
        body=body,
        link=_link("request_detail", request.pk),
        event=event,
    )


FLAG_TEXT = {
    "drift": "Vault drift: a secret it was given is no longer Vault's current one, or is gone",
    "deauthorized_by_aws": "AWS deauthorized it",
    "changed_outside": "it was changed in AWS outside this dashboard",
    "deleted_outside": "it was deleted in AWS outside this dashboard",
}
# Every kind of message written (the canary sweep produces each one).
KINDS = (
    "change.waiting",
    *(f"change.{status}" for status in (*R.SUCCEEDED, R.FAILED, R.REJECTED, R.EXPIRED)),
    *REMINDERS,
    *(f"connection.{flag}" for flag in FLAG_TEXT),
)


def connection_flagged(
    connection: Connection, flag: str, event=None, *, was: str = "", approvers=None
) -> None:
    """To the connection's owners and its target's approvers (`approvers`, when the caller
    found them already: a sweep flags many connections of one target): the flag, the
    ConnectionState seen (and the one before, `was`), and for drift each drifted reference's
    versions."""
    if approvers is None:
        approvers = approvers_of(connection.target)
    people = {p.pk: p for p in _owners(connection) + approvers}
    state = f"ConnectionState: {connection.state or 'unknown'}"
    if was and was != connection.state:
        state += f" (was {was})"
    if connection.state_reason and flag != "drift":
        state += f". StateReason: {connection.state_reason.rstrip('.')}"
    detail = "\n".join(_drift_line(entry) for entry in connection.drift) if flag == "drift" else ""
    _write(
        list(people.values()),
        kind=f"connection.{flag}",
        key=f"{flag}:{connection.pk}:{event.pk if event is not None else timezone.now()}",
        subject=f"Connection {connection.name}: {FLAG_TEXT[flag].split(',')[0]}",
        body=(
            f"Connection {connection.name} (target {connection.target.name}): "
            f"{FLAG_TEXT[flag]}. {state}.\n{detail}"
        ).strip(),
        link=_link("connection_detail", connection.pk),
        event=event,
        chat=_approver_channels(connection.target),
    )


def _drift_line(entry: dict) -> str:
    """One drifted reference: where it is used, its Vault path, the versions. Only these
    fields are read, so a fingerprint or a Vault answer kept beside them never shows."""
    where = f"- {entry.get('vault', '?')} ({entry.get('path', '?')}): "
    why, pushed, current = entry.get("why"), entry.get("pushed"), entry.get("current")
    now = f"current version {current}" if current else "no current version"
    if why == "newer version":
        return f"{where}pushed version {pushed}, {now}"
    if why == "pushed version deleted or destroyed":
        return f"{where}pushed version {pushed} was deleted or destroyed, {now}"
    if why == "value changed":
        return f"{where}the value changed (KV v1 keeps no versions)"
    if why == "key gone":
        return f"{where}the key is no longer in Vault"
    return f"{where}could not be read from Vault"  # the error is on the connection's page


# ---------------------------------------------------------------------------
# Reminders (the worker, daily and hourly)


def remind_approvers(now=None) -> int:
    """Each approver: one message listing what they may decide that has waited over a day."""
    now = now or timezone.now()
    waiting = list(
        R.objects.filter(
            status=R.PENDING, expires_at__gt=now, created_at__lte=now - timedelta(days=1)
        ).select_related("target", "requester")
    )
    written = 0
    # Each target's approvers, found once: who may decide which waiting change.
    targets = {r.target_id: r.target for r in waiting}
    deciders = {pk: {p.pk: p for p in approvers_of(t)} for pk, t in targets.items()}
    people = {pk: p for each in deciders.values() for pk, p in each.items()}
    for person in people.values():
        mine = [r for r in waiting
                if r.requester_id != person.pk and person.pk in deciders[r.target_id]]  # fmt: skip
        if not mine:
            continue
        lines = "\n".join(
            f"- {_describe(r)}, waiting since {r.created_at:%Y-%m-%d} UTC: "
            f"{_link('request_detail', r.pk)}"
            for r in mine
        )
        with transaction.atomic():
            _write(
                [person],
                kind="change.reminder",
                key=f"reminder:{now:%Y-%m-%d}",
                subject=f"{len(mine)} change(s) waiting for approval over a day",
                body=f"Waiting for your decision for more than a day:\n{lines}",
                link=settings.SITE_URL.rstrip("/") + reverse("approval_queue"),
            )
        written += 1
    return written


def last_calls(now=None) -> int:
    """Changes that expire within NOTIFY_LAST_CALL: once each, to their approvers."""
    now = now or timezone.now()
    soon = R.objects.filter(
        status=R.PENDING, expires_at__gt=now, expires_at__lte=now + settings.NOTIFY_LAST_CALL
    ).select_related("target", "requester")
    count = 0
    for request in soon:
        with transaction.atomic():
            _write(
                approvers_of(request.target, but=request.requester_id),
                kind="change.last_call",
                key=f"last-call:{request.pk}",
                subject=f"Last call: {request.get_kind_display()} {request.name} expires soon",
                body=(
                    f"The {_describe(request)} expires on {request.expires_at:%Y-%m-%d %H:%M} "
                    "UTC and then fails closed."
                ),
                link=_link("request_detail", request.pk),
                chat=_approver_channels(request.target, but=request.requester_id),
            )
        count += 1
    return count


# ---------------------------------------------------------------------------
# Sending (the worker)


def send_due(*, limit: int = 200) -> dict:
    """Send what is due: waiting ones, and ones whose sender's lease ran out (it died)."""
    now = timezone.now()
    due = N.objects.filter(
        Q(status=N.PENDING) | Q(status=N.SENDING), next_attempt_at__lte=now
    ).order_by("next_attempt_at", "id")
    done = {"sent": 0, "retry": 0, "failed": 0}
    for note in due.select_related("recipient", "group")[:limit]:
        until = now + settings.NOTIFY_SEND_LEASE
        claimed = N.objects.filter(
            pk=note.pk, status=note.status, next_attempt_at=note.next_attempt_at
        ).update(status=N.SENDING, next_attempt_at=until, attempts=F("attempts") + 1)
        if not claimed:
            continue  # another sender has it
        # Only while still ours: a sender whose lease ran out must not undo another's send.
        mine = N.objects.filter(pk=note.pk, status=N.SENDING, next_attempt_at=until)
        try:
            _deliver(note)
        except Exception as exc:  # noqa: BLE001 - any failure to send is retried, then shown
            attempts = note.attempts + 1
            final = attempts >= settings.NOTIFY_MAX_ATTEMPTS
            mine.update(
                status=N.FAILED if final else N.PENDING,
                next_attempt_at=timezone.now() + timedelta(seconds=60 * 2**attempts),
                last_error=f"{type(exc).__name__}: {exc}"[:500],
            )
            log.warning("Notification %s not sent (attempt %s): %s", note.pk, attempts,
                        type(exc).__name__)  # fmt: skip
            done["failed" if final else "retry"] += 1
            continue
        mine.update(status=N.SENT, sent_at=timezone.now(), last_error="")
        done["sent"] += 1
    return done


def _deliver(note: Notification) -> None:
    if note.channel == N.EMAIL:
        message = EmailMessage(
            subject=note.subject,
            body=note.body,
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[note.recipient.email],
            headers={"Message-ID": note.message_id},
            connection=get_connection(timeout=settings.EMAIL_TIMEOUT),
        )
        message.send(fail_silently=False)
        return
    import apprise

    url = settings.NOTIFY_APPRISE.get(note.group.name)
    if not url:
        raise RuntimeError(f"no Apprise URL for group {note.group.name} any more")
    sender = apprise.Apprise()
    if not sender.add(url) or not sender.notify(title=note.subject, body=note.body):
        raise RuntimeError("Apprise could not deliver the message")
