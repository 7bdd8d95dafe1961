import pytest
from playwright.sync_api import expect
from .test_request_form import open_form, field_input, choose, fill_request_with_every_canary

def test_enter(login, requester, unique_name):
    page = open_form(login, requester)
    fill_request_with_every_canary(page, unique_name)
    field_input(page, "name").press("Enter")
    page.wait_for_timeout(1500)
    print("URL", page.url)
    print(page.locator(".check-result").all_inner_texts())

def test_check_all(login, requester, unique_name):
    page = open_form(login, requester)
    choose(page, "BASIC")
    field_input(page, "basic_password").fill("secret/canary/basic#password")
    page.get_by_role("button", name="Check all references").click()
    page.wait_for_load_state()
    print("URL", page.url)
    print(page.locator(".check-result").all_inner_texts())
    print(page.locator(".errorlist").all_inner_texts())

def test_nojs(browser, live_server, login, requester, unique_name):
    ctx = browser.new_context(base_url=live_server.url, java_script_enabled=False)
    page = ctx.new_page()
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill("requester")
    page.get_by_label("Password").fill("pw-for-tests-only")
    page.get_by_role("button", name="Sign in").click()
    page.goto("/requests/new/")
    print([page.locator(f'fieldset.auth-section[data-type="{k}"]').is_visible() for k in ("BASIC","API_KEY")])
    print(page.get_by_role("button", name="Add row").first.is_visible())
    field_input(page, "name").fill(unique_name)
    choose(page, "BASIC")
    field_input(page, "basic_username").fill("alice")
    field_input(page, "basic_password").fill("secret/canary/basic#password")
    field(page, "basic_password").get_by_role("button", name="Check").click()
    page.wait_for_load_state()
    print("checks", page.locator(".check-result").all_inner_texts(), page.locator(".errorlist").all_inner_texts())
    page.get_by_role("button", name="Save request").click()
    print("URL", page.url, page.get_by_test_id("status").inner_text())
    ctx.close()
from .test_request_form import field
