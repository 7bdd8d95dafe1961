"""Following a connection's state in AWS: after a change, on demand, and from the command."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.functional import cached_property

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


FLAGS = ("changed_outside", "deleted_outside", "deauthorized_by_aws")


class _Ours:
    """What the connection's newest change made here explains (read once, when needed)."""

    def __init__(self, connection: Connection):
        self.connection = connection

    @cached_property
    def last(self) -> ConnectionRequest | None:
        return (
            self.connection.changes.filter(status__in=(R.SUBMITTING, *R.SUCCEEDED))
            .order_by("-id")
            .only("kind", "status", "updated_at")
            .first()
        )

    def explains(self, flag: str, modified=None) -> bool:
        last = self.last
        if last is None:
            return False
        if last.status == R.SUBMITTING:  # a change of ours is being made now
            return True
        if flag == "deleted_outside":
            return last.kind == R.DELETE
        if flag == "deauthorized_by_aws":
            return last.kind == R.DEAUTHORIZE
        # AWS may still move LastModifiedTime while it settles after our change: a moment
        # this close to our change's end is taken to be ours.
        return modified is not None and abs(modified - last.updated_at) <= settings.OURS_WITHIN


def observe(connection: Connection, found: dict | None) -> list[str]:
    """What AWS says of a connection (a list item, a describe answer, or None: gone) onto its
    row, and the flags this raises: changed or deleted outside this dashboard, deauthorized
    by AWS. The one rule for refreshes and sweeps; AuthParameters are never taken."""
    before_state, before_modified = connection.state, connection.modified_at
    explains = _Ours(connection).explains

    raised = []
    if found is None:
        if before_state == Connection.DELETED:
            return raised
        connection.state = Connection.DELETED
        connection.state_reason = "The connection no longer exists in AWS."
        connection.checked_at = timezone.now()
        if connection.managed and not explains("deleted_outside"):
            connection.deleted_outside = True
            raised.append("deleted_outside")
        return raised
    apply_described(connection, found)
    connection.deleted_outside = False  # listed again: it was not deleted after all
    modified = found.get("LastModifiedTime")
    moved = modified is not None and before_modified is not None and modified != before_modified
    if moved and connection.managed and not explains("changed_outside", modified):
        connection.changed_outside = True
        raised.append("changed_outside")
    if connection.state == "DEAUTHORIZED" and before_state != "DEAUTHORIZED":
        connection.deauthorized_by_aws = not explains("deauthorized_by_aws")
        if connection.deauthorized_by_aws:
            raised.append("deauthorized_by_aws")
    return raised


def connection_refresh(*, connection: Connection, actor=None) -> Connection:
    """describe_connection, and an audit event when anything changed."""
    if connection.state == Connection.DELETED:
        return connection
    found = eventbridge.describe_connection(connection.target, connection.name)
    if found is not None and found["ConnectionArn"] != connection.arn:
        found = None  # the name now belongs to another connection (made after this one went)
    with transaction.atomic():
        connection = Connection.objects.select_for_update().get(pk=connection.pk)
        before = [getattr(connection, name) for name in _WATCHED]
        raised = observe(connection, found)
        connection.save()
        after = [getattr(connection, name) for name in _WATCHED]
        if after != before or raised:
            data = {"previous_state": before[0], **connection_data(connection)}
            data.update((flag, True) for flag in raised)
            event = audit.record(
                action="connection.state.refresh", actor=actor, connection=connection, data=data
            )
            for flag in raised:
                notify.connection_flagged(connection, flag, event, was=before[0])
    return connection


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
