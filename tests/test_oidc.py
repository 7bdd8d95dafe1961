"""Single sign-on against a real OpenID provider over HTTP (oidc-provider-mock in a thread), and
against a token server of our own for the ID tokens no honest provider issues."""

from __future__ import annotations

import json
import logging
import secrets
import sys
import time

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import Group, User
from django.contrib.sessions.models import Session
from django.core.signals import got_request_exception
from django.test import Client
from django.views.debug import ExceptionReporter

from connections_app import oidc, roles
from connections_app.models import AuditEvent, OidcIdentity
from connections_app.reporting import SecretSafeExceptionReporterFilter
from tests import faults, idp
from tests.test_settings import PROD_ENV, _manage

pytestmark = pytest.mark.django_db


@pytest.fixture
def client_secret():
    """The app's client secret: unique, so that finding it anywhere is a leak."""
    return f"CLIENTSECRET{secrets.token_hex(12)}"


@pytest.fixture
def provider(settings, client_secret):
    """oidc-provider-mock, running for this test, with single sign-on pointed at it."""
    with idp.Provider() as server:
        idp.configure(settings, server.endpoints(), client_secret=client_secret)
        yield server


@pytest.fixture
def token_server(settings, client_secret):
    """Our own token endpoint: the app trusts its key and gets whatever ID token a test signs."""
    with idp.TokenServer() as server:
        idp.configure(settings, server.endpoints(), client_secret=client_secret)
        yield server


ROLE_PAGE = {  # a page each role may see (and the others, auditors aside, not)
    roles.REQUESTERS: "/requests/mine/",
    roles.APPROVERS: "/approvals/",
    roles.AUDITORS: "/audit/",
}


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


def data(event: AuditEvent) -> dict:
    return json.loads(event.data)


def user_groups(user) -> set[str]:
    return set(user.groups.values_list("name", flat=True))


def signed_in_users() -> list[str]:
    """The user ids of every stored session (Django's database sessions)."""
    ids = []
    for session in Session.objects.all():
        user_id = session.get_decoded().get("_auth_user_id")
        if user_id:
            ids.append(user_id)
    return ids


def assert_refused(response, reason: str) -> None:
    """A plain page saying why, and no session: none kept, none stored, the cookie removed."""
    assert response.status_code == 403
    html = response.content.decode()
    assert f'data-reason="{reason}"' in html, html
    session = response.wsgi_request.session
    assert "_auth_user_id" not in session
    assert not Session.objects.filter(session_key=session.session_key).exists()
    cookie = response.cookies.get("sessionid")
    assert cookie is None or cookie.value == ""


# ---------------------------------------------------------------------------
# Signing in


@pytest.mark.parametrize("role", sorted(idp.ROLE_GROUPS))
def test_each_role_comes_from_the_providers_groups(provider, role):
    provider.set_user("sub-1", email="pat@example.com", groups=[idp.ROLE_GROUPS[role], "other"])
    client = Client()

    response = idp.sign_in(client, provider, "sub-1")

    assert response.status_code == 302 and response["Location"] == "/"
    user = OidcIdentity.objects.get(sub="sub-1").user
    assert user_groups(user) == {role}
    assert user.username == "pat@example.com" and not user.has_usable_password()
    assert client.get(ROLE_PAGE[role]).status_code == 200
    [event] = events(oidc.SIGN_IN)
    assert event.actor_username == "pat@example.com"
    assert data(event) == {
        "sub": "sub-1",
        "issuer": provider.url,
        "roles": [role],
        "new_user": True,
    }
    assert data(events(oidc.ROLES_CHANGED)[0]) == {
        "sub": "sub-1",
        "issuer": provider.url,
        "added": [role],
        "removed": [],
    }


def test_sign_in_returns_to_the_page_asked_for(provider):
    provider.set_user("sub-1", groups=["idp-audit"])
    response = idp.sign_in(Client(), provider, "sub-1", next_url="/audit/")
    assert response["Location"] == "/audit/"


def test_users_are_matched_on_sub_never_on_email(provider, user_factory):
    local = user_factory("pat@example.com", groups=[roles.APPROVERS])
    local.email = "pat@example.com"
    local.save()
    for sub in ("sub-a", "sub-b"):
        provider.set_user(sub, email="pat@example.com", groups=["idp-audit"])
        assert idp.sign_in(Client(), provider, sub).status_code == 302

    a = OidcIdentity.objects.get(sub="sub-a").user
    b = OidcIdentity.objects.get(sub="sub-b").user
    assert len({local.pk, a.pk, b.pk}) == 3  # the local account was not taken over
    assert user_groups(local) == {roles.APPROVERS}
    assert a.username.startswith("pat@example.com-") and b.username.startswith("pat@example.com-")

    # A new address at the provider is the same person: the user follows it.
    provider.set_user("sub-a", email="pat.new@example.com", groups=["idp-audit"])
    assert idp.sign_in(Client(), provider, "sub-a").status_code == 302
    a.refresh_from_db()
    assert a.email == "pat.new@example.com" and a.username.startswith("pat@example.com-")
    assert User.objects.count() == 3


def test_a_claim_change_demotes_an_approver(provider):
    provider.set_user("sub-1", email="ann@example.com", groups=["idp-approvers"])
    idp.sign_in(Client(), provider, "sub-1")
    user = OidcIdentity.objects.get(sub="sub-1").user
    assert user.has_perm(roles.CAN_APPROVE)

    provider.set_user("sub-1", email="ann@example.com", groups=["idp-platform-requesters"])
    client = Client()
    assert idp.sign_in(client, provider, "sub-1").status_code == 302

    user = User.objects.get(pk=user.pk)
    assert user_groups(user) == {roles.REQUESTERS}
    assert not user.has_perm(roles.CAN_APPROVE)
    assert client.get("/approvals/").status_code == 403
    change = events(oidc.ROLES_CHANGED)[-1]
    assert change.actor_username == "ann@example.com"
    assert data(change)["added"] == [roles.REQUESTERS]
    assert data(change)["removed"] == [roles.APPROVERS]
    assert len(events(oidc.SIGN_IN)) == 2


def test_groups_outside_the_map_stay_and_those_inside_follow_the_provider(provider):
    provider.set_user("sub-1", groups=["idp-platform-requesters"])
    idp.sign_in(Client(), provider, "sub-1")
    user = OidcIdentity.objects.get(sub="sub-1").user
    by_hand = Group.objects.create(name="approvers-prod-account")  # an admin's, not in the map
    user.groups.add(by_hand, Group.objects.get(name=roles.AUDITORS))  # auditors is in the map

    idp.sign_in(Client(), provider, "sub-1")

    assert user_groups(user) == {roles.REQUESTERS, "approvers-prod-account"}
    assert data(events(oidc.ROLES_CHANGED)[-1])["removed"] == [roles.AUDITORS]


def test_any_app_group_can_be_a_target(provider, settings):
    Group.objects.create(name="approvers-prod-account")
    settings.OIDC_GROUP_MAP = {**idp.GROUP_MAP, "idp-prod": ("approvers-prod-account",)}
    provider.set_user("sub-1", groups=["idp-prod"])

    assert idp.sign_in(Client(), provider, "sub-1").status_code == 302
    assert user_groups(OidcIdentity.objects.get(sub="sub-1").user) == {"approvers-prod-account"}


# ---------------------------------------------------------------------------
# Refusals of the person


def test_a_person_with_no_mapped_group_is_refused_with_no_session(provider):
    provider.set_user("sub-1", email="eve@example.com", groups=["idp-marketing"])
    client = Client()

    response = idp.sign_in(client, provider, "sub-1")

    assert_refused(response, "no_role")
    html = response.content.decode()
    assert "none of your groups there gives you a role" in html
    assert "Ask whoever manages your groups at Test IdP" in html
    assert "<code>idp-approvers</code>" in html
    assert "eve@example.com" in html
    assert "have been taken away" not in html  # there were none
    assert not User.objects.exists() and not OidcIdentity.objects.exists()
    assert signed_in_users() == []
    assert client.get("/").status_code == 302  # to the sign-in page
    [event] = events(oidc.REFUSED)
    assert event.outcome == "failure" and event.actor_username == "system"
    assert data(event) == {
        "reason": "no_role",
        "sub": "sub-1",
        "issuer": provider.url,
        "name": "eve@example.com",
    }
    assert not AccessAttempt.objects.exists()  # not a password guess: axes counts nothing


def test_a_person_removed_from_every_group_loses_the_roles_and_is_refused(provider):
    provider.set_user("sub-1", email="ann@example.com", groups=["idp-approvers"])
    idp.sign_in(Client(), provider, "sub-1")
    user = OidcIdentity.objects.get(sub="sub-1").user

    provider.set_user("sub-1", email="ann@example.com", groups=[])
    response = idp.sign_in(Client(), provider, "sub-1")

    assert_refused(response, "no_role")
    assert "The roles you had here have been taken away" in response.content.decode()
    assert user_groups(user) == set()
    assert data(events(oidc.ROLES_CHANGED)[-1])["removed"] == [roles.APPROVERS]
    refusal = events(oidc.REFUSED)[-1]
    assert refusal.actor_username == "ann@example.com"
    assert data(refusal)["reason"] == "no_role"


def test_a_deactivated_user_is_refused(provider):
    provider.set_user("sub-1", groups=["idp-audit"])
    idp.sign_in(Client(), provider, "sub-1")
    User.objects.filter(oidc_identity__sub="sub-1").update(is_active=False)

    assert_refused(idp.sign_in(Client(), provider, "sub-1"), "inactive")
    assert data(events(oidc.REFUSED)[-1])["reason"] == "inactive"


def test_a_deactivated_users_session_ends(provider):
    provider.set_user("sub-1", groups=["idp-audit"])
    client = Client()
    idp.sign_in(client, provider, "sub-1")
    assert client.get("/audit/").status_code == 200

    User.objects.filter(oidc_identity__sub="sub-1").update(is_active=False)

    assert client.get("/audit/").status_code == 302


def test_a_refusal_ends_the_session_that_was_there(provider, requester_client):
    provider.set_user("sub-1", groups=["idp-marketing"])
    assert_refused(idp.sign_in(requester_client, provider, "sub-1"), "no_role")
    assert requester_client.get("/requests/mine/").status_code == 302


def test_the_provider_saying_no_is_refused(provider):
    client = Client()
    start = client.get("/oidc/authenticate/")
    denied = idp.requests.post(
        start["Location"], data={"action": "deny"}, allow_redirects=False, timeout=5
    )
    response = client.get(idp.path_and_query(denied.headers["Location"]))

    assert_refused(response, "provider_error")
    assert "<code>access_denied</code>" in response.content.decode()
    assert data(events(oidc.REFUSED)[-1]) == {"reason": "provider_error", "error": "access_denied"}


def test_an_error_from_the_provider_is_kept_as_a_code_only(provider):
    client = Client()
    response = client.get("/oidc/callback/", {"error": "<b>Evil</b> text; DROP", "state": "x"})
    assert_refused(response, "provider_error")
    assert data(events(oidc.REFUSED)[-1]) == {"reason": "provider_error", "error": "bevilbtextdrop"}


def test_administrators_see_who_signs_in_with_the_provider(provider, admin_client_):
    provider.set_user("sub-1", groups=["idp-audit"])
    idp.sign_in(Client(), provider, "sub-1")
    page = admin_client_.get("/admin/connections_app/oidcidentity/")
    assert page.status_code == 200 and "sub-1" in page.content.decode()


# ---------------------------------------------------------------------------
# Refusals of the callback: state


def test_a_state_mismatch_is_refused_and_the_code_never_redeemed(provider, settings):
    with faults.FaultProxy(provider.url) as proxy:
        settings.OIDC_OP_TOKEN_ENDPOINT = f"{proxy.url}/oauth2/token"
        provider.set_user("sub-1", groups=["idp-approvers"])
        client = Client()
        start = client.get("/oidc/authenticate/")
        back = provider.authorize(start["Location"], "sub-1")

        response = client.get(idp.path_and_query(idp.with_query(back, state="not-the-state")))

        assert_refused(response, "state")
        assert "not started in this browser" in response.content.decode()
        assert proxy.seen == []  # the token endpoint was never asked
    assert not User.objects.exists()
    assert data(events(oidc.REFUSED)[-1]) == {"reason": "state"}


def test_a_callback_in_a_browser_that_started_no_sign_in_is_refused(provider):
    provider.set_user("sub-1", groups=["idp-approvers"])
    start = Client().get("/oidc/authenticate/")  # another browser started it
    back = provider.authorize(start["Location"], "sub-1")

    assert_refused(Client().get(idp.path_and_query(back)), "state")
    assert not User.objects.exists()


def test_a_callback_used_twice_is_refused_the_second_time(provider):
    provider.set_user("sub-1", groups=["idp-approvers"])
    client = Client()
    start = client.get("/oidc/authenticate/")
    back = idp.path_and_query(provider.authorize(start["Location"], "sub-1"))
    assert client.get(back).status_code == 302

    assert_refused(client.get(back), "state")


# ---------------------------------------------------------------------------
# Refusals of the ID token


def test_an_id_token_forged_with_the_providers_key_id_is_refused(provider, settings):
    """Signed by a key the app does not trust, under the real provider's key id, with every
    claim right: the signature alone is wrong."""
    with idp.TokenServer(issuer=provider.url) as forger:
        settings.OIDC_OP_TOKEN_ENDPOINT = f"{forger.url}/token"
        settings.OIDC_OP_USER_ENDPOINT = f"{forger.url}/userinfo"
        forger.userinfo = {"sub": "sub-1", "groups": ["idp-approvers"]}
        client = Client()
        state, nonce = idp.start_callback(client)
        claims = {**forger.claims("sub-1", nonce), "groups": ["idp-approvers"]}
        forger.id_token = forger.sign(claims, kid=provider.kid())

        response = client.get("/oidc/callback/", {"code": "a-code", "state": state})

        assert_refused(response, "invalid_token")
        assert forger.seen == [("POST", "/token")]  # refused before any claim was read
    assert not User.objects.exists()
    refusal = events(oidc.REFUSED)[-1]
    assert data(refusal) == {"reason": "invalid_token", "detail": "InvalidSignatureError"}
    assert forger.id_token not in refusal.data and forger.id_token not in response.content.decode()


def test_an_expired_id_token_from_the_provider_is_refused(settings, client_secret):
    """The real provider, issuing tokens that expired ten minutes before they were issued."""
    from datetime import timedelta

    with idp.Provider(access_token_max_age=timedelta(minutes=-10)) as provider:
        idp.configure(settings, provider.endpoints(), client_secret=client_secret)
        provider.set_user("sub-1", groups=["idp-approvers"])

        response = idp.sign_in(Client(), provider, "sub-1")

    assert_refused(response, "invalid_token")
    assert data(events(oidc.REFUSED)[-1])["detail"] == "ExpiredSignatureError"
    assert not User.objects.exists()


@pytest.mark.parametrize(
    ("case", "detail"),
    [
        ("another key", "InvalidSignatureError"),
        ("expired", "ExpiredSignatureError"),
        ("issued in the future", "ImmatureSignatureError"),
        ("for another client", "InvalidAudienceError"),
        ("for several clients, authorized for another", "azp"),
        ("by another issuer", "InvalidIssuerError"),
        ("for another sign-in", "SuspiciousOperation"),  # the nonce
        ("without expiry", "exp or iat missing"),
        ("unsigned", "SuspiciousOperation"),  # no published key takes "none"
        ("HMAC with the public key", "SuspiciousOperation"),
        ("userinfo about someone else", "userinfo is about another subject"),
    ],
)
def test_an_id_token_no_honest_provider_issues_is_refused(token_server, case, detail):
    client = Client()
    state, nonce = idp.start_callback(client)
    now = int(time.time())
    changes, sign = {}, {}
    if case == "another key":
        sign = {"key": idp.new_key()}
    elif case == "expired":
        changes = {"iat": now - 1200, "exp": now - 600}
    elif case == "issued in the future":
        changes = {"nbf": now + 600}
    elif case == "for another client":
        changes = {"aud": "another-app"}
    elif case == "for several clients, authorized for another":
        changes = {"aud": [idp.CLIENT_ID, "another-app"], "azp": "another-app"}
    elif case == "by another issuer":
        changes = {"iss": "https://evil.test"}
    elif case == "for another sign-in":
        changes = {"nonce": "another-nonce"}
    elif case == "without expiry":
        changes = {"exp": None}
    elif case == "unsigned":
        sign = {"alg": "none"}
    elif case == "HMAC with the public key":
        token = idp.hmac_with_public_key(token_server, token_server.claims("sub-1", nonce))
    if case == "userinfo about someone else":
        token_server.userinfo = {"sub": "sub-2", "groups": ["idp-approvers"]}
    else:
        token_server.userinfo = {"sub": "sub-1", "groups": ["idp-approvers"]}
    if case != "HMAC with the public key":
        claims = {**token_server.claims("sub-1", nonce), **changes}
        claims = {key: value for key, value in claims.items() if value is not None}
        token = token_server.sign(claims, **sign)
    token_server.id_token = token

    response = client.get("/oidc/callback/", {"code": "a-code", "state": state})

    assert_refused(response, "invalid_token")
    assert not User.objects.exists()
    refusal = events(oidc.REFUSED)[-1]
    assert data(refusal) == {"reason": "invalid_token", "detail": detail}


def test_a_well_made_id_token_from_the_token_server_signs_in(token_server):
    """The control for the refusals above: the same server and key, every claim right."""
    client = Client()
    state, nonce = idp.start_callback(client)
    token_server.id_token = token_server.sign(token_server.claims("sub-1", nonce))
    token_server.userinfo = {"sub": "sub-1", "groups": ["idp-approvers"]}

    response = client.get("/oidc/callback/", {"code": "a-code", "state": state})

    assert response.status_code == 302
    assert user_groups(OidcIdentity.objects.get(sub="sub-1").user) == {roles.APPROVERS}
    [form] = token_server.token_forms
    assert form["code_verifier"]  # PKCE
    assert form["redirect_uri"] == ["http://testserver/oidc/callback/"]


# ---------------------------------------------------------------------------
# Secrets


def test_no_token_code_or_client_secret_reaches_a_log_page_row_or_event(
    token_server, client_secret, caplog
):
    caplog.set_level(logging.DEBUG)
    client = Client()
    state, nonce = idp.start_callback(client)
    token_server.id_token = token_server.sign(token_server.claims("sub-1", nonce))
    token_server.userinfo = {"sub": "sub-1", "groups": ["idp-approvers"]}
    code = f"CODE{secrets.token_hex(12)}"

    pages = [client.get("/oidc/callback/", {"code": code, "state": state})]
    pages += [client.get("/approvals/"), client.get("/audit/")]
    # and a refusal, with a token that is turned away
    other = Client()
    state, nonce = idp.start_callback(other)
    token_server.id_token = token_server.sign(
        token_server.claims("sub-1", nonce), key=idp.new_key()
    )
    pages.append(other.get("/oidc/callback/", {"code": code, "state": state}))

    assert token_server.token_forms[0]["client_secret"] == [client_secret]  # it was used
    texts = [caplog.text, *(page.content.decode() for page in pages)]
    texts += [
        json.dumps(list(model.objects.values()), default=str)
        for model in (AuditEvent, AccessAttempt, OidcIdentity, User)
    ]
    texts += [json.dumps(list(Session.objects.values_list("session_data", flat=True)))]
    texts += [json.dumps(s.get_decoded()) for s in Session.objects.all()]
    for secret in (client_secret, token_server.access_token, code, token_server.id_token):
        for text in texts:
            assert secret not in text


def test_the_client_secret_is_hidden_from_error_reports(settings, client_secret):
    settings.OIDC_RP_CLIENT_SECRET = client_secret
    safe = SecretSafeExceptionReporterFilter().get_safe_settings()
    assert safe["OIDC_RP_CLIENT_SECRET"] == SecretSafeExceptionReporterFilter.cleansed_substitute
    assert safe["OIDC_RP_CLIENT_ID"] == settings.OIDC_RP_CLIENT_ID  # not a secret


def test_an_error_report_from_inside_the_callback_shows_no_secret(token_server, client_secret):
    """A provider answering nonsense is a server error, mailed to ADMINS: its report hides
    the values of the frames that hold the client secret, the PKCE verifier and the tokens."""
    token_server.token_response = list  # a JSON list where an object belongs
    client = Client(raise_request_exception=False)
    state, _ = idp.start_callback(client)
    verifier = client.session["oidc_states"][state]["code_verifier"]
    caught = []

    def keep(sender, request, **kwargs):
        caught.append((request, sys.exc_info()))

    got_request_exception.connect(keep)
    try:
        response = client.get("/oidc/callback/", {"code": "a-code", "state": state})
    finally:
        got_request_exception.disconnect(keep)

    assert response.status_code == 500
    [(request, exc_info)] = caught
    reporter = ExceptionReporter(request, *exc_info)
    report = reporter.get_traceback_text() + reporter.get_traceback_html()
    assert "token_payload" in report  # mozilla-django-oidc's frame is there; its values are not
    assert client_secret not in report
    assert verifier not in report
    assert token_server.access_token not in report


# ---------------------------------------------------------------------------
# Session re-checks (mozilla-django-oidc's SessionRefresh)


def test_a_session_is_re_checked_with_the_provider_on_schedule(provider):
    provider.set_user("sub-1", groups=["idp-approvers"])
    client = Client()
    idp.sign_in(client, provider, "sub-1")
    assert client.get("/approvals/").status_code == 200

    session = client.session
    session["oidc_id_token_expiration"] = time.time() - 1
    session.save()
    response = client.get("/approvals/")

    assert response.status_code == 302
    assert response["Location"].startswith(f"{provider.url}/oauth2/authorize?")
    assert idp.query(response["Location"])["prompt"] == "none"
    # The provider's session is over (this one keeps none): it answers login_required, and
    # the app's session ends with it.
    answer = idp.requests.get(response["Location"], allow_redirects=False, timeout=5)
    back = client.get(idp.path_and_query(answer.headers["Location"]))
    assert back.status_code == 302 and back["Location"] == "/accounts/login/"
    assert client.get("/approvals/").status_code == 302
    assert data(events(oidc.REFUSED)[-1]) == {"reason": "provider_error", "error": "login_required"}


def test_a_re_check_applies_the_providers_groups_again(provider):
    provider.set_user("sub-1", groups=["idp-approvers"])
    client = Client()
    idp.sign_in(client, provider, "sub-1")

    provider.set_user("sub-1", groups=["idp-audit"])
    session = client.session
    session["oidc_id_token_expiration"] = time.time() - 1
    session.save()
    recheck = client.get("/approvals/")["Location"]
    # A provider whose own session is alive answers at once (this one asks; prompt dropped).
    back = provider.authorize(idp.with_query(recheck, prompt=None), "sub-1")
    response = client.get(idp.path_and_query(back))

    assert response.status_code == 302 and response["Location"] == "/approvals/"
    assert client.get("/approvals/").status_code == 403
    assert client.get("/audit/").status_code == 200
    change = data(events(oidc.ROLES_CHANGED)[-1])
    assert change["added"] == [roles.AUDITORS] and change["removed"] == [roles.APPROVERS]
    assert len(events(oidc.SIGN_IN)) == 1  # a re-check is not a new sign-in


def test_password_sessions_are_not_sent_to_the_provider(provider, approver_client):
    assert approver_client.get("/approvals/").status_code == 200


# ---------------------------------------------------------------------------
# Off, and the sign-in page


def test_single_sign_on_is_off_without_a_client_id(settings):
    settings.OIDC_RP_CLIENT_ID = ""
    client = Client()
    assert client.get("/oidc/authenticate/").status_code == 404
    assert client.get("/oidc/callback/", {"code": "x", "state": "y"}).status_code == 404
    assert "Sign in with" not in client.get("/accounts/login/").content.decode()


def test_the_sign_in_page_offers_the_provider_above_the_password_form(provider):
    html = Client().get("/accounts/login/?next=/audit/").content.decode()
    link = html.index("Sign in with Test IdP")
    assert link < html.index('name="password"')
    assert 'href="/oidc/authenticate/?next=/audit/"' in html


# ---------------------------------------------------------------------------
# The group map


def test_roles_for_maps_only_the_groups_in_the_map(settings):
    settings.OIDC_GROUP_MAP = {**idp.GROUP_MAP, "idp-leads": ("connection-approvers", "auditors")}
    settings.OIDC_GROUPS_CLAIM = "groups"
    assert oidc.roles_for({"groups": ["idp-approvers", "idp-sales"]}) == {roles.APPROVERS}
    assert oidc.roles_for({"groups": ["idp-leads"]}) == {roles.APPROVERS, roles.AUDITORS}
    assert oidc.roles_for({"groups": "idp-audit"}) == {roles.AUDITORS}  # one group, as a string
    assert oidc.roles_for({"groups": []}) == set()
    assert oidc.roles_for({}) == set()
    assert oidc.roles_for({"groups": {"idp-audit": True}}) == set()
    assert oidc.roles_for({"groups": [None, 3, "IDP-AUDIT"]}) == set()  # exact names only


def test_the_groups_claim_name_is_a_setting(settings):
    settings.OIDC_GROUP_MAP = idp.GROUP_MAP
    settings.OIDC_GROUPS_CLAIM = "roles"
    assert oidc.roles_for({"roles": ["idp-audit"], "groups": ["idp-approvers"]}) == {roles.AUDITORS}


def test_apply_roles_touches_only_the_groups_the_map_gives(settings, user_factory):
    settings.OIDC_GROUP_MAP = idp.GROUP_MAP
    Group.objects.create(name="by-hand")
    user = user_factory(groups=[roles.APPROVERS, "by-hand"])

    added, removed = oidc.apply_roles(user, {roles.REQUESTERS, roles.AUDITORS})

    assert (added, removed) == ([roles.AUDITORS, roles.REQUESTERS], [roles.APPROVERS])
    assert user_groups(user) == {roles.REQUESTERS, roles.AUDITORS, "by-hand"}
    assert oidc.apply_roles(user, {roles.REQUESTERS, roles.AUDITORS}) == ([], [])


def test_a_mapped_group_that_does_not_exist_gives_nothing(settings, user_factory, caplog):
    settings.OIDC_GROUP_MAP = {"idp-new": ("approvers-not-made-yet",)}
    user = user_factory()
    assert oidc.apply_roles(user, {"approvers-not-made-yet"}) == ([], [])
    assert not Group.objects.filter(name="approvers-not-made-yet").exists()
    assert "approvers-not-made-yet" in caplog.text


def test_single_sign_on_works_with_local_login_off(provider, settings):
    settings.LOCAL_LOGIN = False
    provider.set_user("sub-1", groups=["idp-approvers"])
    client = Client()
    assert idp.sign_in(client, provider, "sub-1").status_code == 302
    assert client.get("/approvals/").status_code == 200


# ---------------------------------------------------------------------------
# Settings from the environment (a fresh process each)

OIDC_ENV = {
    "OIDC_RP_CLIENT_ID": "dashboard",
    "OIDC_RP_CLIENT_SECRET": "s" * 40,
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "https://idp.example.com/authorize",
    "OIDC_OP_TOKEN_ENDPOINT": "https://idp.example.com/token",
    "OIDC_OP_USER_ENDPOINT": "https://idp.example.com/userinfo",
    "OIDC_OP_JWKS_ENDPOINT": "https://idp.example.com/jwks",
    "OIDC_GROUP_MAP": "idp-platform-requesters=connection-requesters,"
    "idp-approvers=connection-approvers,idp-audit=auditors",
}


def _group_map_of(value: str):
    done = _manage(
        "shell",
        "-c",
        "import json; from django.conf import settings as s; "
        "print('MAP', json.dumps(s.OIDC_GROUP_MAP, sort_keys=True))",
        env={**PROD_ENV, **OIDC_ENV, "OIDC_GROUP_MAP": value},
    )
    if done.returncode:
        return done
    return json.loads(done.stdout.split("MAP", 1)[1])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            OIDC_ENV["OIDC_GROUP_MAP"],
            {
                "idp-approvers": ["connection-approvers"],
                "idp-audit": ["auditors"],
                "idp-platform-requesters": ["connection-requesters"],
            },
        ),
        (  # one provider group, two app groups; spaces around the names
            " idp-leads = connection-approvers , idp-leads=auditors ",
            {"idp-leads": ["connection-approvers", "auditors"]},
        ),
        (  # JSON, for names with commas (directory DNs) or "="
            '{"CN=ops,OU=groups": ["auditors", "connection-approvers"], "a=b": "auditors"}',
            {"CN=ops,OU=groups": ["auditors", "connection-approvers"], "a=b": ["auditors"]},
        ),
    ],
)
def test_the_group_map_comes_from_the_environment(value, expected):
    assert _group_map_of(value) == expected


@pytest.mark.parametrize(
    "value", ["idp-approvers", "=auditors", "idp-audit=", '{"idp-audit": 3}', "{not json", "[]"]
)
def test_a_malformed_group_map_stops_the_start(value):
    done = _group_map_of(value)
    assert done.returncode != 0
    assert "OIDC_GROUP_MAP" in done.stderr


def test_single_sign_on_needs_its_endpoints_and_map():
    done = _manage("check", env={**PROD_ENV, "OIDC_RP_CLIENT_ID": "dashboard"})
    assert done.returncode != 0
    for name in ("OIDC_RP_CLIENT_SECRET", "OIDC_OP_TOKEN_ENDPOINT", "OIDC_GROUP_MAP"):
        assert name in done.stderr


def test_production_with_single_sign_on_and_no_local_login_passes_the_deploy_check():
    env = {
        **PROD_ENV,
        **OIDC_ENV,
        "LOCAL_LOGIN": "False",
        "OIDC_OP_ISSUER": "https://idp.example.com",
    }
    done = _manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
