"""Playwright against Debian's Chromium and pytest-django's live server: one browser a session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Playwright's sync API keeps an event loop in this thread; Django would otherwise refuse
# database access from the test body ("You cannot call this from an async context").
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
PASSWORD = "pw-for-tests-only"  # what tests/conftest.py's user_factory sets
TIMEOUT_MS = 10_000


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: apt-get install chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(message)  # CI must run the browser tests, never skip them quietly
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server, transactional_db):
    """A fresh context (cookies, storage) for every test, pointed at the live server."""
    context = browser.new_context(base_url=live_server.url)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def login(page):
    """Sign in through the real login page, as a person would."""

    return lambda user: sign_in(page, user)


def sign_in(page, user):
    """Through the real login page, as a person would."""
    from playwright.sync_api import expect

    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(user.get_username())
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("username")).to_have_text(user.get_username())
    return page


# Users: transactional_db first, so user_factory's `db` joins the live server's database mode.


@pytest.fixture
def requester(transactional_db, user_factory):
    from connections_app import roles

    return user_factory("requester", groups=[roles.REQUESTERS])


@pytest.fixture
def approver(transactional_db, user_factory):
    from connections_app import roles

    return user_factory("approver", groups=[roles.APPROVERS])


@pytest.fixture
def auditor(transactional_db, user_factory):
    from connections_app import roles

    return user_factory("auditor", groups=[roles.AUDITORS])


@pytest.fixture
def admin_user(transactional_db, user_factory):
    return user_factory("admin", superuser=True)
