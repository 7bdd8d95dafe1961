"""Each kind of change in Chromium: a requester files it from the connection page, another
person approves it, and AWS (the extended moto) and the pages show the result."""

from __future__ import annotations

import re
import secrets
import uuid

import boto3
import pytest
from playwright.sync_api import expect

from connections_app import services
from connections_app.models import Connection, ConnectionRequest
from tests.browser.conftest import TIMEOUT_MS, sign_in

pytestmark = [pytest.mark.usefixtures("servers"), pytest.mark.browser]
R = ConnectionRequest


@pytest.fixture
def signed_in(browser, live_server):
    """A page of its own (own cookies) for each person."""
    contexts = []

    def open_for(user):
        context = browser.new_context(base_url=live_server.url)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        return sign_in(context.new_page(), user)

    yield open_for
    for context in contexts:
        context.close()


@pytest.fixture
def secret_path(bao_cli):
    path = f"secret/browser/{uuid.uuid4().hex[:10]}"
    bao_cli("kv", "put", path, f"api_key=CANARY{secrets.token_hex(10)}")
    return path


@pytest.fixture
def made(requester, approver, make_document, secret_path):
    document = make_document("API_KEY")
    document["AuthParameters"]["ApiKeyAuthParameters"]["ApiKeyValue"] = {
        "vault": f"{secret_path}#api_key",
        "version": None,
    }
    request = services.request_create(requester=requester, document=document)
    request = services.request_approve(
        request=request, approver=approver, seen_hash=request.document_hash
    )
    assert request.status == R.CREATED, request.error_message
    return request.connection


def _approve_in_browser(page, label: str) -> None:
    expect(page.get_by_test_id("status")).to_have_text("Pending approval")
    page.get_by_role("button", name=label).click()
    expect(page.get_by_test_id("status")).to_have_text("Done")


def test_update_in_the_browser(signed_in, made, requester, approver):
    mine = signed_in(requester)
    mine.goto(f"/connections/{made.pk}/")
    mine.get_by_role("link", name="Update").click()
    expect(mine.get_by_label("Name", exact=True)).to_be_disabled()
    mine.get_by_label("Description").fill("partner API, second endpoint")
    mine.get_by_role("button", name="Request the update").click()
    expect(mine.get_by_test_id("kind")).to_contain_text("Update of")

    theirs = signed_in(approver)
    theirs.goto(mine.url)
    expect(theirs.get_by_test_id("aws-diff")).to_contain_text("partner API, second endpoint")
    _approve_in_browser(theirs, "Approve and update connection")
    described = boto3.client("events").describe_connection(Name=made.name)
    assert described["Description"].startswith("partner API, second endpoint")


def test_rotate_in_the_browser(signed_in, made, requester, approver, bao_cli, secret_path):
    new_value = f"CANARY{secrets.token_hex(10)}"
    bao_cli("kv", "put", secret_path, f"api_key={new_value}")
    mine = signed_in(requester)
    mine.goto(f"/connections/{made.pk}/")
    mine.get_by_role("link", name="Rotate secrets").click()
    expect(mine.get_by_test_id("rotate")).to_contain_text(f"{secret_path}#api_key")
    mine.get_by_role("button", name="Request rotation").click()
    expect(mine.get_by_test_id("kind")).to_contain_text("Rotate of")

    theirs = signed_in(approver)
    theirs.goto(mine.url)
    expect(theirs.get_by_test_id("review-secrets")).to_contain_text("version 1 → 2")
    expect(theirs.get_by_test_id("review-secrets")).to_contain_text("value changed")
    _approve_in_browser(theirs, "Approve and rotate connection")
    made.refresh_from_db()
    stored = boto3.client("secretsmanager").get_secret_value(SecretId=made.secret_arn)
    assert new_value in stored["SecretString"]
    assert new_value not in theirs.content()


def test_deauthorize_then_reauthorize_in_the_browser(signed_in, made, requester, approver):
    mine = signed_in(requester)
    mine.goto(f"/connections/{made.pk}/")
    mine.get_by_role("link", name="Deauthorize").click()
    mine.get_by_role("button", name="Request deauthorize").click()
    expect(mine.locator(".errorlist")).to_contain_text("Say why")
    mine.get_by_label("Reason").fill("the partner rotated their side")
    mine.get_by_role("button", name="Request deauthorize").click()
    request_url = mine.url

    theirs = signed_in(approver)
    theirs.goto(request_url)
    expect(theirs.get_by_test_id("reason")).to_have_text("the partner rotated their side")
    _approve_in_browser(theirs, "Approve and deauthorize connection")

    mine.goto(f"/connections/{made.pk}/")
    mine.get_by_role("button", name="Refresh").click()
    expect(mine.get_by_role("heading", level=1)).to_contain_text("DEAUTHORIZED")
    mine.get_by_role("link", name="Re-authorize").click()
    expect(mine.get_by_role("heading", level=1)).to_contain_text("Re-authorize")
    mine.get_by_role("button", name="Request the update").click()
    theirs.goto(mine.url)
    _approve_in_browser(theirs, "Approve and update connection")
    theirs.get_by_test_id("connection-link").click()
    theirs.get_by_role("button", name="Refresh").click()
    expect(theirs.get_by_role("heading", level=1)).to_contain_text("AUTHORIZED")


def test_delete_in_the_browser_refused_then_allowed(
    signed_in, made, requester, approver, make_document
):
    hook = f"hook-{uuid.uuid4().hex[:8]}"
    events = boto3.client("events")
    events.create_api_destination(
        Name=hook,
        ConnectionArn=made.arn,
        InvocationEndpoint="https://partner.example.com/hook",
        HttpMethod="POST",
    )
    mine = signed_in(requester)
    mine.goto(f"/connections/{made.pk}/")
    expect(mine.get_by_test_id("destinations")).to_contain_text(hook)
    mine.get_by_role("link", name="Delete").click()
    expect(mine.get_by_test_id("destinations")).to_contain_text(hook)
    mine.get_by_role("button", name="Request delete").click()
    expect(mine.locator(".errorlist")).to_contain_text(
        re.compile(f"still use this connection: {hook}")
    )
    assert not R.objects.filter(connection=made, kind=R.DELETE).exists()

    # Repointed at another connection, the destination no longer holds this one back.
    other = services.request_create(
        requester=requester, document=make_document(name=f"{made.name}-other")
    )
    other = services.request_approve(
        request=other, approver=approver, seen_hash=other.document_hash
    )
    assert other.status == R.CREATED, other.error_message
    events.update_api_destination(Name=hook, ConnectionArn=other.connection.arn)
    mine.goto(f"/connections/{made.pk}/delete/")
    expect(mine.get_by_test_id("no-destinations")).to_be_visible()
    mine.get_by_role("button", name="Request delete").click()
    expect(mine.get_by_test_id("kind")).to_contain_text("Delete of")
    theirs = signed_in(approver)
    theirs.goto(mine.url)
    _approve_in_browser(theirs, "Approve and delete connection")
    theirs.get_by_test_id("connection-link").click()
    theirs.get_by_role("button", name="Refresh").click()
    expect(theirs.get_by_role("heading", level=1)).to_contain_text("DELETED")
    assert Connection.objects.get(pk=made.pk).state == "DELETED"
