"""The fleet: targets reached through AssumeRole (moto honours it, the extension checks the
external ID), sweeps of their connections, drift from Vault, adoption and the home page."""

import secrets
import time
import uuid
from datetime import timedelta

import boto3
import pytest
import requests
from django.urls import reverse

from connections_app import audit, services, tasks
from connections_app import document as doc
from connections_app.models import (
    AuditEvent,
    Connection,
    ConnectionRequest,
    Notification,
    Sweep,
    Target,
)

R = ConnectionRequest
pytestmark = [pytest.mark.usefixtures("servers"), pytest.mark.django_db]


def _account() -> str:
    """A fresh moto account for each target: nothing another test made is in it."""
    return f"{secrets.randbelow(9 * 10**11) + 10**11}"


@pytest.fixture
def target_factory(moto):
    def make(*, deny: bool = False, external_id: str = "ext-42", name: str = "") -> Target:
        account = _account()
        role = f"arn:aws:iam::{account}:role/eventbridge-connections"
        trust = {"role_arn": role, **({"deny": True} if deny else {"external_id": external_id})}
        requests.post(f"{moto.url}/moto-ext/sts/role", json=trust, timeout=10).raise_for_status()
        return Target.objects.create(
            name=name or f"t-{uuid.uuid4().hex[:6]}",
            region="us-east-1",
            role_arn=role,
            external_id=external_id,
        )

    return make


def _aws(target: Target, service: str = "events"):
    """A client acting in the target's account, as a person with its role would."""
    sts = boto3.client("sts")
    creds = sts.assume_role(
        RoleArn=target.role_arn, RoleSessionName="test", ExternalId=target.external_id
    )["Credentials"]
    return boto3.client(
        service,
        region_name=target.region,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )


@pytest.fixture
def approver2(user_factory):
    return user_factory("approver2", groups=["connection-approvers"])


def _made(target, requester, approver, make_document, **kwargs):
    request = services.request_create(
        requester=requester, document=make_document(**kwargs), target=target
    )
    request = services.request_approve(
        request=request, approver=approver, seen_hash=request.document_hash
    )
    assert request.status == R.CREATED, request.error_message
    return request.connection


def _made_on(target, path, value, bao_cli, requester, approver, make_document) -> Connection:
    """A connection whose API key is `path#api_key` (written now, with `value`)."""
    bao_cli("kv", "put", path, f"api_key={value}")
    document = make_document()
    key = document["AuthParameters"]["ApiKeyAuthParameters"]
    key["ApiKeyValue"] = {"vault": f"{path}#api_key", "version": None}
    request = services.request_create(requester=requester, document=document, target=target)
    return services.request_approve(
        request=request, approver=approver, seen_hash=request.document_hash
    ).connection


def _sweep(target) -> Sweep:
    swept = services.sweep_target(target.pk)
    assert swept is not None
    return swept


def _force_state(moto, target: Target, name: str, state: str, **body) -> None:
    """AWS itself moves a connection of the target's account (the moto extension)."""
    account = target.role_arn.split(":")[4]
    body = {"account_id": account, "region": target.region, "name": name, "state": state, **body}
    requests.post(f"{moto.url}/moto-ext/connection/state", json=body, timeout=10).raise_for_status()


def _notes(kind: str, connection: Connection) -> list[Notification]:
    link = reverse("connection_detail", args=[connection.pk])
    return [n for n in Notification.objects.filter(kind=kind) if n.link.endswith(link)]


# ---------------------------------------------------------------------------
# Targets


def test_a_change_reaches_the_targets_own_account(
    target_factory, requester, approver, make_document
):
    partner = target_factory()
    made = _made(partner, requester, approver, make_document)
    assert f":{partner.role_arn.split(':')[4]}:" in made.arn  # the partner's account id
    names = [c["Name"] for c in _aws(partner).list_connections()["Connections"]]
    assert names == [made.name]
    own = boto3.client("events").list_connections(NamePrefix=made.name)["Connections"]
    assert own == []
    assert audit.verify_chain().ok


def test_names_are_unique_per_target(target_factory, requester, approver, make_document):
    first, second = target_factory(), target_factory()
    one = _made(first, requester, approver, make_document, name="shared-name")
    two = _made(second, requester, approver, make_document, name="shared-name")
    assert one.arn != two.arn
    with pytest.raises(services.DocumentInvalid) as info:
        services.request_create(
            requester=requester, document=make_document(name="shared-name"), target=first
        )
    assert {i.code for i in info.value.issues} >= {"name_taken"}


def test_a_role_that_cannot_be_assumed_is_named(target_factory):
    wrong = target_factory(deny=True)
    swept = _sweep(wrong)
    assert not swept.ok and "could not be assumed" in swept.error


def test_approvers_may_be_limited_to_targets(
    target_factory, requester, approver, approver2, make_document
):
    from django.contrib.auth.models import Group

    partner = target_factory()
    team = Group.objects.create(name="partner-approvers")
    partner.approver_groups.add(team)
    approver2.groups.add(team)
    request = services.request_create(requester=requester, document=make_document(), target=partner)
    with pytest.raises(services.ActionRefused) as info:
        services.request_approve(
            request=request, approver=approver, seen_hash=request.document_hash
        )
    assert info.value.code == "not_target_approver"
    approver2 = type(approver2).objects.get(pk=approver2.pk)  # fresh group cache
    done = services.request_approve(
        request=request, approver=approver2, seen_hash=request.document_hash
    )
    assert done.status == R.CREATED


# ---------------------------------------------------------------------------
# Sweeps


def test_unmanaged_connection_is_listed_and_can_be_adopted(
    target_factory, requester, approver, approver2, approver_client, canaries
):
    partner = target_factory()
    _aws(partner).create_connection(
        Name="made-by-hand",
        AuthorizationType="API_KEY",
        AuthParameters={"ApiKeyAuthParameters": {"ApiKeyName": "x-key", "ApiKeyValue": "hand"}},
    )
    swept = _sweep(partner)
    assert swept.ok and swept.figures["unmanaged_found"] == 1
    found = Connection.objects.get(target=partner, name="made-by-hand")
    assert not found.managed and found.document == {}
    page = approver_client.get(reverse("connection_detail", args=[found.pk])).content.decode()
    assert (
        'data-testid="unmanaged"' in page and reverse("connection_adopt", args=[found.pk]) in page
    )
    form = approver_client.get(reverse("connection_adopt", args=[found.pk])).content.decode()
    assert 'value="x-key"' in form  # pre-filled from describe_connection; the secret is not

    from django.contrib.auth.models import Group

    from connections_app.models import Scope

    # The adopting approver names the secrets: in a scope of their own.
    approvers = Group.objects.get(name="connection-approvers")
    Scope.objects.create(group=approvers, path_prefixes="secret/canary/", allowed_hosts="")
    document = doc.comparable(_aws(partner).describe_connection(Name="made-by-hand"))
    document["AuthParameters"]["ApiKeyAuthParameters"]["ApiKeyValue"] = {
        "vault": "secret/canary/apikey#api_key",
        "version": None,
    }
    adopt = services.change_file(
        connection=found, requester=approver, kind="adopt", document=document
    )
    assert adopt.kind == R.UPDATE
    with pytest.raises(services.ActionRefused):  # four eyes: the adopting approver may not
        services.request_approve(request=adopt, approver=approver, seen_hash=adopt.document_hash)
    done = services.request_approve(
        request=adopt, approver=approver2, seen_hash=adopt.document_hash
    )
    assert done.status == R.DONE, done.error_message
    found.refresh_from_db()
    assert found.managed and found.document["AuthParameters"]
    stored = _aws(partner, "secretsmanager").get_secret_value(SecretId=found.secret_arn)
    assert canaries["api_key"] in stored["SecretString"]
    with pytest.raises(services.ActionRefused) as info:
        services.change_file(connection=found, requester=approver, kind="adopt", document=document)
    assert info.value.code in ("managed", "open_change")


def test_a_vault_write_flags_drift_at_the_next_sweep(
    target_factory, requester, approver, make_document, bao_cli, requester_client
):
    partner = target_factory()
    path = f"secret/fleet/{uuid.uuid4().hex[:8]}"
    made = _made_on(partner, path, "first", bao_cli, requester, approver, make_document)
    assert _sweep(partner).figures["drifted"] == 0

    bao_cli("kv", "put", path, "api_key=second")
    swept = _sweep(partner)
    assert swept.figures["drifted"] == 1
    made.refresh_from_db()
    [drift] = made.drift
    assert (drift["vault"], drift["pushed"], drift["current"]) == (f"{path}#api_key", 1, 2)
    event = AuditEvent.objects.filter(arn=made.arn, action="connection.sweep.drift").get()
    assert "second" not in event.data and "first" not in event.data
    page = requester_client.get(reverse("connection_detail", args=[made.pk])).content.decode()
    assert 'data-testid="propose-rotation"' in page

    # Propose rotation files the rotate change; once pushed, the drift is gone.
    change = services.change_file(
        connection=made,
        requester=requester,
        kind=R.ROTATE,
        document=services.rotation_document(made, {}),
    )
    from django.contrib.auth import get_user_model

    other = get_user_model().objects.create_user("approver3")
    other.groups.add(*approver.groups.all())
    services.request_approve(request=change, approver=other, seen_hash=change.document_hash)
    made.refresh_from_db()
    assert made.drift == []
    assert _sweep(partner).figures["drifted"] == 0


def test_drift_is_told_to_the_owners_and_approvers_with_its_versions(
    target_factory, requester, approver, approver2, make_document, bao_cli
):
    partner = target_factory()
    path = f"secret/fleet/{uuid.uuid4().hex[:8]}"
    first, second = (f"drift-{secrets.token_hex(8)}" for _ in range(2))
    made = _made_on(partner, path, first, bao_cli, requester, approver, make_document)
    _sweep(partner)
    assert not _notes("connection.drift", made)

    bao_cli("kv", "put", path, f"api_key={second}")
    _sweep(partner)
    notes = _notes("connection.drift", made)
    assert {n.recipient for n in notes} == {requester, approver, approver2}
    event = AuditEvent.objects.get(arn=made.arn, action="connection.sweep.drift")
    assert {n.event_id for n in notes} == {event.pk}
    body = notes[0].body
    assert f"- {path}#api_key (AuthParameters" in body
    assert "pushed version 1, current version 2" in body and "ConnectionState: AUTHORIZED" in body
    assert "Vault drift" in notes[0].subject
    for note in notes:
        text = f"{note.subject} {note.body}"
        assert first not in text and second not in text and "hmac-sha256" not in text
    _sweep(partner)  # nothing new: told once
    assert len(_notes("connection.drift", made)) == 3


def test_a_deleted_or_destroyed_version_is_drift(
    target_factory, requester, approver, make_document, bao_cli
):
    partner = target_factory()
    path = f"secret/fleet/{uuid.uuid4().hex[:8]}"
    made = _made_on(partner, path, "only", bao_cli, requester, approver, make_document)
    bao_cli("kv", "destroy", "-versions=1", path)
    _sweep(partner)
    made.refresh_from_db()
    assert made.drift and made.drift[0]["why"] == "pushed version deleted or destroyed"
    note = _notes("connection.drift", made)[0]
    assert f"{path}#api_key" in note.body
    assert "pushed version 1 was deleted or destroyed, current version 1" in note.body


def test_kv_v1_drift_is_seen_by_fingerprint(
    target_factory, requester, approver, make_document, bao_cli
):
    from tests.conftest import KV1

    partner = target_factory()
    path = f"{KV1}/fleet-{uuid.uuid4().hex[:8]}"
    made = _made_on(partner, path, "one", bao_cli, requester, approver, make_document)
    assert _sweep(partner).figures["drifted"] == 0
    bao_cli("kv", "put", path, "api_key=two")
    _sweep(partner)
    made.refresh_from_db()
    assert made.drift[0]["why"] == "value changed"


def test_changed_and_deleted_outside_are_flagged(
    target_factory, requester, approver, make_document, settings
):
    settings.OURS_WITHIN = timedelta(0)  # the console edit comes a moment after our create
    partner = target_factory()
    changed = _made(partner, requester, approver, make_document, name="edited-by-hand")
    deleted = _made(partner, requester, approver, make_document, name="deleted-by-hand")
    quiet = _made(partner, requester, approver, make_document, name="left-alone")
    first = _sweep(partner)
    assert first.ok and first.figures["changed_outside"] == 0

    aws = _aws(partner)
    aws.update_connection(Name="edited-by-hand", Description="edited in the console")
    aws.delete_connection(Name="deleted-by-hand")
    aws.list_connections()  # settles DELETING: gone
    swept = _sweep(partner)
    assert (swept.figures["changed_outside"], swept.figures["deleted_outside"]) == (1, 1)
    changed.refresh_from_db()
    deleted.refresh_from_db()
    quiet.refresh_from_db()
    assert changed.changed_outside and not quiet.changed_outside
    assert deleted.deleted_outside and deleted.state == "DELETED"
    actions = set(AuditEvent.objects.filter(arn=changed.arn).values_list("action", flat=True))
    assert "connection.sweep.changed_outside" in actions
    # describe_connection only where LastModifiedTime moved: the edited one.
    assert swept.figures["aws_calls"] == 2  # one list page, one describe
    assert audit.verify_chain().ok


def test_a_target_that_cannot_be_assumed_holds_up_no_other(
    target_factory, requester, approver, make_document
):
    good = target_factory()
    bad = target_factory(deny=True)
    _made(good, requester, approver, make_document)
    tasks.sweep_all()  # the tasks run at once in tests (Q_CLUSTER sync)
    good_sweep = Sweep.objects.filter(target=good).get()
    bad_sweep = Sweep.objects.filter(target=bad).get()
    assert good_sweep.ok and good_sweep.figures["listed"] == 1
    assert not bad_sweep.ok and "could not be assumed" in bad_sweep.error
    failure = AuditEvent.objects.filter(action="connection.sweep", outcome="failure").get()
    assert bad.name in failure.data


def test_a_target_being_swept_is_not_swept_twice(target_factory):
    from datetime import timedelta

    from django.utils import timezone

    partner = target_factory()
    Target.objects.filter(pk=partner.pk).update(
        sweep_owner="another-worker", sweep_lease_until=timezone.now() + timedelta(minutes=1)
    )
    assert services.sweep_target(partner.pk) is None
    assert not Sweep.objects.filter(target=partner).exists()


# ---------------------------------------------------------------------------
# The home page


def test_home_page_counts_per_target_with_links(
    target_factory, requester, approver, make_document, approver_client
):
    partner = target_factory(name="partner-home")
    _made(partner, requester, approver, make_document, name="home-a")
    services.request_create(
        requester=requester, document=make_document(name="home-pending"), target=partner
    )
    _aws(partner).create_connection(
        Name="home-hand",
        AuthorizationType="API_KEY",
        AuthParameters={"ApiKeyAuthParameters": {"ApiKeyName": "k", "ApiKeyValue": "v"}},
    )
    _sweep(partner)
    response = approver_client.get(reverse("home"))
    page = response.content.decode()
    row = page[page.index('data-testid="target-partner-home"') :].split("</tr>")[0]
    assert f'?target={partner.pk}&amp;state=AUTHORIZED">2<' in row  # home-a and home-hand
    assert f'{reverse("approval_queue")}?target={partner.pk}">1<' in row
    assert 'data-testid="partner-home-unmanaged">1<' in row
    assert "ok" in row
    listed = approver_client.get(
        reverse("connection_list"), {"target": partner.pk, "state": "unmanaged"}
    ).content.decode()
    assert "home-hand" in listed and "home-a" not in listed


# ---------------------------------------------------------------------------
# Sweeps racing changes and refreshes


def _through_proxy(moto, monkeypatch):
    from connections_app import eventbridge
    from tests.faults import FaultProxy

    proxy = FaultProxy(moto.url).__enter__()
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    eventbridge.reset_clients()
    return proxy


@pytest.mark.django_db(transaction=True)
def test_a_change_approved_while_a_sweep_walks_is_not_undone(
    target_factory, requester, approver, approver2, make_document, moto, monkeypatch
):
    from tests.faults import aws_target

    partner = target_factory()
    made = _made(partner, requester, approver, make_document)
    document = doc.unredacted(made.document)
    document["Description"] = "approved mid-sweep"
    change = services.change_file(
        connection=made, requester=requester, kind=R.UPDATE, document=document
    )
    proxy = _through_proxy(moto, monkeypatch)
    try:
        approved = []

        def approve(method, path):  # while the sweep waits for its list page
            from django.db import connections

            approved.append(
                services.request_approve(
                    request=change, approver=approver2, seen_hash=change.document_hash
                ).status
            )
            connections.close_all()

        proxy.rules.append(aws_target("ListConnections", None, times=1, then=approve))
        swept = services.sweep_target(partner.pk)
    finally:
        proxy.__exit__(None, None, None)
    assert approved == [R.DONE] and swept.ok
    made.refresh_from_db()
    assert made.document["Description"] == "approved mid-sweep"  # not the sweep's stale copy
    assert not made.changed_outside


def test_a_sweep_seeing_our_deauthorize_settle_does_not_blame_aws(
    target_factory, requester, approver, make_document, moto
):
    partner = target_factory()
    made = _made(partner, requester, approver, make_document)
    requests.post(f"{moto.url}/moto-ext/config", json={"settle_seconds": 1}, timeout=10)
    try:
        change = services.change_file(
            connection=made, requester=requester, kind=R.DEAUTHORIZE, reason="rotating keys"
        )
        services.request_approve(request=change, approver=approver, seen_hash=change.document_hash)
        assert Connection.objects.get(pk=made.pk).state == "DEAUTHORIZING"
        time.sleep(1.2)
        _sweep(partner)
    finally:
        requests.post(f"{moto.url}/moto-ext/config", json={"settle_seconds": 0}, timeout=10)
    made.refresh_from_db()
    assert made.state == "DEAUTHORIZED" and not made.deauthorized_by_aws
    assert not Notification.objects.filter(kind="connection.deauthorized_by_aws").exists()


def test_a_connection_deauthorized_by_aws_is_told_to_its_owners_and_approvers(
    target_factory, requester, approver, approver2, make_document, moto
):
    partner = target_factory()
    made = _made(partner, requester, approver, make_document)
    _force_state(
        moto, partner, made.name, "DEAUTHORIZED",
        state_reason="Authorization failed: the partner answered 401",
    )  # fmt: skip
    _sweep(partner)
    made.refresh_from_db()
    assert made.deauthorized_by_aws
    notes = _notes("connection.deauthorized_by_aws", made)
    assert {n.recipient for n in notes} == {requester, approver, approver2}
    event = AuditEvent.objects.get(arn=made.arn, action="connection.sweep.deauthorized_by_aws")
    assert {n.event_id for n in notes} == {event.pk}
    assert "AWS deauthorized it" in notes[0].subject
    assert "ConnectionState: DEAUTHORIZED (was AUTHORIZED)" in notes[0].body
    assert "StateReason: Authorization failed: the partner answered 401" in notes[0].body


def test_a_sweep_records_state_changes_of_unmanaged_connections(target_factory, moto):
    partner = target_factory()
    aws = _aws(partner)
    for name in ("hand-a", "hand-b"):
        aws.create_connection(
            Name=name,
            AuthorizationType="API_KEY",
            AuthParameters={"ApiKeyAuthParameters": {"ApiKeyName": "k", "ApiKeyValue": "v"}},
        )
    _sweep(partner)
    _sweep(partner)  # nothing moved: nothing recorded
    assert not AuditEvent.objects.filter(action="connection.sweep.state").exists()

    _force_state(moto, partner, "hand-a", "DEAUTHORIZED", state_reason="partner said 401")
    aws.delete_connection(Name="hand-b")
    aws.list_connections()  # settles DELETING: gone
    _sweep(partner)
    moved = {
        e.connection_name: e for e in AuditEvent.objects.filter(action="connection.sweep.state")
    }
    assert set(moved) == {"hand-a", "hand-b"}
    assert moved["hand-a"].connection_state == "DEAUTHORIZED"
    assert '"previous_state":"AUTHORIZED"' in moved["hand-a"].data
    assert "partner said 401" in moved["hand-a"].data
    assert moved["hand-b"].connection_state == "DELETED"
    assert not Notification.objects.filter(kind__startswith="connection.").exists()
    assert audit.verify_chain().ok


def test_a_refresh_notices_changes_outside_too(
    target_factory, requester, approver, make_document, settings
):
    settings.OURS_WITHIN = timedelta(0)
    partner = target_factory()
    edited = _made(partner, requester, approver, make_document, name="edited")
    gone = _made(partner, requester, approver, make_document, name="gone")
    aws = _aws(partner)
    aws.update_connection(Name="edited", Description="by hand")
    aws.delete_connection(Name="gone")
    aws.list_connections()  # settles DELETING
    edited = services.connection_refresh(connection=edited)
    gone = services.connection_refresh(connection=gone)
    assert edited.changed_outside and gone.deleted_outside and gone.state == "DELETED"
    kinds = set(Notification.objects.values_list("kind", flat=True))
    assert {"connection.changed_outside", "connection.deleted_outside"} <= kinds
    [told] = {n.body for n in _notes("connection.deleted_outside", gone)}
    assert "ConnectionState: DELETED (was AUTHORIZED)" in told
    [told] = {n.body for n in _notes("connection.changed_outside", edited)}
    assert f"Connection {edited.name} (target {partner.name})" in told
    # The next sweep has nothing new to say about them.
    swept = _sweep(partner)
    assert (swept.figures["changed_outside"], swept.figures["deleted_outside"]) == (0, 0)


def test_a_connection_listed_again_is_no_longer_deleted_outside(
    target_factory, requester, approver, make_document
):
    partner = target_factory()
    made = _made(partner, requester, approver, make_document)
    Connection.objects.filter(pk=made.pk).update(state="DELETED", deleted_outside=True)
    _sweep(partner)
    made.refresh_from_db()
    assert made.state == "AUTHORIZED" and not made.deleted_outside


@pytest.mark.django_db(transaction=True)
def test_a_sweep_that_lost_its_lease_records_nothing(target_factory, moto, monkeypatch):
    from tests.faults import aws_target

    partner = target_factory()
    _aws(partner).create_connection(
        Name="by-hand",
        AuthorizationType="API_KEY",
        AuthParameters={"ApiKeyAuthParameters": {"ApiKeyName": "k", "ApiKeyValue": "v"}},
    )
    proxy = _through_proxy(moto, monkeypatch)
    try:

        def taken_over(method, path):  # another worker takes the target over meanwhile
            Target.objects.filter(pk=partner.pk).update(sweep_owner="the-other-worker")

        proxy.rules.append(aws_target("ListConnections", None, times=1, then=taken_over))
        assert services.sweep_target(partner.pk) is None
    finally:
        proxy.__exit__(None, None, None)
    assert not Connection.objects.filter(target=partner).exists()
    assert not Sweep.objects.filter(target=partner).exists()
