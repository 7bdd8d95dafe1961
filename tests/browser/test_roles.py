"""Each role signs in through the login page and sees only its own navigation."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.usefixtures("servers"), pytest.mark.browser]

REQUESTER_NAV = ["New connection", "My requests", "Connections", "Notifications"]
# The queue counts what waits for this approver (nothing, here).
APPROVER_NAV = ["Approval queue (0)", "Connections", "Audit log", "Secret uses", "Notifications"]
AUDITOR_NAV = ["Connections", "Audit log", "Secret uses", "Notifications"]
ADMIN_NAV = ["Status", "Admin"]


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("requester", REQUESTER_NAV),
        ("approver", APPROVER_NAV),
        ("auditor", AUDITOR_NAV),
        # A superuser holds every permission, so every entry shows, its own last.
        ("admin_user", ["New connection", "My requests", *APPROVER_NAV, *ADMIN_NAV]),
    ],
)
def test_each_role_sees_its_navigation(request, login, role, expected):
    page = login(request.getfixturevalue(role))

    expect(page.get_by_role("navigation", name="Main").get_by_role("link")).to_have_text(expected)


def test_requester_gets_403_page_for_approval_queue(login, requester):
    page = login(requester)

    response = page.goto("/approvals/")

    assert response.status == 403
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    expect(page.get_by_test_id("forbidden")).to_be_visible()
