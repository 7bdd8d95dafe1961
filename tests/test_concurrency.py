"""N approvers at once on PostgreSQL: one create_connection."""

import threading

import boto3
import pytest
from django.db import connection, connections

from connections_app import eventbridge, services
from connections_app.models import ConnectionRequest
from tests.faults import FaultProxy

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="row locks are tested on PostgreSQL"
    ),
]
N = 8


@pytest.mark.django_db(transaction=True)
def test_parallel_approvals_create_once(requester, user_factory, make_document, moto, monkeypatch):
    request = services.request_create(requester=requester, document=make_document("API_KEY"))
    approvers = [user_factory(f"approver{i}", groups=["connection-approvers"]) for i in range(N)]
    start = threading.Barrier(N)
    outcomes = []

    with FaultProxy(moto.url) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        eventbridge.reset_clients()

        def approve(user):
            try:
                start.wait()
                done = services.request_approve(
                    request=request, approver=user, seen_hash=request.document_hash
                )
                outcomes.append(done.status)
            except services.ActionRefused as exc:
                outcomes.append(exc.code)
            finally:
                connections.close_all()

        threads = [threading.Thread(target=approve, args=(u,)) for u in approvers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        creates = proxy.targets("CreateConnection")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.url)

    assert creates == 1
    assert outcomes.count(ConnectionRequest.CREATED) == 1
    assert outcomes.count("not_pending") == N - 1
    names = [c["Name"] for c in boto3.client("events").list_connections()["Connections"]]
    assert names.count(request.name) == 1
