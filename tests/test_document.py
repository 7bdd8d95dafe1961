"""validate / document_hash / resolve / redact / check_values against botocore's events model."""

from __future__ import annotations

import copy
import json
import random
import re
import string
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connections_app import document as doc
from connections_app import eventbridge, vault

# The autouse server fixture is function-scoped; these pure functions do not care about it.
FAST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

KINDS = ["BASIC", "OAUTH_CLIENT_CREDENTIALS", "API_KEY"]
NAME_ALPHABET = string.ascii_letters + string.digits + ".-_"
TCHAR = "!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits
PRINTABLE_ASCII = "".join(chr(c) for c in range(0x20, 0x7F))
KMS_ALPHABET = string.ascii_letters + string.digits + "_-/:"

USERNAME = "AuthParameters.BasicAuthParameters.Username"
PASSWORD = "AuthParameters.BasicAuthParameters.Password"
CLIENT_ID = "AuthParameters.OAuthParameters.ClientParameters.ClientID"
CLIENT_SECRET = "AuthParameters.OAuthParameters.ClientParameters.ClientSecret"
ENDPOINT = "AuthParameters.OAuthParameters.AuthorizationEndpoint"
HTTP_METHOD = "AuthParameters.OAuthParameters.HttpMethod"
API_KEY_NAME = "AuthParameters.ApiKeyAuthParameters.ApiKeyName"
API_KEY_VALUE = "AuthParameters.ApiKeyAuthParameters.ApiKeyValue"
INV_HEADERS = "AuthParameters.InvocationHttpParameters.HeaderParameters"
INV_QUERY = "AuthParameters.InvocationHttpParameters.QueryStringParameters"
INV_BODY = "AuthParameters.InvocationHttpParameters.BodyParameters"
OAUTH_HTTP = "AuthParameters.OAuthParameters.OAuthHttpParameters"


def ref(path: str, version: int | None = None) -> dict:
    return {"vault": path, "version": version}


def make(kind: str = "API_KEY", **top) -> dict:
    """A valid document of each kind (a local twin of conftest's make_document, fixture-free)."""
    document = {"Name": "partner-a", "Description": "partner API", "AuthorizationType": kind}
    if kind == "BASIC":
        auth = {
            "BasicAuthParameters": {
                "Username": "alice",
                "Password": ref("secret/canary/basic#password"),
            }
        }
    elif kind == "OAUTH_CLIENT_CREDENTIALS":
        auth = {
            "OAuthParameters": {
                "ClientParameters": {
                    "ClientID": "client-1",
                    "ClientSecret": ref("secret/canary/oauth#client_secret"),
                },
                "AuthorizationEndpoint": "https://auth.example.com/oauth2/token",
                "HttpMethod": "POST",
                "OAuthHttpParameters": {
                    "BodyParameters": [
                        {"Key": "grant_type", "Value": "client_credentials", "IsValueSecret": False}
                    ]
                },
            }
        }
    else:
        auth = {
            "ApiKeyAuthParameters": {
                "ApiKeyName": "x-api-key",
                "ApiKeyValue": ref("secret/canary/apikey#api_key"),
            }
        }
    auth["InvocationHttpParameters"] = {
        "HeaderParameters": [
            {
                "Key": "X-Token",
                "Value": ref("secret/canary/oauth#header_token"),
                "IsValueSecret": True,
            },
            {"Key": "X-Plain", "Value": "plain-value", "IsValueSecret": False},
        ]
    }
    document["AuthParameters"] = auth
    document.update(top)
    return document


def _parts(path: str) -> list:
    parts: list = []
    for piece in path.split("."):
        name, *indexes = piece.split("[")
        parts.append(name)
        parts.extend(int(i.rstrip("]")) for i in indexes)
    return parts


def put(document: dict, path: str, value) -> dict:
    """Set (or with value=DELETE, remove) the leaf at a dotted path; returns the document."""
    *parents, last = _parts(path)
    node = document
    for part in parents:
        node = node[part]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return document


DELETE = object()
KIND_OF = {
    USERNAME: "BASIC",
    PASSWORD: "BASIC",
    CLIENT_ID: "OAUTH_CLIENT_CREDENTIALS",
    CLIENT_SECRET: "OAUTH_CLIENT_CREDENTIALS",
    ENDPOINT: "OAUTH_CLIENT_CREDENTIALS",
    HTTP_METHOD: "OAUTH_CLIENT_CREDENTIALS",
    "AuthParameters.OAuthParameters.ClientParameters": "OAUTH_CLIENT_CREDENTIALS",
    API_KEY_NAME: "API_KEY",
    API_KEY_VALUE: "API_KEY",
}


def with_value(path: str, value, kind: str | None = None) -> dict:
    return put(make(kind or KIND_OF.get(path, "API_KEY")), path, value)


def codes_at(document: dict, path: str) -> set[str]:
    return {issue.code for issue in doc.validate(document) if issue.path == path}


def row(key="X-Key", value="v", secret=False) -> dict:
    return {"Key": key, "Value": value, "IsValueSecret": secret}


def with_row(list_path: str, item: dict) -> dict:
    kind = "OAUTH_CLIENT_CREDENTIALS" if list_path.startswith(OAUTH_HTTP) else "API_KEY"
    document = make(kind)
    *parents, last = _parts(list_path)
    node = document
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = [item]
    return document


def one_char_not_in(alphabet: str):
    return st.characters(exclude_characters=alphabet, exclude_categories=("Cs",))


def inserted(good, bad_char):
    """Strings built from `good` text with one `bad_char` somewhere in them."""
    return st.tuples(good, bad_char, good).map(lambda t: t[0] + t[1] + t[2])


# ---------------------------------------------------------------------------
# Valid documents


@pytest.mark.parametrize("kind", KINDS)
def test_valid_document_of_each_kind_has_no_issues(kind):
    assert doc.validate(make(kind)) == []


def test_validate_reads_constraints_from_botocores_model():
    shape = eventbridge.service_model().shape_for("ConnectionName")
    assert shape.metadata["max"] == 64
    assert shape.metadata["pattern"] == r"[\.\-_A-Za-z0-9]+"


# ---------------------------------------------------------------------------
# Name


@FAST
@given(st.text(alphabet=NAME_ALPHABET, min_size=1, max_size=64))
def test_names_from_the_allowed_alphabet_are_accepted(name):
    assert codes_at(make(Name=name), "Name") == set()


@FAST
@given(
    st.tuples(
        st.text(alphabet=NAME_ALPHABET, max_size=30),
        one_char_not_in(NAME_ALPHABET),
        st.text(alphabet=NAME_ALPHABET, max_size=30),
    ).map("".join)
)
def test_names_with_any_other_character_are_refused(name):
    assert codes_at(make(Name=name), "Name") == {"invalid_characters"}


@pytest.mark.parametrize(
    ("name", "code"),
    [("a" * 64, None), ("a" * 65, "too_long"), ("", "required"), (DELETE, "required")],
)
def test_name_length(name, code):
    document = put(make(), "Name", name)
    assert codes_at(document, "Name") == ({code} if code else set())


# ---------------------------------------------------------------------------
# Description


def test_description_keeps_room_for_the_marker():
    room = 512 - doc.MARKER_ROOM
    assert codes_at(make(Description="d" * room), "Description") == set()
    assert codes_at(make(Description="d" * (room + 1)), "Description") == {"too_long"}
    assert codes_at(make(Description="d" * 512), "Description") == {"too_long"}
    assert codes_at(make(Description="d" * 513), "Description") == {"too_long"}


# ---------------------------------------------------------------------------
# Auth header fields: Username, ClientID, ApiKeyName

AUTH_HEADER_FIELDS = [USERNAME, CLIENT_ID, API_KEY_NAME]
# What the model's AuthHeaderParameters allows: no C0 control character, no DEL, no ":".
AUTH_HEADER_TEXT = st.text(
    alphabet=st.characters(
        min_codepoint=0x20, exclude_characters=":\x7f", exclude_categories=("Cs",)
    ),
    min_size=1,
    max_size=40,
)
# Tab is allowed: the pattern lets spaces and tabs separate words.
FORBIDDEN_IN_AUTH_HEADER = st.sampled_from(
    [":", "\x7f", *(chr(c) for c in range(0x20) if c != 0x09)]
)


@pytest.mark.parametrize("path", AUTH_HEADER_FIELDS)
@FAST
@given(value=AUTH_HEADER_TEXT)
def test_auth_header_fields_accept_text_without_controls_or_colon(path, value):
    assert codes_at(with_value(path, value), path) == set()


@pytest.mark.parametrize("path", AUTH_HEADER_FIELDS)
@FAST
@given(value=inserted(AUTH_HEADER_TEXT, FORBIDDEN_IN_AUTH_HEADER))
def test_auth_header_fields_refuse_control_characters_and_colon(path, value):
    assert codes_at(with_value(path, value), path) == {"invalid_characters"}


@pytest.mark.parametrize("path", AUTH_HEADER_FIELDS)
@pytest.mark.parametrize(
    ("value", "code"), [("u" * 512, None), ("u" * 513, "too_long"), ("", "required")]
)
def test_auth_header_field_length(path, value, code):
    assert codes_at(with_value(path, value), path) == ({code} if code else set())


@pytest.mark.parametrize("path", AUTH_HEADER_FIELDS)
def test_auth_header_fields_are_required(path):
    assert codes_at(with_value(path, DELETE), path) == {"required"}


def _model_pattern(shape_name: str) -> str:
    return eventbridge.service_model().shape_for(shape_name).metadata["pattern"]


@pytest.mark.parametrize("shape_name", ["AuthHeaderParameters", "HeaderValueSensitive"])
@FAST
@given(st.data())
def test_linear_patterns_accept_exactly_what_the_models_patterns_accept(shape_name, data):
    """Short strings only: the model's own pattern backtracks exponentially on long ones."""
    value = data.draw(st.text(alphabet=" \t\x00\x1f\x7f\n:a~é", max_size=12))
    model = _model_pattern(shape_name)
    assert model in doc._SAFE_PATTERNS  # a botocore update changing it would be noticed here
    expected = re.fullmatch(model, value, flags=re.DOTALL) is not None
    assert doc.pattern_matches(model, value) is expected


def test_model_patterns_cannot_hang_validation():
    """ "a", hundreds of spaces, then one bad character: exponential in the model's patterns."""
    shape = eventbridge.service_model().operation_model("CreateConnection").input_shape
    patterns = set()

    def collect(s, seen=()):
        if s.name in seen:
            return
        if s.type_name == "string" and "pattern" in s.metadata:
            patterns.add(s.metadata["pattern"])
        for child in getattr(s, "members", {}).values():
            collect(child, (*seen, s.name))
        if s.type_name == "list":
            collect(s.member, (*seen, s.name))

    collect(shape)
    assert len(patterns) >= 8
    started = time.monotonic()
    for pattern in patterns:
        for filler in (" ", "\t", " \t", "a ", "%20"):
            for bad in (":", "\x01", "\x7f", "é", "[", "\n"):
                doc.pattern_matches(pattern, "a" + filler * (500 // len(filler)) + bad)
    assert time.monotonic() - started < 2

    username = "a" + " " * 500 + ":"
    started = time.monotonic()
    assert codes_at(with_value(USERNAME, username), USERNAME) == {"invalid_characters"}
    assert time.monotonic() - started < 1


# ---------------------------------------------------------------------------
# HTTP parameters

HEADER_LISTS = [INV_HEADERS, f"{OAUTH_HTTP}.HeaderParameters"]
QUERY_LISTS = [INV_QUERY, f"{OAUTH_HTTP}.QueryStringParameters"]
ALL_LISTS = [
    *HEADER_LISTS,
    *QUERY_LISTS,
    INV_BODY,
    f"{OAUTH_HTTP}.BodyParameters",
]


@pytest.mark.parametrize("list_path", HEADER_LISTS)
@FAST
@given(key=st.text(alphabet=TCHAR.replace(",", ""), min_size=1, max_size=64))
def test_header_keys_that_are_http_tokens_are_accepted(list_path, key):
    assert codes_at(with_row(list_path, row(key=key)), f"{list_path}[0].Key") == set()


@pytest.mark.parametrize("list_path", HEADER_LISTS)
@FAST
@given(
    key=inserted(
        st.text(alphabet=TCHAR, max_size=20),
        st.one_of(
            st.sampled_from([" ", ":", "(", ")", ",", "\t", "\n", '"', "/", "@", "é", "ü"]),
            st.characters(min_codepoint=0x80, exclude_categories=("Cs",)),
        ),
    )
)
def test_header_keys_that_are_not_http_tokens_are_refused(list_path, key):
    assert codes_at(with_row(list_path, row(key=key)), f"{list_path}[0].Key") == {
        "invalid_characters"
    }


def test_header_key_with_comma_is_refused_although_the_models_range_lets_it_through():
    model = _model_pattern("HeaderKey")
    assert re.fullmatch(model, "X,Y")  # "+-." in the model's class is a range over ","
    assert codes_at(with_row(INV_HEADERS, row(key="X,Y")), f"{INV_HEADERS}[0].Key") == {
        "invalid_characters"
    }


@pytest.mark.parametrize("list_path", HEADER_LISTS)
@FAST
@given(value=st.text(alphabet=PRINTABLE_ASCII, min_size=1, max_size=80))
def test_header_values_of_printable_ascii_are_accepted(list_path, value):
    assert codes_at(with_row(list_path, row(value=value)), f"{list_path}[0].Value") == set()


@pytest.mark.parametrize("list_path", HEADER_LISTS)
@FAST
@given(
    value=inserted(
        st.text(alphabet=PRINTABLE_ASCII, max_size=30),
        st.one_of(
            st.sampled_from(["\n", "\r", "\x00", "\x7f", "\x1b"]),
            st.characters(min_codepoint=0x80, exclude_categories=("Cs",)),
        ),
    )
)
def test_header_values_outside_printable_ascii_are_refused(list_path, value):
    assert codes_at(with_row(list_path, row(value=value)), f"{list_path}[0].Value") == {
        "invalid_characters"
    }


NO_CONTROLS = st.text(
    alphabet=st.characters(
        min_codepoint=0x20, exclude_characters="\x7f", exclude_categories=("Cs",)
    ),
    min_size=1,
    max_size=60,
)


@pytest.mark.parametrize("list_path", QUERY_LISTS)
@FAST
@given(key=NO_CONTROLS, value=NO_CONTROLS)
def test_query_string_keys_and_values_without_controls_are_accepted(list_path, key, value):
    document = with_row(list_path, row(key=key, value=value))
    issues = [i for i in doc.validate(document) if i.path.startswith(list_path)]
    assert issues == []


@pytest.mark.parametrize("list_path", QUERY_LISTS)
@pytest.mark.parametrize("leaf", ["Key", "Value"])
@FAST
@given(
    data=st.data(),
    bad=st.sampled_from(["\x00", "\x01", "\t", "\x1b", "\x1f", "\x7f"]),
)
def test_query_string_keys_and_values_with_controls_are_refused(list_path, leaf, data, bad):
    text = data.draw(inserted(st.text(alphabet=string.ascii_letters, max_size=10), st.just(bad)))
    item = row(key="k", value="v")
    item[leaf] = text
    assert codes_at(with_row(list_path, item), f"{list_path}[0].{leaf}") == {"invalid_characters"}


@pytest.mark.parametrize("list_path", ALL_LISTS)
@pytest.mark.parametrize(("count", "code"), [(100, None), (101, "too_many")])
def test_at_most_100_parameters_per_list(list_path, count, code):
    document = with_row(list_path, row())
    rows = [row(key=f"k{i}", value=f"v{i}") for i in range(count)]
    put(document, list_path, rows)
    assert codes_at(document, list_path) == ({code} if code else set())


@pytest.mark.parametrize("leaf", ["Key", "Value"])
def test_header_parameter_length(leaf):
    item = row()
    item[leaf] = "a" * 513
    path = f"{INV_HEADERS}[0].{leaf}"
    assert codes_at(with_row(INV_HEADERS, item), path) == {"too_long"}
    item[leaf] = "a" * 512
    assert codes_at(with_row(INV_HEADERS, item), path) == set()


# ---------------------------------------------------------------------------
# OAuth endpoint and method, authorization type


@pytest.mark.parametrize(
    ("endpoint", "codes"),
    [
        ("https://auth.example.com/token", set()),
        ("https://auth.example.com:8443/oauth2/token?aud=x", set()),
        ("http://auth.example.com/token", {"not_https"}),
        ("ftp://auth.example.com/token", {"not_https"}),
        ("auth.example.com/token", {"not_https"}),
        ("https:/auth.example.com", {"not_https"}),
        ("https://auth example.com", {"invalid_characters"}),
        ("https://[::1", {"invalid_characters", "not_https"}),
        ("", {"required"}),
    ],
)
def test_authorization_endpoint_must_be_https(endpoint, codes):
    assert codes_at(with_value(ENDPOINT, endpoint), ENDPOINT) == codes


def test_authorization_endpoint_length():
    base = "https://auth.example.com/"
    assert codes_at(with_value(ENDPOINT, base + "a" * (2048 - len(base))), ENDPOINT) == set()
    assert codes_at(with_value(ENDPOINT, base + "a" * (2049 - len(base))), ENDPOINT) == {"too_long"}


@pytest.mark.parametrize(
    ("method", "codes"),
    [
        ("GET", set()),
        ("POST", set()),
        ("PUT", set()),
        ("PATCH", {"invalid_choice"}),
        ("DELETE", {"invalid_choice"}),
        ("post", {"invalid_choice"}),
        ("", {"invalid_choice"}),
        (DELETE, {"required"}),
    ],
)
def test_http_method_is_get_post_or_put(method, codes):
    assert codes_at(with_value(HTTP_METHOD, method), HTTP_METHOD) == codes


@pytest.mark.parametrize("kind", ["DIGEST", "basic", "", "OAUTH"])
def test_authorization_type_is_the_models_enum(kind):
    assert codes_at(make(AuthorizationType=kind), "AuthorizationType") == {"invalid_choice"}


def test_authorization_type_is_required():
    assert codes_at(put(make(), "AuthorizationType", DELETE), "AuthorizationType") == {"required"}


# ---------------------------------------------------------------------------
# KMS key identifier


@FAST
@given(st.text(alphabet=KMS_ALPHABET, min_size=1, max_size=80))
def test_kms_key_identifiers_from_the_pattern_are_accepted(key):
    assert codes_at(make(KmsKeyIdentifier=key), "KmsKeyIdentifier") == set()


@FAST
@given(
    inserted(st.text(alphabet=KMS_ALPHABET, max_size=30), one_char_not_in(KMS_ALPHABET)),
)
def test_kms_key_identifiers_with_other_characters_are_refused(key):
    assert codes_at(make(KmsKeyIdentifier=key), "KmsKeyIdentifier") == {"invalid_characters"}


def test_kms_key_identifier_length():
    arn = "arn:aws:kms:us-east-1:123456789012:alias/"
    assert codes_at(make(KmsKeyIdentifier=arn + "k" * (2048 - len(arn))), "KmsKeyIdentifier") == (
        set()
    )
    assert codes_at(make(KmsKeyIdentifier=arn + "k" * (2049 - len(arn))), "KmsKeyIdentifier") == {
        "too_long"
    }


# ---------------------------------------------------------------------------
# Payload size


def test_payload_must_stay_under_64_kb():
    document = with_row(INV_BODY, row(key="blob", value=""))
    room = doc.MAX_PAYLOAD_BYTES - doc.estimated_size(document) - 1
    put(document, f"{INV_BODY}[0].Value", "b" * room)
    assert doc.estimated_size(document) == doc.MAX_PAYLOAD_BYTES - 1
    assert doc.validate(document) == []
    put(document, f"{INV_BODY}[0].Value", "b" * (room + 1))
    assert {(i.path, i.code) for i in doc.validate(document)} == {("", "payload_too_large")}


def test_payload_estimate_counts_each_secret_at_its_largest():
    short = with_row(INV_BODY, row(key="k", value=ref("s/a#b"), secret=True))
    long = with_row(INV_BODY, row(key="k", value=ref("secret/" + "p" * 200 + "#b"), secret=True))
    assert doc.estimated_size(short) == doc.estimated_size(long)
    plain = with_row(INV_BODY, row(key="k", value="x" * 512))
    assert doc.estimated_size(short) == doc.estimated_size(plain) + len("true") - len("false")


def test_many_secret_rows_count_towards_the_payload_limit():
    document = make()
    rows = [row(key=f"k{i}", value=ref(f"secret/s#k{i}"), secret=True) for i in range(100)]
    document["AuthParameters"]["InvocationHttpParameters"] = {
        "HeaderParameters": rows,
        "QueryStringParameters": copy.deepcopy(rows),
    }
    assert ("", "payload_too_large") in {(i.path, i.code) for i in doc.validate(document)}


# ---------------------------------------------------------------------------
# Secret leaves and sections


@pytest.mark.parametrize("path", [PASSWORD, CLIENT_SECRET, API_KEY_VALUE])
def test_secret_leaves_must_be_references(path):
    assert codes_at(with_value(path, "hunter2"), path) == {"secret_not_reference"}
    assert codes_at(with_value(path, ref("secret/app/partner#password", 3)), path) == set()


def test_a_secret_parameter_value_must_be_a_reference():
    document = with_row(INV_HEADERS, row(value="plain", secret=True))
    assert codes_at(document, f"{INV_HEADERS}[0].Value") == {"secret_not_reference"}


@pytest.mark.parametrize("list_path", ALL_LISTS)
def test_a_parameter_not_marked_secret_may_not_carry_a_reference(list_path):
    document = with_row(list_path, row(value=ref("secret/canary/oauth#header_token")))
    assert codes_at(document, f"{list_path}[0].Value") == {"reference_not_secret"}


@pytest.mark.parametrize("path", [USERNAME, CLIENT_ID, API_KEY_NAME, ENDPOINT])
def test_plain_fields_may_not_carry_references(path):
    assert codes_at(with_value(path, ref("secret/a#b")), path) == {"reference_not_secret"}
    assert codes_at(make(Name=ref("secret/a#b")), "Name") == {"reference_not_secret"}


@pytest.mark.parametrize(
    ("leaf", "code"),
    [
        (ref("/secret/a#b"), "leading_slash"),
        (ref("secret/../sys/x#b"), "path_escape"),
        (ref("sys/policy/root#b"), "forbidden_mount"),
        (ref("secret/a"), "missing_key"),
        (ref("secret/a#b", 0), "bad_version"),
        (ref("secret/a#b", "2"), "bad_version"),
        (ref("secret/a#b", True), "bad_version"),
        (ref("secret/a#b@2"), "invalid_reference"),
        ({"vault": 7, "version": None}, "invalid_reference"),
        ({"vault": "secret/a#b", "version": None, "value": "hunter2"}, "invalid_reference"),
    ],
)
def test_malformed_references_are_refused(leaf, code):
    assert codes_at(with_value(PASSWORD, leaf), PASSWORD) == {code}


@pytest.mark.parametrize("kind", KINDS)
def test_sections_not_matching_the_authorization_type_are_refused(kind):
    document = make(kind)
    for other in set(KINDS) - {kind}:
        document["AuthParameters"].update(copy.deepcopy(make(other)["AuthParameters"]))
    issues = {(i.path, i.code) for i in doc.validate(document)}
    for other in set(KINDS) - {kind}:
        assert (f"AuthParameters.{doc.AUTH_SECTIONS[other]}", "section_not_chosen") in issues
    assert not any(code == "section_not_chosen" and doc.AUTH_SECTIONS[kind] in path
                   for path, code in issues)  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_the_chosen_section_is_required(kind):
    document = put(make(kind), f"AuthParameters.{doc.AUTH_SECTIONS[kind]}", DELETE)
    assert codes_at(document, f"AuthParameters.{doc.AUTH_SECTIONS[kind]}") == {"required"}


@pytest.mark.parametrize(
    "path",
    [
        "AuthParameters",
        PASSWORD,
        USERNAME,
        CLIENT_SECRET,
        "AuthParameters.OAuthParameters.ClientParameters",
        ENDPOINT,
        API_KEY_VALUE,
    ],
)
def test_missing_required_fields(path):
    assert codes_at(with_value(path, DELETE), path) == {"required"}


def test_unknown_fields_are_refused():
    document = make()
    document["Extra"] = 1
    document["AuthParameters"]["ApiKeyAuthParameters"]["Header"] = "x"
    issues = {(i.path, i.code) for i in doc.validate(document)}
    assert ("Extra", "unknown_field") in issues
    assert ("AuthParameters.ApiKeyAuthParameters.Header", "unknown_field") in issues


def test_private_oauth_endpoint_sits_beside_oauth_parameters():
    arn = "arn:aws:vpc-lattice:us-east-1:123456789012:resourceconfiguration/rcfg-0123456789abcdef0"
    document = make("OAUTH_CLIENT_CREDENTIALS")
    document["AuthParameters"]["ConnectivityParameters"] = {
        "ResourceParameters": {"ResourceConfigurationArn": arn}
    }
    assert doc.validate(document) == []


@pytest.mark.parametrize("bad", [None, [], "doc", 3])
def test_a_document_that_is_not_an_object_is_refused_without_crashing(bad):
    assert [i.code for i in doc.validate(bad)] == ["invalid"]


def test_wrong_types_are_refused():
    document = with_row(INV_HEADERS, {"Key": 1, "Value": "v", "IsValueSecret": "no"})
    issues = {(i.path, i.code) for i in doc.validate(document)}
    assert (f"{INV_HEADERS}[0].Key", "invalid") in issues
    assert (f"{INV_HEADERS}[0].IsValueSecret", "invalid") in issues
    assert codes_at(put(make(), INV_HEADERS, {"Key": "k"}), INV_HEADERS) == {"invalid"}


# ---------------------------------------------------------------------------
# Canonical hash


def _shuffled(node, rnd: random.Random):
    if isinstance(node, dict):
        items = list(node.items())
        rnd.shuffle(items)
        return {key: _shuffled(value, rnd) for key, value in items}
    if isinstance(node, list):
        return [_shuffled(item, rnd) for item in node]
    return node


@FAST
@given(kind=st.sampled_from(KINDS), seed=st.integers(0, 2**32))
def test_document_hash_is_stable_under_key_order(kind, seed):
    document = make(kind)
    shuffled = _shuffled(document, random.Random(seed))
    assert shuffled == document
    assert doc.document_hash(shuffled) == doc.document_hash(document)
    assert re.fullmatch(r"[0-9a-f]{64}", doc.document_hash(document))


def test_document_hash_changes_when_a_reference_changes():
    document = make("BASIC")
    before = doc.document_hash(document)
    changed_path = with_value(PASSWORD, ref("secret/canary/other#password"))
    changed_version = with_value(PASSWORD, ref("secret/canary/basic#password", 2))
    changed_key = with_value(PASSWORD, ref("secret/canary/basic#pass"))
    hashes = {doc.document_hash(d) for d in (changed_path, changed_version, changed_key)}
    assert before not in hashes
    assert len(hashes) == 3
    assert doc.document_hash(make("BASIC")) == before


def test_document_hash_changes_with_list_order():
    document = make()
    swapped = copy.deepcopy(document)
    swapped["AuthParameters"]["InvocationHttpParameters"]["HeaderParameters"].reverse()
    assert doc.document_hash(swapped) != doc.document_hash(document)


# ---------------------------------------------------------------------------
# redact / resolve / check_values


def fake_reader(values: dict[str, str], calls: list | None = None, version: int = 4):
    """A `read_all` callable answering from a dict: what vault.read_all would return."""

    def read(reference: vault.Reference) -> vault.Resolution:
        if calls is not None:
            calls.append(str(reference))
        info = vault.SecretInfo(
            reference=reference,
            mount="secret",
            kv_version=2,
            version=reference.version or version,
            updated="2024-01-01T00:00:00Z",
        )
        return vault.Resolution(info=info, value=values[f"{reference.path}#{reference.key}"])

    return lambda references: {reference: read(reference) for reference in references}


VALUES = {
    "secret/canary/basic#password": "pw-VALUE-1",
    "secret/canary/oauth#client_secret": "cs-VALUE-2",
    "secret/canary/apikey#api_key": "ak-VALUE-3",
    "secret/canary/oauth#header_token": "ht-VALUE-4",
}


@pytest.mark.parametrize("kind", KINDS)
def test_redact_without_resolutions_keeps_references_and_marks_them(kind):
    document = make(kind)
    redacted = doc.redact(document)
    leaves = dict(doc.secret_leaves(redacted))
    assert leaves
    for path, leaf in doc.secret_leaves(document):
        assert leaves[path] == {"vault": leaf["vault"], "version": None, "redacted": True}
    assert redacted["Name"] == document["Name"]
    assert document == make(kind)  # the input is not modified


def test_redact_never_copies_anything_but_the_reference():
    document = with_value(PASSWORD, {"vault": "secret/a#b", "version": 2, "value": "hunter2"})
    redacted = doc.redact(document)
    assert "hunter2" not in json.dumps(redacted)
    assert redacted["AuthParameters"]["BasicAuthParameters"]["Password"] == {
        "vault": "secret/a#b",
        "version": 2,
        "redacted": True,
    }


@pytest.mark.parametrize("kind", KINDS)
def test_resolve_fills_values_and_appends_the_marker(kind):
    document = make(kind)
    original = copy.deepcopy(document)
    calls: list[str] = []
    payload, resolutions = doc.resolve(
        document, fake_reader(VALUES, calls), marker="[eb-request:0123456789abcdef]"
    )
    assert document == original
    assert payload["Description"] == "partner API [eb-request:0123456789abcdef]"
    assert list(doc.secret_leaves(payload)) == []
    for path, leaf in doc.secret_leaves(document):
        node = payload
        for part in path:
            node = node[part]
        assert node == VALUES[leaf["vault"]]
        assert resolutions[path].value == VALUES[leaf["vault"]]
    assert payload["AuthParameters"]["InvocationHttpParameters"]["HeaderParameters"][1] == {
        "Key": "X-Plain",
        "Value": "plain-value",
        "IsValueSecret": False,
    }
    assert sorted(calls) == sorted({leaf["vault"] for _, leaf in doc.secret_leaves(document)})


def test_resolve_reads_each_reference_once_and_passes_the_version():
    document = make("BASIC")
    document["AuthParameters"]["InvocationHttpParameters"]["HeaderParameters"].append(
        row(key="X-Again", value=ref("secret/canary/basic#password", 7), secret=True)
    )
    document["AuthParameters"]["InvocationHttpParameters"]["QueryStringParameters"] = [
        row(key="again", value=ref("secret/canary/basic#password"), secret=True)
    ]
    calls: list[str] = []
    payload, resolutions = doc.resolve(document, fake_reader(VALUES, calls))
    assert sorted(calls) == sorted(
        [
            "secret/canary/basic#password",
            "secret/canary/basic#password@7",
            "secret/canary/oauth#header_token",
        ]
    )
    versions = sorted(r.info.version for r in resolutions.values())
    assert versions == [4, 4, 4, 7]
    assert payload["Description"] == "partner API"  # no marker asked for


def test_resolve_without_description_gets_just_the_marker():
    document = make()
    del document["Description"]
    payload, _ = doc.resolve(document, fake_reader(VALUES), marker="[eb-request:abc]")
    assert payload["Description"] == "[eb-request:abc]"


def test_redact_with_resolutions_fingerprints_without_the_value():
    document = make("OAUTH_CLIENT_CREDENTIALS")
    _, resolutions = doc.resolve(document, fake_reader(VALUES))
    redacted = doc.redact(document, resolutions)
    text = json.dumps(redacted)
    for value in VALUES.values():
        assert value not in text
    leaf = redacted["AuthParameters"]["OAuthParameters"]["ClientParameters"]["ClientSecret"]
    assert leaf["vault"] == "secret/canary/oauth#client_secret"
    assert leaf["version"] == 4
    assert leaf["redacted"] is True
    assert re.fullmatch(r"hmac-sha256:[0-9a-f]{64}", leaf["fingerprint"])
    other = doc.redact(document, doc.resolve(document, fake_reader({**VALUES,
        "secret/canary/oauth#client_secret": "rotated"}))[1])  # fmt: skip
    other_leaf = other["AuthParameters"]["OAuthParameters"]["ClientParameters"]["ClientSecret"]
    assert other_leaf["fingerprint"] != leaf["fingerprint"]


def test_check_values_accepts_fitting_values():
    document = make("BASIC")
    payload, resolutions = doc.resolve(document, fake_reader(VALUES))
    assert doc.check_values(payload, resolutions) == []


@pytest.mark.parametrize(
    ("path", "bad", "code"),
    [
        (PASSWORD, "pass:word-SECRET", "invalid characters"),
        (PASSWORD, "line\nbreak-SECRET", "invalid characters"),
        (PASSWORD, "p" * 513 + "SECRET", "too long"),
        (PASSWORD, "", "required"),
        (f"{INV_HEADERS}[0].Value", "naïve-SECRET", "invalid characters"),
        (f"{INV_HEADERS}[0].Value", "a" + " " * 400 + "\x01SECRET", "invalid characters"),
    ],
)
def test_check_values_flags_a_resolved_value_without_quoting_it(path, bad, code):
    document = make("BASIC")
    leaf = dict(doc.secret_leaves(document))[tuple(_parts(path))]
    values = {**VALUES, leaf["vault"]: bad}
    payload, resolutions = doc.resolve(document, fake_reader(values))
    started = time.monotonic()
    problems = doc.check_values(payload, resolutions)
    assert time.monotonic() - started < 1
    assert len(problems) == 1
    assert leaf["vault"] in problems[0]
    assert path in problems[0]
    assert code in problems[0]
    assert "SECRET" not in problems[0]
    if bad:
        assert bad not in problems[0]


def test_check_values_flags_a_payload_too_large_once_filled_in():
    document = with_row(INV_BODY, row(key="blob", value=ref("secret/big#blob"), secret=True))
    big = "B" * doc.MAX_PAYLOAD_BYTES
    payload, resolutions = doc.resolve(document, fake_reader({**VALUES, "secret/big#blob": big}))
    problems = doc.check_values(payload, resolutions)
    assert problems == ["With the secrets filled in, the request exceeds the 64 KB limit."]
