"""Append-only, hash-chained audit events, and keyed fingerprints of secret values."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from .models import AuditChainHead, AuditEvent

GENESIS = "0" * 64


def fingerprint(value: str) -> str:
    """HMAC-SHA256 keyed by AUDIT_HMAC_KEY: shows a secret changed without revealing it."""
    digest = hmac.new(settings.AUDIT_HMAC_KEY.encode(), value.encode(), hashlib.sha256)
    return f"hmac-sha256:{digest.hexdigest()}"


def canonical_json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _header(
    seq, created_at, actor_id, actor_username, action, request_id, name, outcome, arn, state
) -> str:
    # Columns are hashed through this fixed text form so that verifying needs no JSON work.
    return "\t".join(
        (
            str(seq),
            created_at.isoformat(timespec="microseconds"),
            "" if actor_id is None else str(actor_id),
            actor_username,
            action,
            "" if request_id is None else str(request_id),
            name,
            outcome,
            arn,
            state,
        )
    )


def _hash(prev_hash: str, header: str, data: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{header}\n{data}".encode()).hexdigest()


def record(
    *,
    action: str,
    actor=None,
    request=None,
    outcome: str = "success",
    arn: str = "",
    state: str = "",
    data: dict | None = None,
) -> AuditEvent:
    """Append one event; call inside the transaction that makes the change it records."""
    if not connection.in_atomic_block:
        raise RuntimeError("audit.record must run inside the transaction it records")
    head, _ = AuditChainHead.objects.select_for_update().get_or_create(id=1)
    actor_id = actor.pk if actor is not None and actor.is_authenticated else None
    username = actor.get_username() if actor_id is not None else "system"
    fields = {
        "id": head.last_seq + 1,
        "created_at": timezone.now(),
        "actor_id": actor_id,
        "actor_username": username,
        "action": action,
        "request_id": request.pk if request is not None else None,
        "connection_name": request.name if request is not None else "",
        "outcome": outcome,
        "arn": arn or (request.connection_arn if request is not None else ""),
        "connection_state": state or (request.connection_state if request is not None else ""),
        "data": canonical_json(data or {}),
        "prev_hash": head.last_hash,
    }
    fields["hash"] = _hash(fields["prev_hash"], header_of(fields), fields["data"])
    event = AuditEvent(**fields)
    event.save()
    AuditChainHead.objects.filter(id=1).update(last_seq=event.id, last_hash=event.hash)
    return event


def header_of(fields: dict) -> str:
    return _header(
        fields["id"],
        fields["created_at"],
        fields["actor_id"],
        fields["actor_username"],
        fields["action"],
        fields["request_id"],
        fields["connection_name"],
        fields["outcome"],
        fields["arn"],
        fields["connection_state"],
    )


_VERIFY_COLUMNS = (
    "id",
    "created_at",
    "actor_id",
    "actor_username",
    "action",
    "request_id",
    "connection_name",
    "outcome",
    "arn",
    "connection_state",
    "data",
    "prev_hash",
    "hash",
)


@dataclass
class ChainResult:
    ok: bool
    checked: int
    bad_event: int | None = None
    reason: str = ""


def _rows(up_to: int | None, chunk: int) -> Iterator[tuple]:
    qs = AuditEvent.objects.order_by("id")
    if up_to is not None:
        qs = qs.filter(id__lte=up_to)
    # Server-side cursor on PostgreSQL, chunked fetches elsewhere: memory stays flat.
    return qs.values_list(*_VERIFY_COLUMNS).iterator(chunk_size=chunk)


def verify_chain(*, up_to: int | None = None, chunk: int = 5000) -> ChainResult:
    """Recompute every hash in order; name the first event that does not fit."""
    prev = GENESIS
    expected = 1
    checked = 0
    sha256 = hashlib.sha256
    with transaction.atomic():  # one snapshot, and a named cursor needs a transaction
        for row in _rows(up_to, chunk):
            seq, created, actor_id, user, action, req, name, outcome, arn, state = row[:10]
            data, prev_hash, digest = row[10:]
            if seq != expected:
                reason = "missing events before it" if seq > expected else "out of order"
                return ChainResult(False, checked, seq, f"event {expected} is {reason}")
            if prev_hash != prev:
                return ChainResult(False, checked, seq, "its previous-hash link is broken")
            header = _header(seq, created, actor_id, user, action, req, name, outcome, arn, state)
            if sha256(f"{prev}\n{header}\n{data}".encode()).hexdigest() != digest:
                return ChainResult(False, checked, seq, "its content does not match its hash")
            prev = digest
            expected += 1
            checked += 1
        if up_to is None:
            head = AuditChainHead.objects.filter(id=1).first()
            last_seq, last_hash = (head.last_seq, head.last_hash) if head else (0, GENESIS)
            if last_seq != checked or last_hash != prev:
                return ChainResult(
                    False, checked, last_seq or None, "events at the end of the chain are missing"
                )
    return ChainResult(True, checked)


def parsed(event: AuditEvent) -> dict:
    return json.loads(event.data)
