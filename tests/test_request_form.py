"""The request form through Django's test client, against the session's OpenBao and moto."""

from __future__ import annotations

import json
import re
import uuid
from html.parser import HTMLParser

import boto3
import pytest
from django.utils import timezone

from connections_app import document as doc
from connections_app import roles, services
from connections_app.devstack import KV1_MOUNT as KV1
from connections_app.forms import PARAMETER_LISTS
from connections_app.models import ConnectionRequest, DocumentRevision

pytestmark = [pytest.mark.usefixtures("servers"), pytest.mark.django_db]

KINDS = ["BASIC", "OAUTH_CLIENT_CREDENTIALS", "API_KEY"]
PREFIXES = [prefix for prefix, _, _ in PARAMETER_LISTS]
LABELS = [
    "Name",
    "Description",
    "Authorization type",
    "Username",
    "Password",
    "Client ID",
    "Client secret",
    "Authorization endpoint",
    "HTTP method",
    "API key name",
    "API key value",
    "KMS key identifier",
]
# References to what the `canaries` fixture seeds in OpenBao.
PASSWORD_REF = "secret/canary/basic#password"
CLIENT_SECRET_REF = "secret/canary/oauth#client_secret"
API_KEY_REF = "secret/canary/apikey#api_key"
HEADER_TOKEN_REF = "secret/canary/oauth#header_token"
ROTATING_REF = "secret/canary/rotating#value"
# A path no test writes to, whatever else the session has put in OpenBao.
MISSING = f"secret/form-tests/absent-{uuid.uuid4().hex}"
LATTICE_ARN = (
    "arn:aws:vpc-lattice:us-east-1:123456789012:resourceconfiguration/rcfg-0123456789abcdef0"
)
DEFAULT_ROWS = {
    "oauth_body": [("grant_type", "client_credentials", False)],
    "inv_header": [("X-Token", HEADER_TOKEN_REF, True), ("X-Plain", "plain-value", False)],
}


def form_data(kind: str, name: str, /, *, rows: dict | None = None, **fields) -> dict:
    """What the browser posts with JavaScript off: every section's fields and all six formsets."""
    data = {
        "name": name,
        "description": "partner API",
        "authorization_type": kind,
        "basic_username": "alice",
        "basic_password": PASSWORD_REF,
        "oauth_client_id": "client-1",
        "oauth_client_secret": CLIENT_SECRET_REF,
        "oauth_endpoint": "https://auth.example.com/oauth2/token",
        "oauth_http_method": "POST",
        "oauth_resource_arn": "",
        "apikey_name": "x-api-key",
        "apikey_value": API_KEY_REF,
        "invocation_resource_arn": "",
        "kms_key": "",
        "_save": "",
    }
    data.update(fields)
    all_rows = {**DEFAULT_ROWS, **(rows or {})}
    for prefix in PREFIXES:
        items = all_rows.get(prefix, [])
        data[f"{prefix}-TOTAL_FORMS"] = str(len(items))
        data[f"{prefix}-INITIAL_FORMS"] = "0"
        data[f"{prefix}-MIN_NUM_FORMS"] = "0"
        data[f"{prefix}-MAX_NUM_FORMS"] = "100"
        for i, (key, value, secret) in enumerate(items):
            data[f"{prefix}-{i}-key"] = key
            data[f"{prefix}-{i}-value"] = value
            if secret:
                data[f"{prefix}-{i}-is_secret"] = "on"
    return data


class _FormState(HTMLParser):
    """name -> value of every control a browser would submit from the rendered page."""

    def __init__(self, html: str):
        super().__init__()
        self.values: dict[str, str] = {}
        self._textarea: str | None = None
        self._select: str | None = None
        self._template = 0
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "template":  # the empty row JavaScript copies is not a submitted control
            self._template += 1
        if self._template:
            return
        name = a.get("name")
        if tag == "input" and name:
            kind = a.get("type", "text")
            if kind in ("checkbox", "radio"):
                if "checked" in a:
                    self.values[name] = a.get("value") or "on"
            elif kind not in ("submit", "button"):
                self.values[name] = a.get("value") or ""
        elif tag == "textarea" and name:
            self._textarea = name
            self.values[name] = ""
        elif tag == "select":
            self._select = name
        elif tag == "option" and self._select and "selected" in a:
            self.values[self._select] = a.get("value")

    def handle_endtag(self, tag):
        if tag == "template":
            self._template -= 1
        elif tag == "textarea":
            if self._textarea and self.values[self._textarea].startswith("\n"):
                self.values[self._textarea] = self.values[self._textarea][1:]
            self._textarea = None
        elif tag == "select":
            self._select = None

    def handle_data(self, data):
        if self._textarea and not self._template:
            self.values[self._textarea] += data


def assert_entered_back(response, data: dict, *, not_kept: tuple | None = None) -> None:
    """Everything posted, references included, is in the re-rendered form; except the text of
    the secret fields that is no reference (perhaps a value: `not_kept`, by default worked out
    from `data`), which never comes back."""
    if not_kept is None:
        not_kept = not_references(data)
    html = response.content.decode()
    rendered = _FormState(html).values
    bound = response.context["form"].data
    for key, value in data.items():
        if key.startswith("_"):
            continue
        if key in not_kept:
            assert bound[key] == "" and rendered.get(key) == "", key
            assert f'value="{value}"' not in html and f">{value}<" not in html, key
            continue
        assert bound[key] == value
        assert rendered.get(key) == value, key
    for prefix in PREFIXES:
        for i in range(int(data[f"{prefix}-TOTAL_FORMS"])):
            box = f"{prefix}-{i}-is_secret"
            assert (box in rendered) is (box in data), box


def not_references(data: dict) -> tuple[str, ...]:
    """The secret fields posted with text that is no Vault reference (never shown back)."""
    from connections_app import vault

    names = ["basic_password", "oauth_client_secret", "apikey_value"]
    names += [k.replace("is_secret", "value") for k in data if k.endswith("-is_secret")]
    out = []
    for name in names:
        try:
            if data.get(name):
                vault.parse_reference(data[name])
        except vault.InvalidReference:
            out.append(name)
    return tuple(out)


def field_codes(response, field: str) -> list[str]:
    return [e.code for e in response.context["form"].errors.as_data().get(field, [])]


def row_codes(response, prefix: str, index: int, field: str) -> list[str]:
    row = response.context["forms"].formsets[prefix].forms[index]
    return [e.code for e in row.errors.as_data().get(field, [])]


@pytest.fixture
def web(requester_client, canaries):
    """The requester's test client; every response it gets is checked for canary values."""

    def checked(response):
        body = response.content.decode(errors="replace")
        for name, value in canaries.items():
            assert value not in body, f"canary {name} in a response"
        return response

    class Client:
        def get(self, *args, **kwargs):
            return checked(requester_client.get(*args, **kwargs))

        def post(self, *args, **kwargs):
            return checked(requester_client.post(*args, **kwargs))

    return Client()


def create(web, kind, name, **fields):
    response = web.post("/requests/new/", form_data(kind, name, **fields))
    assert response.status_code == 302, _errors(response)
    return ConnectionRequest.objects.get(name=name)


def _errors(response) -> str:
    if not response.context:
        return ""
    forms = response.context["forms"]
    parts = [str(forms.form.errors.as_data())]
    for prefix, formset in forms.formsets.items():
        parts.append(f"{prefix}: {formset.errors} {formset.non_form_errors()}")
    return "\n".join(parts)


# ---------------------------------------------------------------------------
# The empty form


def test_new_request_form_shows_every_field(web):
    response = web.get("/requests/new/")
    assert response.status_code == 200
    html = response.content.decode()
    for label in LABELS:
        assert re.search(f">{label}</label>|<legend>{label}( <span|</legend>)", html), label
    for prefix in PREFIXES:
        assert f'name="{prefix}-TOTAL_FORMS"' in html
    rendered = _FormState(html).values
    assert rendered["oauth_http_method"] == "POST"


# ---------------------------------------------------------------------------
# Valid submissions


@pytest.mark.parametrize("kind", KINDS)
def test_valid_form_saves_a_pending_request_with_references(kind, web, unique_name, make_document):
    # Fields of the sections not chosen post too (JavaScript off); an OAuth row that would be
    # an error is part of them, and must be discarded with its section.
    rows = {**DEFAULT_ROWS}
    if kind != "OAUTH_CLIENT_CREDENTIALS":
        rows["oauth_header"] = [("Bad Key", HEADER_TOKEN_REF, False)]
    data = form_data(kind, unique_name, rows=rows)

    response = web.post("/requests/new/", data)

    assert response.status_code == 302, _errors(response)
    obj = ConnectionRequest.objects.get(name=unique_name)
    assert response["Location"] == f"/requests/{obj.pk}/"
    assert obj.status == ConnectionRequest.PENDING
    assert obj.authorization_type == kind
    assert obj.document == make_document(kind, name=unique_name)
    assert obj.document_hash == doc.document_hash(obj.document)
    assert set(obj.document["AuthParameters"]) == {
        doc.AUTH_SECTIONS[kind],
        "InvocationHttpParameters",
    }
    assert [r.number for r in DocumentRevision.objects.filter(request=obj)] == [1]

    page = web.get(response["Location"])
    assert page.status_code == 200
    html = page.content.decode()
    for _, leaf in doc.secret_leaves(obj.document):
        assert leaf["vault"] in html


def test_optional_fields_reach_the_document(web, unique_name):
    kms = "arn:aws:kms:us-east-1:123456789012:alias/eventbridge"
    obj = create(
        web,
        "OAUTH_CLIENT_CREDENTIALS",
        unique_name,
        description="",
        oauth_http_method="PUT",
        oauth_resource_arn=LATTICE_ARN,
        invocation_resource_arn=LATTICE_ARN,
        kms_key=kms,
        rows={
            "oauth_header": [("X-Auth-Tenant", "tenant-1", False)],
            "oauth_query": [("audience", "api://partner", False)],
            "inv_query": [("token", ROTATING_REF + "@1", True), ("", "", False)],
            "inv_body": [("source", "dashboard", False)],
        },
    )
    document = obj.document
    auth = document["AuthParameters"]
    assert "Description" not in document
    assert document["KmsKeyIdentifier"] == kms
    assert auth["OAuthParameters"]["HttpMethod"] == "PUT"
    assert auth["ConnectivityParameters"] == {
        "ResourceParameters": {"ResourceConfigurationArn": LATTICE_ARN}
    }
    assert document["InvocationConnectivityParameters"] == auth["ConnectivityParameters"]
    http = auth["OAuthParameters"]["OAuthHttpParameters"]
    assert http["HeaderParameters"] == [
        {"Key": "X-Auth-Tenant", "Value": "tenant-1", "IsValueSecret": False}
    ]
    assert http["QueryStringParameters"][0]["Value"] == "api://partner"
    assert auth["InvocationHttpParameters"]["QueryStringParameters"] == [
        {"Key": "token", "Value": {"vault": ROTATING_REF, "version": 1}, "IsValueSecret": True}
    ]
    assert auth["InvocationHttpParameters"]["BodyParameters"][0]["Key"] == "source"

    # ...and come back on the edit page.
    rendered = _FormState(web.get(f"/requests/{obj.pk}/edit/").content.decode()).values
    assert rendered["oauth_resource_arn"] == LATTICE_ARN
    assert rendered["invocation_resource_arn"] == LATTICE_ARN
    assert rendered["kms_key"] == kms
    assert rendered["inv_query-0-value"] == ROTATING_REF + "@1"
    assert rendered["inv_query-0-is_secret"] == "on"


def test_kv_v1_reference_is_accepted(web, unique_name):
    obj = create(web, "API_KEY", unique_name, apikey_value=f"{KV1}/canary/v1#api_key")
    leaf = obj.document["AuthParameters"]["ApiKeyAuthParameters"]["ApiKeyValue"]
    assert leaf == {"vault": f"{KV1}/canary/v1#api_key", "version": None}


@pytest.mark.parametrize(("count", "status"), [(100, 302), (101, 400)])
def test_at_most_100_rows_per_list(web, unique_name, count, status):
    rows = {"inv_query": [(f"k{i}", f"v{i}", False) for i in range(count)]}
    data = form_data("API_KEY", unique_name, rows=rows)
    response = web.post("/requests/new/", data)
    assert response.status_code == status, _errors(response)
    if status == 302:
        obj = ConnectionRequest.objects.get(name=unique_name)
        http = obj.document["AuthParameters"]["InvocationHttpParameters"]
        assert len(http["QueryStringParameters"]) == 100
    else:
        formset = response.context["forms"].formsets["inv_query"]
        assert [e.code for e in formset.non_form_errors().as_data()] == ["too_many_forms"]
        assert not ConnectionRequest.objects.exists()
        assert_entered_back(response, data)


# ---------------------------------------------------------------------------
# Errors beside their fields, with everything entered kept

ERROR_CASES = [
    # id, kind, fields, rows, (where...), code
    ("bad-name", "API_KEY", {"name": "bad name!"}, None, ("name",), "invalid_characters"),
    ("long-name", "API_KEY", {"name": "n" * 65}, None, ("name",), "too_long"),
    ("no-name", "API_KEY", {"name": ""}, None, ("name",), "required"),
    (
        "http-endpoint",
        "OAUTH_CLIENT_CREDENTIALS",
        {"oauth_endpoint": "http://auth.example.com/token"},
        None,
        ("oauth_endpoint",),
        "not_https",
    ),
    (
        "username-colon",
        "BASIC",
        {"basic_username": "alice:admin"},
        None,
        ("basic_username",),
        "invalid_characters",
    ),
    ("missing-password", "BASIC", {"basic_password": ""}, None, ("basic_password",), "required"),
    (
        # Exponential backtracking in the model's own pattern: must answer at once.
        "username-many-spaces",
        "BASIC",
        {"basic_username": "a" + " " * 400 + ":"},
        None,
        ("basic_username",),
        "invalid_characters",
    ),
    (
        "password-not-reference",
        "BASIC",
        {"basic_password": "hunter2"},
        None,
        ("basic_password",),
        "missing_key",
    ),
    (
        "secret-row-not-reference",
        "API_KEY",
        {},
        {"inv_header": [("X-Token", "just-a-value", True)]},
        ("inv_header", 0, "value"),
        "secret_missing_key",
    ),
    (
        "plain-row-looks-like-reference",
        "API_KEY",
        {},
        {"inv_header": [("X-Token", HEADER_TOKEN_REF, False)]},
        ("inv_header", 0, "value"),
        "reference_not_marked_secret",
    ),
    (
        "header-key-not-token",
        "API_KEY",
        {},
        {"inv_header": [("X Token", "v", False)]},
        ("inv_header", 0, "key"),
        "invalid_characters",
    ),
    (
        "path-escape",
        "API_KEY",
        {"apikey_value": "secret/../sys/policy#x"},
        None,
        ("apikey_value",),
        "path_escape",
    ),
    (
        "forbidden-mount",
        "OAUTH_CLIENT_CREDENTIALS",
        {"oauth_client_secret": "sys/policy/root#x"},
        None,
        ("oauth_client_secret",),
        "forbidden_mount",
    ),
    (
        "leading-slash",
        "BASIC",
        {"basic_password": "/" + PASSWORD_REF},
        None,
        ("basic_password",),
        "leading_slash",
    ),
    (
        "row-path-escape",
        "API_KEY",
        {},
        {"inv_query": [("token", "secret/canary/../../auth/x#y", True)]},
        ("inv_query", 0, "value"),
        "secret_path_escape",
    ),
    (
        "vault-secret-missing",
        "API_KEY",
        {"apikey_value": MISSING + "#api_key"},
        None,
        ("apikey_value",),
        "not_found",
    ),
    (
        "vault-key-missing",
        "BASIC",
        {"basic_password": "secret/canary/basic#no_such_key"},
        None,
        ("basic_password",),
        "key_missing",
    ),
    (
        "vault-version-missing",
        "API_KEY",
        {"apikey_value": ROTATING_REF + "@9"},
        None,
        ("apikey_value",),
        "version_not_found",
    ),
    (
        "row-vault-key-missing",
        "API_KEY",
        {},
        {"inv_header": [("X-Plain", "plain", False), ("X-Token", HEADER_TOKEN_REF + "x", True)]},
        ("inv_header", 1, "value"),
        "key_missing",
    ),
    (
        "kms-key",
        "API_KEY",
        {"kms_key": "alias/not allowed"},
        None,
        ("kms_key",),
        "invalid_characters",
    ),
    (
        "description-too-long",
        "API_KEY",
        {"description": "d" * 500},
        None,
        ("description",),
        "too_long",
    ),
]


@pytest.mark.parametrize(
    ("kind", "fields", "rows", "where", "code"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
def test_errors_are_shown_beside_their_fields(web, unique_name, kind, fields, rows, where, code):
    data = form_data(kind, unique_name, rows=rows, **fields)

    response = web.post("/requests/new/", data)

    assert response.status_code == 400
    if len(where) == 1:
        assert code in field_codes(response, where[0]), _errors(response)
    else:
        assert code in row_codes(response, *where), _errors(response)
    assert not ConnectionRequest.objects.exists()
    assert_entered_back(response, data, not_kept=not_references(data))


def test_error_message_is_rendered_beside_the_field(web, unique_name):
    response = web.post("/requests/new/", form_data("API_KEY", unique_name, apikey_value="sys/x#y"))
    html = response.content.decode()
    field = html.split('data-field="apikey_value"', 1)[1].split('<div class="field', 1)[0]
    assert 'class="errorlist"' in field
    assert "are not allowed" in field


def test_payload_over_64_kb_is_a_form_error(web, unique_name):
    rows = {"inv_body": [(f"field{i}", "b" * 700, False) for i in range(100)]}
    data = form_data("API_KEY", unique_name, rows=rows)
    response = web.post("/requests/new/", data)
    assert response.status_code == 400
    assert field_codes(response, "__all__") == ["payload_too_large"]
    assert "64 KB" in response.content.decode()
    assert not ConnectionRequest.objects.exists()
    assert_entered_back(response, data)


def test_name_used_by_a_pending_request_is_refused(web, unique_name):
    create(web, "API_KEY", unique_name)
    data = form_data("BASIC", unique_name)

    response = web.post("/requests/new/", data)

    assert response.status_code == 400
    assert field_codes(response, "name") == ["name_taken"]
    assert ConnectionRequest.objects.count() == 1
    assert_entered_back(response, data)


def test_name_that_exists_in_aws_is_refused(web, unique_name):
    boto3.client("events").create_connection(
        Name=unique_name,
        AuthorizationType="API_KEY",
        AuthParameters={"ApiKeyAuthParameters": {"ApiKeyName": "x-api-key", "ApiKeyValue": "v"}},
    )
    data = form_data("OAUTH_CLIENT_CREDENTIALS", unique_name)

    response = web.post("/requests/new/", data)

    assert response.status_code == 400
    assert field_codes(response, "name") == ["name_exists_in_aws"]
    assert not ConnectionRequest.objects.exists()
    assert_entered_back(response, data)


def test_several_errors_at_once_all_come_back(web, unique_name):
    data = form_data(
        "OAUTH_CLIENT_CREDENTIALS",
        unique_name,
        oauth_client_id="",
        oauth_client_secret="secret/canary/oauth",
        rows={"oauth_body": [("grant_type", "", False)], "inv_header": [("", "v", False)]},
    )
    response = web.post("/requests/new/", data)
    assert response.status_code == 400
    assert field_codes(response, "oauth_client_id") == ["required"]
    assert field_codes(response, "oauth_client_secret") == ["missing_key"]
    assert row_codes(response, "oauth_body", 0, "value") == ["required"]
    assert row_codes(response, "inv_header", 0, "key") == ["required"]
    assert_entered_back(response, data, not_kept=("oauth_client_secret",))


# ---------------------------------------------------------------------------
# Checking references without saving


def test_every_problem_shows_in_the_first_round(web):
    """A row's own error must not hide the document's checks on the fields that did clean."""
    data = form_data(
        "BASIC",
        "bad name!",
        description="d" * 600,
        basic_username="",
        rows={"inv_header": [("X-Token", "not a reference", True), ("bad key:", "v", False)]},
    )
    response = web.post("/requests/new/", data)
    assert response.status_code == 400
    assert row_codes(response, "inv_header", 0, "value") == ["secret_missing_key"]
    assert field_codes(response, "name") == ["invalid_characters"]
    assert field_codes(response, "description")  # too long, from either check
    assert field_codes(response, "basic_username") == ["required"]  # once, not twice
    assert row_codes(response, "inv_header", 1, "key")
    assert not response.context["form"].non_field_errors()
    assert_entered_back(response, data)


def test_add_row_without_javascript_keeps_everything_and_stops_at_the_limit(web, unique_name):
    data = form_data(
        "API_KEY", unique_name, rows={"inv_header": [("X-Token", HEADER_TOKEN_REF, True)]}
    )
    data.pop("_save")
    data["_add_row"] = "inv_header"

    response = web.post("/requests/new/", data)

    assert response.status_code == 200 and not ConnectionRequest.objects.exists()
    assert not response.context["forms"].has_errors()
    assert response.context["forms"].formsets["inv_header"].total_form_count() == 2
    shown = _FormState(response.content.decode()).values
    assert shown["inv_header-TOTAL_FORMS"] == "2"
    assert (shown["inv_header-0-key"], shown["inv_header-0-value"]) == ("X-Token", HEADER_TOKEN_REF)
    assert shown["inv_header-1-key"] == "" and shown["apikey_value"] == API_KEY_REF

    data["inv_header-TOTAL_FORMS"] = "²"  # a digit to str.isdigit(), not to int()
    assert web.post("/requests/new/", data).status_code == 200

    data["inv_header-TOTAL_FORMS"] = "100"
    response = web.post("/requests/new/", data)
    assert response.context["forms"].formsets["inv_header"].total_form_count() == 100
    page = response.content.decode()
    assert re.search(r'<button[^>]*value="inv_header"[^>]*disabled', page)


def test_check_all_references_shows_versions_and_saves_nothing(web, unique_name):
    data = form_data(
        "API_KEY",
        unique_name,
        apikey_value=ROTATING_REF,
        rows={
            "inv_header": [
                ("X-Token", HEADER_TOKEN_REF, True),
                ("X-Old", ROTATING_REF + "@1", True),
                ("X-Gone", MISSING + "#x", True),
                ("X-Plain", "plain-value", False),
            ]
        },
    )
    data.pop("_save")
    data["_check"] = "all"

    response = web.post("/requests/new/", data)

    assert response.status_code == 200
    assert not ConnectionRequest.objects.exists()
    checks = response.context["checks"]
    assert checks["apikey_value"]["ok"] is True
    assert checks["apikey_value"]["version"] == 2
    assert checks["inv_header-1-value"]["version"] == 1
    assert checks["inv_header-2-value"] == {
        "ok": False,
        "code": "not_found",
        "message": checks["inv_header-2-value"]["message"],
    }
    assert "inv_header-3-value" not in checks  # not a secret row
    assert "Resolves: secret/ (KV v2), version 2" in response.content.decode()
    assert_entered_back(response, data)

    data["apikey_value"] = MISSING + "#api_key"
    response = web.post("/requests/new/", data)
    assert response.status_code == 200
    assert 'data-code="not_found"' in response.content.decode()
    assert_entered_back(response, data)
    assert not ConnectionRequest.objects.exists()


def test_check_button_beside_one_field_also_saves_nothing(web, unique_name):
    data = form_data("BASIC", unique_name)
    data.pop("_save")
    data["_check"] = "basic_password"
    response = web.post("/requests/new/", data)
    assert response.status_code == 200
    assert response.context["checks"]["basic_password"]["ok"] is True
    assert not ConnectionRequest.objects.exists()


def test_check_on_a_half_filled_form_shows_no_other_errors(web):
    data = form_data(
        "API_KEY",
        "",
        apikey_name="",
        rows={"inv_header": [("X-Token", "", True)], "inv_query": [("", "v", False)]},
    )
    data.pop("_save")
    data["_check"] = "apikey_value"
    response = web.post("/requests/new/", data)
    assert response.status_code == 200
    forms = response.context["forms"]
    assert not forms.form.errors
    assert not any(f.total_error_count() for f in forms.formsets.values())
    assert 'class="errorlist' not in response.content.decode()
    assert response.context["checks"]["apikey_value"]["ok"] is True
    assert_entered_back(response, data)
    assert not ConnectionRequest.objects.exists()


def test_reference_check_endpoint_gives_version_never_value(web, canaries):
    good = web.post("/vault/check/", {"reference": ROTATING_REF})
    assert good.status_code == 200
    body = good.json()
    assert body["ok"] is True
    assert body["version"] == 2
    assert body["kv_version"] == 2
    assert body["mount"] == "secret"
    assert body["updated"]

    older = web.post("/vault/check/", {"reference": ROTATING_REF + "@1"}).json()
    assert older["ok"] is True
    assert older["version"] == 1

    v1 = web.post("/vault/check/", {"reference": f"{KV1}/canary/v1#api_key"}).json()
    assert v1 == {"ok": True, "mount": KV1, "kv_version": 1, "version": None, "updated": None}

    for reference, code in [
        (MISSING + "#x", "not_found"),
        ("secret/canary/basic#nope", "key_missing"),
        ("sys/policy/root#x", "forbidden_mount"),
        ("secret/../sys#x", "path_escape"),
        ("/secret/canary/basic#password", "leading_slash"),
        ("", "invalid_reference"),
    ]:
        bad = web.post("/vault/check/", {"reference": reference})
        assert bad.status_code == 200
        assert bad.json()["ok"] is False
        assert bad.json()["code"] == code, reference

    for response in (good,):
        assert all(value not in json.dumps(response.json()) for value in canaries.values())


def test_reference_check_endpoint_needs_post(web):
    assert web.get("/vault/check/").status_code == 405


# ---------------------------------------------------------------------------
# Editing a pending request


def test_editing_keeps_every_revision_and_changes_the_hash(web, unique_name):
    obj = create(web, "API_KEY", unique_name)
    first_hash, first_document = obj.document_hash, obj.document

    page = web.get(f"/requests/{obj.pk}/edit/")
    assert page.status_code == 200
    rendered = _FormState(page.content.decode()).values
    assert rendered["name"] == unique_name
    assert rendered["apikey_value"] == API_KEY_REF
    assert rendered["inv_header-0-value"] == HEADER_TOKEN_REF
    assert rendered["inv_header-0-is_secret"] == "on"
    assert rendered["inv_header-1-value"] == "plain-value"

    edited = form_data("API_KEY", unique_name, apikey_value=ROTATING_REF + "@1")
    response = web.post(f"/requests/{obj.pk}/edit/", edited)

    assert response.status_code == 302, _errors(response)
    assert response["Location"] == f"/requests/{obj.pk}/"
    obj.refresh_from_db()
    assert obj.revision == 2
    assert obj.document_hash != first_hash
    assert obj.document_hash == doc.document_hash(obj.document)
    assert obj.document["AuthParameters"]["ApiKeyAuthParameters"]["ApiKeyValue"] == {
        "vault": ROTATING_REF,
        "version": 1,
    }
    revisions = list(DocumentRevision.objects.filter(request=obj).order_by("number"))
    assert [r.number for r in revisions] == [1, 2]
    assert revisions[0].document == first_document
    assert revisions[0].document_hash == first_hash
    assert revisions[1].document == obj.document

    # A second edit keeps both earlier versions; an unchanged save adds none.
    third = form_data("BASIC", unique_name)
    assert web.post(f"/requests/{obj.pk}/edit/", third).status_code == 302
    assert web.post(f"/requests/{obj.pk}/edit/", third).status_code == 302
    obj.refresh_from_db()
    hashes = list(
        DocumentRevision.objects.filter(request=obj)
        .order_by("number")
        .values_list("document_hash", flat=True)
    )
    assert len(hashes) == 3
    assert len(set(hashes)) == 3
    assert hashes[:2] == [first_hash, revisions[1].document_hash]
    assert obj.authorization_type == "BASIC"
    assert "ApiKeyAuthParameters" not in obj.document["AuthParameters"]


def test_edit_errors_keep_what_was_entered(web, unique_name):
    obj = create(web, "API_KEY", unique_name)
    data = form_data("API_KEY", unique_name, apikey_value="secret/canary/apikey#missing")
    response = web.post(f"/requests/{obj.pk}/edit/", data)
    assert response.status_code == 400
    assert field_codes(response, "apikey_value") == ["key_missing"]
    assert_entered_back(response, data)
    obj.refresh_from_db()
    assert obj.revision == 1


def test_edit_may_rename_but_not_to_a_name_in_use(web, unique_name):
    other = create(web, "API_KEY", unique_name + "-other")
    obj = create(web, "API_KEY", unique_name)
    response = web.post(f"/requests/{obj.pk}/edit/", form_data("API_KEY", other.name))
    assert response.status_code == 400
    assert field_codes(response, "name") == ["name_taken"]
    response = web.post(f"/requests/{obj.pk}/edit/", form_data("API_KEY", unique_name + "-2"))
    assert response.status_code == 302
    obj.refresh_from_db()
    assert obj.name == unique_name + "-2"


def test_editing_by_another_user_is_refused(web, unique_name, user_factory, approver_client):
    obj = create(web, "API_KEY", unique_name)
    before = (obj.document_hash, obj.revision)

    from django.test import Client

    other = Client()
    other.force_login(user_factory(groups=[roles.REQUESTERS]))
    changed = form_data("API_KEY", unique_name, apikey_value=ROTATING_REF)
    for intruder in (other, approver_client):
        assert intruder.get(f"/requests/{obj.pk}/edit/").status_code in (403, 404)
        assert intruder.post(f"/requests/{obj.pk}/edit/", changed).status_code in (403, 404)

    obj.refresh_from_db()
    assert (obj.document_hash, obj.revision) == before
    assert DocumentRevision.objects.filter(request=obj).count() == 1


@pytest.mark.parametrize("ending", ["cancelled", "expired"])
def test_a_request_no_longer_pending_cannot_be_edited(web, unique_name, requester, ending):
    """Refused with a message, and what the requester typed comes back as typed."""
    obj = create(web, "API_KEY", unique_name)
    if ending == "cancelled":
        services.request_cancel(request=obj, actor=requester)
    else:
        ConnectionRequest.objects.filter(pk=obj.pk).update(expires_at=timezone.now())
    typed = form_data("API_KEY", unique_name, description="typed after the page was opened")
    response = web.post(f"/requests/{obj.pk}/edit/", typed)
    assert response.status_code == 400
    assert response.context["form"].non_field_errors()
    assert response.context["form"]["description"].value() == "typed after the page was opened"
    obj.refresh_from_db()
    assert (obj.revision, obj.status) == (1, ending)

    opened = web.get(f"/requests/{obj.pk}/edit/", follow=True)
    assert opened.redirect_chain == [(f"/requests/{obj.pk}/", 302)]
    said = "expired before it was decided" if ending == "expired" else "Only a pending or failed"
    assert said in opened.content.decode()


# ---------------------------------------------------------------------------
# Canaries


@pytest.mark.parametrize("kind", KINDS)
def test_no_canary_value_in_any_page(web, unique_name, kind):
    """The `web` fixture checks every body; this walks every page the form flow shows."""
    web.get("/requests/new/")
    obj = create(web, kind, unique_name)
    web.get(f"/requests/{obj.pk}/")
    web.get(f"/requests/{obj.pk}/edit/")
    web.get("/requests/mine/")
    check = form_data(kind, unique_name)
    check["_check"] = "all"
    web.post(f"/requests/{obj.pk}/edit/", check)
    web.post("/requests/new/", form_data(kind, unique_name))  # name_taken re-render
    for _, leaf in doc.secret_leaves(obj.document):
        web.post("/vault/check/", {"reference": leaf["vault"]})
    stored = json.dumps([obj.document, *DocumentRevision.objects.values_list("document")])
    assert "CANARY" not in stored
