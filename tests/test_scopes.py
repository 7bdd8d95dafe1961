"""Scopes: a requester names only secrets under their groups' Vault path prefixes, and only
allowed hosts receive them; checked on save, on Check and again at approval. The Check button
is bounded (length, a per-user budget) and runs apart from approvals."""

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from connections_app import roles, services
from connections_app.models import ConnectionRequest, Scope

R = ConnectionRequest
pytestmark = [pytest.mark.usefixtures("servers"), pytest.mark.django_db]


@pytest.fixture
def team_a(user_factory):
    """A requester whose only group may reference secret/canary/apikey and the OAuth secret,
    and send secrets to auth.example.com only."""
    group = Group.objects.create(name="team-a")
    group.permissions.set(Group.objects.get(name=roles.REQUESTERS).permissions.all())
    Scope.objects.create(
        group=group,
        path_prefixes="secret/canary/apikey\nsecret/canary/oauth/",
        allowed_hosts="auth.example.com",
    )
    return user_factory("alice", groups=["team-a"])


def _vault_reads(calls) -> int:
    return calls.secret_reads()


def test_a_reference_outside_the_scope_is_refused_on_save_without_asking_vault(
    team_a, make_document, calls
):
    document = make_document("BASIC")  # secret/canary/basic: another team's
    calls.reset()
    with pytest.raises(services.DocumentInvalid) as info:
        services.request_create(requester=team_a, document=document)
    issues = {i.path: i.code for i in info.value.issues}
    assert issues["AuthParameters.BasicAuthParameters.Password"] == "out_of_scope"
    assert _vault_reads(calls) == 0
    assert not R.objects.exists()


def test_the_form_says_so_beside_the_field(team_a):
    from tests.test_request_form import form_data

    client = Client()
    client.force_login(team_a)
    data = form_data("BASIC", "scoped-basic")
    response = client.post(reverse("request_new"), data)
    assert response.status_code == 400
    errors = response.context["form"].errors.as_data()["basic_password"]
    assert [e.code for e in errors] == ["out_of_scope"]
    assert "outside the Vault paths your groups may reference" in response.content.decode()


def test_a_prefix_is_a_whole_path_segment(team_a, make_document):
    document = make_document("API_KEY")
    document["AuthParameters"]["ApiKeyAuthParameters"]["ApiKeyValue"]["vault"] = (
        "secret/canary/apikeys-of-others#api_key"
    )
    with pytest.raises(services.DocumentInvalid) as info:
        services.request_create(requester=team_a, document=document)
    assert "out_of_scope" in {i.code for i in info.value.issues}


def test_check_answers_out_of_scope_without_asking_vault(team_a, calls):
    client = Client()
    client.force_login(team_a)
    calls.reset()
    answer = client.post(reverse("reference_check"), {"reference": "secret/canary/basic#password"})
    assert answer.json()["code"] == "out_of_scope"
    assert len(calls.vault.seen) == 0
    mine = client.post(reverse("reference_check"), {"reference": "secret/canary/apikey#api_key"})
    assert mine.json()["ok"] is True


def test_an_approval_after_the_scope_narrowed_is_refused_without_reading(
    team_a, approver, make_document, calls
):
    request = services.request_create(requester=team_a, document=make_document("API_KEY"))
    Scope.objects.filter(group__name="team-a").update(path_prefixes="secret/canary/oauth/")
    calls.reset()
    with pytest.raises(services.ActionRefused) as info:
        services.request_approve(
            request=request, approver=approver, seen_hash=request.document_hash
        )
    assert info.value.code == "out_of_scope"
    assert _vault_reads(calls) == 0 and calls.aws.targets("CreateConnection") == 0
    assert R.objects.get(pk=request.pk).status == R.PENDING


def test_only_allowed_hosts_receive_secrets(team_a, make_document):
    Scope.objects.filter(group__name="team-a").update(
        path_prefixes="secret/canary/", allowed_hosts="auth.partner.example"
    )
    document = make_document("OAUTH_CLIENT_CREDENTIALS")  # endpoint auth.example.com
    with pytest.raises(services.DocumentInvalid) as info:
        services.request_create(requester=team_a, document=document)
    [issue] = [i for i in info.value.issues if i.code == "host_not_allowed"]
    assert issue.path == "AuthParameters.OAuthParameters.AuthorizationEndpoint"
    assert "auth.example.com" in issue.message
    oauth = document["AuthParameters"]["OAuthParameters"]
    oauth["AuthorizationEndpoint"] = "https://auth.partner.example/token"
    assert services.request_create(requester=team_a, document=document).status == R.PENDING


def test_the_approver_sees_each_secrets_scope_and_a_new_host(
    requester, approver, approver_client, make_document, user_factory
):
    first = services.request_create(
        requester=requester, document=make_document("OAUTH_CLIENT_CREDENTIALS")
    )
    page = approver_client.get(reverse("request_detail", args=[first.pk])).content.decode()
    assert 'data-testid="scope">connection-requesters<' in page
    assert 'data-testid="host-new"' in page and "<code>auth.example.com</code>" in page
    done = services.request_approve(request=first, approver=approver, seen_hash=first.document_hash)
    assert done.status == R.CREATED
    second = services.request_create(
        requester=requester,
        document=make_document("OAUTH_CLIENT_CREDENTIALS", name=f"{first.name}-2"),
    )
    page = approver_client.get(reverse("request_detail", args=[second.pk])).content.decode()
    assert "<code>auth.example.com</code>" in page and 'data-testid="host-new"' not in page


# ---------------------------------------------------------------------------
# The Check button


def test_a_huge_reference_is_refused_before_any_vault_call(requester_client, calls):
    calls.reset()
    answer = requester_client.post(
        reverse("reference_check"), {"reference": "secret/" + "a" * 100_000 + "#k"}
    )
    assert answer.json()["code"] == "too_long"
    assert len(calls.vault.seen) == 0


def test_checks_have_a_per_user_budget(requester, requester_client, settings, calls):
    settings.CHECKS_PER_MINUTE = 5
    url, ref = reverse("reference_check"), {"reference": "secret/canary/apikey#api_key"}
    answers = [requester_client.post(url, ref) for _ in range(8)]
    assert [a.status_code for a in answers] == [200] * 5 + [429] * 3
    assert answers[-1].json()["code"] == "check_rate"


def test_another_teams_connection_is_not_changed_or_read_through_its_pages(
    requester, approver, make_document, user_factory, calls
):
    """Its rotate page would read every secret's newest version: refused before any read."""
    request = services.request_create(requester=requester, document=make_document("API_KEY"))
    made = services.request_approve(
        request=request, approver=approver, seen_hash=request.document_hash
    ).connection
    team_b = Group.objects.create(name="team-b")
    team_b.permissions.set(Group.objects.get(name=roles.REQUESTERS).permissions.all())
    Scope.objects.create(group=team_b, path_prefixes="secret/team-b/", allowed_hosts="")
    bob = user_factory("bob", groups=["team-b"])
    client = Client()
    client.force_login(bob)
    calls.reset()
    for name in ("connection_rotate", "connection_update", "connection_deauthorize"):
        assert client.get(reverse(name, args=[made.pk])).status_code == 302
    assert client.post(reverse("connection_rotate", args=[made.pk]), {}).status_code == 302
    assert _vault_reads(calls) == 0
    for kind in (R.ROTATE, R.DEAUTHORIZE, R.DELETE):
        with pytest.raises(services.ActionRefused) as info:
            services.change_file(connection=made, requester=bob, kind=kind, reason="mine now")
        assert info.value.code == "out_of_scope"
    assert services.allowed_changes(made, bob, None) == set()


def test_the_host_must_be_allowed_by_the_client_secrets_own_scope(user_factory, make_document):
    """Someone in two teams may not send team A's client secret to team B's host."""
    for name, prefix, host in (("team-a", "secret/canary/oauth", "auth.team-a.example"),
                               ("team-b", "secret/team-b/", "auth.example.com")):  # fmt: skip
        group = Group.objects.create(name=name)
        group.permissions.set(Group.objects.get(name=roles.REQUESTERS).permissions.all())
        Scope.objects.create(group=group, path_prefixes=prefix, allowed_hosts=host)
    both = user_factory("both-teams", groups=["team-a", "team-b"])
    document = make_document("OAUTH_CLIENT_CREDENTIALS")  # endpoint auth.example.com
    with pytest.raises(services.DocumentInvalid) as info:
        services.request_create(requester=both, document=document)
    assert "host_not_allowed" in {i.code for i in info.value.issues}
