"""The Content-Security-Policy allows no inline code, and no page of the app or admin needs any."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from connections_app import services

pytestmark = [pytest.mark.usefixtures("servers"), pytest.mark.browser]


@pytest.fixture
def violations(page):
    """Every CSP violation Chromium reports on the page's console."""
    seen: list[str] = []
    page.on(
        "console",
        lambda message: (
            seen.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    return seen


def _visit(page, path):
    response = page.goto(path)
    assert response.status == 200, path
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    return response


def test_the_policy_is_enforced(page, violations):
    """An inline script is refused and reported: the pages below are checked for real."""
    _visit(page, "/accounts/login/")

    page.evaluate(
        "() => { const s = document.createElement('script');"
        " s.textContent = 'window.inlineRan = true'; document.body.append(s); }"
    )

    assert page.evaluate("() => window.inlineRan === undefined")
    page.wait_for_function("() => true")  # one round trip: the console event has arrived
    assert any("inline script" in text for text in violations), violations


def test_app_pages_run_without_violations(
    page, violations, login, requester, approver, make_document
):
    _visit(page, "/accounts/login/")
    login(requester)
    _visit(page, "/requests/new/")
    # The script works under the policy: rows are added and a reference is checked.
    params = page.locator('fieldset.params[data-prefix="inv_header"]')
    before = params.locator("tbody.rows tr.param-row").count()
    page.locator("details[data-section=inv_http] summary").click()
    params.get_by_role("button", name="Add header").click()
    expect(params.locator("tbody.rows tr.param-row")).to_have_count(before + 1)
    page.locator('input[name="authorization_type"][value="BASIC"]').check()
    page.locator('[name="basic_password"]').fill("secret/canary/basic#password")
    page.locator('.field[data-field="basic_password"]').get_by_role("button", name="Check").click()
    # (a fetch from app.js: connect-src falls back to default-src 'self')
    expect(page.locator("#check-basic_password .ok")).to_contain_text("Resolves")

    pending = services.request_create(requester=requester, document=make_document("API_KEY"))
    _visit(page, f"/requests/{pending.pk}/")
    page.context.clear_cookies()
    login(approver)
    _visit(page, "/approvals/")
    _visit(page, f"/requests/{pending.pk}/")
    expect(page.get_by_role("button", name="Approve and create connection")).to_be_visible()
    _visit(page, "/audit/")

    assert violations == []


def test_admin_pages_run_without_violations(
    page, violations, login, admin_user, requester, make_document
):
    pending = services.request_create(requester=requester, document=make_document("API_KEY"))
    login(admin_user)
    for path in (
        "/status/",
        "/admin/",
        "/admin/auth/user/",
        f"/admin/auth/user/{admin_user.pk}/change/",
        "/admin/connections_app/connectionrequest/",
        f"/admin/connections_app/connectionrequest/{pending.pk}/change/",
        "/admin/connections_app/auditevent/",
    ):
        _visit(page, path)
    expect(page.locator("#changelist")).to_be_visible()

    assert violations == []
