"""Sweeps, per target: the inventory of its connections in AWS, and drift from Vault.

AWS is walked in list pages of 100, which already carry state, StateReason and times, and a
connection is described only where its LastModifiedTime moved. Vault is asked for metadata
only, once per distinct secret path (KV v1, which keeps no versions: a fingerprint of the
current value, held in memory as at approval). Everything a sweep learns is recorded in one
transaction when it ends: a sweep killed midway records nothing, and the next one does it all.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from time import monotonic

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .. import audit, eventbridge, notify, vault
from .. import document as doc
from ..models import Connection, ConnectionRequest, Sweep, Target
from .state import observe
from .submit import connection_data

R = ConnectionRequest
NEW_NAMES_LISTED = 100  # of the unmanaged connections a sweep finds, named in its audit event


def sweep_target(target_id: int, *, owner: str = "") -> Sweep | None:
    """Sweep one target, unless another worker holds its lease (then None)."""
    owner = owner or uuid.uuid4().hex
    if not _take_lease(target_id, owner):
        return None
    started, clock = timezone.now(), monotonic()
    target = Target.objects.get(pk=target_id)
    found = _Found(target, owner, started)
    try:
        found.inventory()
        found.vault_drift()
    except (eventbridge.EventBridgeError, vault.VaultError) as exc:
        found.error = exc.message
    except _LeaseLost:
        return None  # another worker took the target over: it records, not this one
    found.figures["seconds"] = round(monotonic() - clock, 3)
    with transaction.atomic():
        if not Target.objects.select_for_update().filter(pk=target_id, sweep_owner=owner):
            return None  # the lease ran out meanwhile: whoever holds it now records
        if not found.error:
            found.record()
        sweep = Sweep.objects.create(
            target=target,
            started_at=started,
            finished_at=timezone.now(),
            ok=not found.error,
            error=found.error,
            figures=found.figures,
        )
        audit.record(
            action="connection.sweep",
            outcome="success" if sweep.ok else "failure",
            data={"target": target.label, "error": found.error, **found.figures},
        )
        Target.objects.filter(pk=target_id, sweep_owner=owner).update(
            sweep_owner="", sweep_lease_until=None
        )
    return sweep


class _LeaseLost(Exception):
    pass


def _renew_lease(target_id: int, owner: str) -> None:
    """A long walk keeps its target; one whose lease ran out (taken over) stops."""
    held = Target.objects.filter(pk=target_id, sweep_owner=owner).update(
        sweep_lease_until=timezone.now() + settings.SWEEP_LEASE
    )
    if not held:
        raise _LeaseLost


def _take_lease(target_id: int, owner: str) -> bool:
    """Several worker clusters share the work: one conditional UPDATE decides who sweeps a
    target now. A lease left by a killed worker runs out after SWEEP_LEASE."""
    now = timezone.now()
    free = Q(sweep_lease_until__isnull=True) | Q(sweep_lease_until__lt=now)
    taken = Target.objects.filter(free, pk=target_id).update(
        sweep_owner=owner, sweep_lease_until=now + settings.SWEEP_LEASE
    )
    return taken == 1


class _Found:
    """What one sweep learns, in memory until `record()`."""

    def __init__(self, target: Target, owner: str, started):
        self.target, self.owner, self.started = target, owner, started
        self.error = ""
        self.listed: dict[str, dict] = {}  # ARN -> list item
        self.described: dict[str, dict] = {}  # ARN -> describe_connection answer
        self.drift: dict[int, list[dict]] = {}  # connection id -> drifted secrets
        self.figures: dict = {"aws_calls": 0, "vault_reads": 0, "distinct_paths": 0}
        # Deleted ones too: an ARN is never made twice, and one recorded as deleted that AWS
        # lists again (a describe answered "not found" too early) is that same connection.
        self.known = {c.arn: c for c in Connection.objects.filter(target=target)}

    def inventory(self) -> None:
        if not self.target.account_id:
            self.account = eventbridge.caller_account(self.target)
            self.figures["aws_calls"] += 1
        token = None
        while True:
            items, token = eventbridge.list_connections(self.target, token)
            self.figures["aws_calls"] += 1
            _renew_lease(self.target.pk, self.owner)
            self.listed.update((item["ConnectionArn"], item) for item in items)
            if not token:
                break
        for arn, item in self.listed.items():
            row = self.known.get(arn)
            moved = row is not None and item.get("LastModifiedTime") != row.modified_at
            if moved and row.managed:  # only ours need what the list does not carry
                found = eventbridge.describe_connection(self.target, item["Name"])
                self.figures["aws_calls"] += 1
                if found is not None:
                    self.described[arn] = found

    def vault_drift(self) -> None:
        """Each managed connection's pushed secrets against what Vault holds now."""
        uses = defaultdict(list)  # secret path -> [(connection, document path, leaf, ref)]
        for connection in self.known.values():
            if not connection.managed or connection.arn not in self.listed:
                continue
            leaves = dict(doc.secret_leaves(connection.document))
            for path, ref in doc.references(connection.document):
                uses[ref.path].append((connection, path, leaves[path], ref))
        states = vault.secret_states(list(uses), digest=doc.fingerprint)
        self.figures["vault_reads"] = self.figures["distinct_paths"] = len(states)
        for secret_path, state in states.items():
            for connection, path, leaf, ref in uses[secret_path]:
                why = _drift(state, leaf, ref)
                if why:
                    entry = {"path": doc.path_text(path), "vault": leaf["vault"], **why}
                    self.drift.setdefault(connection.pk, []).append(entry)

    def record(self) -> None:
        """Write what was learnt onto the rows as they are now (locked), with an audit event
        and notifications for each flag raised. A row a change or a refresh recorded newer
        facts on while the sweep walked is left alone."""
        if getattr(self, "account", ""):
            Target.objects.filter(pk=self.target.pk).update(account_id=self.account)
        rows = {c.arn: c for c in Connection.objects.select_for_update().filter(target=self.target)}
        events = []
        for arn, row in rows.items():
            if _recorded_since(row, self.started):
                continue
            item = self.listed.get(arn)
            if item is None and row.state == Connection.DELETED:
                continue
            found = None if item is None else {**item, **self.described.get(arn, {})}
            events += self._observed(row, found)
        new = [item for arn, item in self.listed.items() if arn not in rows]
        Connection.objects.bulk_create(
            (
                Connection(
                    target=self.target,
                    name=item["Name"],
                    arn=item["ConnectionArn"],
                    authorization_type=item.get("AuthorizationType", ""),
                    state=item.get("ConnectionState", ""),
                    state_reason=item.get("StateReason", ""),
                    created_in_aws_at=item.get("CreationTime"),
                    modified_at=item.get("LastModifiedTime"),
                    authorized_at=item.get("LastAuthorizedTime"),
                    checked_at=timezone.now(),
                    managed=False,
                )
                for item in new
            ),
            ignore_conflicts=True,  # one a change of ours recorded meanwhile stays as it is
        )
        self.figures.update(
            listed=len(self.listed),
            unmanaged_found=len(new),
            unmanaged_names=sorted(item["Name"] for item in new)[:NEW_NAMES_LISTED],
            changed_outside=sum(1 for e in events if e["action"].endswith("changed_outside")),
            deleted_outside=sum(1 for e in events if e["action"].endswith("deleted_outside")),
            drifted=len(self.drift),
        )
        approvers = notify.approvers_of(self.target) if events else []
        for entry, event in zip(events, audit.append(events) if events else [], strict=True):
            for flag in entry["flags"]:
                notify.connection_flagged(
                    entry["connection"],
                    flag,
                    event,
                    was=entry["data"]["previous_state"],
                    approvers=approvers,
                )

    def _observed(self, row: Connection, found: dict | None) -> list[dict]:
        """One row against what the sweep saw: saved only when something changed, and the
        events to record for it: state moves of every connection, and the flags raised on
        managed ones (nobody here answers for an unmanaged one: no flag, no notification)."""
        before = {name: getattr(row, name) for name in _KEPT}
        flags = observe(row, found)
        drift = self.drift.get(row.pk, []) if row.managed and found is not None else []
        new_drift = bool(drift) and drift != row.drift
        row.drift = drift
        if all(getattr(row, name) == value for name, value in before.items()):
            return []
        row.save()
        old = (before["state"], before["state_reason"], before["modified_at"])
        if not row.managed:
            flags = []  # nobody here answers for it: its state moves only (it has no drift)
        events = [self._event(row, flag, old, flags=[flag], warn=True) for flag in flags]
        if new_drift:
            events.append(self._event(row, "drift", old, flags=["drift"], warn=True))
        if (row.state, row.state_reason) != old[:2] and not flags:
            events.append(self._event(row, "state", old, flags=[]))
        return events

    def _event(self, row: Connection, what: str, before: tuple, *, flags, warn=False):
        data = {"target": self.target.label, "previous_state": before[0], **connection_data(row)}
        if what == "changed_outside":
            data["previous_modified_time"] = before[2].isoformat() if before[2] else None
        if what == "drift":
            data["drift"] = row.drift
        if row.deauthorized_by_aws:
            data["deauthorized_by_aws"] = True
        return dict(
            action=f"connection.sweep.{what}",
            connection=row,
            outcome="warning" if warn else "success",
            data=data,
            flags=flags,
        )


# What a sweep may change on a row: anything else moved means the row is saved.
_KEPT = (
    "state", "state_reason", "secret_arn", "authorization_type", "modified_at", "authorized_at",
    "drift", "changed_outside", "deleted_outside", "deauthorized_by_aws",
)  # fmt: skip


def _recorded_since(row: Connection, started) -> bool:
    """Did a change or a refresh record newer facts on the row while the sweep walked?"""
    return any(when is not None and when > started for when in (row.checked_at, row.pushed_at))


def _drift(state, leaf: dict, ref: vault.Reference) -> dict | None:
    """Why a pushed secret no longer matches Vault, or None."""
    if isinstance(state, vault.VaultError):
        return {"why": "unreadable", "message": state.message}
    if state.kv_version == 1:
        now = (state.fingerprints or {}).get(ref.key)
        if now is None:
            return {"why": "key gone"}
        if leaf.get("fingerprint") and now != leaf["fingerprint"]:
            return {"why": "value changed"}
        return None
    pushed = leaf.get("version")
    if pushed is not None and pushed in state.gone:
        return {"why": "pushed version deleted or destroyed", "pushed": pushed,
                "current": state.current}  # fmt: skip
    if pushed is not None and state.current and state.current > pushed:
        return {"why": "newer version", "pushed": pushed, "current": state.current}
    return None
