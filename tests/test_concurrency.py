"""Approvals racing, and approvals refused: who reads Vault, and how often AWS is called.

Runs on the suite's database: on PostgreSQL the claim's row lock serialises the approvers, on
SQLite its BEGIN IMMEDIATE does (threads, each with its own connection).
"""

import threading
from datetime import timedelta

import boto3
import pytest
from django.db import connections
from django.utils import timezone

from connections_app import services
from connections_app.models import ConnectionRequest

pytestmark = pytest.mark.usefixtures("servers")
R = ConnectionRequest
N = 8


@pytest.mark.django_db(transaction=True)
def test_parallel_approvals_create_once_and_read_each_secret_once(
    requester, user_factory, make_document, calls
):
    request = services.request_create(requester=requester, document=make_document("API_KEY"))
    distinct = {leaf["vault"] for leaf in _leaves(request.document)}
    assert len(distinct) == 2  # the API key and the secret header, each at its latest version
    approvers = [user_factory(f"approver{i}", groups=["connection-approvers"]) for i in range(N)]
    calls.reset()
    start = threading.Barrier(N)
    outcomes = []

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

    assert calls.aws.targets("CreateConnection") == 1
    assert calls.secret_reads() == len(distinct)  # only the approver who claimed it read Vault
    assert sorted(outcomes) == sorted([R.CREATED] + ["not_pending"] * (N - 1))
    listed = boto3.client("events").list_connections(NamePrefix=request.name)["Connections"]
    names = [c["Name"] for c in listed]
    assert names.count(request.name) == 1


def _leaves(document):
    from connections_app import document as doc

    return [leaf for _, leaf in doc.secret_leaves(document)]


@pytest.mark.django_db
@pytest.mark.parametrize("why", ["own_request", "document_changed", "expired", "not_approver"])
def test_refused_approval_reads_no_secret(
    why, requester, approver, auditor, user_factory, make_document, calls
):
    request = services.request_create(requester=requester, document=make_document("API_KEY"))
    seen, who = request.document_hash, approver
    if why == "own_request":
        who = user_factory(groups=["connection-requesters", "connection-approvers"])
        request = services.request_create(
            requester=who, document=make_document("BASIC", name=f"{request.name}-own")
        )
        seen = request.document_hash
    elif why == "document_changed":
        services.request_update(
            request=request, editor=requester, document=make_document("BASIC", name=request.name)
        )
    elif why == "expired":
        R.objects.filter(pk=request.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    else:
        who = auditor
    calls.reset()

    with pytest.raises(services.ActionRefused) as refused:
        services.request_approve(request=request, approver=who, seen_hash=seen)

    assert refused.value.code == why
    assert calls.secret_reads() == 0
    assert calls.aws.targets("CreateConnection") == 0
    expected = R.EXPIRED if why == "expired" else R.PENDING  # an expiry is recorded all the same
    assert R.objects.get(pk=request.pk).status == expected


@pytest.mark.django_db
def test_approval_reads_vault_in_its_own_thread(
    requester, approver, make_document, calls, monkeypatch
):
    """No thread pool on the approve path: each secret is read by the approving thread."""
    from connections_app import vault

    request = services.request_create(requester=requester, document=make_document("API_KEY"))
    readers = []
    fetch = vault._fetch

    def watched(*args):
        readers.append(threading.current_thread())
        return fetch(*args)

    monkeypatch.setattr(vault, "_fetch", watched)
    done = services.request_approve(
        request=request, approver=approver, seen_hash=request.document_hash
    )
    assert done.status == R.CREATED
    assert len(readers) == 2 and set(readers) == {threading.current_thread()}
