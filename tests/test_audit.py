"""The audit log: append-only, hash-chained, verified by verify_audit_chain."""

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction

from connections_app import audit, services
from connections_app import document as doc
from connections_app.models import AppendOnlyError, AuditEvent
from tests import rawsql, tamper

pytestmark = [pytest.mark.usefixtures("servers"), pytest.mark.django_db]


@pytest.fixture
def chain(requester, approver, make_document):
    """A few real events: create, approve, resolve, success; then a second request."""
    request = services.request_create(requester=requester, document=make_document("BASIC"))
    services.request_approve(request=request, approver=approver, seen_hash=request.document_hash)
    other = services.request_create(
        requester=requester, document=make_document("API_KEY", name=request.name + "-b")
    )
    services.request_reject(request=other, approver=approver, reason="duplicate")
    return list(AuditEvent.objects.order_by("id"))


def _drop_trigger():
    if connection.vendor == "postgresql":
        rawsql.execute("ALTER TABLE connections_app_auditevent DISABLE TRIGGER USER")


def test_chain_verifies(chain):
    assert len(chain) == 6
    assert [e.id for e in chain] == list(range(1, 7))
    assert chain[0].prev_hash == audit.GENESIS
    assert all(b.prev_hash == a.hash for a, b in zip(chain, chain[1:], strict=False))
    call_command("verify_audit_chain")


def test_model_refuses_update_and_delete(chain):
    event = chain[0]
    event.action = "something.else"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).update(action="x")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="trigger exists on PostgreSQL only")
def test_postgres_trigger_refuses_update_and_delete(chain):
    from django.db import DatabaseError

    for statement in (
        "UPDATE connections_app_auditevent SET action = 'x' WHERE id = 1",
        "DELETE FROM connections_app_auditevent WHERE id = 1",
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            rawsql.execute(statement)


def _expect_broken(at: int):
    with pytest.raises(CommandError, match=f"broken at event {at}"):
        call_command("verify_audit_chain")


def test_altered_row_is_caught(chain):
    _drop_trigger()
    rawsql.execute("UPDATE connections_app_auditevent SET outcome = 'success' WHERE id = 6")
    _expect_broken(6)


def test_altered_data_is_caught(chain):
    _drop_trigger()
    rawsql.execute("UPDATE connections_app_auditevent SET data = '{}' WHERE id = 3")
    _expect_broken(3)


def test_deleted_row_is_caught(chain):
    _drop_trigger()
    rawsql.execute("DELETE FROM connections_app_auditevent WHERE id = 2")
    _expect_broken(3)


def test_deleted_last_row_is_caught(chain):
    _drop_trigger()
    rawsql.execute("DELETE FROM connections_app_auditevent WHERE id = 6")
    _expect_broken(6)


def test_inserted_row_is_caught(chain):
    # An out-of-band row given the next position, with a made-up hash: the head disagrees.
    first = chain[0]
    rawsql.execute(
        "INSERT INTO connections_app_auditevent (id, created_at, actor_id, actor_username, action,"
        " request_id, connection_name, outcome, arn, connection_state, data, prev_hash, hash)"
        " VALUES (7, %s, NULL, 'mallory', 'connection.create.success', NULL, '', 'success', '',"
        " '', '{}', %s, %s)",
        (first.created_at, chain[-1].hash, "f" * 64),
    )
    _expect_broken(7)


def test_inserted_row_in_the_middle_is_caught(chain):
    _drop_trigger()
    # Shift the tail up by one and slip a forged event in at position 4.
    rawsql.execute("UPDATE connections_app_auditevent SET id = id + 100 WHERE id >= 4")
    rawsql.execute("UPDATE connections_app_auditevent SET id = id - 99 WHERE id >= 100")
    rawsql.execute(
        "INSERT INTO connections_app_auditevent (id, created_at, actor_id, actor_username, action,"
        " request_id, connection_name, outcome, arn, connection_state, data, prev_hash, hash)"
        " VALUES (4, %s, NULL, 'mallory', 'connection.request.approve', NULL, '', 'approved', '',"
        " '', '{}', %s, %s)",
        (chain[0].created_at, chain[2].hash, "e" * 64),
    )
    _expect_broken(4)


def test_fingerprint_is_keyed_and_not_the_value(settings):
    settings.AUDIT_HMAC_KEY = "key-one"
    one = doc.fingerprint("s3cret")
    settings.AUDIT_HMAC_KEY = "key-two"
    two = doc.fingerprint("s3cret")
    assert one.startswith("hmac-sha256:")
    assert one != two
    assert "s3cret" not in one


@pytest.mark.django_db(transaction=True)
def test_record_needs_a_transaction():
    with pytest.raises(RuntimeError):
        audit.record(action="x")


def test_redacted_events_hold_no_canary(chain, canaries):
    text = "".join(e.data for e in AuditEvent.objects.all())
    assert "hmac-sha256:" in text
    for value in canaries.values():
        assert value not in text


def _insert_sealed(seq: int, prev_hash: str, created_at) -> None:
    """An out-of-band event hashed exactly as append() would hash it."""
    fields = dict(
        id=seq, created_at=created_at, actor_id=None, actor_username="mallory",
        action="connection.request.approve", request_id=None, connection_name="",
        outcome="approved", arn="", connection_state="", data={},
    )  # fmt: skip
    audit.seal(fields, prev_hash)
    AuditEvent.objects.bulk_create([AuditEvent(**fields)])


def test_tail_cut_off_with_the_head_rewound_is_caught_by_a_database_checkpoint(chain):
    audit.checkpoint_record(audit.verify_chain())  # the database's own checkpoint at event 6
    _drop_trigger()
    rawsql.execute("DELETE FROM connections_app_auditevent WHERE id > 3")
    audit.advance_head(3, chain[2].hash)
    with pytest.raises(CommandError, match="broken at event 4: a checkpoint recorded event 6"):
        call_command("verify_audit_chain")


def test_tail_cut_off_with_the_head_rewound_is_caught_by_the_signed_checkpoint(chain):
    call_command("audit_checkpoint", stdout=io.StringIO())  # signed, at event 6, in Vault
    tamper.cut_tail(3)  # the database's own checkpoint at 6 goes too
    with pytest.raises(CommandError, match="broken at event 4: events 4 to 6 are missing"):
        call_command("verify_audit_chain")


def test_row_below_the_first_position_is_caught(chain):
    _insert_sealed(-7, audit.GENESIS, chain[0].created_at)
    with pytest.raises(CommandError, match="broken at event -7: it lies outside the chain"):
        call_command("verify_audit_chain")


def test_correctly_hashed_row_after_the_head_is_caught(chain):
    _insert_sealed(7, chain[-1].hash, chain[-1].created_at)
    with pytest.raises(CommandError, match="broken at event 7: events 7 to 7 were added after"):
        call_command("verify_audit_chain")


def test_missing_head_is_caught(chain):
    from connections_app.models import AuditChainHead

    rawsql.execute(f"DELETE FROM {AuditChainHead._meta.db_table}")  # noqa: S608
    with pytest.raises(CommandError, match="broken at event 6: the chain's head record is missing"):
        call_command("verify_audit_chain")


def test_events_name_their_target(requester, make_document):
    """Names are unique per target only: two filings of one name tell their targets apart."""
    from connections_app.models import Target

    other = Target.objects.create(name="partner-x", account_id="111122223333", region="eu-west-1")
    document = make_document(name="same-name")
    services.request_create(requester=requester, document=document)
    services.request_create(requester=requester, document=document, target=other)
    filed = AuditEvent.objects.filter(
        action="connection.request.create", connection_name="same-name"
    )
    targets = sorted(json.loads(event.data)["target"] for event in filed)
    assert targets == [Target.default().label, "partner-x (111122223333, eu-west-1)"]
    assert audit.verify_chain().ok
