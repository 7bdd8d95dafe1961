"""The whole life of a connection: update, rotate, deauthorize, re-authorize and delete, each
approved by a second person, against OpenBao and the extended moto server (tests/moto_ext.py)."""

import json
import secrets
import uuid

import boto3
import pytest
import requests
from django.urls import reverse
from django.utils import timezone

from connections_app import audit, services
from connections_app import document as doc
from connections_app.models import AuditEvent, Connection, ConnectionRequest
from tests.faults import FaultProxy, aws_target

R = ConnectionRequest
pytestmark = [pytest.mark.usefixtures("servers"), pytest.mark.django_db]


@pytest.fixture
def secret(bao_cli):
    """A secret of this test's own in OpenBao (KV v2), with a fresh canary value; `write()`
    adds a version."""

    class Secret:
        path = f"secret/lifecycle/{uuid.uuid4().hex[:10]}"
        values: list[str] = []

        def write(self) -> str:
            value = f"CANARY{secrets.token_hex(10)}"
            self.values.append(value)
            bao_cli("kv", "put", self.path, f"api_key={value}")
            return value

    made = Secret()
    made.values = []
    made.write()
    return made


@pytest.fixture
def made(requester, approver, make_document, secret):
    """A connection created through an approval, its API key at version 1 of `secret`."""
    document = make_document("API_KEY")
    key = document["AuthParameters"]["ApiKeyAuthParameters"]
    key["ApiKeyValue"] = {"vault": f"{secret.path}#api_key", "version": None}
    request = services.request_create(requester=requester, document=document)
    request = services.request_approve(
        request=request, approver=approver, seen_hash=request.document_hash
    )
    assert request.status == R.CREATED, request.error_message
    return request.connection


@pytest.fixture
def approver2(user_factory):
    return user_factory("approver2", groups=["connection-approvers"])


def _approve(request, approver):
    return services.request_approve(
        request=request, approver=approver, seen_hash=request.document_hash
    )


def _stored_secret(connection) -> str:
    answer = boto3.client("secretsmanager").get_secret_value(SecretId=connection.secret_arn)
    return answer["SecretString"]


def _actions(request) -> list[str]:
    return list(
        AuditEvent.objects.filter(request_id=request.pk)
        .order_by("id")
        .values_list("action", flat=True)
    )


def _pushed(connection, field="ApiKeyValue") -> dict:
    return next(leaf for path, leaf in doc.secret_leaves(connection.document) if path[-1] == field)


def _moto(moto, route: str, **body) -> dict:
    answer = requests.post(f"{moto.url}/moto-ext/{route}", json=body, timeout=10)
    answer.raise_for_status()
    return answer.json()


# ---------------------------------------------------------------------------
# Update


def test_update_changes_aws_and_the_pushed_document(made, requester, approver, approver_client):
    document = doc.unredacted(made.document)
    document["Description"] = "partner API, v2 endpoint"
    document["AuthParameters"]["InvocationHttpParameters"]["HeaderParameters"][1]["Value"] = "new"
    change = services.change_file(
        connection=made, requester=requester, kind=R.UPDATE, document=document
    )
    assert (change.kind, change.status, change.connection_id) == (R.UPDATE, R.PENDING, made.pk)

    # The approver sees each field against what AWS holds now, and each secret unchanged.
    page = approver_client.get(reverse("request_detail", args=[change.pk])).content.decode()
    assert "partner API, v2 endpoint" in page and 'data-testid="aws-diff"' in page
    assert "plain-value" in page  # the header's value in AWS now
    assert page.count('data-testid="secret-change">unchanged<') == 2

    done = _approve(change, approver)
    assert done.status == R.DONE, done.error_message
    described = boto3.client("events").describe_connection(Name=made.name)
    assert described["Description"].startswith("partner API, v2 endpoint")
    made.refresh_from_db()
    assert made.document["Description"] == "partner API, v2 endpoint"
    assert made.state in ("UPDATING", "AUTHORIZED")
    assert _actions(change) == [
        "connection.request.create",
        "connection.request.approve",
        "connection.vault.resolve",
        "connection.update.success",
    ]
    assert audit.verify_chain().ok


def test_update_may_change_the_authorization_type(made, requester, approver, make_document):
    document = make_document("BASIC", name=made.name)
    change = services.change_file(
        connection=made, requester=requester, kind=R.UPDATE, document=document
    )
    done = _approve(change, approver)
    assert done.status == R.DONE, done.error_message
    made.refresh_from_db()
    assert made.authorization_type == "BASIC"
    described = boto3.client("events").describe_connection(Name=made.name)
    assert described["AuthorizationType"] == "BASIC"
    assert "BasicAuthParameters" in described["AuthParameters"]


def test_update_keeps_the_name(made, requester, make_document):
    with pytest.raises(services.DocumentInvalid) as info:
        services.change_file(
            connection=made,
            requester=requester,
            kind=R.UPDATE,
            document=make_document(name=made.name + "-renamed"),
        )
    assert [i.code for i in info.value.issues] == ["name_fixed"]


def test_update_form_starts_from_the_pushed_document(made, requester_client):
    page = requester_client.get(reverse("connection_update", args=[made.pk])).content.decode()
    ref = str(doc.references(doc.unredacted(made.document))[0][1])
    assert "@1" in ref and f'value="{ref}"' in page  # the version pushed, pinned
    assert 'name="name"' in page and "disabled" in page


# ---------------------------------------------------------------------------
# Rotate


def test_rotate_pushes_the_newest_version(made, secret, requester, approver, approver_client):
    old = _pushed(made)
    assert old["version"] == 1 and secret.values[0] in _stored_secret(made)
    new_value = secret.write()  # version 2 in Vault

    change = services.change_file(
        connection=made,
        requester=requester,
        kind=R.ROTATE,
        document=services.rotation_document(made, {}),
    )
    page = approver_client.get(reverse("request_detail", args=[change.pk])).content.decode()
    assert 'new version</span>: version 1 → 2, value <strong class="changed">changed' in page

    done = _approve(change, approver)
    assert done.status == R.DONE, done.error_message
    made.refresh_from_db()
    stored = _stored_secret(made)
    assert new_value in stored and secret.values[0] not in stored
    new = _pushed(made)
    assert new["version"] == 2 and new["fingerprint"] != old["fingerprint"]
    # The audit shows the version and fingerprint change, never the value.
    reads = AuditEvent.objects.filter(arn=made.arn, action="connection.vault.resolve")
    pushed = [_pushed_leaf(e) for e in reads.order_by("id")]
    assert [(p["version"], p["fingerprint"]) for p in pushed] == [
        (1, old["fingerprint"]),
        (2, new["fingerprint"]),
    ]
    assert all(v not in e.data for e in AuditEvent.objects.all() for v in secret.values)
    assert _actions(change)[-1] == "connection.rotate.success"


def _pushed_leaf(event) -> dict:
    document = audit.parsed(event)["document"]
    return next(leaf for path, leaf in doc.secret_leaves(document) if path[-1] == "ApiKeyValue")


def test_rotate_to_a_version_the_requester_picks(made, secret, requester, approver):
    secret.write()
    secret.write()  # versions 1, 2, 3
    path = next(
        doc.path_text(p) for p, leaf in doc.secret_leaves(made.document) if p[-1] == "ApiKeyValue"
    )
    document = services.rotation_document(made, {path: 2})
    change = services.change_file(
        connection=made, requester=requester, kind=R.ROTATE, document=document
    )
    assert _approve(change, approver).status == R.DONE
    made.refresh_from_db()
    assert _pushed(made)["version"] == 2 and secret.values[1] in _stored_secret(made)


def test_rotate_page_shows_pushed_and_newest_versions(made, secret, requester_client):
    secret.write()
    page = requester_client.get(reverse("connection_rotate", args=[made.pk])).content.decode()
    assert f"{secret.path}#api_key" in page
    row = page[page.index(f"{secret.path}#api_key") :]
    assert "<td>1</td><td>2</td>" in row.replace("\n", "")
    response = requester_client.post(reverse("connection_rotate", args=[made.pk]), {})
    change = R.objects.get(connection=made, kind=R.ROTATE)
    assert response.status_code == 302 and response.url == reverse(
        "request_detail", args=[change.pk]
    )


# ---------------------------------------------------------------------------
# Deauthorize and re-authorize


def test_deauthorize_then_reauthorize(made, requester, approver, approver2, moto):
    with pytest.raises(services.ActionRefused) as info:
        services.change_file(connection=made, requester=requester, kind=R.DEAUTHORIZE)
    assert info.value.code == "reason_required"

    _moto(moto, "config", settle_seconds=1)  # passing states last a second: follow them
    try:
        change = services.change_file(
            connection=made,
            requester=requester,
            kind=R.DEAUTHORIZE,
            reason="key leaked in a ticket",
        )
        done = _approve(change, approver)
        assert done.status == R.DONE, done.error_message
        made.refresh_from_db()
        assert made.state == "DEAUTHORIZING" and not made.deauthorized_by_aws  # we did it
        _wait_for(made, "DEAUTHORIZED")
        assert not Connection.objects.get(pk=made.pk).deauthorized_by_aws
        assert "api_key_value" not in _stored_secret(made)  # the credentials are gone in AWS
        assert _actions(change)[-1] == "connection.deauthorize.success"

        # Re-authorize: an update that supplies the credentials again.
        made.refresh_from_db()
        assert "reauthorize" in services.allowed_changes(made, requester, None)
        again = services.change_file(
            connection=made,
            requester=requester,
            kind="reauthorize",
            document=doc.unredacted(made.document),
        )
        assert again.kind == R.UPDATE
        assert _approve(again, approver2).status == R.DONE
        assert Connection.objects.get(pk=made.pk).state == "UPDATING"
        _wait_for(made, "AUTHORIZED")
    finally:
        _moto(moto, "config", settle_seconds=0)
    assert secret_value_in(_stored_secret(made))
    states = list(
        AuditEvent.objects.filter(arn=made.arn)
        .order_by("id")
        .values_list("action", "connection_state")
    )
    assert ("connection.deauthorize.success", "DEAUTHORIZING") in states
    assert ("connection.state.refresh", "DEAUTHORIZED") in states
    assert ("connection.update.success", "UPDATING") in states
    assert ("connection.state.refresh", "AUTHORIZED") in states
    assert audit.verify_chain().ok


def secret_value_in(stored: str) -> bool:
    return "api_key_value" in stored


def _wait_for(connection, state: str, seconds: float = 5) -> None:
    """The refresh command, as the worker runs it, until the connection settles."""
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        services.connections_refresh_passing()
        if Connection.objects.get(pk=connection.pk).state == state:
            return
        time.sleep(0.2)
    raise AssertionError(f"{connection.name} never reached {state}")


def test_deauthorized_by_aws_is_flagged_and_offers_reauthorize(made, moto, requester_client):
    _moto(
        moto,
        "connection/state",
        name=made.name,
        state="DEAUTHORIZED",
        state_reason="Authorization failed: the partner answered 401",
    )
    made = services.connection_refresh(connection=made)
    assert made.state == "DEAUTHORIZED" and made.deauthorized_by_aws
    event = AuditEvent.objects.filter(arn=made.arn).order_by("-id").first()
    assert '"deauthorized_by_aws":true' in event.data
    page = requester_client.get(reverse("connection_detail", args=[made.pk])).content.decode()
    assert 'data-testid="deauthorized-by-aws"' in page and "partner answered 401" in page
    assert reverse("connection_reauthorize", args=[made.pk]) in page
    assert reverse("connection_deauthorize", args=[made.pk]) not in page


# ---------------------------------------------------------------------------
# Delete


def _destination(name: str, connection_arn: str) -> None:
    boto3.client("events").create_api_destination(
        Name=name,
        ConnectionArn=connection_arn,
        InvocationEndpoint="https://partner.example.com/hook",
        HttpMethod="POST",
    )


def test_delete_is_refused_while_a_destination_uses_it(made, requester, approver, make_document):
    hook = f"hook-{uuid.uuid4().hex[:8]}"
    _destination(hook, made.arn)
    with pytest.raises(services.ActionRefused) as info:
        services.change_file(connection=made, requester=requester, kind=R.DELETE)
    assert info.value.code == "in_use" and hook in info.value.message
    assert "Step Functions" in info.value.message

    # Repointed to another connection, the delete goes through.
    other = services.request_create(
        requester=requester, document=make_document(name=f"{made.name}-other")
    )
    other = _approve(other, approver).connection
    boto3.client("events").update_api_destination(Name=hook, ConnectionArn=other.arn)
    change = services.change_file(connection=made, requester=requester, kind=R.DELETE)
    done = _approve(change, approver)
    assert done.status == R.DONE, done.error_message
    made = services.connection_refresh(connection=Connection.objects.get(pk=made.pk))
    assert made.state == "DELETED"
    assert services.change_refusal(R.UPDATE, made, requester, open_change=None).code == "gone"
    assert _actions(change)[-1] == "connection.delete.success"


def test_delete_approval_fails_if_a_destination_appeared_since(made, requester, approver):
    change = services.change_file(connection=made, requester=requester, kind=R.DELETE)
    hook = f"late-{uuid.uuid4().hex[:8]}"
    _destination(hook, made.arn)
    failed = _approve(change, approver)
    assert (failed.status, failed.error_code) == (R.FAILED, "in_use")
    assert hook in failed.error_message
    assert boto3.client("events").describe_connection(Name=made.name)["ConnectionState"]
    boto3.client("events").delete_api_destination(Name=hook)
    assert (
        services.request_retry(
            request=failed, approver=approver, seen_hash=failed.document_hash
        ).status
        == R.DONE
    )


# ---------------------------------------------------------------------------
# The rules, for every kind


def _file(kind, made, requester, secret=None):
    if kind in (R.UPDATE, R.ROTATE):
        document = (
            doc.unredacted(made.document)
            if kind == R.UPDATE
            else services.rotation_document(made, {})
        )
        document["Description"] = f"{kind} {uuid.uuid4().hex[:6]}"
        return services.change_file(
            connection=made, requester=requester, kind=kind, document=document
        )
    return services.change_file(connection=made, requester=requester, kind=kind, reason="because")


KINDS = [R.UPDATE, R.ROTATE, R.DEAUTHORIZE, R.DELETE]


@pytest.mark.parametrize("kind", KINDS)
def test_four_eyes_for_every_kind(kind, made, user_factory):
    both = user_factory("both", groups=["connection-requesters", "connection-approvers"])
    change = _file(kind, made, both)
    with pytest.raises(services.ActionRefused) as info:
        _approve(change, both)
    assert info.value.code == "own_request"
    assert R.objects.get(pk=change.pk).status == R.PENDING


@pytest.mark.parametrize("kind", KINDS)
def test_approval_is_bound_to_what_was_reviewed(kind, made, requester, approver):
    change = _file(kind, made, requester)
    with pytest.raises(services.ActionRefused) as info:
        services.request_approve(request=change, approver=approver, seen_hash="0" * 64)
    assert info.value.code == "document_changed"
    # The hash covers the kind and the reason too, not only the document.
    assert change.document_hash != doc.document_hash(change.document)


@pytest.mark.parametrize("kind", KINDS)
def test_expired_change_fails_closed(kind, made, requester, approver):
    change = _file(kind, made, requester)
    R.objects.filter(pk=change.pk).update(expires_at=timezone.now())
    with pytest.raises(services.ActionRefused) as info:
        _approve(change, approver)
    assert info.value.code == "expired"
    assert R.objects.get(pk=change.pk).status == R.EXPIRED
    assert services.open_change(made) is None  # the connection is free for the next change


@pytest.mark.parametrize("kind", KINDS)
def test_one_open_change_per_connection(kind, made, requester):
    first = _file(R.UPDATE, made, requester)
    with pytest.raises(services.ActionRefused) as info:
        _file(kind, made, requester)
    assert info.value.code == "open_change" and f"#{first.pk}" in info.value.message


@pytest.mark.parametrize("kind", KINDS)
def test_reason_to_reject_for_every_kind(kind, made, requester, approver):
    change = _file(kind, made, requester)
    with pytest.raises(services.ActionRefused) as info:
        services.request_reject(request=change, approver=approver, reason=" ")
    assert info.value.code == "reason_required"
    rejected = services.request_reject(request=change, approver=approver, reason="not now")
    assert rejected.status == R.REJECTED


def test_a_requester_without_the_permission_files_nothing(made, auditor):
    with pytest.raises(services.ActionRefused) as info:
        services.change_file(connection=made, requester=auditor, kind=R.DELETE)
    assert info.value.code == "not_requester"


# ---------------------------------------------------------------------------
# Exactly once, and AWS's own refusals


@pytest.mark.parametrize("kind", [R.UPDATE, R.DEAUTHORIZE, R.DELETE])
def test_lost_answer_is_reconciled_before_any_retry(
    kind, made, requester, approver, moto, monkeypatch
):
    from connections_app import eventbridge

    change = _file(kind, made, requester)
    operation = {R.UPDATE: "UpdateConnection", R.DEAUTHORIZE: "DeauthorizeConnection",
                 R.DELETE: "DeleteConnection"}[kind]  # fmt: skip
    with FaultProxy(moto.url) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        eventbridge.reset_clients()
        # AWS acts, the answer never arrives (the SDK retries: every answer lost).
        proxy.rules.append(aws_target(operation, ("drop_response",)))
        failed = _approve(change, approver)
        assert failed.status == R.FAILED
        sent = proxy.targets(operation)
        assert sent == 1  # one approval, one call: the SDK does not resend it
        proxy.rules.clear()
        done = services.request_retry(
            request=failed, approver=approver, seen_hash=failed.document_hash
        )
        assert done.status == R.DONE, done.error_message
        assert proxy.targets(operation) == sent  # reconciled by describe: not sent again
    assert _actions(change)[-1] == f"connection.{kind}.adopt"


def test_concurrent_modification_has_its_own_message(made, requester, approver, moto):
    _moto(moto, "connection/state", name=made.name, state="UPDATING", hold=True)
    change = _file(R.UPDATE, made, requester)
    failed = _approve(change, approver)
    assert failed.error_code == "ConcurrentModificationException"
    assert "still applying another change" in failed.error_message
    _moto(moto, "connection/state", name=made.name, state="AUTHORIZED")


def test_connection_deleted_outside_has_its_own_message(made, requester, approver):
    change = _file(R.DEAUTHORIZE, made, requester)
    boto3.client("events").delete_connection(Name=made.name)
    boto3.client("events").list_connections()  # settles DELETING: gone
    failed = _approve(change, approver)
    assert failed.error_code == "ResourceNotFoundException"
    assert "no longer exists" in failed.error_message


# ---------------------------------------------------------------------------
# Pages


def test_pages_show_the_kind_of_each_change(made, requester, requester_client, approver_client):
    change = _file(R.DEAUTHORIZE, made, requester)
    mine = requester_client.get(reverse("request_mine")).content.decode()
    assert "<td>Deauthorize</td>" in mine
    queue = approver_client.get(reverse("approval_queue")).content.decode()
    assert "<td>Deauthorize</td>" in queue
    page = approver_client.get(reverse("request_detail", args=[change.pk])).content.decode()
    assert "because" in page and "Approve and deauthorize connection" in page


def test_connection_page_lists_destinations_open_change_and_history(
    made, requester, requester_client
):
    hook = f"page-{uuid.uuid4().hex[:8]}"
    _destination(hook, made.arn)
    change = _file(R.UPDATE, made, requester)
    page = requester_client.get(reverse("connection_detail", args=[made.pk])).content.decode()
    assert hook in page and 'data-testid="open-change"' in page and f"#{change.pk}" in page
    assert "connection.create.success" in page and "connection.request.create" in page
    assert "Step Functions" in page
    assert reverse("connection_update", args=[made.pk]) not in page  # one open change
    boto3.client("events").delete_api_destination(Name=hook)


def test_connections_list_filters_and_pages(requester, approver, make_document, approver_client):
    prefix = f"page{uuid.uuid4().hex[:6]}-"
    for i in range(3):
        request = services.request_create(
            requester=requester, document=make_document(name=f"{prefix}{i}")
        )
        _approve(request, approver)
    Connection.objects.filter(name=f"{prefix}1").update(state="DEAUTHORIZED")
    from connections_app import selectors

    monkey = selectors.CONNECTIONS_PAGE_SIZE
    selectors.CONNECTIONS_PAGE_SIZE = 2
    try:
        first = approver_client.get(reverse("connection_list"), {"q": prefix})
        page = first.content.decode()
        assert f"{prefix}0" in page and f"{prefix}1" in page and f"{prefix}2" not in page
        cursor = first.context["page"].after
        second = approver_client.get(reverse("connection_list"), {"q": prefix, "after": cursor})
        assert f"{prefix}2" in second.content.decode()
    finally:
        selectors.CONNECTIONS_PAGE_SIZE = monkey
    only = approver_client.get(reverse("connection_list"), {"q": prefix, "state": "DEAUTHORIZED"})
    text = only.content.decode()
    assert f"{prefix}1" in text and f"{prefix}0" not in text


def test_describe_echoing_secrets_never_reaches_the_database(
    requester, approver, make_document, canaries, monkeypatch
):
    """moto as it comes echoes secret values in DescribeConnection (AWS never does): the app
    takes nothing of AuthParameters from a describe."""
    from connections_app import devstack, eventbridge

    plain = devstack.start_moto()  # not the extension: this one echoes
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", plain.url)
        eventbridge.reset_clients()
        echoed = json.dumps(
            services.request_create(requester=requester, document=make_document("BASIC")).document
        )
        assert "CANARY" not in echoed
        request = R.objects.get(name=json.loads(echoed)["Name"])
        done = _approve(request, approver)
        assert done.status == R.CREATED, done.error_message
        raw = boto3.client("events", endpoint_url=plain.url).describe_connection(Name=done.name)
        # It does echo: botocore drops Password (not in the model's answer), but keeps the
        # Value of a secret header.
        assert canaries["header_token"] in json.dumps(raw, default=str)
        services.connection_refresh(connection=done.connection)
        stored = json.dumps(list(Connection.objects.values()), default=str)
        stored += json.dumps(list(R.objects.values()), default=str)
        stored += " ".join(AuditEvent.objects.values_list("data", flat=True))
        for value in canaries.values():
            assert value not in stored
    finally:
        plain.stop()


def test_an_overdue_change_does_not_block_the_next_one(made, requester):
    first = _file(R.UPDATE, made, requester)
    R.objects.filter(pk=first.pk).update(expires_at=timezone.now())
    assert "delete" in services.allowed_changes(made, requester, services.open_change(made))
    second = _file(R.DELETE, made, requester)
    assert second.status == R.PENDING
    assert R.objects.get(pk=first.pk).status == R.EXPIRED  # recorded on the way


@pytest.mark.django_db(transaction=True)  # the proxy's thread writes to the database
def test_an_attempt_taken_over_makes_no_aws_call(made, requester, approver, openbao, monkeypatch,
                                                 settings, moto):  # fmt: skip
    """A slow attempt (here: while it reads Vault) that a retry took over stops before AWS."""
    from connections_app import eventbridge, vault
    from tests.faults import path_rule

    change = _file(R.UPDATE, made, requester)

    def taken_over(method, path):
        from django.db import connections

        R.objects.filter(pk=change.pk).update(submit_attempts=5)  # a later attempt claimed it
        connections.close_all()

    with FaultProxy(openbao.url) as bao, FaultProxy(moto.url) as aws:
        settings.VAULT_ADDR = bao.url
        monkeypatch.setenv("AWS_ENDPOINT_URL", aws.url)
        vault.reset_client()
        eventbridge.reset_clients()
        bao.rules.append(path_rule("/v1/secret/data/", None, times=1, then=taken_over))
        done = _approve(change, approver)
        assert aws.targets("UpdateConnection") == 0
    assert done.error_code == "taken_over"
    settings.VAULT_ADDR = openbao.url
    vault.reset_client()
