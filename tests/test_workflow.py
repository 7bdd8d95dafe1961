"""Request -> approval by another user -> connection in moto -> audit, for each type."""

import json

import boto3
import pytest

from connections_app import audit, services
from connections_app.models import AuditEvent, ConnectionRequest

pytestmark = pytest.mark.usefixtures("servers")

TYPES = ["BASIC", "OAUTH_CLIENT_CREDENTIALS", "API_KEY"]


def _secret_string(arn):
    return json.loads(boto3.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"])


@pytest.mark.django_db
@pytest.mark.parametrize("kind", TYPES)
def test_request_approve_creates_connection_with_real_values(
    kind, requester, approver, make_document, canaries
):
    request = services.request_create(requester=requester, document=make_document(kind))
    assert request.status == ConnectionRequest.PENDING

    done = services.request_approve(
        request=request, approver=approver, comment="ok", seen_hash=request.document_hash
    )

    assert done.status == ConnectionRequest.CREATED, done.error_message
    made = done.connection
    assert made.arn.startswith("arn:aws:events:")
    assert made.state
    assert made.secret_arn
    stored = _secret_string(made.secret_arn)
    flat = json.dumps(stored)
    expected = {"BASIC": "password", "OAUTH_CLIENT_CREDENTIALS": "client_secret",
                "API_KEY": "api_key"}[kind]  # fmt: skip
    assert canaries[expected] in flat
    assert canaries["header_token"] in flat
    actions = list(
        AuditEvent.objects.filter(request_id=done.pk)
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert actions == [
        "connection.request.create",
        "connection.request.approve",
        "connection.vault.resolve",
        "connection.create.success",
    ]
    success = AuditEvent.objects.get(request_id=done.pk, action="connection.create.success")
    assert success.arn == made.arn
    assert success.connection_state == made.state
    # The connection holds the document it was pushed: references, versions, fingerprints.
    assert (
        made.document
        == audit.parsed(
            AuditEvent.objects.get(request_id=done.pk, action="connection.vault.resolve")
        )["document"]
    )
    resolved = audit.parsed(
        AuditEvent.objects.get(request_id=done.pk, action="connection.vault.resolve")
    )
    leaves = json.dumps(resolved)
    assert "hmac-sha256:" in leaves
    for value in canaries.values():
        assert value not in leaves
    assert audit.verify_chain().ok
