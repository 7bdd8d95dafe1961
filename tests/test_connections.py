"""Connection state refresh (page, service, command) and the approver's view of references."""

import re
from datetime import timedelta
from io import StringIO

import boto3
import pytest
from django.core.management import call_command
from django.urls import reverse

from connections_app import audit, roles, services
from connections_app.models import AuditEvent, Connection, ConnectionRequest, Target

R = ConnectionRequest
pytestmark = [pytest.mark.usefixtures("servers"), pytest.mark.django_db]


@pytest.fixture
def created(requester, approver, make_document):
    request = services.request_create(requester=requester, document=make_document("API_KEY"))
    request = services.request_approve(
        request=request, approver=approver, seen_hash=request.document_hash
    )
    assert request.status == R.CREATED and request.connection.state == "AUTHORIZED"
    return request


def _refresh_events(connection):
    return list(
        AuditEvent.objects.filter(arn=connection.arn, action="connection.state.refresh")
        .order_by("id")
        .values_list("connection_state", "data")
    )


def test_command_records_a_state_that_moved_on(created):
    # Stored while AWS was still creating it (private endpoints can take many minutes).
    Connection.objects.filter(pk=created.connection.pk).update(state="CREATING")
    out = StringIO()
    call_command("refresh_connection_states", stdout=out)
    assert f"{created.name}: AUTHORIZED" in out.getvalue()
    assert Connection.objects.get(pk=created.connection.pk).state == "AUTHORIZED"
    [(state, data)] = _refresh_events(created.connection)
    assert state == "AUTHORIZED"
    assert '"previous_state":"CREATING"' in data
    assert audit.verify_chain().ok


def test_command_skips_settled_connections_unless_asked(created):
    out = StringIO()
    call_command("refresh_connection_states", stdout=out)
    assert created.name not in out.getvalue()
    call_command("refresh_connection_states", "--all", stdout=out)
    assert f"{created.name}: AUTHORIZED" in out.getvalue()
    assert _refresh_events(created.connection) == []  # nothing changed, nothing recorded


def test_refresh_records_a_connection_deleted_in_aws(created, approver_client):
    boto3.client("events").delete_connection(Name=created.name)
    url = reverse("connection_refresh", args=[created.connection.pk])
    response = approver_client.post(url, follow=True)
    assert f"{created.name}: DELETED" in response.content.decode()
    connection = Connection.objects.get(pk=created.connection.pk)
    assert connection.state == "DELETED"
    assert "no longer exists" in connection.state_reason
    [(state, _)] = _refresh_events(connection)
    assert state == "DELETED"


def test_a_connection_deleted_in_aws_gives_its_name_up(created, requester, approver, make_document):
    boto3.client("events").delete_connection(Name=created.name)
    with pytest.raises(services.DocumentInvalid):  # still held: nobody has refreshed yet
        services.request_create(requester=requester, document=make_document(name=created.name))
    services.connection_refresh(connection=created.connection, actor=approver)

    again = services.request_create(requester=requester, document=make_document(name=created.name))
    again = services.request_approve(
        request=again, approver=approver, seen_hash=again.document_hash
    )
    assert again.status == R.CREATED and again.connection.arn != created.connection.arn
    # The old connection's name now belongs to the new one: it stays deleted.
    old = services.connection_refresh(
        connection=Connection.objects.get(pk=created.connection.pk), actor=approver
    )
    assert (old.state, old.arn) == ("DELETED", created.connection.arn)
    assert audit.verify_chain().ok


def test_command_follows_a_connection_being_deleted(created):
    Connection.objects.filter(pk=created.connection.pk).update(state="DELETING")
    boto3.client("events").delete_connection(Name=created.name)
    out = StringIO()
    call_command("refresh_connection_states", stdout=out)
    assert f"{created.name}: DELETED" in out.getvalue()


def test_my_requests_show_expiry_and_deleted_connections(
    created, requester, requester_client, make_document, approver
):
    waiting = services.request_create(
        requester=requester, document=make_document(name=created.name + "-w")
    )
    R.objects.filter(pk=waiting.pk).update(expires_at=waiting.created_at)
    boto3.client("events").delete_connection(Name=created.name)
    services.connection_refresh(connection=created.connection, actor=approver)
    page = requester_client.get(reverse("request_mine")).content.decode()
    assert "Pending approval" not in page and "Expired" in page
    assert "Created</span> <small>(deleted in AWS)</small>" in page


def test_connections_page_lists_connections_with_state(created, approver_client):
    page = approver_client.get(reverse("connection_list")).content.decode()
    assert created.name in page and "AUTHORIZED" in page
    detail = approver_client.get(reverse("connection_detail", args=[created.connection.pk]))
    assert created.connection.arn in detail.content.decode()


def test_auditors_do_not_refresh(created, auditor_client, requester_client):
    url = reverse("connection_refresh", args=[created.connection.pk])
    assert auditor_client.post(url).status_code == 403
    assert _refresh_events(created.connection) == []
    assert requester_client.post(url).status_code == 302  # a requester follows their change


def _resolves_now(page: str) -> list[str]:
    """Each "Resolves now" cell of the approver's secrets table, as "version N, updated T"."""
    found = re.findall(
        r'data-testid="resolves">Yes, (version \d+)</span>(?:<br><small>(updated [^<]*)</small>)?',
        page,
    )
    return [", ".join(part for part in parts if part) for parts in found]


def test_request_page_shows_the_version_each_reference_resolves_to_now(
    requester, approver_client, requester_client, make_document, bao_cli, unique_name
):
    path = f"secret/refresh/{unique_name}"
    bao_cli("kv", "put", path, "value=first-value")
    document = make_document("API_KEY")
    document["AuthParameters"]["ApiKeyAuthParameters"]["ApiKeyValue"] = {
        "vault": f"{path}#value",
        "version": None,
    }
    request = services.request_create(requester=requester, document=document)
    url = reverse("request_detail", args=[request.pk])
    before = _resolves_now(approver_client.get(url).content.decode())
    assert len(before) == 2  # the API key and the secret header
    assert "version 1," in before[0]

    bao_cli("kv", "put", path, "value=second-value")
    after = _resolves_now(approver_client.get(url).content.decode())
    assert "version 2," in after[0]
    assert after[1] == before[1]  # the header's secret did not move

    # The requester sees the references, not a live check.
    assert _resolves_now(requester_client.get(url).content.decode()) == []

    assert 'data-testid="unresolved"' not in approver_client.get(url).content.decode()
    bao_cli("kv", "metadata", "delete", path)  # gone since the request was filed
    page = approver_client.get(url).content.decode()
    assert "1 of the secret references above does not resolve now" in page
    (header,) = _resolves_now(page)  # the secret header still resolves, shown to the second
    assert re.search(r"updated \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$", header), header


def test_queue_pages_oldest_first(requester, approver_client, make_document):
    from django.utils import timezone

    from connections_app.selectors import QUEUE_PAGE_SIZE as size

    document = make_document()
    R.objects.bulk_create(
        R(name=f"queued-{i:03d}", authorization_type="API_KEY", requester=requester,
          target=Target.default(),
          document=document, document_hash=f"{i:064x}",
          expires_at=timezone.now() + timedelta(days=1))
        for i in range(size + 1)
    )  # fmt: skip
    url = reverse("approval_queue")
    first = approver_client.get(url)
    page = first.content.decode()
    assert "queued-000" in page and f"queued-{size - 1:03d}" in page
    assert f"queued-{size:03d}" not in page and f"{size + 1} waiting" in page
    newer = first.context["queue"].newer
    assert newer == R.objects.get(name=f"queued-{size - 1:03d}").pk

    # The approver decides the oldest request, then asks for the next page: nothing is skipped.
    R.objects.filter(name="queued-000").update(status=R.REJECTED)
    second = approver_client.get(f"{url}?after={newer}").content.decode()
    assert f"queued-{size:03d}" in second and f"queued-{size - 1:03d}" not in second
    assert f"{size} waiting" in second and 'href="?after=' not in second
    assert approver_client.get(f"{url}?after=abc").status_code == 200


def test_queue_for_one_target_keeps_to_it(requester, approver_client, make_document):
    """The home page's per-target links open the queue for that target: its waiting and its
    failed changes only, and its pages stay on it."""
    from django.utils import timezone

    from connections_app.selectors import QUEUE_PAGE_SIZE as size

    other = Target.objects.create(name="partner-q", account_id="111122223333", region="eu-west-1")
    document, soon = make_document(), timezone.now() + timedelta(days=1)
    rows = [
        R(name=f"{where.name}-{i:03d}", authorization_type="API_KEY", requester=requester,
          target=where, document=document, document_hash=f"{n:064x}", expires_at=soon,
          status=R.FAILED if i == 0 else R.PENDING, error_message="AWS refused")
        for n, (where, i) in enumerate(
            [(t, i) for t in (Target.default(), other) for i in range(size + 2)]
        )
    ]  # fmt: skip
    R.objects.bulk_create(rows)
    page = approver_client.get(f"{reverse('approval_queue')}?target={other.pk}").content.decode()
    assert "partner-q (111122223333, eu-west-1) only" in page
    assert "partner-q-000" in page and "partner-q-001" in page  # failed, and oldest waiting
    assert "default-0" not in page  # neither the other target's failed nor its waiting
    assert f"&amp;target={other.pk}" in page  # Newer stays on the target
    every = approver_client.get(reverse("approval_queue")).content.decode()
    assert "default-000" in every and "partner-q-000" in every
    home = approver_client.get(reverse("home")).content.decode()
    assert f'href="{reverse("approval_queue")}?target={other.pk}#failed"' in home
    assert f'href="{reverse("approval_queue")}#failed"' in home  # the failed changes in all


@pytest.mark.parametrize(
    "ago, shown",
    [
        (timedelta(seconds=20), "under a minute"),
        (timedelta(minutes=1, seconds=5), "1 minute"),
        (timedelta(hours=2, minutes=5, seconds=9), "2 hours, 5 minutes"),
        (timedelta(days=3, minutes=7), "3 days"),
        (timedelta(days=1, hours=1), "1 day, 1 hour"),
    ],
)
def test_queue_shows_how_long_each_request_waited(ago, shown):
    from django.utils import timezone

    from connections_app.templatetags.connections_extras import waited

    assert waited(timezone.now() - ago) == shown


def test_blank_form_is_the_same_from_the_cache(user_factory):
    """The blank form is cached once for everyone: the second requester gets the first one's
    fragment, which must hold nothing of the first requester."""
    from django.core.cache import cache
    from django.core.cache.utils import make_template_fragment_key
    from django.test import Client

    cache.clear()
    pages = []
    for name in ("alice-requester", "bruno-requester"):
        client = Client()
        client.force_login(user_factory(name, groups=[roles.REQUESTERS]))
        pages.append(client.get(reverse("request_new")).content.decode())
        if name.startswith("alice"):  # the fragment is now in the cache, and bruno's page uses it
            assert cache.get(make_template_fragment_key("request_form_blank")) is not None
    first, second = pages
    assert "bruno-requester" in second and "alice-requester" not in second
    strip = re.compile(
        r'name="csrfmiddlewaretoken" value="[^"]*"|<strong data-testid="username">[^<]*'
    )
    assert strip.sub("", first) == strip.sub("", second)
    assert 'name="name"' in second and 'name="oauth_header-TOTAL_FORMS"' in second


def test_connection_pages_keep_a_name_shared_by_two_targets(monkeypatch):
    """Keyset pages by (name, id): a name in two targets is on the pages once each."""
    from connections_app import selectors

    other = Target.objects.create(name="partner-k", account_id="111122223333", region="eu-west-1")
    made = [
        Connection.objects.create(target=target, name=name, arn=f"arn:{target.name}:{name}")
        for name, target in (("k-a", Target.default()), ("k-b", Target.default()), ("k-b", other),
                             ("k-c", other))
    ]  # fmt: skip
    monkeypatch.setattr(selectors, "CONNECTIONS_PAGE_SIZE", 1)
    seen, after = [], None
    while True:
        page = selectors.connections_page(prefix="k-", after=after)
        seen += [row.pk for row in page.rows]
        if page.after is None:
            break
        name, _, pk = page.after.rpartition(" ")
        after = (name, int(pk))
    assert seen == [c.pk for c in sorted(made, key=lambda c: (c.name, c.pk))]
