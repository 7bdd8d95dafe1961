"""Signed audit checkpoints: made every N events or M minutes, in the background after a commit
or by command, once per position whoever races, refused over a broken chain; Vault's errors in
plain words, and approvals unaffected by them. The tamper cases are in tests/security."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
import uuid

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections, transaction

from connections_app import audit, checkpoints, devstack, services, vault
from connections_app.models import AuditCheckpoint, ConnectionRequest
from tests import tamper
from tests.faults import path_rule

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("servers")]


def _append(count: int) -> None:
    with transaction.atomic():
        audit.append([{"action": "test.step"} for _ in range(count)])


def _stored() -> list[checkpoints.Checkpoint]:
    entries = checkpoints.stored_checkpoints()
    assert not [entry.problem for entry in entries if entry.problem]
    return [entry.checkpoint for entry in entries]


def _run(command: str, *args: str) -> str:
    out = io.StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


def test_checkpoint_signs_the_head_outside_the_database():
    _append(3)
    out = _run("audit_checkpoint")
    assert "Checkpoint of event 3 signed at" in out and "transit/keys/audit-checkpoints" in out
    [made] = _stored()
    head = audit.verify_chain()
    assert (made.seq, made.hash) == (3, head.last_hash)
    assert made.signature.startswith("vault:v1:")
    # The database keeps a copy for the event pages, and nothing else relies on it.
    assert list(AuditCheckpoint.objects.values_list("seq", "hash")) == [(3, head.last_hash)]
    assert "Nothing to sign" in _run("audit_checkpoint")
    report = _run("verify_audit_chain")
    assert "Audit chain intact: 3 events." in report
    assert ": 1, every signature sound" in report and "reaches the newest, of event 3," in report


def test_verify_names_the_unsigned_events_and_whether_one_is_due(settings):
    _append(2)
    report = _run("verify_audit_chain")
    assert "No signed checkpoint exists yet" in report
    assert "Events 1 to 2 are not covered by a signed checkpoint yet" in report
    settings.AUDIT_CHECKPOINT_EVENTS = 2
    assert "and one is due: is the checkpoint schedule running?" in _run("verify_audit_chain")


def test_due_after_n_events(settings):
    settings.AUDIT_CHECKPOINT_EVENTS = 3
    _append(2)
    assert checkpoints.checkpoint_if_due() is None
    assert "No checkpoint due yet." in _run("audit_checkpoint", "--if-due")
    _append(1)
    assert checkpoints.checkpoint_if_due().seq == 3
    _append(2)
    assert checkpoints.checkpoint_if_due() is None
    _append(1)
    assert checkpoints.checkpoint_if_due().seq == 6
    assert [c.seq for c in _stored()] == [3, 6]


def test_due_after_m_minutes(settings):
    settings.AUDIT_CHECKPOINT_MINUTES = 60
    _append(2)
    assert checkpoints.checkpoint_if_due() is None  # the first event is seconds old
    settings.AUDIT_CHECKPOINT_MINUTES = 0.001  # 60 ms
    time.sleep(0.1)
    assert checkpoints.checkpoint_if_due().seq == 2
    assert checkpoints.checkpoint_if_due() is None  # no event since
    _append(1)
    settings.AUDIT_CHECKPOINT_MINUTES = 60
    assert checkpoints.checkpoint_if_due() is None  # the checkpoint is seconds old
    settings.AUDIT_CHECKPOINT_MINUTES = 0.001
    time.sleep(0.1)
    assert checkpoints.checkpoint_if_due().seq == 3


@pytest.mark.django_db(transaction=True)
def test_a_due_checkpoint_is_signed_in_the_background_after_the_commit(settings):
    settings.AUDIT_CHECKPOINT_EVENTS = 3
    _append(2)
    checkpoints.join_background(30)
    assert _stored() == []
    _append(1)  # the third event: due; signed after the commit, off the appending thread
    checkpoints.join_background(30)
    assert [c.seq for c in _stored()] == [3]
    assert AuditCheckpoint.objects.filter(seq=3).exists()


@pytest.mark.django_db(transaction=True)
def test_no_vault_call_inside_the_appending_transaction(settings, calls):
    settings.AUDIT_CHECKPOINT_EVENTS = 2
    with transaction.atomic():
        audit.append([{"action": "test.step"} for _ in range(2)])  # due from here on
        assert calls.total() == (0, 0)
    checkpoints.join_background(30)
    assert any("/transit/sign/" in path for _, path, _ in calls.vault.seen)
    assert [c.seq for c in _stored()] == [2]


@pytest.mark.django_db(transaction=True)
def test_an_approval_does_not_wait_for_signing(settings, requester, approver, make_document, calls):
    settings.AUDIT_CHECKPOINT_EVENTS = 1  # every commit makes one due
    calls.vault.rules.append(path_rule("/transit/sign/", ("delay", 3)))
    request = services.request_create(requester=requester, document=make_document("API_KEY"))
    started = time.monotonic()
    done = services.request_approve(
        request=request, approver=approver, seen_hash=request.document_hash
    )
    assert done.status == ConnectionRequest.CREATED
    assert time.monotonic() - started < 2.5  # signing, delayed 3 s, runs apart from it
    checkpoints.join_background(30)
    assert _stored()  # and its checkpoint still landed
    calls.vault.wait_idle()


@pytest.mark.django_db(transaction=True)
def test_approvals_go_on_when_signing_fails_and_the_log_says_why(
    settings, requester, approver, make_document, caplog
):
    settings.AUDIT_CHECKPOINT_EVENTS = 1
    settings.AUDIT_TRANSIT_KEY = f"missing-{uuid.uuid4().hex[:6]}"
    caplog.set_level(logging.WARNING, logger="connections_app.checkpoints")
    request = services.request_create(requester=requester, document=make_document("API_KEY"))
    checkpoints.join_background(30)
    done = services.request_approve(
        request=request, approver=approver, seen_hash=request.document_hash
    )
    assert done.status == ConnectionRequest.CREATED
    checkpoints.join_background(30)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [
        f"Audit checkpoint not signed: Transit key transit/keys/{settings.AUDIT_TRANSIT_KEY} "
        f"does not exist (bao write -f transit/keys/{settings.AUDIT_TRANSIT_KEY} type=ed25519)."
    ]  # once: after a failure the process waits a minute before trying again
    assert vault.store_list(settings.AUDIT_CHECKPOINT_MOUNT, settings.AUDIT_CHECKPOINT_PATH) == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("credentials", ["app policy (create only)", "root token (cas=0)"])
def test_callers_racing_write_one_checkpoint_per_position(
    request, settings, monkeypatch, credentials
):
    if credentials.startswith("app"):
        request.getfixturevalue("checkpoint_approle")
    _append(4)  # not due yet: nothing signs in the background
    settings.AUDIT_CHECKPOINT_EVENTS = 1
    callers = 4
    ready = threading.Barrier(callers)
    create = vault.store_create

    def create_together(*args):
        ready.wait(30)  # every caller has signed its own checkpoint of event 4 by now
        return create(*args)

    monkeypatch.setattr(vault, "store_create", create_together)
    results, failures = [], []

    def call():
        try:
            results.append(checkpoints.checkpoint_if_due())
        except Exception as exc:  # noqa: BLE001 - the test reports any failure
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=call) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    assert len({(r.seq, r.hash, r.signed_at, r.signature) for r in results}) == 1
    [stored] = _stored()
    assert (stored.seq, stored.signature) == (4, results[0].signature)


def test_the_app_policy_signs_and_stores_checkpoints(checkpoint_approle):
    _append(2)
    assert "Checkpoint of event 2 signed" in _run("audit_checkpoint")
    assert ": 1, every signature sound" in _run("verify_audit_chain")


def test_no_checkpoint_over_a_chain_broken_below_the_newest_one():
    _append(4)
    _run("audit_checkpoint")
    _append(2)
    tamper.rewrite(2, outcome="forged")
    with pytest.raises(CommandError, match="Refusing to sign: event 4 no longer has the hash"):
        _run("audit_checkpoint")
    assert [c.seq for c in _stored()] == [4]


def test_no_checkpoint_over_a_chain_broken_since_the_newest_one():
    _append(4)
    _run("audit_checkpoint")
    _append(2)
    tamper.disable_triggers()
    tamper.rawsql.execute(f"UPDATE {tamper.EVENTS} SET outcome = 'forged' WHERE id = 5")
    with pytest.raises(checkpoints.CheckpointError, match="broken at event 5") as refused:
        checkpoints.checkpoint_now()
    assert refused.value.code == "chain_broken"


def test_no_checkpoint_when_the_database_is_behind_the_store():
    _append(4)
    _run("audit_checkpoint")
    tamper.truncate()
    _append(5)  # a fresh chain, past the old position
    with pytest.raises(checkpoints.CheckpointError) as refused:
        checkpoints.checkpoint_now()
    assert refused.value.code == "chain_diverged"
    tamper.cut_tail(2)
    with pytest.raises(CommandError, match="the chain's head is at event 2, but the checkpoint"):
        _run("audit_checkpoint")


def test_checkpoints_survive_a_rotation_of_the_key(settings, bao_cli):
    settings.AUDIT_TRANSIT_KEY = f"rotating-{uuid.uuid4().hex[:6]}"
    bao_cli("write", "-f", f"transit/keys/{settings.AUDIT_TRANSIT_KEY}", "type=ed25519")
    _append(1)
    _run("audit_checkpoint")
    bao_cli("write", "-f", f"transit/keys/{settings.AUDIT_TRANSIT_KEY}/rotate")
    _append(1)
    _run("audit_checkpoint")
    assert [c.signature[:9] for c in _stored()] == ["vault:v1:", "vault:v2:"]
    assert ": 2, every signature sound" in _run("verify_audit_chain")


# ---------------------------------------------------------------------------
# What Vault's errors mean, in the operator's words


@pytest.mark.parametrize(
    "setting, value, message",
    [
        (
            "AUDIT_TRANSIT_KEY",
            "no-such-key",
            "Transit key transit/keys/no-such-key does not exist (bao write -f "
            "transit/keys/no-such-key type=ed25519).",
        ),
        (
            "AUDIT_TRANSIT_MOUNT",
            "no-transit",
            "No Transit secrets engine is mounted at no-transit/ (bao secrets enable "
            "-path=no-transit transit).",
        ),
        ("VAULT_ADDR", "closed", "is unreachable or timed out; try again when it is back."),
        ("VAULT_TOKEN", "not-a-token", "the token is invalid, or its policy grants nothing"),
    ],
)
def test_vault_errors_reach_the_operator_plainly(settings, setting, value, message):
    _append(1)
    if value == "closed":
        value = f"http://127.0.0.1:{devstack.free_port()}"
    setattr(settings, setting, value)
    vault.reset_client()
    with pytest.raises(CommandError) as signing:
        _run("audit_checkpoint")
    assert str(signing.value).startswith("No audit checkpoint signed: ")
    assert message in str(signing.value)
    with pytest.raises(CommandError) as verifying:
        _run("verify_audit_chain")
    assert str(verifying.value).startswith("Cannot check the signed audit checkpoints: ")
    assert message in str(verifying.value)
    assert "Audit chain's hashes consistent: 1 events" in _run(
        "verify_audit_chain", "--database-only"
    )


def _token_with(bao_cli, settings, policy: str) -> None:
    name = f"partial-{uuid.uuid4().hex[:8]}"
    bao_cli("policy", "write", name, "-", input_text=policy)
    created = json.loads(bao_cli("token", "create", f"-policy={name}", "-format=json"))
    settings.VAULT_TOKEN = created["auth"]["client_token"]
    vault.reset_client()


@pytest.mark.parametrize(
    "line, replacement, command, message",
    [
        (
            "/sign/",
            "",
            "audit_checkpoint",
            "Vault's policy does not let the app sign with Transit key "
            "transit/keys/audit-checkpoints (it needs update on transit/sign/audit-checkpoints).",
        ),
        (
            '"create", "read"',
            '"read"',
            "audit_checkpoint",
            "Vault's policy does not let the app create entries in the checkpoint store",
        ),
        (
            "/keys/",
            "",
            "verify_audit_chain",
            "Vault's policy does not let the app read Transit key transit/keys/audit-checkpoints "
            "(it needs read on that path to check signatures).",
        ),
        (
            "/metadata/",
            "",
            "verify_audit_chain",
            "Vault's policy does not let the app list the checkpoint store",
        ),
    ],
)
def test_a_policy_short_of_one_right_is_named(
    bao_cli, settings, line, replacement, command, message
):
    """The app's policy with one line missing or narrowed: the error says which right."""
    policy = checkpoints.vault_policy().splitlines()
    _token_with(
        bao_cli,
        settings,
        "\n".join(
            (text.replace(line, replacement) if replacement else "") if line in text else text
            for text in policy
        ),
    )
    _append(1)
    with pytest.raises(CommandError) as refused:
        _run(command)
    assert message in str(refused.value)


def test_a_key_that_is_not_ed25519_is_refused(settings, bao_cli):
    settings.AUDIT_TRANSIT_KEY = f"aes-{uuid.uuid4().hex[:6]}"
    bao_cli("write", "-f", f"transit/keys/{settings.AUDIT_TRANSIT_KEY}")  # aes256-gcm96
    _append(1)
    with pytest.raises(CommandError, match="key type aes256-gcm96 does not support signing"):
        _run("audit_checkpoint")
    with pytest.raises(CommandError, match="is of type aes256-gcm96; audit checkpoints need an"):
        _run("verify_audit_chain")


def test_the_policy_command_prints_the_configured_names(settings):
    settings.AUDIT_TRANSIT_MOUNT, settings.AUDIT_TRANSIT_KEY = "sign", "audit"
    settings.AUDIT_CHECKPOINT_MOUNT, settings.AUDIT_CHECKPOINT_PATH = "kv", "/log/checkpoints/"
    policy = _run("audit_checkpoint", "--policy")
    assert 'path "sign/sign/audit" { capabilities = ["update"] }' in policy
    assert 'path "sign/keys/audit" { capabilities = ["read"] }' in policy
    assert 'path "kv/data/log/checkpoints/*" { capabilities = ["create", "read"] }' in policy
    assert 'path "kv/metadata/log/checkpoints/*" { capabilities = ["list"] }' in policy
    assert "export" not in policy.replace("never export", "")
