"""The request form in a real browser: sections, parameter rows, errors, Check, save, approve."""

from __future__ import annotations

import re

import pytest
from django.apps import apps
from playwright.sync_api import expect

from connections_app import services
from connections_app.models import ConnectionRequest

pytestmark = [pytest.mark.usefixtures("servers"), pytest.mark.browser]

# References to the secrets tests/conftest.py's `canaries` fixture seeds in OpenBao.
PASSWORD_REF = "secret/canary/basic#password"
CLIENT_SECRET_REF = "secret/canary/oauth#client_secret"
HEADER_TOKEN_REF = "secret/canary/oauth#header_token"
API_KEY_REF = "secret/canary/apikey#api_key"
V1_KEY_REF = "legacy/canary/v1#api_key"  # KV version 1 mount
TYPES = ("BASIC", "OAUTH_CLIENT_CREDENTIALS", "API_KEY")


# ---------------------------------------------------------------------------
# Helpers: find things the way the page names them


def open_form(login, user):
    page = login(user)
    page.goto("/requests/new/")
    expect(page.get_by_role("heading", name="New connection request")).to_be_visible()
    return page


def choose(page, kind):
    page.locator(f'input[name="authorization_type"][value="{kind}"]').check()


def section(page, kind):
    return page.locator(f'fieldset.auth-section[data-type="{kind}"]')


def field(page, name):
    return page.locator(f'.field[data-field="{name}"]')


def field_input(page, name):
    return page.locator(f'[name="{name}"]')


def rows(page, prefix):
    return page.locator(f'fieldset.params[data-prefix="{prefix}"] tbody.rows tr.param-row')


def add_row(page, prefix):
    """Open the optional part holding the list (when folded), then its "Add ..." button."""
    section = page.locator(f'details:has(fieldset.params[data-prefix="{prefix}"])')
    if section.get_attribute("open") is None:
        section.locator("summary").click()
    page.locator(f'fieldset.params[data-prefix="{prefix}"] .add-row').click()


def api_key_form(login, requester, name):
    """The form, with a valid API_KEY request filled in up to its parameter rows."""
    page = open_form(login, requester)
    field_input(page, "name").fill(name)
    choose(page, "API_KEY")
    field_input(page, "apikey_name").fill("x-api-key")
    field_input(page, "apikey_value").fill(API_KEY_REF)
    return page


def fill_row(row, key, value, *, secret=False):
    row.locator('input[name$="-key"]').fill(key)
    row.locator('input[name$="-value"]').fill(value)
    row.locator('input[name$="-is_secret"]').set_checked(secret)


def expect_row(row, key, value, *, secret=False):
    expect(row.locator('input[name$="-key"]')).to_have_value(key)
    expect(row.locator('input[name$="-value"]')).to_have_value(value)
    box = row.locator('input[name$="-is_secret"]')
    if secret:
        expect(box).to_be_checked()
    else:
        expect(box).not_to_be_checked()


def save(page):
    page.get_by_role("button", name="Save request").click()


def ref(path):
    return {"vault": path, "version": None}


def fill_request_with_every_canary(page, name):
    """An OAuth request whose references reach every canary secret, KV v1 included."""
    field_input(page, "name").fill(name)
    field_input(page, "description").fill("partner API")
    choose(page, "OAUTH_CLIENT_CREDENTIALS")
    field_input(page, "oauth_client_id").fill("client-1")
    field_input(page, "oauth_client_secret").fill(CLIENT_SECRET_REF)
    field_input(page, "oauth_endpoint").fill("https://auth.example.com/oauth2/token")
    for prefix in ("oauth_header", "oauth_body", "inv_header", "inv_header", "inv_query"):
        add_row(page, prefix)  # the lists start empty
    fill_row(rows(page, "oauth_header").nth(0), "X-Basic", PASSWORD_REF, secret=True)
    fill_row(rows(page, "oauth_body").nth(0), "grant_type", "client_credentials")
    fill_row(rows(page, "inv_header").nth(0), "X-Token", HEADER_TOKEN_REF, secret=True)
    fill_row(rows(page, "inv_header").nth(1), "X-Api-Key", API_KEY_REF, secret=True)
    fill_row(rows(page, "inv_query").nth(0), "legacy_key", V1_KEY_REF, secret=True)


def database_dump() -> str:
    """Every row of every table (many-to-many tables included), as text."""
    lines = []
    for model in apps.get_models(include_auto_created=True):
        for row in model._default_manager.values_list():
            lines.append(f"{model._meta.db_table}: {row!r}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Tests


def test_only_the_chosen_authorization_section_shows(login, requester):
    page = open_form(login, requester)
    for kind in TYPES:
        expect(section(page, kind)).to_be_hidden()  # nothing chosen yet

    for kind in [*TYPES, "BASIC"]:  # and back again: switching twice must work too
        choose(page, kind)
        expect(section(page, kind)).to_be_visible()
        for other in set(TYPES) - {kind}:
            expect(section(page, other)).to_be_hidden()


def test_parameter_rows_are_added_removed_and_saved(login, requester, unique_name):
    page = api_key_form(login, requester, unique_name)

    headers = rows(page, "inv_header")
    expect(headers).to_have_count(0)  # the lists start empty
    add_row(page, "inv_header")
    # The new row's key has the focus: type it at once.
    expect(headers.nth(0).locator('input[name$="-key"]')).to_be_focused()
    add_row(page, "inv_header")
    add_row(page, "inv_header")
    expect(headers).to_have_count(3)
    fill_row(headers.nth(0), "X-Token", HEADER_TOKEN_REF, secret=True)
    fill_row(headers.nth(1), "X-Dropped", "dropped-value")
    fill_row(headers.nth(2), "X-Plain", "plain-value")
    headers.nth(1).get_by_role("button", name="Remove").click()
    expect(headers).to_have_count(2)
    # The row and its button are gone: the focus goes to "Add header".
    expect(page.locator('fieldset.params[data-prefix="inv_header"] .add-row')).to_be_focused()
    # The rows after it are renumbered: no gap, and the form count is the rows left.
    expect(headers.nth(1).locator('input[name="inv_header-1-key"]')).to_have_value("X-Plain")
    expect(field_input(page, "inv_header-TOTAL_FORMS")).to_have_value("2")
    check = headers.nth(1).locator(".check-ref")  # hidden: not a secret row
    expect(check).to_have_attribute("value", "inv_header-1-value")
    expect(check).to_have_attribute("data-target", "id_inv_header-1-value")
    add_row(page, "inv_query")
    add_row(page, "inv_query")
    fill_row(rows(page, "inv_query").nth(1), "page", "1")

    save(page)

    expect(page.get_by_test_id("status")).to_have_text("Pending approval")
    expect(page.get_by_test_id("document")).to_contain_text("X-Plain")
    expect(page.get_by_test_id("document")).not_to_contain_text("X-Dropped")
    saved = ConnectionRequest.objects.get(name=unique_name).document
    assert saved["AuthParameters"]["InvocationHttpParameters"] == {
        "HeaderParameters": [
            {"Key": "X-Token", "Value": ref(HEADER_TOKEN_REF), "IsValueSecret": True},
            {"Key": "X-Plain", "Value": "plain-value", "IsValueSecret": False},
        ],
        "QueryStringParameters": [{"Key": "page", "Value": "1", "IsValueSecret": False}],
    }


def test_rows_added_and_removed_do_not_count_toward_the_row_limit(login, requester, unique_name):
    page = api_key_form(login, requester, unique_name)
    headers = rows(page, "inv_header")
    page.locator("details[data-section=inv_http] summary").click()
    add = page.locator('fieldset.params[data-prefix="inv_header"] .add-row')
    add.evaluate("button => { for (let i = 0; i < 109; i++) button.click(); }")
    expect(headers).to_have_count(100)  # the most the server accepts: Add row stops there
    expect(add).to_be_disabled()
    for _ in range(12):
        headers.nth(1).get_by_role("button", name="Remove").click()
    expect(headers).to_have_count(88)
    expect(add).to_be_enabled()
    add.evaluate("button => { for (let i = 0; i < 10; i++) button.click(); }")
    expect(headers).to_have_count(98)  # numbered on from the rows left, not from 100
    fill_row(headers.nth(0), "X-First", "1")
    fill_row(headers.nth(97), "X-Last", "2")

    save(page)

    expect(page.get_by_test_id("status")).to_have_text("Pending approval")
    saved = ConnectionRequest.objects.get(name=unique_name).document
    assert saved["AuthParameters"]["InvocationHttpParameters"]["HeaderParameters"] == [
        {"Key": "X-First", "Value": "1", "IsValueSecret": False},
        {"Key": "X-Last", "Value": "2", "IsValueSecret": False},
    ]


def test_errors_show_next_to_fields_and_keep_everything_entered(login, requester):
    page = open_form(login, requester)
    field_input(page, "name").fill("bad name!")
    field_input(page, "description").fill("partner API")
    choose(page, "OAUTH_CLIENT_CREDENTIALS")
    field_input(page, "oauth_client_id").fill("client-1")
    field_input(page, "oauth_client_secret").fill(CLIENT_SECRET_REF)
    field_input(page, "oauth_endpoint").fill("http://auth.example.com/oauth2/token")
    field_input(page, "oauth_http_method").select_option("GET")
    add_row(page, "oauth_body")
    fill_row(rows(page, "oauth_body").nth(0), "grant_type", "client_credentials")
    add_row(page, "inv_header")
    fill_row(rows(page, "inv_header").nth(0), "X-Token", HEADER_TOKEN_REF, secret=True)
    page.locator("details[data-section=kms] summary").click()
    field_input(page, "kms_key").fill("alias/partner")

    save(page)

    expect(field(page, "name").locator(".errorlist")).to_contain_text("Use only letters, digits")
    expect(field(page, "oauth_endpoint").locator(".errorlist")).to_contain_text("https://")
    expect(page.locator(".field.has-error")).to_have_count(2)
    # Everything the user typed comes back, references included.
    expect(field_input(page, "name")).to_have_value("bad name!")
    expect(field_input(page, "description")).to_have_value("partner API")
    expect(
        page.locator('input[name="authorization_type"][value="OAUTH_CLIENT_CREDENTIALS"]')
    ).to_be_checked()
    expect(section(page, "OAUTH_CLIENT_CREDENTIALS")).to_be_visible()
    expect(section(page, "BASIC")).to_be_hidden()
    expect(field_input(page, "oauth_client_id")).to_have_value("client-1")
    expect(field_input(page, "oauth_client_secret")).to_have_value(CLIENT_SECRET_REF)
    expect(field_input(page, "oauth_endpoint")).to_have_value(
        "http://auth.example.com/oauth2/token"
    )
    expect(field_input(page, "oauth_http_method")).to_have_value("GET")
    expect_row(rows(page, "oauth_body").nth(0), "grant_type", "client_credentials")
    expect_row(rows(page, "inv_header").nth(0), "X-Token", HEADER_TOKEN_REF, secret=True)
    expect(field_input(page, "kms_key")).to_have_value("alias/partner")
    assert not ConnectionRequest.objects.exists()


def test_valid_request_with_canary_references_saves_as_pending(login, requester, unique_name):
    page = open_form(login, requester)
    fill_request_with_every_canary(page, unique_name)

    # Enter in a text box submits with the form's first submit button: it must be Save,
    # not the Check button of a (hidden) reference field.
    field_input(page, "name").press("Enter")

    expect(page).to_have_url(re.compile(r"/requests/\d+/$"))
    expect(page.get_by_role("heading", name=unique_name)).to_be_visible()
    expect(page.get_by_test_id("status")).to_have_text("Pending approval")
    expect(page.get_by_role("status")).to_contain_text("awaits approval")
    saved = ConnectionRequest.objects.get(name=unique_name)
    assert saved.status == ConnectionRequest.PENDING
    assert saved.requester == requester


def test_no_canary_value_in_page_or_database_after_save(login, requester, unique_name, canaries):
    page = open_form(login, requester)
    fill_request_with_every_canary(page, unique_name)
    save(page)
    expect(page.get_by_test_id("status")).to_have_text("Pending approval")

    html = page.content()
    dump = database_dump()
    assert unique_name in dump and PASSWORD_REF in dump  # the dump is real
    for name, value in canaries.items():
        assert value not in html, f"canary {name} rendered in the request page"
        assert value not in dump, f"canary {name} stored in the database"


def test_check_shows_version_or_error_never_the_value(login, requester, canaries):
    page = open_form(login, requester)
    choose(page, "BASIC")
    reference = field_input(page, "basic_password")
    check = field(page, "basic_password").get_by_role("button", name="Check")
    result = page.locator("#check-basic_password")

    answers = []

    def run_check(text):
        reference.fill(text)
        with page.expect_response(re.compile(r"/vault/check/$")) as response:
            check.click()
        answers.append(response.value.text())

    run_check(PASSWORD_REF)
    expect(result.locator(".ok")).to_contain_text("version 1")

    run_check("secret/canary/nope#x")
    expect(result.locator(".bad")).to_contain_text("No secret exists at secret/canary/nope")
    expect(page).to_have_url(re.compile(r"/requests/new/$"))  # a fetch, not a form submit
    seen = page.content() + "".join(answers)  # neither the page nor the JSON on the wire
    for name, value in canaries.items():
        assert value not in seen, f"canary {name} shown by Check"

    # A plain row's value is no reference: Check shows only on rows ticked secret.
    add_row(page, "inv_header")
    row = rows(page, "inv_header").nth(0)
    fill_row(row, "X-Plain", "plain-value")
    expect(row.get_by_role("button", name="Check")).to_be_hidden()
    row.locator('input[name$="-is_secret"]').check()
    expect(row.get_by_role("button", name="Check")).to_be_visible()


def test_approver_approves_in_browser_and_connection_is_created(
    login, requester, approver, make_document
):
    request = services.request_create(requester=requester, document=make_document())
    page = login(approver)
    page.goto(f"/requests/{request.pk}/")
    expect(page.get_by_test_id("status")).to_have_text("Pending approval")

    page.get_by_role("button", name="Approve and create connection").click()

    expect(page.get_by_test_id("status")).to_have_text("Created")
    expect(page.get_by_test_id("arn")).to_have_text(re.compile(r"^arn:aws:events:"))
    request.refresh_from_db()
    assert request.status == ConnectionRequest.CREATED
    expect(page.get_by_test_id("arn")).to_have_text(request.connection.arn)
