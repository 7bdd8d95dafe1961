"""Pages people can use under pressure, through Django's test client: errors that cannot be
missed, help and errors read out, secret text never shown back, a shorter form, the review and
its one decision panel, no dead ends, audit search as people expect, and the small things."""

from __future__ import annotations

import json
import re
import secrets
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.contrib.auth.models import Group
from django.db import connection as db
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from connections_app import roles, services
from connections_app.forms import NOT_KEPT
from connections_app.models import AuditEvent, ConnectionRequest, Target
from tests.test_request_form import form_data

R = ConnectionRequest
pytestmark = [pytest.mark.usefixtures("servers"), pytest.mark.django_db]


class _Page(HTMLParser):
    """Ids on a page, and every id that an attribute points at (aria-describedby,
    aria-labelledby, label for, links to #id), to find references to nothing."""

    POINTING = ("aria-describedby", "aria-labelledby", "aria-controls", "for")

    def __init__(self, html: str):
        super().__init__()
        self.ids: set[str] = set()
        self.pointed: list[tuple[str, str]] = []
        self.inputs: dict[str, dict] = {}
        self.title = ""
        self._in_title = False
        self._template = 0
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "template":
            self._template += 1
        if tag == "title":
            self._in_title = True
        if self._template:
            return
        if a.get("id"):
            self.ids.add(a["id"])
        for name in self.POINTING:
            for target in (a.get(name) or "").split():
                self.pointed.append((name, target))
        if tag == "a" and (a.get("href") or "").startswith("#") and len(a["href"]) > 1:
            self.pointed.append(("href", a["href"][1:]))
        if tag in ("input", "textarea", "select") and a.get("name"):
            self.inputs[a["name"]] = a

    def handle_endtag(self, tag):
        if tag == "template":
            self._template -= 1
        if tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data

    def dangling(self) -> list[tuple[str, str]]:
        return [(name, target) for name, target in self.pointed if target not in self.ids]


def _page(response) -> _Page:
    page = _Page(response.content.decode())
    assert page.dangling() == [], page.dangling()
    return page


def _summary_links(html: str) -> list[str]:
    block = html.split('data-testid="error-summary"', 1)[1].split("</div>", 1)[0]
    return re.findall(r'<a href="#([^"]+)">', block)


@pytest.fixture
def pending(requester, make_document):
    return services.request_create(requester=requester, document=make_document("API_KEY"))


@pytest.fixture
def created(requester, approver, make_document):
    request = services.request_create(requester=requester, document=make_document("API_KEY"))
    return services.request_approve(
        request=request, approver=approver, seen_hash=request.document_hash
    )


# ---------------------------------------------------------------------------
# 1. Errors cannot be missed; 2. screen readers hear help and errors


def test_a_refused_save_has_an_error_summary_linking_each_field(requester_client, unique_name):
    data = form_data(
        "OAUTH_CLIENT_CREDENTIALS",
        "bad name!",
        oauth_endpoint="http://auth.example.com/token",
        rows={"inv_header": [("X-Token", "", True)]},
    )
    response = requester_client.post("/requests/new/", data)
    assert response.status_code == 400
    html = response.content.decode()
    page = _page(response)  # every aria-describedby and every summary link lands on an id
    assert page.title.startswith("Error: New connection request")
    assert 'role="alert"' in html and 'tabindex="-1"' in html
    links = _summary_links(html)
    assert links[:2] == ["id_name", "id_oauth_endpoint"]
    assert "id_inv_header-0-value" in links
    # Each field points at its help and its error, and is marked invalid.
    assert page.inputs["name"]["aria-describedby"] == "id_name_helptext id_name_error"
    assert page.inputs["name"]["aria-invalid"] == "true"
    assert page.inputs["inv_header-0-value"]["aria-describedby"] == "id_inv_header-0-value_error"


@pytest.mark.parametrize(
    ("url", "data"),
    [
        ("/requests/new/", None),
        ("/requests/new/", {**form_data("API_KEY", "x"), "_check": "all"}),
        ("/requests/new/", {**form_data("API_KEY", "x", description="d" * 600)}),
        ("/requests/mine/", None),
    ],
)
def test_no_aria_reference_points_at_nothing(requester_client, url, data):
    response = requester_client.post(url, data) if data else requester_client.get(url)
    _page(response)


def test_login_error_is_summarised_and_titled(client):
    response = client.post(reverse("login"), {"username": "nobody", "password": "wrong-one"})
    html = response.content.decode()
    page = _page(response)
    assert page.title.startswith("Error: Sign in")
    assert _summary_links(html) == ["id_username"]


def test_reason_and_rotate_errors_are_summarised(created, requester_client):
    url = reverse("connection_deauthorize", args=[created.connection.pk])
    response = requester_client.post(url, {"reason": ""})
    assert response.status_code == 400
    assert _page(response).title.startswith("Error: Deauthorize")
    assert _summary_links(response.content.decode()) == ["id_reason"]
    rotate = reverse("connection_rotate", args=[created.connection.pk])
    response = requester_client.post(rotate, {"version_0": "0"})
    assert response.status_code == 400
    assert _page(response).title.startswith("Error: Rotate")
    assert _summary_links(response.content.decode()) == ["id_version_0"]


def test_formats_are_checked_in_the_browser_too(requester_client):
    page = _page(requester_client.get("/requests/new/"))
    name = page.inputs["name"]
    assert re.fullmatch(name["data-pattern"], "partner.a-b_1")
    assert not re.fullmatch(name["data-pattern"], "bad name!")
    assert not re.fullmatch(name["data-pattern"], "n" * 65)
    endpoint = page.inputs["oauth_endpoint"]
    assert re.fullmatch(endpoint["data-pattern"], "https://auth.example.com/token")
    assert not re.fullmatch(endpoint["data-pattern"], "http://auth.example.com/token")


# ---------------------------------------------------------------------------
# Secret text that is no reference is never shown back


@pytest.mark.parametrize("button", ["_save", "_check", "_add_row"])
def test_a_value_typed_into_a_secret_field_is_not_kept(requester_client, unique_name, button):
    value = f"CANARY{secrets.token_hex(8)}"
    data = form_data(
        "BASIC", unique_name, basic_password=value, rows={"inv_query": [("t", value, True)]}
    )
    data.pop("_save")
    data[button] = "inv_query" if button == "_add_row" else "all"
    response = requester_client.post("/requests/new/", data)
    html = response.content.decode()
    assert value not in html
    assert html.count(NOT_KEPT) >= 2  # beside the password and beside the row
    assert not R.objects.exists()


def test_a_reference_that_does_not_resolve_is_kept(requester_client, unique_name):
    """A reference is no secret: a typo in its path comes back to be fixed."""
    missing = "secret/no/such/path#password"
    response = requester_client.post(
        "/requests/new/", form_data("BASIC", unique_name, basic_password=missing)
    )
    assert response.status_code == 400
    assert f'value="{missing}"' in response.content.decode()


# ---------------------------------------------------------------------------
# 5. A shorter form


def test_the_form_starts_short_and_marks_what_is_required(requester_client):
    response = requester_client.get("/requests/new/")
    html = response.content.decode()
    page = _page(response)
    for prefix in ("oauth_header", "inv_header", "inv_query", "inv_body"):
        assert page.inputs[f"{prefix}-TOTAL_FORMS"]["value"] == "0"  # no empty rows
        assert f'name="_add_row" value="{prefix}"' in html
    assert "Add header" in html and "Add query string parameter" in html
    # The optional parts are folded and say so.
    assert html.count('<details class="optional"') == 5
    assert html.count("(optional)</span></summary>") == 5
    assert page.inputs["name"]["aria-required"] == "true"
    assert page.inputs["apikey_value"]["aria-required"] == "true"
    assert "aria-required" not in page.inputs["description"]
    assert 'role="radiogroup" aria-required="true"' in html
    # Help says more than the API name, and never starts with it.
    assert '<div class="help" id="id_name_helptext"><code>' not in html
    assert not re.search(r'_helptext"><code>', html)


def test_rows_and_optional_parts_open_when_they_hold_something(requester_client, unique_name):
    data = form_data("API_KEY", unique_name, kms_key="alias/x")
    data.pop("_save")
    data["_add_row"] = "inv_body"
    html = requester_client.post("/requests/new/", data).content.decode()
    assert re.search(r'<details class="optional" data-section="inv_http" open>', html)
    assert re.search(r'<details class="optional" data-section="kms" open>', html)
    assert re.search(r'<details class="optional" data-section="inv_private">', html)


# ---------------------------------------------------------------------------
# Menu: skip link, the current page, the approvals waiting


def test_skip_link_and_current_page(requester_client):
    html = requester_client.get("/requests/mine/").content.decode()
    assert '<a class="skip-link" href="#main">' in html and '<main id="main"' in html
    assert '<a href="/requests/mine/" aria-current="page">My requests</a>' in html
    html = requester_client.get("/connections/").content.decode()
    assert '<a href="/connections/" aria-current="page">Connections</a>' in html


def test_menu_counts_the_approvals_this_approver_may_decide_in_one_query(
    requester, make_document, user_factory
):
    from django.test import Client

    from connections_app.selectors import approvals_waiting

    both = user_factory("both", groups=[roles.REQUESTERS, roles.APPROVERS])
    services.request_create(requester=requester, document=make_document())  # theirs to decide
    services.request_create(requester=both, document=make_document(name="own-request"))
    expired = services.request_create(requester=requester, document=make_document(name="old"))
    R.objects.filter(pk=expired.pk).update(expires_at=timezone.now())
    # A target whose approvers are limited to a group this approver is not in.
    limited = Target.objects.create(name="limited", region="us-east-1")
    limited.approver_groups.add(Group.objects.create(name="platform-approvers"))
    services.request_create(
        requester=requester, document=make_document(name="elsewhere"), target=limited
    )
    with CaptureQueriesContext(db) as queries:
        assert approvals_waiting(both) == 1
    assert len(queries) == 1
    client = Client()
    client.force_login(both)
    assert ">Approval queue (1)</a>" in client.get("/connections/").content.decode()


# ---------------------------------------------------------------------------
# 3. The review and its one decision panel


def test_one_decision_panel_with_one_comment_box(pending, approver_client):
    response = approver_client.get(reverse("request_detail", args=[pending.pk]))
    html = response.content.decode()
    _page(response)
    panel = html.split('<aside class="decision-panel"', 1)[1].split("</aside>", 1)[0]
    assert panel.count("<textarea") == 1 and panel.count("<form") == 1
    assert "Approve and create connection" in panel and ">Reject</button>" in panel
    assert f'formaction="{reverse("request_reject", args=[pending.pk])}"' in panel
    assert "Any approver except the requester (requester)." in panel


def test_the_panel_names_the_targets_approver_groups(requester, approver, make_document):
    from django.test import Client

    group = Group.objects.create(name="platform-approvers")
    approver.groups.add(group)
    target = Target.objects.create(name="limited", region="us-east-1")
    target.approver_groups.add(group)
    request = services.request_create(requester=requester, document=make_document(), target=target)
    client = Client()
    client.force_login(approver)
    html = client.get(reverse("request_detail", args=[request.pk])).content.decode()
    assert "Approvers in platform-approvers (the approver groups of target limited)" in html


def test_reject_with_the_one_box(pending, approver_client):
    url = reverse("request_reject", args=[pending.pk])
    response = approver_client.post(url, {"comment": "", "document_hash": pending.document_hash})
    assert response.status_code == 400
    html = response.content.decode()
    assert _page(response).title.startswith("Error: Create")
    assert _summary_links(html) == ["id_comment"]
    assert 'data-testid="reject-error"' in html
    approver_client.post(url, {"comment": "wrong partner", "document_hash": "x"})
    pending.refresh_from_db()
    assert (pending.status, pending.decision_comment) == (R.REJECTED, "wrong partner")


def test_approve_needs_approve_anyway_when_a_reference_does_not_resolve(
    requester, approver_client, make_document, bao_cli, unique_name
):
    path = f"secret/usability/{unique_name}"
    bao_cli("kv", "put", path, "value=first")
    document = make_document()
    document["AuthParameters"]["ApiKeyAuthParameters"]["ApiKeyValue"] = {
        "vault": f"{path}#value",
        "version": None,
    }
    request = services.request_create(requester=requester, document=document)
    bao_cli("kv", "metadata", "delete", path)
    url = reverse("request_detail", args=[request.pk])
    html = approver_client.get(url).content.decode()
    assert 'data-testid="anyway"' in html and 'data-needs="id_anyway"' in html
    assert 'name="unresolved" value="1"' in html

    approve = reverse("request_approve", args=[request.pk])
    seen = {"document_hash": request.document_hash, "unresolved": "1"}
    response = approver_client.post(approve, seen)
    assert response.status_code == 409
    assert _summary_links(response.content.decode()) == ["id_anyway"]
    assert R.objects.get(pk=request.pk).status == R.PENDING

    approver_client.post(approve, {**seen, "anyway": "1", "comment": "the secret comes back"})
    event = AuditEvent.objects.get(request_id=request.pk, action="connection.request.approve")
    assert json.loads(event.data)["anyway"] is True
    assert R.objects.get(pk=request.pk).status == R.FAILED  # it did not resolve at submission


def test_an_approval_without_the_question_records_anyway_false(pending, approver):
    services.request_approve(request=pending, approver=approver, seen_hash=pending.document_hash)
    event = AuditEvent.objects.get(request_id=pending.pk, action="connection.request.approve")
    assert json.loads(event.data)["anyway"] is False


def test_an_edited_create_shows_what_changed_since_the_previous_revision(
    pending, requester, approver_client, make_document
):
    services.request_update(
        request=pending,
        editor=requester,
        document=make_document(name=pending.name, Description="second endpoint"),
    )
    html = approver_client.get(reverse("request_detail", args=[pending.pk])).content.decode()
    diff = html.split('data-testid="revision-diff"', 1)[1].split("</table>", 1)[0]
    assert "Description" in diff and "partner API" in diff and "second endpoint" in diff
    assert "Against revision 1:" in html


def test_an_update_shows_what_was_last_pushed_to_its_requester(
    created, requester, requester_client, make_document
):
    update = services.change_file(
        connection=created.connection,
        requester=requester,
        kind="update",
        document=make_document(name=created.name, Description="moved"),
    )
    html = requester_client.get(reverse("request_detail", args=[update.pk])).content.decode()
    assert "Against what was last pushed:" in html
    assert "moved" in html.split('data-testid="revision-diff"', 1)[1].split("</table>", 1)[0]


# ---------------------------------------------------------------------------
# 4. No dead ends


def test_cancel_asks_first(pending, requester_client):
    detail = requester_client.get(reverse("request_detail", args=[pending.pk])).content.decode()
    url = reverse("request_cancel", args=[pending.pk])
    assert f'<a class="button" href="{url}" data-testid="cancel">Cancel request</a>' in detail
    confirm = requester_client.get(url)
    assert confirm.status_code == 200
    assert "Yes, cancel the request" in confirm.content.decode()
    assert R.objects.get(pk=pending.pk).status == R.PENDING  # asking changes nothing
    requester_client.post(url)
    assert R.objects.get(pk=pending.pk).status == R.CANCELLED


def test_a_failed_create_is_edited_and_goes_back_for_approval(
    pending, requester, requester_client, approver
):
    R.objects.filter(pk=pending.pk).update(
        status=R.FAILED, submit_attempts=1, error_code="x", error_message="It broke.",
        decided_by=approver, decided_at=timezone.now(), decision_comment="ok",
    )  # fmt: skip
    edit = requester_client.get(reverse("request_edit", args=[pending.pk]))
    assert edit.status_code == 200
    assert 'data-testid="edit-failed"' in edit.content.decode()
    data = form_data("API_KEY", pending.name, description="fixed")
    response = requester_client.post(reverse("request_edit", args=[pending.pk]), data)
    assert response.status_code == 302
    pending.refresh_from_db()
    assert (pending.status, pending.revision, pending.error_message) == (R.PENDING, 2, "")
    assert pending.decided_by is None and pending.submit_attempts == 0
    assert pending.expires_at > timezone.now() + timedelta(days=1)
    event = AuditEvent.objects.filter(request_id=pending.pk).order_by("-id").first()
    assert event.action == "connection.request.edit"
    assert json.loads(event.data)["previous_status"] == R.FAILED
    done = services.request_approve(
        request=pending, approver=approver, seen_hash=pending.document_hash
    )
    assert done.status == R.CREATED


@pytest.mark.parametrize("ending", [R.REJECTED, R.CANCELLED, R.EXPIRED])
def test_a_closed_create_is_filed_again_filled_in(
    pending, requester, approver, requester_client, ending
):
    if ending == R.REJECTED:
        services.request_reject(request=pending, approver=approver, reason="wrong key")
    elif ending == R.CANCELLED:
        services.request_cancel(request=pending, actor=requester)
    else:
        R.objects.filter(pk=pending.pk).update(expires_at=timezone.now())
    html = requester_client.get(reverse("request_detail", args=[pending.pk])).content.decode()
    again = f"/requests/new/?from={pending.pk}"
    assert f'href="{again}" data-testid="file-again"' in html
    form = requester_client.get(again).content.decode()
    assert 'data-testid="filed-again"' in form
    assert f'value="{pending.name}"' in form
    assert 'value="secret/canary/apikey#api_key"' in form  # the references as they were
    assert 'value="X-Token"' in form  # the rows too


def test_closed_connection_changes_are_filed_again_from_their_forms(
    created, requester, approver, requester_client, make_document
):
    connection = created.connection
    update = services.change_file(
        connection=connection,
        requester=requester,
        kind="update",
        document=make_document(name=created.name, Description="typed once"),
    )
    services.request_reject(request=update, approver=approver, reason="not now")
    html = requester_client.get(reverse("request_detail", args=[update.pk])).content.decode()
    url = f"{reverse('connection_update', args=[connection.pk])}?from={update.pk}"
    assert url in html
    assert "typed once" in requester_client.get(url).content.decode()

    deauthorize = services.change_file(
        connection=connection, requester=requester, kind="deauthorize", reason="leaked token"
    )
    services.request_cancel(request=deauthorize, actor=requester)
    url = f"{reverse('connection_deauthorize', args=[connection.pk])}?from={deauthorize.pk}"
    html = requester_client.get(reverse("request_detail", args=[deauthorize.pk])).content.decode()
    assert url in html
    assert "leaked token" in requester_client.get(url).content.decode()


def _failed(request, message="AWS said no."):
    R.objects.filter(pk=request.pk).update(
        status=R.FAILED, submit_attempts=1, error_code="x", error_message=message
    )
    request.refresh_from_db()
    return request


@pytest.mark.parametrize("kind", ["deauthorize", "rotate"])
def test_a_failed_change_not_edited_in_a_form_is_filed_again_in_its_place(
    created, requester, requester_client, approver_client, user_factory, kind
):
    connection = created.connection
    failed = _failed(
        services.change_file(
            connection=connection,
            requester=requester,
            kind=kind,
            reason="leaked token" if kind == "deauthorize" else "",
            document=services.rotation_document(connection, {}, user=requester)
            if kind == "rotate"
            else None,
        )
    )
    html = requester_client.get(reverse("request_detail", args=[failed.pk])).content.decode()
    url = f"{reverse(f'connection_{kind}', args=[connection.pk])}?from={failed.pk}"
    assert f'href="{url}" data-testid="file-again"' in html
    assert "File it again (that cancels this one)" in html
    # Only its requester is offered it: an approver retries or rejects instead.
    other = approver_client.get(reverse("request_detail", args=[failed.pk])).content.decode()
    assert "file-again" not in other

    form = requester_client.get(url)
    assert form.status_code == 200
    page = form.content.decode()
    assert f'name="replaces" value="{failed.pk}"' in page and "cancels that failed one" in page
    if kind == "deauthorize":
        assert "leaked token" in page
    data = {"replaces": failed.pk, "reason": "leaked token, again"}
    response = requester_client.post(url.split("?")[0], data)
    assert response.status_code == 302, response.content.decode()[:2000]
    failed.refresh_from_db()
    assert failed.status == R.CANCELLED
    new = R.objects.filter(connection=connection, status=R.PENDING).get()
    assert new.kind == kind and new.pk != failed.pk
    actions = list(
        AuditEvent.objects.filter(request_id__in=[failed.pk, new.pk])
        .order_by("id")
        .values_list("request_id", "action")
    )[-2:]
    assert actions == [
        (failed.pk, "connection.request.cancel"),
        (new.pk, "connection.request.create"),
    ]
    filed = AuditEvent.objects.get(request_id=new.pk, action="connection.request.create")
    assert json.loads(filed.data)["replaces"] == failed.pk


def test_another_users_failed_change_is_not_replaced(
    created, requester, user_factory, make_document
):
    failed = _failed(
        services.change_file(connection=created.connection, requester=requester, kind="delete")
    )
    someone = user_factory(groups=["connection-requesters"])
    with pytest.raises(services.ActionRefused) as info:
        services.change_file(
            connection=created.connection, requester=someone, kind="delete", replaces=failed
        )
    assert info.value.code == "not_replaceable"
    assert R.objects.get(pk=failed.pk).status == R.FAILED


def test_file_again_is_not_offered_while_pending_or_to_others(pending, approver_client):
    assert (
        "file-again"
        not in approver_client.get(reverse("request_detail", args=[pending.pk])).content.decode()
    )


# ---------------------------------------------------------------------------
# 6. Audit search as people expect


@pytest.fixture
def logged(requester, approver, make_document, unique_name):
    """Requests for <unique>-alpha and <unique>-beta (moto is shared by the session), the first
    approved."""
    made = []
    for name in (f"{unique_name}-alpha", f"{unique_name}-beta"):
        made.append(services.request_create(requester=requester, document=make_document(name=name)))
    services.request_approve(request=made[0], approver=approver, seen_hash=made[0].document_hash)
    return made


def _listed(client, query: str) -> set[str]:
    response = client.get(f"/audit/?{query}")
    assert response.status_code == 200, response.content.decode()[:500]
    return {e.connection_name for e in response.context["page"].events}


def test_text_filters_are_exact_or_prefixes(auditor_client, logged):
    P = logged[0].name.removesuffix("-alpha")
    assert _listed(auditor_client, f"connection={P}-alpha") == {f"{P}-alpha"}
    assert _listed(auditor_client, f"connection={P}") == set()
    assert _listed(auditor_client, f"connection={P}-*") == {f"{P}-alpha", f"{P}-beta"}
    actions = {
        e.action
        for e in auditor_client.get("/audit/?action=connection.request.*").context["page"].events
    }
    assert actions == {"connection.request.create", "connection.request.approve"}
    assert _listed(auditor_client, "actor=appro*") == {f"{P}-alpha"}
    assert _listed(auditor_client, "connection=*") >= {f"{P}-alpha", f"{P}-beta"}


def test_nothing_found_says_what_was_meant(auditor_client, logged):
    P = logged[0].name.removesuffix("-alpha")
    response = auditor_client.get(f"/audit/?connection={P}")
    html = response.content.decode()
    assert 'data-testid="did-you-mean"' in html
    assert f"?connection={P}-alpha" in html and f"?connection={P}-beta" in html
    assert f'href="?connection={P}%2A"' in html
    assert "0 events match these filters." in html


def test_the_count_is_exact_up_to_a_limit(auditor_client, logged, monkeypatch):
    total = AuditEvent.objects.count()
    html = auditor_client.get("/audit/").content.decode()
    assert f"{total} events match." in html
    from connections_app import audit_review

    monkeypatch.setattr(audit_review, "COUNT_UP_TO", 2)
    monkeypatch.setattr(audit_review.count_up_to, "__defaults__", (2,))
    html = auditor_client.get("/audit/").content.decode()
    assert "More than 2 events match." in html


def test_recent_ranges_and_times_to_the_minute(auditor_client, logged):
    everything = _listed(auditor_client, "")
    assert _listed(auditor_client, "range=1h") == everything
    html = auditor_client.get("/audit/?range=24h").content.decode()
    assert 'aria-current="true" data-testid="range-24h"' in html
    newest = AuditEvent.objects.order_by("-id").first().created_at
    minute = newest.strftime("%Y-%m-%dT%H:%M")
    later = (newest + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M")
    ids = [e.id for e in auditor_client.get(f"/audit/?since={later}").context["page"].events]
    assert ids == []
    ids = [e.id for e in auditor_client.get(f"/audit/?until={minute}").context["page"].events]
    assert AuditEvent.objects.order_by("-id").first().id in ids  # the minute is included
    shown = auditor_client.get(f"/audit/?since={minute}&until={minute}").content.decode()
    assert f'name="since" id="id_since" value="{minute}"' in shown
    assert f'name="until" id="id_until" value="{minute}"' in shown


def test_an_event_page_links_its_request_and_neighbours(auditor_client, logged):
    first = AuditEvent.objects.order_by("id").first()
    html = auditor_client.get(reverse("audit_detail", args=[first.id])).content.decode()
    assert f'href="/requests/{first.request_id}/" data-testid="event-request"' in html
    assert 'data-testid="next-event"' in html and 'data-testid="previous-event"' not in html
    last = AuditEvent.objects.order_by("-id").first()
    html = auditor_client.get(reverse("audit_detail", args=[last.id])).content.decode()
    assert 'data-testid="previous-event"' in html and 'data-testid="next-event"' not in html


def test_secret_uses_in_the_menu_with_one_search_box(auditor_client, logged, requester):
    P = logged[0].name.removesuffix("-alpha")
    page = auditor_client.get(reverse("audit_secret_uses"))
    assert page.status_code == 200
    html = page.content.decode()
    assert '<a href="/audit/secrets/" aria-current="page">Secret uses</a>' in html
    services.request_cancel(request=logged[1], actor=requester)  # any status is listed

    by_ref = auditor_client.get(reverse("audit_secret_uses"), {"q": "secret/canary/apikey#api_key"})
    html = by_ref.content.decode()
    assert by_ref.context["key"] == "reference"
    names = {r.name for r in by_ref.context["requests"]}
    assert names == {f"{P}-alpha", f"{P}-beta"}
    assert "Cancelled" in html
    assert by_ref.context["rows"]  # the approval read it

    fingerprint = by_ref.context["rows"][0]["uses"][0].fingerprint
    by_fp = auditor_client.get(reverse("audit_secret_uses"), {"q": fingerprint})
    assert by_fp.context["key"] == "fingerprint"
    assert {r.name for r in by_fp.context["requests"]} == {f"{P}-alpha", f"{P}-beta"}

    by_prefix = auditor_client.get(reverse("audit_secret_uses"), {"q": "secret/canary/"})
    assert by_prefix.context["key"] == "prefix"
    assert "secret/canary/apikey#api_key" in by_prefix.context["references"]
    assert {r.name for r in by_prefix.context["requests"]} == {f"{P}-alpha", f"{P}-beta"}


def test_a_secret_pasted_into_the_search_box_is_not_shown_back(auditor_client):
    value = f"CANARY {secrets.token_hex(8)}"
    response = auditor_client.get(reverse("audit_secret_uses"), {"q": value})
    assert response.status_code == 400
    assert value not in response.content.decode()
    assert _page(response).title.startswith("Error: Secret uses")


# ---------------------------------------------------------------------------
# 8. Small things


def test_status_page_is_a_table_with_the_time_of_the_check(admin_client_):
    html = admin_client_.get("/status/").content.decode()
    assert 'data-testid="health"' in html
    assert re.search(r"Checked now, at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", html)
    assert "<pre" not in html
    for name in ("Database", "Vault", "AWS (EventBridge)"):
        assert f'<th scope="row">{name}</th>' in html


def test_refresh_all_refreshes_the_passing_connections(created, requester_client, auditor_client):
    from connections_app.models import Connection

    Connection.objects.filter(pk=created.connection.pk).update(state="UPDATING")
    html = requester_client.get("/connections/").content.decode()
    assert 'data-testid="refresh-all"' in html
    assert 'class="badge state state-updating"' in html
    response = requester_client.post(reverse("connection_refresh_all"), follow=True)
    assert "Refreshed 1 of 1." in response.content.decode()
    assert Connection.objects.get(pk=created.connection.pk).state == "AUTHORIZED"
    assert auditor_client.post(reverse("connection_refresh_all")).status_code == 403
    assert 'data-testid="refresh-all"' not in auditor_client.get("/connections/").content.decode()


def test_every_time_on_a_connection_page_says_utc(created, approver_client):
    from connections_app.models import Connection

    Connection.objects.filter(pk=created.connection.pk).update(authorized_at=None)
    html = approver_client.get(
        reverse("connection_detail", args=[created.connection.pk])
    ).content.decode()
    facts = html.split('<dl class="facts">', 1)[1].split("</dl>", 1)[0]
    for value in re.findall(r"<dd>(\d{4}-[^<]*)</dd>", facts):
        assert value.endswith(" UTC"), value
    assert "<dt>Last authorized</dt><dd>–</dd>" in facts  # no "– UTC" for a time not known
