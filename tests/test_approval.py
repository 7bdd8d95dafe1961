"""Approval rules, exactly-once submission, error cases and reconciliation."""

import datetime as dt
import json

import boto3
import pytest
from botocore.stub import Stubber
from django.urls import reverse
from django.utils import timezone

from connections_app import eventbridge, roles, services
from connections_app.models import AuditEvent, ConnectionRequest, Target
from tests.faults import FaultProxy, aws_target, closed_port

R = ConnectionRequest
pytestmark = [pytest.mark.usefixtures("servers"), pytest.mark.django_db]


@pytest.fixture
def pending(requester, make_document):
    return services.request_create(requester=requester, document=make_document("API_KEY"))


def _actions(request):
    return list(
        AuditEvent.objects.filter(request_id=request.pk)
        .order_by("id")
        .values_list("action", flat=True)
    )


def _connection_in_aws(name, description):
    """A connection made outside this request's approval (a lost answer, or by hand)."""
    boto3.client("events").create_connection(
        Name=name,
        Description=description,
        AuthorizationType="API_KEY",
        AuthParameters={"ApiKeyAuthParameters": {"ApiKeyName": "k", "ApiKeyValue": "v"}},
    )


def _connections_named(name):
    return [
        c
        for c in boto3.client("events").list_connections(NamePrefix=name)["Connections"]
        if c["Name"] == name
    ]


# ---------------------------------------------------------------------------
# Refusals


def test_requester_cannot_approve_own_request_even_as_superuser(user_factory, make_document):
    boss = user_factory("boss", superuser=True, groups=[roles.REQUESTERS])
    request = services.request_create(requester=boss, document=make_document())
    with pytest.raises(services.ActionRefused) as info:
        services.request_approve(request=request, approver=boss, seen_hash=request.document_hash)
    assert info.value.code == "own_request"
    assert R.objects.get(pk=request.pk).status == R.PENDING


def test_own_request_page_has_no_approve_button(user_factory, make_document, client):
    boss = user_factory("boss", superuser=True, groups=[roles.REQUESTERS])
    request = services.request_create(requester=boss, document=make_document())
    client.force_login(boss)
    page = client.get(reverse("request_detail", args=[request.pk])).content.decode()
    assert "Approve and create connection" not in page


def test_only_approve_permission_holders_approve(pending, requester, auditor, user_factory):
    other_requester = user_factory("other", groups=["connection-requesters"])
    for user in (auditor, other_requester):
        with pytest.raises(services.ActionRefused) as info:
            services.request_approve(
                request=pending, approver=user, seen_hash=pending.document_hash
            )
        assert info.value.code == "not_approver"
    assert R.objects.get(pk=pending.pk).status == R.PENDING


def test_approval_bound_to_document_hash(pending, requester, approver, make_document):
    seen = pending.document_hash
    services.request_update(
        request=pending, editor=requester, document=make_document("BASIC", name=pending.name)
    )
    with pytest.raises(services.ActionRefused) as info:
        services.request_approve(request=pending, approver=approver, seen_hash=seen)
    assert info.value.code == "document_changed"
    assert R.objects.get(pk=pending.pk).status == R.PENDING
    assert _connections_named(pending.name) == []


def test_expired_request_cannot_be_approved(pending, approver):
    R.objects.filter(pk=pending.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    with pytest.raises(services.ActionRefused) as info:
        services.request_approve(
            request=pending, approver=approver, seen_hash=pending.document_hash
        )
    assert info.value.code == "expired"
    assert R.objects.get(pk=pending.pk).status == R.EXPIRED
    assert "connection.request.expire" in _actions(pending)


def test_expiry_uses_request_ttl(settings, requester, make_document):
    settings.REQUEST_TTL = dt.timedelta(hours=2)
    request = services.request_create(requester=requester, document=make_document())
    assert dt.timedelta(hours=1, minutes=59) < request.expires_at - request.created_at
    assert request.expires_at - request.created_at <= dt.timedelta(hours=2)


def test_rejection_needs_reason(pending, approver):
    with pytest.raises(services.ActionRefused) as info:
        services.request_reject(request=pending, approver=approver, reason="  ")
    assert info.value.code == "reason_required"
    done = services.request_reject(request=pending, approver=approver, reason="wrong partner")
    assert done.status == R.REJECTED
    assert done.decision_comment == "wrong partner"
    assert _actions(pending)[-1] == "connection.request.reject"


def test_cancel_by_requester_only(pending, requester, approver):
    with pytest.raises(services.ActionRefused):
        services.request_cancel(request=pending, actor=approver)
    assert services.request_cancel(request=pending, actor=requester).status == R.CANCELLED
    assert _actions(pending)[-1] == "connection.request.cancel"


def test_double_approve_gives_one_create(pending, approver, user_factory):
    services.request_approve(request=pending, approver=approver, seen_hash=pending.document_hash)
    second = user_factory("approver2", groups=["connection-approvers"])
    with pytest.raises(services.ActionRefused) as info:
        services.request_approve(request=pending, approver=second, seen_hash=pending.document_hash)
    assert info.value.code == "not_pending"
    assert len(_connections_named(pending.name)) == 1


def test_double_click_through_views(pending, approver_client):
    url = reverse("request_approve", args=[pending.pk])
    data = {"document_hash": pending.document_hash, "comment": "fine"}
    approver_client.post(url, data)
    response = approver_client.post(url, data, follow=True)
    assert "already been created" in response.content.decode()
    assert len(_connections_named(pending.name)) == 1


# ---------------------------------------------------------------------------
# Errors


STUBBED = [
    ("ResourceAlreadyExistsException", "already exists"),
    ("LimitExceededException", "3,000 per Region"),
    ("AccessDeniedException", "IAM"),
    ("ThrottlingException", "throttled"),
    ("InternalException", "internal error"),
]


@pytest.mark.parametrize(("code", "words"), STUBBED)
def test_aws_errors_fail_clearly_and_can_be_retried(code, words, pending, approver, canaries):
    """Errors moto cannot produce, through botocore's Stubber on the app's own client."""
    client = eventbridge.events_client(Target.default(), retries=False)
    describe = eventbridge.events_client(Target.default())
    with Stubber(client) as stub, Stubber(describe) as dstub:
        attempts = 2 if code == "ThrottlingException" else 1  # AWS_MAX_ATTEMPTS=2 in tests
        for _ in range(attempts):
            stub.add_client_error(
                "create_connection", service_error_code=code, http_status_code=400
            )
        if code == "ResourceAlreadyExistsException":
            dstub.add_response(
                "describe_connection",
                {
                    "Name": pending.name,
                    "Description": "someone else's",
                    "AuthorizationType": "BASIC",
                },
            )
        failed = services.request_approve(
            request=pending, approver=approver, seen_hash=pending.document_hash
        )
    assert failed.status == R.FAILED
    assert words in failed.error_message
    assert failed.error_code == code
    for value in canaries.values():
        assert value not in failed.error_message
    assert _actions(pending)[-1] == "connection.create.failure"
    if code != "ResourceAlreadyExistsException":
        done = services.request_retry(
            request=failed, approver=approver, seen_hash=pending.document_hash
        )
        assert done.status == R.CREATED
        assert len(_connections_named(pending.name)) == 1


def test_parameter_validation_error(requester, approver, make_document, bao_cli):
    # A Vault value that breaks AWS's rules (a ':' in a header-type field) is caught before AWS.
    bao_cli("kv", "put", "secret/canary/colon", "value=has:colon")
    document = make_document("API_KEY")
    document["AuthParameters"]["ApiKeyAuthParameters"]["ApiKeyValue"] = {
        "vault": "secret/canary/colon#value",
        "version": None,
    }
    request = services.request_create(requester=requester, document=document)
    failed = services.request_approve(
        request=request, approver=approver, seen_hash=request.document_hash
    )
    assert failed.status == R.FAILED
    assert failed.error_code == "value_invalid"
    assert "secret/canary/colon#value" in failed.error_message
    assert "has:colon" not in failed.error_message
    assert _connections_named(request.name) == []


def test_botocore_param_validation(pending, approver):
    # A document that slipped past validation (written behind the app's back): the SDK's own
    # parameter validation refuses it before anything is sent, and the message quotes nothing.
    document = dict(pending.document, Name="")
    R.objects.filter(pk=pending.pk).update(document=document)
    pending.refresh_from_db()  # as the view loads it
    failed = services.request_approve(
        request=pending, approver=approver, seen_hash=pending.document_hash
    )
    assert failed.status == R.FAILED
    assert failed.error_code == "ParamValidationError"


def test_endpoint_unreachable(pending, approver, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
    eventbridge.reset_clients()
    failed = services.request_approve(
        request=pending, approver=approver, seen_hash=pending.document_hash
    )
    assert failed.status == R.FAILED
    assert failed.error_code == "EndpointUnreachable"


def test_endpoint_timeout_then_retry_adopts(pending, approver, moto, monkeypatch, settings):
    """The create reaches AWS but the answer is slow: a timeout, then a retry that adopts it."""
    settings.AWS_READ_TIMEOUT = 1
    with FaultProxy(moto.url) as proxy:
        proxy.rules.append(aws_target("CreateConnection", ("drop_response",), times=1))
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        eventbridge.reset_clients()
        failed = services.request_approve(
            request=pending, approver=approver, seen_hash=pending.document_hash
        )
        assert failed.status == R.FAILED
        assert failed.error_code in ("EndpointUnreachable", "Timeout")
        assert proxy.targets("CreateConnection") == 1  # never resent by the SDK
        done = services.request_retry(
            request=failed, approver=approver, seen_hash=pending.document_hash
        )
        assert proxy.targets("CreateConnection") == 1  # the retry looked first and adopted
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.url)
    assert done.status == R.CREATED
    assert "connection.create.adopt" in _actions(pending)
    assert len(_connections_named(pending.name)) == 1


def test_stale_submitting_is_reconciled(pending, approver, settings):
    """A crash after create_connection: the row says submitting; the retry adopts the connection."""
    _connection_in_aws(pending.name, f"partner API {pending.marker}")
    R.objects.filter(pk=pending.pk).update(
        status=R.SUBMITTING,
        submit_attempts=1,
        submit_started_at=timezone.now() - settings.SUBMIT_STALE_AFTER - dt.timedelta(seconds=1),
    )
    done = services.request_retry(
        request=pending, approver=approver, seen_hash=pending.document_hash
    )
    assert done.status == R.CREATED
    assert done.connection.arn
    assert len(_connections_named(pending.name)) == 1


def test_fresh_submitting_is_not_retried(pending, approver):
    R.objects.filter(pk=pending.pk).update(
        status=R.SUBMITTING, submit_attempts=1, submit_started_at=timezone.now()
    )
    with pytest.raises(services.ActionRefused) as info:
        services.request_retry(request=pending, approver=approver, seen_hash=pending.document_hash)
    assert info.value.code == "not_retryable"


def test_foreign_connection_is_a_conflict_left_alone(pending, approver):
    _connection_in_aws(pending.name, "made by hand")
    R.objects.filter(pk=pending.pk).update(status=R.FAILED, submit_attempts=1)
    failed = services.request_retry(
        request=pending, approver=approver, seen_hash=pending.document_hash
    )
    assert failed.status == R.FAILED
    assert failed.error_code == "ResourceAlreadyExistsException"
    assert "left alone" in failed.error_message
    found = boto3.client("events").describe_connection(Name=pending.name)
    assert found["Description"] == "made by hand"


@pytest.mark.parametrize(
    ("setup", "code"),
    [
        ("delete", {"vault_version_deleted"}),
        ("policy", {"vault_permission_denied", "vault_mount_not_found"}),
    ],
)
def test_vault_errors_at_approval(
    setup, code, requester, approver, make_document, bao_cli, settings
):
    bao_cli("kv", "put", "secret/canary/gone", "value=short-lived")
    document = make_document("API_KEY")
    document["AuthParameters"]["ApiKeyAuthParameters"]["ApiKeyValue"] = {
        "vault": "secret/canary/gone#value",
        "version": None,
    }
    request = services.request_create(requester=requester, document=document)
    if setup == "delete":
        bao_cli("kv", "delete", "secret/canary/gone")
    else:
        bao_cli(
            "policy",
            "write",
            "nothing",
            "-",
            input_text='path "sys/nothing" { capabilities = ["read"] }',
        )
        token = json.loads(bao_cli("token", "create", "-policy=nothing", "-format=json"))
        settings.VAULT_TOKEN = token["auth"]["client_token"]
        from connections_app import vault

        vault.reset_client()
    failed = services.request_approve(
        request=request, approver=approver, seen_hash=request.document_hash
    )
    assert failed.status == R.FAILED
    assert failed.error_code in code
    assert "Vault" in failed.error_message
    assert _connections_named(request.name) == []


# ---------------------------------------------------------------------------
# Failed requests: retried, or closed; what each page offers


def _failed(request):
    R.objects.filter(pk=request.pk).update(
        status=R.FAILED, submit_attempts=1, error_code="InternalException", error_message="x"
    )
    return R.objects.get(pk=request.pk)


def test_retry_refused_when_another_request_took_the_name(
    pending, requester, approver, approver_client, make_document
):
    """A failed request gives its name up; once another request holds it, Retry says so."""
    failed = _failed(pending)
    services.request_create(requester=requester, document=make_document(name=pending.name))
    with pytest.raises(services.ActionRefused) as info:
        services.request_retry(request=failed, approver=approver, seen_hash=failed.document_hash)
    assert info.value.code == "name_taken"
    assert R.objects.get(pk=failed.pk).status == R.FAILED

    url = reverse("request_retry", args=[failed.pk])
    page = approver_client.post(url, {"document_hash": failed.document_hash}, follow=True)
    text = page.content.decode()
    assert "Another request here now uses this name" in text
    assert "database connection was lost" not in text
    assert _connections_named(pending.name) == []


def test_failed_request_can_be_rejected_or_cancelled(pending, requester, approver, make_document):
    failed = _failed(pending)
    done = services.request_reject(request=failed, approver=approver, reason="partner gone")
    assert (done.status, done.decision_comment) == (R.REJECTED, "partner gone")
    other = services.request_create(requester=requester, document=make_document(name="other-1"))
    done = services.request_cancel(request=_failed(other), actor=requester)
    assert done.status == R.CANCELLED
    assert _actions(other)[-1] == "connection.request.cancel"
    for closed in (pending, other):  # and nothing more can happen to them
        with pytest.raises(services.ActionRefused):
            services.request_retry(request=closed, approver=approver, seen_hash="x")


def test_a_failed_request_whose_connection_exists_is_not_closed(pending, requester, approver):
    """A timeout may hide a create that worked: closing would leave that connection untracked."""
    _connection_in_aws(pending.name, f"partner API {pending.marker}")
    failed = _failed(pending)
    for close in (
        lambda: services.request_reject(request=failed, approver=approver, reason="gone"),
        lambda: services.request_cancel(request=failed, actor=requester),
    ):
        with pytest.raises(services.ActionRefused) as info:
            close()
        assert info.value.code == "connection_exists"
    done = services.request_retry(request=failed, approver=approver, seen_hash=failed.document_hash)
    assert done.status == R.CREATED and _actions(pending)[-1] == "connection.create.adopt"


def test_cancelling_an_expired_request_records_the_expiry(pending, requester):
    R.objects.filter(pk=pending.pk).update(expires_at=timezone.now())
    with pytest.raises(services.ActionRefused) as info:
        services.request_cancel(request=pending, actor=requester)
    assert info.value.code == "expired"
    assert R.objects.get(pk=pending.pk).status == R.EXPIRED
    assert _actions(pending)[-1] == "connection.request.expire"


def _buttons(client, request) -> set[str]:
    page = client.get(reverse("request_detail", args=[request.pk])).content.decode()
    labels = ("Edit", "Cancel request", "Approve and create connection", "Reject", "Retry")
    return {label for label in labels if f">{label}" in page}


def test_pages_offer_only_what_the_services_accept(
    pending, approver_client, requester_client, settings
):
    assert _buttons(approver_client, pending) == {"Approve and create connection", "Reject"}
    assert _buttons(requester_client, pending) == {"Edit", "Cancel request"}

    R.objects.filter(pk=pending.pk).update(
        status=R.SUBMITTING, submit_attempts=1, submit_started_at=timezone.now()
    )
    assert _buttons(approver_client, pending) == set()  # still running: no Retry yet
    page = approver_client.get(reverse("request_detail", args=[pending.pk])).content.decode()
    assert 'data-testid="in-progress"' in page
    R.objects.filter(pk=pending.pk).update(
        submit_started_at=timezone.now() - settings.SUBMIT_STALE_AFTER
    )
    assert _buttons(approver_client, pending) == {"Retry"}

    _failed(pending)
    assert _buttons(approver_client, pending) == {"Reject", "Retry"}
    # A failed create or update goes back to pending once its requester edits it.
    assert _buttons(requester_client, pending) == {"Edit", "Cancel request"}


def test_page_of_a_request_past_its_time_shows_it_expired_and_writes_nothing(
    pending, approver_client, requester_client
):
    R.objects.filter(pk=pending.pk).update(expires_at=timezone.now())
    before = _actions(pending)
    assert _buttons(approver_client, pending) == set()
    page = approver_client.get(reverse("request_detail", args=[pending.pk])).content.decode()
    assert 'data-testid="status">Expired<' in page
    mine = requester_client.get(reverse("request_mine")).content.decode()
    assert "Expired" in mine
    assert R.objects.get(pk=pending.pk).status == R.PENDING  # shown, not recorded
    assert _actions(pending) == before

    # The next action on it records the expiry, and is refused.
    response = approver_client.post(
        reverse("request_approve", args=[pending.pk]), {"document_hash": pending.document_hash}
    )
    assert response.status_code == 302
    assert R.objects.get(pk=pending.pk).status == R.EXPIRED
    assert _actions(pending)[-1] == "connection.request.expire"


def test_refused_decision_keeps_what_the_approver_typed(
    pending, requester, approver_client, make_document
):
    seen = pending.document_hash
    services.request_update(
        request=pending, editor=requester, document=make_document("BASIC", name=pending.name)
    )
    url = reverse("request_approve", args=[pending.pk])
    response = approver_client.post(url, {"document_hash": seen, "comment": "looks fine to me"})
    assert response.status_code == 409
    page = response.content.decode()
    assert "looks fine to me</textarea>" in page
    assert 'data-testid="approve-error"' in page and "changed after you opened it" in page
    assert R.objects.get(pk=pending.pk).status == R.PENDING

    url = reverse("request_reject", args=[pending.pk])
    response = approver_client.post(url, {"reason": "   "})
    assert response.status_code == 400
    page = response.content.decode()
    assert 'data-testid="reject-error"' in page and "needs a reason" in page


def test_request_page_history_names_each_step_and_its_actor(pending, requester, approver_client):
    page = approver_client.get(reverse("request_detail", args=[pending.pk])).content.decode()
    assert f"<code>connection.request.create</code> by {requester.username} (success)" in page


def test_get_pages_only_read(pending, requester_client, approver_client, auditor_client):
    """Queue, My requests, the request page, the connections and the audit log write nothing,
    even with a request past its time (it shows as expired; an action records it)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    R.objects.filter(pk=pending.pk).update(expires_at=timezone.now())
    pages = [
        (approver_client, reverse("approval_queue")),
        (approver_client, reverse("request_detail", args=[pending.pk])),
        (approver_client, reverse("connection_list")),
        (requester_client, reverse("request_mine")),
        (requester_client, reverse("request_detail", args=[pending.pk])),
        (requester_client, reverse("request_edit", args=[pending.pk])),
        (auditor_client, reverse("audit_list")),
    ]
    for client, url in pages:
        with CaptureQueriesContext(connection) as queries:
            assert client.get(url).status_code in (200, 302)
        writes = [
            q["sql"]
            for q in queries
            if q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
            and "django_session" not in q["sql"]
        ]
        assert writes == [], url
    assert R.objects.get(pk=pending.pk).status == R.PENDING
