"""Every page and form state, for every role, in Chromium: axe-core finds no violation of any
impact and no "needs review" result of critical impact; no page scrolls sideways at 390 px or at
320 px (1280 px at 400 % zoom, WCAG 1.4.10); and a person with only a keyboard, on a 390 px
screen, files a request, gets past a refused Save through the error summary, and approves.

Screenshots of the main pages at 1280 and 390 px are written to test-artifacts/screenshots/
(git-ignored) for a reviewer to look at."""

from __future__ import annotations

import re
import secrets
from datetime import timedelta
from pathlib import Path

import boto3
import pytest
from axe_playwright_python.sync_playwright import Axe
from django.utils import timezone
from playwright.sync_api import expect

from connections_app import services
from connections_app.models import AuditEvent, Connection, ConnectionRequest, Target
from tests import idp
from tests.browser.conftest import PASSWORD, TIMEOUT_MS, sign_in

pytestmark = [pytest.mark.usefixtures("servers"), pytest.mark.browser]
R = ConnectionRequest
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
WIDE, PHONE, ZOOMED = 1280, 390, 320  # 320 CSS px: a 1280 px window at 400 % zoom
# Every rule axe runs by default (WCAG 2.0-2.2 A and AA, best practices), and the WCAG 2.2 target
# size rule it leaves off by default.
AXE_OPTIONS = {
    "resultTypes": ["violations", "incomplete"],
    "rules": {"target-size": {"enabled": True}},
}
_axe = Axe()


# ---------------------------------------------------------------------------
# The scene: one of each kind of page state


@pytest.fixture
def scene(requester, approver, auditor, admin_user, make_document, unique_name):
    u = unique_name
    made = services.request_create(requester=requester, document=make_document(name=f"{u}-made"))
    made = services.request_approve(request=made, approver=approver, seen_hash=made.document_hash)
    assert made.status == R.CREATED, made.error_message
    managed = made.connection
    update = services.change_file(
        connection=managed,
        requester=requester,
        kind="update",
        document=make_document(name=managed.name, Description="second endpoint"),
    )
    pending = services.request_create(
        requester=requester, document=make_document("OAUTH_CLIENT_CREDENTIALS", name=f"{u}-new")
    )
    failed = services.request_create(
        requester=requester, document=make_document("BASIC", name=f"{u}-failed")
    )
    R.objects.filter(pk=failed.pk).update(
        status=R.FAILED,
        submit_attempts=1,
        error_code="InternalException",
        error_message="AWS answered InternalException: try again later.",
    )
    rejected = services.request_create(requester=requester, document=make_document(name=f"{u}-no"))
    services.request_reject(request=rejected, approver=approver, reason="wrong partner account")
    cancelled = services.request_create(
        requester=requester, document=make_document(name=f"{u}-cancelled")
    )
    services.request_cancel(request=cancelled, actor=requester)
    expired = services.request_create(
        requester=requester, document=make_document(name=f"{u}-expired")
    )
    R.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    services.requests_expire_due()
    target = Target.default()

    def found(name, **fields):
        return Connection.objects.create(
            target=target,
            name=f"{u}-{name}",
            arn=f"arn:aws:events:us-east-1:123456789012:connection/{u}-{name}/{name}",
            authorization_type="API_KEY",
            state=fields.pop("state", "AUTHORIZED"),
            document=fields.pop("document", {}),
            **fields,
        )

    unmanaged = found("unmanaged", managed=False)
    drifted = found(
        "drifted",
        document=managed.document,
        drift=[
            {
                "path": "AuthParameters.ApiKeyAuthParameters.ApiKeyValue",
                "vault": "secret/canary/apikey#api_key",
                "pushed": 1,
                "current": 2,
                "why": "Vault holds a newer version",
            }
        ],
    )
    deauthorized = found(
        "deauthorized",
        document=managed.document,
        state="DEAUTHORIZED",
        deauthorized_by_aws=True,
        state_reason="The partner answered 401 Unauthorized to the token request.",
    )
    event = AuditEvent.objects.filter(request_id=update.pk).order_by("id").first()
    return {
        "made": made,
        "managed": managed,
        "update": update,
        "pending": pending,
        "failed": failed,
        "rejected": rejected,
        "cancelled": cancelled,
        "expired": expired,
        "unmanaged": unmanaged,
        "drifted": drifted,
        "deauthorized": deauthorized,
        "event": event,
        "users": {
            "requester": requester,
            "approver": approver,
            "auditor": auditor,
            "admin": admin_user,
        },
    }


def _connection_pages(s) -> list[tuple[str, str]]:
    return [
        ("connections", "/connections/"),
        ("connection-managed", f"/connections/{s['managed'].pk}/"),
        ("connection-unmanaged", f"/connections/{s['unmanaged'].pk}/"),
        ("connection-drifted", f"/connections/{s['drifted'].pk}/"),
        ("connection-deauthorized", f"/connections/{s['deauthorized'].pk}/"),
    ]


def _audit_pages(s) -> list[tuple[str, str]]:
    ref = "secret/canary/apikey#api_key"
    return [
        ("audit", "/audit/"),
        ("audit-filtered", f"/audit/?connection={s['managed'].name}&range=24h"),
        ("audit-prefix", "/audit/?action=connection.request.*"),
        ("audit-nothing", "/audit/?connection=nothing-like-it"),
        ("audit-errors", "/audit/?since=2026-02-30&outcome=won"),
        ("audit-event", f"/audit/{s['event'].id}/"),
        ("secret-uses", "/audit/secrets/"),
        ("secret-uses-reference", f"/audit/secrets/?q={ref.replace('#', '%23')}"),
        ("secret-uses-prefix", "/audit/secrets/?q=secret/canary/"),
        ("secret-uses-error", "/audit/secrets/?q=not+a+reference"),
    ]


def _pages(role: str, s) -> list[tuple[str, str]]:
    """(name, address) of every page the role reaches, in the states the scene holds."""
    req = "/requests/{}/"
    common = [
        ("home", "/"),
        *_connection_pages(s),
        ("notifications", "/notifications/"),
        ("not-found", "/requests/999999999/"),
    ]
    # The requester's and the approvers' view of requests that are over.
    closed = [
        (f"request-{key}", req.format(s[key].pk)) for key in ("rejected", "cancelled", "expired")
    ]
    closed.append(("request-created", req.format(s["made"].pk)))
    if role == "requester":
        return [
            *common,
            ("new", "/requests/new/"),
            ("mine", "/requests/mine/"),
            ("request-pending", req.format(s["pending"].pk)),
            ("request-update-pending", req.format(s["update"].pk)),
            ("request-failed", req.format(s["failed"].pk)),
            *closed,
            ("edit-failed", f"/requests/{s['failed'].pk}/edit/"),
            ("file-again", f"/requests/new/?from={s['rejected'].pk}"),
            ("cancel", f"/requests/{s['pending'].pk}/cancel/"),
            ("update", f"/connections/{s['drifted'].pk}/update/"),
            ("rotate", f"/connections/{s['drifted'].pk}/rotate/"),
            ("deauthorize", f"/connections/{s['drifted'].pk}/deauthorize/"),
            ("delete", f"/connections/{s['drifted'].pk}/delete/"),
            ("reauthorize", f"/connections/{s['deauthorized'].pk}/reauthorize/"),
            ("forbidden", "/approvals/"),
            # Refused (nobody manages it yet): back on the connection, with the message.
            ("refused-message", f"/connections/{s['unmanaged'].pk}/rotate/"),
        ]
    if role == "approver":
        return [
            *common,
            ("queue", "/approvals/"),
            ("request-review", req.format(s["pending"].pk)),
            ("request-review-update", req.format(s["update"].pk)),
            ("request-failed-retry", req.format(s["failed"].pk)),
            *closed,
            ("adopt", f"/connections/{s['unmanaged'].pk}/adopt/"),
            *_audit_pages(s),
            ("forbidden", "/requests/new/"),
        ]
    if role == "auditor":
        return [
            *common,
            *_audit_pages(s),
            ("request-as-auditor", req.format(s["update"].pk)),
            ("forbidden", "/approvals/"),
        ]
    return [  # admin: every permission, and the status page
        *common,
        ("status", "/status/"),
        ("queue", "/approvals/"),
        ("new", "/requests/new/"),
        ("request-review", req.format(s["pending"].pk)),
        ("audit", "/audit/"),
        ("secret-uses", "/audit/secrets/"),
    ]


# Pages whose screenshots a reviewer looks at first.
MAIN = {"home", "new", "new-errors", "request-review", "request-review-update", "queue",
        "connections", "connection-managed", "connection-deauthorized", "audit", "audit-event",
        "secret-uses-reference", "status", "mine", "request-failed", "login-error",
        "notifications", "password-change-errors", "oidc-refused-no-role"}  # fmt: skip


# ---------------------------------------------------------------------------
# Checking one page state


class Findings:
    """Every problem of a walk, reported together at its end."""

    def __init__(self):
        self.problems: list[str] = []
        self.checked: list[str] = []

    def check(self, page, role: str, name: str, *, shoot: bool | None = None) -> None:
        """axe on the page as it is now at 1280 px, then its width at 390 and 320 px."""
        label = f"{role}/{name}"
        self.checked.append(label)
        page.set_viewport_size({"width": WIDE, "height": 900})
        results = _axe.run(page, options=AXE_OPTIONS).response
        for v in results["violations"]:
            targets = [n["target"] for n in v["nodes"]][:3]
            self.problems.append(f"{label}: axe {v['id']} ({v['impact']}) {v['help']} {targets}")
        for v in results["incomplete"]:
            if v["impact"] == "critical":
                targets = [n["target"] for n in v["nodes"]][:3]
                self.problems.append(f"{label}: axe needs review, critical: {v['id']} {targets}")
        shoot = name in MAIN if shoot is None else shoot
        if shoot:
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=SHOTS / f"{role}-{name}-{WIDE}.png", full_page=True)
        for width in (PHONE, ZOOMED):
            page.set_viewport_size({"width": width, "height": 800})
            scrolled = page.evaluate("document.documentElement.scrollWidth")
            if scrolled > width:
                wide = page.evaluate(_WIDEST)
                self.problems.append(f"{label}: {scrolled} px wide at {width} px ({wide})")
            if shoot and width == PHONE:
                page.screenshot(path=SHOTS / f"{role}-{name}-{PHONE}.png", full_page=True)
        page.set_viewport_size({"width": WIDE, "height": 900})

    def assert_none(self, role: str) -> None:
        """Fail with every problem; either way, list what was checked beside the screenshots."""
        SHOTS.mkdir(parents=True, exist_ok=True)
        report = SHOTS.parent / f"accessibility-{role}.txt"
        lines = [f"{len(self.checked)} page states checked (axe at {WIDE} px, width at "
                 f"{PHONE} and {ZOOMED} px): {len(self.problems)} problems", *self.checked,
                 "", *self.problems]  # fmt: skip
        report.write_text("\n".join(lines) + "\n")
        assert not self.problems, "\n".join(self.problems)


# What sticks out of the page, to say where to look.
_WIDEST = """() => {
  const width = document.documentElement.clientWidth;
  return [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > width + 1 && !e.closest('.table-wrap'))
    .slice(0, 3).map(e => e.tagName.toLowerCase() + (e.className ? '.' + e.className : ''))
    .join(', ');
}"""


def _open(browser, live_server, user, *, width: int = WIDE):
    context = browser.new_context(
        base_url=live_server.url, viewport={"width": width, "height": 900}
    )
    context.set_default_timeout(TIMEOUT_MS)
    return context, sign_in(context.new_page(), user)


def _visit(page, path: str, status: int | None = None) -> None:
    response = page.goto(path)
    if status is not None:
        assert response.status == status, (path, response.status)


@pytest.mark.parametrize("role", ["requester", "approver", "auditor", "admin"])
def test_every_page_passes_axe_and_fits_a_phone(browser, live_server, scene, role):
    findings = Findings()
    context = browser.new_context(base_url=live_server.url)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    if role == "requester":  # the sign-in page, blank and refused, once
        _visit(page, "/accounts/login/")
        findings.check(page, "anonymous", "login", shoot=True)
        page.get_by_label("Username").fill("nobody-here")
        page.get_by_label("Password").fill("not the password")
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator(".error-summary")).to_be_focused()
        findings.check(page, "anonymous", "login-error")
    context.close()

    context, page = _open(browser, live_server, scene["users"][role])
    for name, path in _pages(role, scene):
        _visit(page, path)
        findings.check(page, role, name)
    if role == "requester":
        _form_states(page, findings, scene)
        _change_form_states(page, findings, scene)
    if role == "approver":
        _decision_states(page, findings, scene)
    _password_states(page, findings, role)
    if role == "requester":  # signed out: the same page for everyone
        _logged_out_state(page, findings)
    context.close()
    findings.assert_none(role)
    assert len(findings.checked) >= 12


def _form_states(page, findings: Findings, scene) -> None:
    """The new-connection form with errors, with Check results, and with rows."""
    page.goto("/requests/new/")
    page.get_by_label("Name", exact=True).fill("bad name!")
    page.locator('input[name="authorization_type"][value="OAUTH_CLIENT_CREDENTIALS"]').check()
    page.get_by_label("Client secret", exact=True).fill("typed-a-value-by-mistake")
    page.get_by_label("Authorization endpoint", exact=True).fill("http://auth.example.com/token")
    page.locator("details[data-section=oauth_http] summary").click()
    page.get_by_role("button", name="Add header").first.click()
    page.get_by_role("button", name="Save request").click()
    expect(page.locator(".error-summary")).to_be_focused()
    expect(page).to_have_title(re.compile("^Error: "))
    findings.check(page, "requester", "new-errors")

    page.goto("/requests/new/")
    page.get_by_label("Name", exact=True).fill(f"{scene['managed'].name}-checked")
    page.locator('input[name="authorization_type"][value="API_KEY"]').check()
    page.get_by_label("API key value", exact=True).fill("secret/canary/apikey#api_key")
    page.locator("details[data-section=inv_http] summary").click()
    page.get_by_role("button", name="Add header").click()
    row = page.locator('fieldset.params[data-prefix="inv_header"] tr.param-row').first
    row.locator('input[name$="-key"]').fill("X-Token")
    row.locator('input[name$="-value"]').fill("secret/canary/nope#x")
    row.locator('input[name$="-is_secret"]').check()
    page.get_by_role("button", name="Check all references").click()  # the server round trip
    expect(page.locator(".check-result .ok").first).to_contain_text("Resolves")
    findings.check(page, "requester", "new-checked", shoot=True)


def _change_form_states(page, findings: Findings, scene) -> None:
    drifted = scene["drifted"].pk
    page.goto(f"/connections/{drifted}/deauthorize/")
    page.get_by_role("button", name="Request deauthorize").click()
    expect(page.locator(".error-summary")).to_be_focused()
    findings.check(page, "requester", "deauthorize-errors")
    page.goto(f"/connections/{drifted}/rotate/")
    page.locator("#id_version_0").fill("0")
    page.get_by_role("button", name="Request rotation").click()
    expect(page.locator(".error-summary")).to_be_focused()
    findings.check(page, "requester", "rotate-errors")

    # Delete, refused while an API destination (in moto) uses the connection. The connection's
    # open update (its pages are checked by now) would be refused first: cancelled.
    managed = scene["managed"]
    services.request_cancel(request=scene["update"], actor=scene["users"]["requester"])
    boto3.client("events").create_api_destination(
        Name=f"{managed.name}-hook",
        ConnectionArn=managed.arn,
        InvocationEndpoint="https://partner.example.com/hook",
        HttpMethod="POST",
    )
    page.goto(f"/connections/{managed.pk}/delete/")
    page.get_by_role("button", name="Request delete").click()
    expect(page.locator(".error-summary")).to_be_focused()
    expect(page.locator(".errorlist")).to_contain_text("still use this connection")
    findings.check(page, "requester", "delete-refused-in-use")


def _decision_states(page, findings: Findings, scene) -> None:
    pending = scene["pending"]
    page.goto(f"/requests/{pending.pk}/")
    page.get_by_role("button", name="Reject").click()  # without a reason
    expect(page.locator(".error-summary")).to_be_focused()
    findings.check(page, "approver", "reject-errors", shoot=True)


def _password_states(page, findings: Findings, role: str) -> None:
    """The password change form (Django's view, the app's template): blank, refused (a wrong old
    password and new ones that differ), and done."""
    new = "An0ther-long-passphrase"
    page.goto("/accounts/password_change/")
    findings.check(page, role, "password-change")
    page.get_by_label("Old password").fill("not the password")
    page.get_by_label("New password", exact=True).fill(new)
    page.get_by_label("New password confirmation").fill(f"{new}-typo")
    page.get_by_role("button", name="Change password").click()
    summary = page.locator(".error-summary")
    expect(summary).to_be_focused()
    expect(summary.get_by_role("link")).to_have_count(2)
    expect(page).to_have_title(re.compile("^Error: "))
    expect(page.get_by_label("Old password")).to_have_attribute("aria-invalid", "true")
    findings.check(page, role, "password-change-errors")
    page.get_by_label("Old password").fill(PASSWORD)
    page.get_by_label("New password", exact=True).fill(new)
    page.get_by_label("New password confirmation").fill(new)
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Password changed")
    findings.check(page, role, "password-changed")


def _logged_out_state(page, findings: Findings) -> None:
    """registration/logged_out.html. Signing out lands on the sign-in page (LOGOUT_REDIRECT_URL),
    checked above; this page shows only when the sign-out's `next` is the sign-out address
    itself, so the form is given that."""
    page.locator("header form.inline").evaluate(
        "f => f.insertAdjacentHTML('beforeend',"
        " '<input type=hidden name=next value=/accounts/logout/>')"
    )
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Signed out")
    expect(page.get_by_test_id("username")).to_have_count(0)
    findings.check(page, "anonymous", "logged-out")


def test_single_sign_on_pages_pass_axe_and_fit_a_phone(
    browser, live_server, settings, transactional_db
):
    """The sign-in page with its single sign-on button, and the refusal pages: a person the
    provider knows with no group mapped to a role, and a callback no sign-in started."""
    findings = Findings()
    with idp.Provider() as provider:
        idp.configure(
            settings, provider.endpoints(), client_secret=f"CLIENTSECRET{secrets.token_hex(8)}"
        )
        provider.set_user("sub-eve", email="eve@example.com", groups=["idp-marketing"])
        context = browser.new_context(base_url=live_server.url)
        context.set_default_timeout(TIMEOUT_MS)
        # The provider's page asks a CDN for a stylesheet: nothing leaves this machine.
        context.route(
            re.compile(r"^https?://(?!(127\.0\.0\.1|localhost)[:/])"), lambda route: route.abort()
        )
        page = context.new_page()
        _visit(page, "/accounts/login/")
        findings.check(page, "anonymous", "login-sso")
        page.get_by_role("link", name="Sign in with Test IdP").click()
        page.get_by_placeholder("sub").fill("sub-eve")
        page.get_by_role("button", name="Authorize").click()
        refusal = page.get_by_test_id("oidc-refused")
        expect(refusal).to_have_attribute("data-reason", "no_role")
        findings.check(page, "anonymous", "oidc-refused-no-role")
        _visit(page, "/oidc/callback/?code=made-up&state=made-up", status=403)
        expect(refusal).to_have_attribute("data-reason", "state")
        findings.check(page, "anonymous", "oidc-refused-state")
        context.close()
    findings.assert_none("anonymous-sso")


# ---------------------------------------------------------------------------
# The keyboard alone


def _tab_to(page, selector: str, *, limit: int = 120, back: bool = False) -> None:
    """Press Tab (Shift+Tab) until `selector` has the focus, as a keyboard user does."""
    for _ in range(limit):
        if page.evaluate("s => document.activeElement?.matches(s)", selector):
            return
        page.keyboard.press("Shift+Tab" if back else "Tab")
    raise AssertionError(f"{selector} never got the focus")


@pytest.mark.parametrize("width", [PHONE, WIDE])
def test_filing_and_approving_with_the_keyboard_only(
    browser, live_server, scene, unique_name, width
):
    requester, approver = scene["users"]["requester"], scene["users"]["approver"]
    context, page = _open(browser, live_server, requester, width=width)
    page.goto("/requests/new/")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to main content")).to_be_focused()
    page.keyboard.press("Enter")

    _tab_to(page, "#id_name")
    page.keyboard.type("bad name!")
    page.keyboard.press("Tab")  # leaving the field says what is wrong with it at once
    expect(page.locator("#id_name_jserror")).to_contain_text("Use only letters")
    expect(page.locator("#id_name")).to_have_attribute("aria-invalid", "true")
    _tab_to(page, "#id_authorization_type_0")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")  # API_KEY, the third choice
    expect(page.locator("#id_authorization_type_2")).to_be_checked()
    _tab_to(page, "#id_apikey_name")
    page.keyboard.type("x-api-key")
    _tab_to(page, "#id_apikey_value")
    page.keyboard.type("secret/canary/apikey#api_key")
    _tab_to(page, "button.primary[name=_save]")
    page.keyboard.press("Enter")

    # Refused: the summary has the focus, its link takes the keyboard to the field.
    summary = page.locator(".error-summary")
    expect(summary).to_be_focused()
    expect(summary).to_contain_text("Name")
    page.keyboard.press("Tab")
    expect(summary.get_by_role("link").first).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#id_name")).to_be_focused()
    page.keyboard.press("Control+A")
    page.keyboard.type(unique_name)
    _tab_to(page, "button.primary[name=_save]")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("status")).to_have_text("Pending approval")
    filed = R.objects.get(name=unique_name)
    context.close()

    context, page = _open(browser, live_server, approver, width=width)
    page.goto(f"/requests/{filed.pk}/")
    if width == PHONE:
        _tab_to(page, "a[href='#decide']")  # "Go to the decision", on a narrow screen
        page.keyboard.press("Enter")
    _tab_to(page, "#id_comment")
    page.keyboard.type("checked with the partner")
    _tab_to(page, ".decision-buttons button.primary")
    expect(page.locator(".decision-buttons button.primary")).to_have_text(
        "Approve and create connection"
    )
    box = page.locator(".decision-buttons button.primary").bounding_box()
    assert box["height"] >= 44  # a decision button is easy to hit
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("status")).to_have_text("Created")
    context.close()
    filed.refresh_from_db()
    assert (filed.status, filed.decision_comment) == (R.CREATED, "checked with the partner")


def test_cancel_confirms_and_file_again_fills_the_form(browser, live_server, scene):
    context, page = _open(browser, live_server, scene["users"]["requester"])
    pending = scene["pending"]
    page.goto(f"/requests/{pending.pk}/")
    page.get_by_role("link", name="Cancel request").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Cancel the create request")
    page.get_by_role("link", name="No, keep it").click()
    expect(page.get_by_test_id("status")).to_have_text("Pending approval")
    page.get_by_role("link", name="Cancel request").click()
    page.get_by_role("button", name="Yes, cancel the request").click()
    expect(page.get_by_test_id("status")).to_have_text("Cancelled")
    page.get_by_test_id("file-again").click()
    expect(page.get_by_test_id("filed-again")).to_be_visible()
    expect(page.get_by_label("Name", exact=True)).to_have_value(pending.name)
    expect(page.get_by_label("Client secret", exact=True)).to_have_value(
        "secret/canary/oauth#client_secret"
    )
    context.close()


def test_approve_anyway_is_needed_when_a_reference_does_not_resolve(
    browser, live_server, scene, bao_cli, requester, make_document, unique_name
):
    path = f"secret/browser-anyway/{unique_name}"
    bao_cli("kv", "put", path, "value=v1")
    document = make_document(name=unique_name)
    document["AuthParameters"]["ApiKeyAuthParameters"]["ApiKeyValue"] = {
        "vault": f"{path}#value",
        "version": None,
    }
    request = services.request_create(requester=requester, document=document)
    bao_cli("kv", "metadata", "delete", path)
    context, page = _open(browser, live_server, scene["users"]["approver"])
    page.goto(f"/requests/{request.pk}/")
    approve = page.get_by_role("button", name="Approve and create connection")
    expect(approve).to_be_disabled()
    page.get_by_label(re.compile("^Approve anyway")).check()
    expect(approve).to_be_enabled()
    uncheck_then = page.get_by_label(re.compile("^Approve anyway"))
    uncheck_then.uncheck()
    expect(approve).to_be_disabled()
    context.close()
