"""Tampering with the audit log by someone who controls the database but not Vault.

Each attack also defeats every check inside the database (`audit.verify_chain()`, what
verify_audit_chain was before signed checkpoints, passes after it), and each is caught by the
signed checkpoints in Vault, with the case named.
"""

from __future__ import annotations

import base64
import io
import json
import uuid

import pytest
import requests
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction

from connections_app import audit, checkpoints
from connections_app.models import AuditCheckpoint
from tests import tamper

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("servers")]
SECTION = "audit tampering"


def _append(count: int) -> None:
    with transaction.atomic():
        audit.append([{"action": "test.step", "data": {"n": n}} for n in range(count)])


@pytest.fixture
def signed_log():
    """Ten events; checkpoints signed at events 4 and 8; 9 and 10 not signed yet."""
    for count in (4, 4):
        _append(count)
        call_command("audit_checkpoint", stdout=io.StringIO())
    _append(2)
    assert AuditCheckpoint.objects.count() == 2
    return {c.seq: c for c in (e.checkpoint for e in checkpoints.stored_checkpoints())}


def _outcomes() -> tuple[str, str]:
    """(the database-only check, verify_audit_chain), each in a few words."""
    inside = audit.verify_chain()
    old = f"passes ({inside.checked} events intact)" if inside.ok else f"fails: {inside.reason}"
    try:
        call_command("verify_audit_chain", stdout=io.StringIO())
    except CommandError as exc:
        return old, f"refused: “{exc}”"
    return old, "passes"


def _report(security_report, item: str, old: str, new: str) -> None:
    security_report.add(
        SECTION, item, f"database-only check (verify_audit_chain before): {old}; now: {new}"
    )


def test_rewritten_event_with_every_hash_head_and_checkpoint_recomputed(
    signed_log, security_report
):
    tamper.rewrite(6, outcome="forged")
    old, new = _outcomes()
    _report(
        security_report,
        "event 6 rewritten, every later hash, the head and the database checkpoints recomputed",
        old,
        new,
    )
    assert old.startswith("passes")
    assert "broken at event 8: its hash differs from the checkpoint signed at" in new
    assert "rewritten between events 5 and 8" in new
    with pytest.raises(checkpoints.CheckpointError) as refused:
        checkpoints.checkpoint_now()  # and the app will not sign the forged head
    assert refused.value.code == "chain_diverged"


def test_tail_cut_off_with_the_head_rewound(signed_log, security_report):
    tamper.cut_tail(5)
    old, new = _outcomes()
    _report(security_report, "events 6 to 10 deleted, the head rewound to event 5", old, new)
    assert old.startswith("passes")
    assert "broken at event 6: events 6 to 8 are missing: the checkpoint signed at" in new
    assert "its tail was cut off and the head rewound" in new


def test_truncated_log(signed_log, security_report):
    tamper.truncate()
    old, new = _outcomes()
    _report(security_report, "every audit table emptied (TRUNCATE on PostgreSQL)", old, new)
    assert old == "passes (0 events intact)"
    assert "broken at event 1: the log is empty, but the checkpoint signed at" in new
    assert "recorded 8 events: it was emptied (truncated)" in new


def _store_put(bao_cli, seq: int, fields: dict) -> None:
    """Write a store entry with the root token: what the app's own policy never allows."""
    path = f"{checkpoints.store_location()}/{seq:020d}"
    bao_cli("kv", "put", path, *(f"{key}={value}" for key, value in fields.items()))


def test_forged_checkpoint_with_a_bad_signature(signed_log, bao_cli, security_report):
    real = signed_log[8]
    head = audit.verify_chain()
    # Event 10's checkpoint, "signed" with the signature of event 8's.
    _store_put(
        bao_cli,
        10,
        {
            "seq": 10,
            "hash": head.last_hash,
            "signed_at": real.signed_at,
            "signature": real.signature,
        },
    )
    old, new = _outcomes()
    _report(security_report, "a checkpoint added to the store with a copied signature", old, new)
    assert old.startswith("passes")
    assert "Forged or altered audit checkpoint" in new and "00000000000000000010" in new
    assert "its signature does not verify with Transit key" in new


def test_forged_checkpoint_signed_by_another_key(signed_log, bao_cli, security_report):
    # The attacker rewrites event 6 and signs the forged head with a key of their own.
    mallory = f"mallory-{uuid.uuid4().hex[:8]}"
    bao_cli("write", "-f", f"transit/keys/{mallory}", "type=ed25519")
    tamper.rewrite(6, outcome="forged")
    head = audit.verify_chain()
    signed_at = signed_log[8].signed_at
    message = checkpoints.statement(head.last_seq, head.last_hash, signed_at)
    answer = bao_cli(
        "write",
        "-format=json",
        f"transit/sign/{mallory}",
        f"input={base64.b64encode(message).decode()}",
    )
    signature = json.loads(answer)["data"]["signature"]
    fields = {"seq": head.last_seq, "hash": head.last_hash, "signed_at": signed_at}
    _store_put(bao_cli, head.last_seq, {**fields, "signature": signature})
    old, new = _outcomes()
    _report(
        security_report,
        "event 6 rewritten and a checkpoint of the forged head signed with another ed25519 key",
        old,
        new,
    )
    assert old.startswith("passes")
    assert "Forged or altered audit checkpoint" in new and "00000000000000000010" in new
    assert "it was altered, or signed with another key" in new


def test_checkpoint_overwritten_in_the_store(signed_log, bao_cli, security_report):
    # Someone with update rights on the store (not the app) rewrites checkpoint 8.
    tamper.rewrite(6, outcome="forged")
    head = audit.verify_chain()
    fields = {**signed_log[8].fields(), "hash": head.last_hash}
    _store_put(bao_cli, 8, fields)
    old, new = _outcomes()
    _report(security_report, "a signed checkpoint overwritten in the store (version 2)", old, new)
    assert "Forged or altered audit checkpoint" in new
    assert "it was overwritten in the store (it is at version 2)" in new


def test_checkpoint_deleted_from_the_store(signed_log, bao_cli, security_report):
    # Someone with delete rights on the store (not the app) deletes checkpoint 8 before
    # cutting the tail: checkpoint 4 alone would still pass.
    bao_cli("kv", "delete", f"{checkpoints.store_location()}/{8:020d}")
    tamper.cut_tail(5)
    old, new = _outcomes()
    _report(security_report, "the newest signed checkpoint deleted in the store", old, new)
    assert "Forged or altered audit checkpoint" in new
    assert "00000000000000000008: its data was deleted from the store" in new


def test_events_after_the_newest_checkpoint_are_named_as_unsigned(signed_log, security_report):
    """The limit of the design: events after the newest checkpoint are only as safe as the
    database until the next one (at most AUDIT_CHECKPOINT_EVENTS events or _MINUTES minutes)."""
    tamper.rewrite(10, outcome="forged")
    out = io.StringIO()
    call_command("verify_audit_chain", stdout=out)
    security_report.add(
        SECTION,
        "event 10, after the newest signed checkpoint (event 8), rewritten",
        "not detectable until the next checkpoint (at most AUDIT_CHECKPOINT_EVENTS events or "
        "AUDIT_CHECKPOINT_MINUTES minutes later); verify_audit_chain names those events: "
        f"“{out.getvalue().splitlines()[-1]}”",
    )
    assert "Events 9 to 10 are not covered by a signed checkpoint" in out.getvalue()


def test_the_apps_own_vault_credentials_cannot_rewrite_checkpoints(
    checkpoint_approle, openbao, settings, security_report
):
    """Even with the app's own AppRole (the checkpoint policy only), a stored checkpoint cannot
    be changed or removed, nor the signing key taken or changed; each refusal is Vault's."""
    role_id, secret_id, mount = checkpoint_approle
    _append(2)
    call_command("audit_checkpoint", stdout=io.StringIO())
    login = requests.post(
        f"{openbao.url}/v1/auth/{mount}/login",
        json={"role_id": role_id, "secret_id": secret_id},
        timeout=10,
    )
    headers = {"X-Vault-Token": login.json()["auth"]["client_token"]}
    kv, path = settings.AUDIT_CHECKPOINT_MOUNT, f"{settings.AUDIT_CHECKPOINT_PATH}/{2:020d}"
    transit, name = settings.AUDIT_TRANSIT_MOUNT, settings.AUDIT_TRANSIT_KEY
    forged = {"seq": "2", "hash": "0" * 64, "signed_at": "2000-01-01T00:00:00+00:00"}
    attempts = {
        "overwrite it": ("POST", f"{kv}/data/{path}", {"data": forged}),
        "overwrite it with cas=1": ("POST", f"{kv}/data/{path}",
                                    {"options": {"cas": 1}, "data": forged}),
        "patch it": ("PATCH", f"{kv}/data/{path}", {"data": forged}),
        "delete its latest version": ("DELETE", f"{kv}/data/{path}", None),
        "delete version 1": ("POST", f"{kv}/delete/{path}", {"versions": [1]}),
        "destroy version 1": ("POST", f"{kv}/destroy/{path}", {"versions": [1]}),
        "delete its metadata and every version": ("DELETE", f"{kv}/metadata/{path}", None),
        "set delete_version_after": ("POST", f"{kv}/metadata/{path}",
                                     {"delete_version_after": "1s"}),
        "export the signing key": ("GET", f"{transit}/export/signing-key/{name}", None),
        "make the key exportable": ("POST", f"{transit}/keys/{name}/config", {"exportable": True}),
        "rotate the key": ("POST", f"{transit}/keys/{name}/rotate", None),
        "replace the key": ("POST", f"{transit}/keys/{name}", {"type": "ed25519"}),
    }  # fmt: skip
    patch = {"Content-Type": "application/merge-patch+json"}  # what KV v2 asks of a PATCH
    statuses = {
        what: requests.request(
            method,
            f"{openbao.url}/v1/{url}",
            data=json.dumps(body) if body is not None else None,
            headers={**headers, **(patch if method == "PATCH" else {})},
            timeout=10,
        ).status_code
        for what, (method, url, body) in attempts.items()
    }
    refused = [what for what, status in statuses.items() if status == 403]
    security_report.add(
        SECTION,
        "the app's own AppRole (checkpoint policy only) against a stored checkpoint and the key",
        f"{len(refused)} of {len(attempts)} refused by Vault (403): {', '.join(refused)}; "
        f"others: {({w: s for w, s in statuses.items() if s != 403}) or 'none'}",
    )
    assert statuses == dict.fromkeys(attempts, 403)
    # The same token does read the store: the refusals above are the policy's, not a bad token's.
    for url in (f"{kv}/data/{path}", f"{kv}/metadata/{settings.AUDIT_CHECKPOINT_PATH}?list=true"):
        assert requests.get(f"{openbao.url}/v1/{url}", headers=headers, timeout=10).ok
    [entry] = checkpoints.stored_checkpoints()
    assert not entry.problem and entry.checkpoint.seq == 2
    assert ": 1, every signature sound" in _verify_output()


def _verify_output() -> str:
    out = io.StringIO()
    call_command("verify_audit_chain", stdout=out)
    return out.getvalue()
