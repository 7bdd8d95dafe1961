"""Single sign-on in Chromium: the app's sign-in page, the provider's own page (oidc-provider-mock
over HTTP), and back, for each role; a demotion by a claim change; a refusal."""

from __future__ import annotations

import json
import re
import secrets

import pytest
from playwright.sync_api import expect

from connections_app import oidc, roles
from connections_app.models import AuditEvent
from tests import idp

pytestmark = pytest.mark.browser

MENU = {  # what each role finds in the menu, and what it must not
    roles.REQUESTERS: ("New connection", "Approval queue"),
    roles.APPROVERS: ("Approval queue", "New connection"),
    roles.AUDITORS: ("Audit log", "Approval queue"),
}


@pytest.fixture
def provider(settings, transactional_db):
    with idp.Provider() as server:
        secret = f"CLIENTSECRET{secrets.token_hex(8)}"
        idp.configure(settings, server.endpoints(), client_secret=secret)
        yield server


@pytest.fixture
def sso_page(page):
    """The page, kept on this machine (the provider's page asks for a stylesheet from a CDN),
    with every Content-Security-Policy violation it reports collected."""
    page.context.route(
        re.compile(r"^https?://(?!(127\.0\.0\.1|localhost)[:/])"), lambda route: route.abort()
    )
    page.csp_violations = []
    page.on(
        "console",
        lambda message: (
            page.csp_violations.append(message.text)
            if "Content Security Policy" in message.text
            else None
        ),
    )
    return page


def sign_in_with_provider(page, sub: str):
    """As a person would: the app's button, then the provider's page; returns the callback's
    response."""
    page.goto("/accounts/login/")
    page.get_by_role("link", name="Sign in with Test IdP").click()
    page.get_by_placeholder("sub").fill(sub)
    with page.expect_response(lambda response: "/oidc/callback/" in response.url) as callback:
        page.get_by_role("button", name="Authorize").click()
    return callback.value


def menu(page):
    return page.get_by_role("navigation", name="Main")


@pytest.mark.parametrize("role", sorted(MENU))
def test_each_role_signs_in_with_the_provider(sso_page, provider, role):
    provider.set_user(f"sub-{role}", email=f"{role}@example.com", groups=[idp.ROLE_GROUPS[role]])

    sign_in_with_provider(sso_page, f"sub-{role}")

    expect(sso_page.get_by_test_id("username")).to_have_text(f"{role}@example.com")
    shown, hidden = MENU[role]
    expect(menu(sso_page).get_by_role("link", name=shown)).to_be_visible()
    expect(menu(sso_page).get_by_role("link", name=hidden)).to_have_count(0)
    assert sso_page.csp_violations == []


def test_a_claim_change_at_the_provider_demotes_an_approver(sso_page, provider):
    provider.set_user("sub-ann", email="ann@example.com", groups=["idp-approvers"])
    sign_in_with_provider(sso_page, "sub-ann")
    expect(menu(sso_page).get_by_role("link", name="Approval queue")).to_be_visible()
    sso_page.get_by_role("button", name="Sign out").click()

    provider.set_user("sub-ann", email="ann@example.com", groups=["idp-platform-requesters"])
    sign_in_with_provider(sso_page, "sub-ann")

    expect(sso_page.get_by_test_id("username")).to_have_text("ann@example.com")
    expect(menu(sso_page).get_by_role("link", name="New connection")).to_be_visible()
    expect(menu(sso_page).get_by_role("link", name="Approval queue")).to_have_count(0)
    assert sso_page.goto("/approvals/").status == 403
    change = AuditEvent.objects.filter(action=oidc.ROLES_CHANGED).order_by("-id").first()
    assert change.actor_username == "ann@example.com"
    assert json.loads(change.data)["removed"] == [roles.APPROVERS]


def test_a_person_with_no_mapped_group_is_told_why_and_not_signed_in(sso_page, provider):
    provider.set_user("sub-eve", email="eve@example.com", groups=["idp-marketing"])

    callback = sign_in_with_provider(sso_page, "sub-eve")

    assert callback.status == 403
    refusal = sso_page.get_by_test_id("oidc-refused")
    expect(refusal).to_contain_text("none of your groups there gives you a role")
    expect(refusal).to_contain_text("Ask whoever manages your groups at Test IdP")
    expect(sso_page.get_by_test_id("username")).to_have_count(0)
    assert not [c for c in sso_page.context.cookies() if c["name"] == "sessionid" and c["value"]]
    sso_page.goto("/")
    expect(sso_page).to_have_url(re.compile(r"/accounts/login/"))
    assert sso_page.csp_violations == []
