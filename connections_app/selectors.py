"""The read side of requests and connections: what pages list. Nothing here writes."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import F, Q, QuerySet
from django.utils import timezone

from .models import ConnectionRequest
from .roles import CAN_APPROVE, CAN_AUDIT

R = ConnectionRequest
QUEUE_PAGE_SIZE = 25  # rows cost a page most of its time


def visible_request(user, pk: int) -> ConnectionRequest | None:
    """Requesters see their own requests; approvers, auditors and superusers see all."""
    found = R.objects.select_related("requester", "decided_by").filter(pk=pk).first()
    if found is not None and (
        found.requester_id == user.pk or user.has_perm(CAN_APPROVE) or user.has_perm(CAN_AUDIT)
    ):
        return found
    return None


def requests_of(user) -> QuerySet[ConnectionRequest]:
    return R.objects.filter(requester=user).order_by("-created_at")


@dataclass
class QueuePage:
    rows: list[dict]
    waiting: int  # pending and not yet past their time, in all
    newer: int | None  # cursor for ?after=, when more wait after this page
    paged: bool  # this is not the first page


def approval_queue(*, after: int | None, size: int = QUEUE_PAGE_SIZE) -> QueuePage:
    """Pending requests not past their time, oldest first, a page at a time.

    Pages follow the last request shown (?after=id), not a position: deciding requests on one
    page shrinks the queue, and a page number would then skip the ones it moved up. Rows as
    plain values: approvers reload this page all day."""
    waiting = R.objects.filter(status=R.PENDING, expires_at__gt=timezone.now())
    waiting = waiting.order_by("created_at", "id")
    pending = waiting
    anchor = None
    if after is not None:
        anchor = R.objects.filter(pk=after).values_list("created_at", flat=True).first()
    if anchor is not None:
        pending = pending.filter(Q(created_at__gt=anchor) | Q(created_at=anchor, id__gt=after))
    rows = list(
        pending.values("pk", "name", "authorization_type", "created_at", "requester_id").annotate(
            requester_name=F("requester__username")
        )[: size + 1]
    )
    return QueuePage(
        rows=rows[:size],
        waiting=waiting.count(),
        newer=rows[size - 1]["pk"] if len(rows) > size else None,
        paged=anchor is not None,
    )


def unfinished_submissions() -> QuerySet[ConnectionRequest]:
    """Failed submissions, and ones still running (or left running by a lost response)."""
    return R.objects.filter(status__in=(R.FAILED, R.SUBMITTING)).only(
        "name", "status", "error_message"
    )


def connections_created() -> QuerySet[ConnectionRequest]:
    return R.objects.filter(status=R.CREATED).order_by("name")
