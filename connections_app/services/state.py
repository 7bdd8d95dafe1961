"""Following a connection's state in AWS: after a change, on demand, and from the command."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from .. import audit, eventbridge, notify
from ..models import Connection, ConnectionRequest
from .submit import apply_described, connection_data

R = ConnectionRequest

# A refresh that changes any of these is recorded.
_WATCHED = (
    "state",
    "state_reason",
    "arn",
    "secret_arn",
    "modified_at",  # changed in AWS's console, say
    "authorized_at",
)


def connection_refresh(*, connection: Connection, actor=None) -> Connection:
    """describe_connection, and an audit event when anything changed."""
    if connection.state == Connection.DELETED:
        return connection
    found = eventbridge.describe_connection(connection.target, connection.name)
    with transaction.atomic():
        connection = Connection.objects.select_for_update().get(pk=connection.pk)
        before = [getattr(connection, name) for name in _WATCHED]
        if found is None or found["ConnectionArn"] != connection.arn:
            # Gone, or the name now belongs to another connection (made after this one went).
            connection.state = Connection.DELETED
            connection.state_reason = "The connection no longer exists in AWS."
            connection.checked_at = timezone.now()
        else:
            apply_described(connection, found)
        if connection.state == "DEAUTHORIZED" and before[0] != "DEAUTHORIZED":
            connection.deauthorized_by_aws = not _deauthorized_here(connection)
        connection.save()
        after = [getattr(connection, name) for name in _WATCHED]
        if after != before:
            data = {"previous_state": before[0], **connection_data(connection)}
            if connection.deauthorized_by_aws:
                data["deauthorized_by_aws"] = True
            event = audit.record(
                action="connection.state.refresh", actor=actor, connection=connection, data=data
            )
            if connection.deauthorized_by_aws and before[0] != "DEAUTHORIZED":
                notify.connection_flagged(connection, "deauthorized_by_aws", event)
    return connection


def _deauthorized_here(connection: Connection) -> bool:
    """Was the newest change carried out on this connection a deauthorize?"""
    last = (
        connection.changes.filter(status__in=R.SUCCEEDED)
        .order_by("-submit_started_at", "-id")
        .values_list("kind", flat=True)
        .first()
    )
    return last == R.DEAUTHORIZE


def connections_refresh_passing(*, everything: bool = False) -> list[tuple[Connection, str]]:
    """Refresh every connection in a passing state (all live ones with `everything`); for each,
    its new state or the error AWS gave."""
    rows = Connection.objects.exclude(state=Connection.DELETED)
    if not everything:
        rows = rows.filter(state__in=Connection.PASSING)
    done = []
    for connection in rows:
        try:
            done.append((connection_refresh(connection=connection), ""))
        except eventbridge.EventBridgeError as exc:
            done.append((connection, exc.message))
    return done
