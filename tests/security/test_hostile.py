"""Hostile input: refused with a clear message beside the field, and no Vault or AWS call.

The app reaches OpenBao and moto through counting proxies (the `calls` fixture), so "no call"
is what the servers' side of the wire saw, not what the code meant to do.
"""

from __future__ import annotations

import json
import re
import uuid

import pytest
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from connections_app import document as doc
from connections_app import roles, services, vault
from connections_app.models import ConnectionRequest
from tests.security.forms import form

R = ConnectionRequest
pytestmark = [
    pytest.mark.usefixtures("servers"),
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore:Generating overly large repr"),  # 100 KB examples
]


@pytest.fixture(autouse=True)
def _references_exist(sweep_canaries):
    """The form's own references resolve: only the hostile value is wrong."""


examples = hsettings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large, HealthCheck.large_base_example],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # no shrinking: failures print as-is
)  # fmt: skip

NAME_OK = re.compile(r"[.\-_A-Za-z0-9]{1,64}")
ANY_CHAR = st.characters(exclude_categories=["Cs"])  # control characters and NUL included
CONTROL = st.sampled_from(["\x00", "\x01", "\x08", "\x0b", "\x1b", "\x7f", "\n", "\r"])


def huge(min_size: int, max_size: int = 100_000):
    """One character repeated: large values without making hypothesis generate them."""
    return st.builds(lambda c, n: c * n, ANY_CHAR.filter(lambda c: not c.isspace()),
                     st.integers(min_size, max_size))  # fmt: skip


def with_bad(bad, alphabet=ANY_CHAR):
    """Text with at least one character from `bad` somewhere inside."""
    text = st.text(alphabet, max_size=20)
    return st.builds(lambda a, b, c: f"x{a}{b}{c}x", text, bad, text)


ESCAPES = [
    ("../sys/policy/root#x", "path_escape"),
    ("secret/../sys/policy/root#x", "path_escape"),
    ("secret/app/../../auth/token/lookup-self#id", "path_escape"),
    ("secret/..#x", "path_escape"),
    ("legacy/../secret/canary/basic#password", "path_escape"),
    ("secret/./canary/basic#password", "path_escape"),
    ("secret/%2e%2e/sys/policy#x", "bad_format"),
    ("secret/%2E%2E%2Fsys#x", "bad_format"),
    ("secret/.%2e/sys#x", "bad_format"),
    ("secret/\u2024\u2024/sys#x", "bad_format"),  # one-dot leaders
    ("secret/\uff0e\uff0e/sys#x", "bad_format"),  # full-width full stops
    ("secret\\..\\sys#x", "path_escape"),
    ("sys/policy/root#x", "forbidden_mount"),
    ("SYS/policy/root#x", "forbidden_mount"),
    ("  sys/policy/root#x", "forbidden_mount"),
    ("sys#x", "forbidden_mount"),
    ("auth/token/create#client_token", "forbidden_mount"),
    ("identity/entity/id#x", "forbidden_mount"),
    ("cubbyhole/mine#x", "forbidden_mount"),
    ("/secret/canary/basic#password", "leading_slash"),
    ("//evil.example/secret#x", "leading_slash"),
    ("secret//canary#x", "bad_format"),
    ("secret/canary/basic?version=1#password", "bad_format"),
    ("http://evil.example/v1/secret/x#y", "bad_format"),
    ("secret/canary/basic\n#password", "bad_format"),
    ("secret/canary/basic#pass\x00word", "bad_format"),
    ("секрет/app#x", "bad_format"),
    ("secret/canary/basic#password@0", "bad_version"),
    ("secret/canary/basic#password@9999999999999999999999", "bad_version"),
    ("secret/canary/basic", "missing_key"),
]
ESCAPE_CODES = {code for _, code in ESCAPES} | {"invalid_reference"}


SWEEP_PATHS = ("/v1/secret/data/sweep/", "/v1/sys/internal/ui/mounts/secret/sweep/")


def _not_a_reference(text: str) -> bool:
    try:
        vault.parse_reference(text)
    except vault.InvalidReference:
        return True
    return False


HOSTILE_REF = st.sampled_from([t for t, _ in ESCAPES]) | st.text(ANY_CHAR, max_size=60).filter(
    lambda t: t.strip() and _not_a_reference(t)
)


# ---------------------------------------------------------------------------
# Hostile values in each field of the form
#
# (id, kind, strategy -> POST overrides, where the error must show, refused by Django's form
# alone (True) or only by the document's validation (False))


def _field(name):
    return lambda value: {name: value}


def _row(prefix, secret=False, column="value"):
    def build(value):
        row = ("X-Hostile", value, secret) if column == "value" else (value, "v", False)
        return {"rows": {prefix: [row]}}

    return build


def _rows(prefix, value="v", secret=False):
    return lambda n: {"rows": {prefix: [(f"k{i}", value, secret) for i in range(n)]}}


FORM_CASES = [
    ("name: unicode, control characters, NUL", "API_KEY",
     st.text(ANY_CHAR, min_size=1, max_size=80).filter(lambda s: not NAME_OK.fullmatch(s.strip())),
     _field("name"), ("name",), False),
    ("name: huge (65 characters to 100 KB)", "API_KEY", huge(65), _field("name"), ("name",), False),
    ("description: NUL inside", "API_KEY", with_bad(st.just("\x00")), _field("description"),
     ("description",), True),
    ("description: longer than AWS allows (483-2000)", "API_KEY", huge(483, 2000),
     _field("description"), ("description",), False),
    ("description: huge (2001 characters to 100 KB)", "API_KEY", huge(2001),
     _field("description"), ("description",), True),
    ("API key name: ':' or control characters", "API_KEY", with_bad(CONTROL | st.just(":")).filter(
        lambda s: "\x00" not in s), _field("apikey_name"), ("apikey_name",), False),
    ("secret reference field: escapes and junk", "API_KEY", HOSTILE_REF, _field("apikey_value"),
     ("apikey_value",), True),
    ("secret parameter row: escapes and junk", "API_KEY", HOSTILE_REF,
     _row("inv_header", secret=True), ("inv_header", 0, "value"), True),
    ("header key: not an HTTP token", "API_KEY",
     with_bad(st.sampled_from(list(' :"(),/;<=>?@[\\]{}') + ["\x01", "é"])),
     _row("inv_header", column="key"), ("inv_header", 0, "key"), False),
    ("authorization type: not a choice", "API_KEY",
     st.text(ANY_CHAR, max_size=40).filter(lambda s: s not in doc.AUTH_SECTIONS),
     _field("authorization_type"), ("authorization_type",), True),
    ("OAuth endpoint: not https, junk or huge", "OAUTH_CLIENT_CREDENTIALS",
     st.sampled_from(["http://auth.example.com/t", "javascript:alert(1)", "https://[::1",
                      "ftp://x/y", "https:///nohost", "//evil.example/t"])
     | st.text(ANY_CHAR, min_size=1, max_size=40).filter(lambda s: not s.strip().startswith("https://"))
     | huge(4097), _field("oauth_endpoint"), ("oauth_endpoint",), False),
    ("101 to 150 rows in one list", "API_KEY", st.integers(101, 150), _rows("inv_query"),
     ("inv_query",), True),
    ("payload over 64 KB (body rows of 4 KB)", "API_KEY", st.integers(17, 100),
     _rows("inv_body", value="b" * 4096), ("__all__",), False),
]  # fmt: skip


def _errors_at(response, where: tuple) -> list[str]:
    forms = response.context["forms"]
    if len(where) == 1 and where[0] in forms.formsets:
        formset = forms.formsets[where[0]]
        return [e.code for e in formset.non_form_errors().as_data()]
    if len(where) == 3:
        prefix, index, field = where
        row = forms.formsets[prefix].forms[index]
        return [e.code for e in row.errors.as_data().get(field, [])]
    errors = forms.form.errors.as_data()
    return [e.code for e in errors.get(where[0], [])]


def _post_hostile(client, kind, overrides):
    rows = overrides.pop("rows", None)
    data = form(kind, f"hostile-{uuid.uuid4().hex[:8]}", rows=rows) | overrides
    return client.post(reverse("request_new"), data)


def _case_params():
    params = []
    for case_id, kind, strategy, build, where, _by_form in FORM_CASES:
        params.append(pytest.param(kind, strategy, build, where, id=case_id))
    return params


@pytest.mark.parametrize(("kind", "strategy", "build", "where"), _case_params())
def test_hostile_field_is_refused_beside_it(kind, strategy, build, where, requester_client,
                                            calls, request, security_report):  # fmt: skip
    """Never a 500, never saved, the error beside the field; the hostile value sent nowhere."""
    seen = {"examples": 0, "codes": set(), "vault": 0, "aws": 0}

    @examples
    @given(value=strategy)
    def run(value):
        calls.reset()
        response = _post_hostile(requester_client, kind, build(value))
        seen["examples"] += 1
        assert response.status_code == 400, response.status_code
        codes = _errors_at(response, where)
        assert codes, f"no error beside {where}"
        seen["codes"].update(codes)
        assert not R.objects.exists()
        vault_calls, aws_calls = calls.total()
        seen["vault"] += vault_calls
        seen["aws"] += aws_calls
        # Whatever was called, the hostile value itself reached neither server: Vault saw
        # only the form's own valid references, AWS at most the name check of a valid name.
        assert all(p.startswith(SWEEP_PATHS) for _, p, _ in calls.vault.seen), calls.vault.seen
        assert {t.rsplit(".", 1)[-1] for _, _, t in calls.aws.seen} <= {"DescribeConnection"}
        if where == ("name",):
            assert aws_calls == 0

    try:
        run()
    finally:
        security_report.add(
            "hostile inputs",
            f"form, {request.node.callspec.id}",
            f"{seen['examples']} hypothesis examples -> HTTP 400, error codes "
            f"{sorted(seen['codes'])} beside {'.'.join(map(str, where))}, nothing saved; "
            f"Vault calls {seen['vault']}, AWS calls {seen['aws']}",
        )


@pytest.mark.parametrize(("kind", "strategy", "build", "where"), _case_params())
def test_hostile_field_costs_no_vault_or_aws_call(kind, strategy, build, where,
                                                  requester_client, calls):  # fmt: skip
    @hsettings(examples, max_examples=8)
    @given(value=strategy)
    def run(value):
        calls.reset()
        response = _post_hostile(requester_client, kind, build(value))
        assert response.status_code == 400
        assert calls.total() == (0, 0), f"calls made for a refused form: {calls.total()}"

    run()


# ---------------------------------------------------------------------------
# Hostile documents straight into the service

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(ANY_CHAR, max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)  # fmt: skip


def _paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*path, i))


@st.composite
def hostile_documents(draw, base: dict):
    """The valid document with one node replaced, one field added, or a list blown up."""
    document = json.loads(json.dumps(base))
    paths = [p for p in _paths(document) if p]
    how = draw(st.sampled_from(["replace", "add", "flood", "escape"]))
    if how == "replace":
        path = draw(st.sampled_from(paths))
        node = document
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = draw(JSON_VALUES)
    elif how == "add":
        path = draw(st.sampled_from([p for p in [(), *paths] if _is_dict(document, p)]))
        node = document
        for part in path:
            node = node[part]
        node[draw(st.text(ANY_CHAR, min_size=1, max_size=10))] = draw(JSON_VALUES)
    elif how == "flood":
        count = draw(st.integers(101, 300))
        rows = [{"Key": f"k{i}", "Value": "v", "IsValueSecret": False} for i in range(count)]
        document["AuthParameters"]["InvocationHttpParameters"]["QueryStringParameters"] = rows
    else:
        leaf = document["AuthParameters"]["ApiKeyAuthParameters"]["ApiKeyValue"]
        leaf["vault"] = draw(st.sampled_from([t for t, _ in ESCAPES]))
    return document


def _is_dict(document, path):
    node = document
    for part in path:
        node = node[part]
    return isinstance(node, dict)


def _create(requester, document):
    try:
        return services.request_create(requester=requester, document=document), None
    except services.DocumentInvalid as exc:
        return None, exc.issues


def test_hostile_documents_are_refused_field_by_field(requester, make_document, calls,
                                                      security_report):  # fmt: skip
    """Anything but a valid document: DocumentInvalid with a path, code and message each."""
    base = make_document("API_KEY")
    seen = {"examples": 0, "refused": 0, "accepted": 0, "codes": set()}

    @hsettings(examples, max_examples=100)
    @given(document=hostile_documents(base))
    def run(document):
        seen["examples"] += 1
        created, issues = _create(requester, document)
        if created is not None:  # e.g. another plain Description: valid, so accepted
            seen["accepted"] += 1
            assert doc.validate(document) == []
            created.delete()
            return
        seen["refused"] += 1
        assert issues
        for issue in issues:
            assert isinstance(issue.path, str) and issue.code and issue.message
            seen["codes"].add(issue.code)

    try:
        run()
    finally:
        security_report.add(
            "hostile inputs",
            "service documents (one node replaced, a field added, 101-300 parameters, escapes)",
            f"{seen['examples']} hypothesis examples: {seen['refused']} refused with field "
            f"issues {sorted(seen['codes'])}, {seen['accepted']} still valid and accepted; "
            "no other exception",
        )


def test_nul_in_a_plain_string_is_a_field_issue_not_a_database_error(
    requester, make_document, security_report
):
    """Description and body parameters have no pattern; PostgreSQL's jsonb cannot store NUL."""
    places = {
        "Description": lambda d: d.update(Description="partner\x00API"),
        "AuthParameters.InvocationHttpParameters.BodyParameters[0].Key": lambda d: d[
            "AuthParameters"]["InvocationHttpParameters"].update(
            BodyParameters=[{"Key": "k\x00", "Value": "v", "IsValueSecret": False}]),
        "AuthParameters.InvocationHttpParameters.BodyParameters[0].Value": lambda d: d[
            "AuthParameters"]["InvocationHttpParameters"].update(
            BodyParameters=[{"Key": "k", "Value": "v\x00", "IsValueSecret": False}]),
    }  # fmt: skip
    found = {}
    for path, mutate in places.items():
        document = make_document("API_KEY")
        mutate(document)
        created, issues = _create(requester, document)
        assert created is None, f"saved with NUL at {path}"
        found[path] = [i.code for i in issues if i.path == path]
    security_report.add(
        "hostile inputs", "NUL in plain strings of a document (service, both databases)",
        f"refused by field: {found}; no database error",
    )  # fmt: skip
    assert all(codes == ["null_characters_not_allowed"] for codes in found.values()), found


def test_hostile_documents_cost_no_vault_or_aws_call(requester, make_document, calls):
    base = make_document("API_KEY")

    @hsettings(examples, max_examples=25)
    @given(document=hostile_documents(base))
    def run(document):
        calls.reset()
        created, _ = _create(requester, document)
        if created is None and doc.validate(document):
            assert calls.total() == (0, 0), f"calls made for a refused document: {calls.total()}"
        elif created is None:
            # Valid on its own (say, a version number that does not exist): only Vault and
            # AWS can tell, so asking them is right; nothing was saved either way.
            assert not ConnectionRequest.objects.filter(name=document["Name"]).exists()
        else:
            created.delete()

    run()


# ---------------------------------------------------------------------------
# Vault references that try to leave their mount


@pytest.mark.parametrize(("text", "code"), ESCAPES, ids=[t for t, _ in ESCAPES])
def test_reference_escapes_are_refused_before_vault(text, code, requester_client, calls):
    with pytest.raises(vault.InvalidReference) as caught:
        vault.parse_reference(text)
    assert caught.value.code == code
    answer = requester_client.post(reverse("reference_check"), {"reference": text}).json()
    assert answer == {"ok": False, "code": code, "message": caught.value.message}
    response = _post_hostile(requester_client, "BASIC", {"basic_password": text})
    assert response.status_code == 400
    # Django's own check for NUL comes first in the form.
    assert _errors_at(response, ("basic_password",))[0] in (code, "null_characters_not_allowed")
    assert calls.total() == (0, 0)


def test_reference_escapes_report(calls, requester_client, security_report):
    codes = {}
    for text, _ in ESCAPES:
        answer = requester_client.post(reverse("reference_check"), {"reference": text}).json()
        codes[answer["code"]] = codes.get(answer["code"], 0) + 1
    security_report.add(
        "hostile inputs",
        f"{len(ESCAPES)} Vault references leaving their mount (../, %2e%2e, sys/, auth/, "
        "cubbyhole/, leading /, unicode dots, ...)",
        f"all refused by the Check button and the form: {dict(sorted(codes.items()))}; "
        f"Vault calls {calls.total()[0]}, AWS calls {calls.total()[1]}",
    )
    assert calls.total() == (0, 0)
    assert not codes.keys() - ESCAPE_CODES


# ---------------------------------------------------------------------------
# CSRF, other users' requests, roles, open redirects


@pytest.fixture
def own_request(requester, make_document):
    return services.request_create(requester=requester, document=make_document("API_KEY"))


def _strict_client(user) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def test_posts_without_csrf_token_are_refused(own_request, requester, approver, calls,
                                              security_report):  # fmt: skip
    pk, seen_hash = own_request.pk, own_request.document_hash
    posts = [
        (requester, reverse("request_new"), form("API_KEY", "csrf-new")),
        (requester, reverse("request_edit", args=[pk]), form("API_KEY", own_request.name)),
        (requester, reverse("request_cancel", args=[pk]), {}),
        (requester, reverse("reference_check"), {"reference": "secret/canary/basic#password"}),
        (approver, reverse("request_approve", args=[pk]), {"document_hash": seen_hash}),
        (approver, reverse("request_reject", args=[pk]), {"reason": "no"}),
        (approver, reverse("request_retry", args=[pk]), {"document_hash": seen_hash}),
        (approver, reverse("connection_refresh", args=[pk]), {}),
    ]  # fmt: skip
    calls.reset()
    statuses = [_strict_client(user).post(url, data).status_code for user, url, data in posts]
    login = Client(enforce_csrf_checks=True).post(
        reverse("login"), {"username": "requester", "password": "pw-for-tests-only"}
    )
    statuses.append(login.status_code)
    own_request.refresh_from_db()
    security_report.add(
        "hostile inputs", f"{len(statuses)} POSTs without a CSRF token (every form, login)",
        f"statuses {sorted(set(statuses))}; request still {own_request.status}, revision "
        f"{own_request.revision}; Vault calls {calls.total()[0]}, AWS calls {calls.total()[1]}",
    )  # fmt: skip
    assert statuses == [403] * len(statuses)
    assert (own_request.status, own_request.revision) == (R.PENDING, 1)
    assert calls.total() == (0, 0)


def test_another_users_request_ids(own_request, user_factory, calls, security_report):
    stranger = user_factory("requester-b", groups=[roles.REQUESTERS])
    client = Client()
    client.force_login(stranger)
    pk, seen_hash = own_request.pk, own_request.document_hash
    tries = [
        ("GET", reverse("request_detail", args=[pk]), None),
        ("GET", reverse("request_edit", args=[pk]), None),
        ("POST", reverse("request_edit", args=[pk]), form("API_KEY", own_request.name)),
        ("POST", reverse("request_cancel", args=[pk]), {}),
        ("POST", reverse("request_approve", args=[pk]), {"document_hash": seen_hash}),
        ("POST", reverse("request_reject", args=[pk]), {"reason": "mine now"}),
        ("POST", reverse("request_retry", args=[pk]), {"document_hash": seen_hash}),
    ]  # fmt: skip
    for big in (0, 2**31, 2**63, 2**64, 10**30):
        tries.append(("GET", f"/requests/{big}/", None))
        tries.append(("POST", f"/requests/{big}/approve/", {"document_hash": "x"}))
    calls.reset()
    statuses = []
    for method, url, data in tries:
        response = client.get(url) if method == "GET" else client.post(url, data)
        statuses.append(response.status_code)
    own_request.refresh_from_db()
    security_report.add(
        "hostile inputs", "another requester's request ids, and ids 0 to 10**30",
        f"{len(tries)} GET/POSTs -> statuses {sorted(set(statuses))}; the request still "
        f"{own_request.status}, revision {own_request.revision}; Vault calls "
        f"{calls.total()[0]}, AWS calls {calls.total()[1]}",
    )  # fmt: skip
    assert statuses == [404] * len(tries)
    assert (own_request.status, own_request.revision) == (R.PENDING, 1)
    assert calls.total() == (0, 0)


def test_role_escalation_is_refused(own_request, requester, auditor, approver, calls,
                                    security_report):  # fmt: skip
    from django.contrib.auth.models import Group

    pk, seen_hash = own_request.pk, own_request.document_hash
    outcomes = []

    def post(user, url, data=None, expect=(403,)):
        client = Client()
        client.force_login(user)
        response = client.post(url, data or {}, follow=False)
        text = ""
        if response.status_code == 302 and response["Location"] == reverse(
            "request_detail", args=[pk]
        ):
            follow = client.get(response["Location"])
            text = " ".join(str(m) for m in follow.context["messages"])
        outcomes.append((user.get_username(), url, response.status_code, text))
        return response.status_code, text

    calls.reset()
    # Acting above one's role: refused by permission (403) or by the workflow (a message).
    assert post(requester, reverse("request_approve", args=[pk]), {"document_hash": seen_hash})[1]
    assert post(requester, reverse("request_reject", args=[pk]), {"reason": "x"})[1]
    assert post(requester, reverse("request_retry", args=[pk]), {"document_hash": seen_hash})[1]
    assert post(auditor, reverse("request_approve", args=[pk]), {"document_hash": seen_hash})[1]
    assert post(auditor, reverse("request_cancel", args=[pk]))[1]
    assert post(auditor, reverse("request_new"), form("API_KEY", "by-auditor"))[0] == 403
    assert (
        post(auditor, reverse("reference_check"), {"reference": "secret/canary/basic#password"})[0]
        == 403
    )
    assert post(approver, reverse("request_new"), form("API_KEY", "by-approver"))[0] == 403
    assert post(auditor, reverse("connection_refresh", args=[pk]))[0] == 403
    # The admin, and with it user and group management, stays closed to non-staff.
    client = Client()
    client.force_login(requester)
    group = Group.objects.get(name=roles.APPROVERS)
    admin_pages = [
        client.get(reverse("admin:index")).status_code,
        client.get(reverse("admin:auth_user_change", args=[requester.pk])).status_code,
        client.post(reverse("admin:auth_user_change", args=[requester.pk]),
                    {"username": "requester", "groups": [group.pk],
                     "is_superuser": "on"}).status_code,
    ]  # fmt: skip
    for user in (requester, approver, auditor):
        c = Client()
        c.force_login(user)
        admin_pages.append(c.get(reverse("status")).status_code)
    requester.refresh_from_db()
    own_request.refresh_from_db()
    refused = [o for o in outcomes if o[2] == 403 or o[3]]
    security_report.add(
        "hostile inputs", "role escalation (approve/reject/retry as requester or auditor, "
        "filing as auditor or approver, admin and status pages as non-staff)",
        f"{len(refused)} of {len(outcomes)} actions refused ({sum(o[2] == 403 for o in outcomes)} "
        f"with 403, the rest with a message such as “{next(o[3] for o in outcomes if o[3])}”); "
        f"admin/status as non-staff -> {sorted(set(admin_pages))}; requester still in "
        f"{sorted(requester.groups.values_list('name', flat=True))}, superuser "
        f"{requester.is_superuser}; request still {own_request.status}; Vault calls "
        f"{calls.total()[0]}, AWS calls {calls.total()[1]}",
    )  # fmt: skip
    assert len(refused) == len(outcomes)
    assert own_request.status == R.PENDING
    assert not requester.is_superuser and not requester.groups.filter(name=roles.APPROVERS).exists()
    assert set(admin_pages) <= {302, 403}
    assert calls.total() == (0, 0)


OPEN_REDIRECTS = [
    "https://evil.example/",
    "//evil.example/",
    "///evil.example/",
    "/\\evil.example/",
    "\\\\evil.example/",
    "https:evil.example",
    "http://testserver@evil.example/",
    "javascript:alert(1)",
    "https://evil.example/%2F..",
    " https://evil.example/",
    "\thttps://evil.example/",
    "http://[::1]:8000/",
]


def test_login_next_never_leaves_the_site(requester, security_report):
    landed = []
    for target in OPEN_REDIRECTS:
        client = Client()
        response = client.post(
            reverse("login") + "?next=x",
            {"username": "requester", "password": "pw-for-tests-only", "next": target},
        )
        assert response.status_code == 302, (target, response.status_code)
        landed.append(response["Location"])
    # The login page echoes `next` into a hidden field: escaped, never markup.
    page = Client().get(reverse("login"), {"next": '"><script>alert(1)</script>'}).content
    assert b"<script>alert(1)" not in page
    logout = Client()
    logout.force_login(requester)
    out = logout.post(reverse("logout"), {"next": "https://evil.example/"})
    landed.append(out["Location"])
    security_report.add(
        "hostile inputs",
        f"open redirect through the login and logout `next` ({len(OPEN_REDIRECTS)} forms)",
        f"every one landed on a local URL: {sorted(set(landed))}",
    )  # fmt: skip
    for location in landed:
        assert location.startswith("/") and not location.startswith(("//", "/\\")), location


# ---------------------------------------------------------------------------
# The largest form the product allows, and 101 rows in every list


def _oauth_rows(count: int) -> dict:
    prefixes = ["oauth_header", "oauth_query", "oauth_body", "inv_header", "inv_query", "inv_body"]
    return {p: [(f"k{i}", f"v{i}", False) for i in range(count)] for p in prefixes}


def test_100_rows_in_every_list_is_accepted(requester_client, unique_name):
    data = form("OAUTH_CLIENT_CREDENTIALS", unique_name, rows=_oauth_rows(100))
    response = requester_client.post(reverse("request_new"), data)
    assert response.status_code == 302, response.status_code


def test_101_rows_in_every_list_get_a_message_in_each(requester_client, unique_name, calls):
    data = form("OAUTH_CLIENT_CREDENTIALS", unique_name, rows=_oauth_rows(101))
    response = requester_client.post(reverse("request_new"), data)
    assert response.status_code == 400
    assert response.context is not None, "a bare 400 page, no form"
    for prefix in _oauth_rows(1):
        assert _errors_at(response, (prefix,)) == ["too_many_forms"]
    assert calls.total() == (0, 0)
