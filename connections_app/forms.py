"""The request form: every create_connection parameter, secrets as Vault references."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import urlencode

from django import forms
from django.core.exceptions import ValidationError
from django.forms import formset_factory
from django.forms.utils import ErrorDict
from django.utils import timezone

from . import audit_review, vault
from . import document as doc
from .models import Target

TYPE_CHOICES = [
    ("BASIC", "BASIC: username and password"),
    ("OAUTH_CLIENT_CREDENTIALS", "OAUTH_CLIENT_CREDENTIALS: client ID and secret"),
    ("API_KEY", "API_KEY: API key name and value"),
]
REF_HELP = (
    "A Vault reference, never the value: mount/path#key, optionally @version "
    "(secret/app/partner#password@3)."
)
MAX_ROWS = 100
# Said instead of showing what was typed into a secret field that is no Vault reference: it may
# be the secret itself, so it is never written back into the page.
NOT_KEPT = "That looks like a secret value, not a Vault reference: it was not kept."
# Checked again in the browser when a field is left (app.js); the server stays the judge.
NAME_PATTERN = r"[\.\-_A-Za-z0-9]{1,64}"


def _ref_field(label: str) -> forms.CharField:
    return forms.CharField(
        label=label,
        required=False,
        max_length=1024,
        help_text=REF_HELP,
        widget=forms.TextInput(
            attrs={"class": "vault-ref", "autocomplete": "off", "spellcheck": "false"}
        ),
    )


def _text(label: str, help_text: str = "", **kwargs) -> forms.CharField:
    return forms.CharField(label=label, required=False, help_text=help_text, **kwargs)


def not_kept_error(exc: vault.InvalidReference, code: str) -> ValidationError:
    """The refusal of a secret field's text that is no Vault reference; the text is not kept."""
    return ValidationError(f"{NOT_KEPT} {exc.message}", code=code)


class ConnectionRequestForm(forms.Form):
    target = forms.ModelChoiceField(
        label="Account and Region",
        queryset=Target.objects.order_by("name"),
        required=False,  # the default target when empty
        empty_label=None,
        help_text="Where the connection is made: a target registered by an administrator.",
    )
    name = _text(
        "Name",
        "1 to 64 letters, digits, “.”, “-” or “_”, unique in the account and Region. It cannot "
        "change later.",
        widget=forms.TextInput(
            attrs={
                "autocomplete": "off",
                "spellcheck": "false",
                "data-pattern": NAME_PATTERN,
                "data-pattern-message": "Use only letters, digits, “.”, “-” and “_”, at most 64.",
            }
        ),
    )
    description = _text(
        "Description",
        "Shown in the AWS console; at most 512 characters.",
        widget=forms.Textarea(attrs={"rows": 2}),
        max_length=2000,
    )
    authorization_type = forms.ChoiceField(
        label="Authorization type",
        choices=TYPE_CHOICES,
        widget=forms.RadioSelect,
        help_text="How EventBridge signs in to the partner API.",
        error_messages={"required": "Choose an authorization type."},
    )
    basic_username = _text("Username")
    basic_password = _ref_field("Password")
    oauth_client_id = _text("Client ID")
    oauth_client_secret = _ref_field("Client secret")
    oauth_endpoint = _text(
        "Authorization endpoint",
        "The https:// URL EventBridge calls for a token. Tokens are fetched again when the "
        "partner API answers 401 or 407.",
        max_length=4096,
        widget=forms.TextInput(
            attrs={
                "inputmode": "url",
                "spellcheck": "false",
                "data-pattern": r"https://\S+",
                "data-pattern-message": "Enter an https:// address, such as "
                "https://auth.example.com/oauth2/token.",
            }
        ),
    )
    oauth_http_method = forms.ChoiceField(
        label="HTTP method",
        required=False,
        choices=[("POST", "POST"), ("GET", "GET"), ("PUT", "PUT")],
        help_text="The method of the token request.",
    )
    oauth_resource_arn = _text(
        "Private authorization endpoint (resource configuration ARN)",
        "Only for an endpoint reached through VPC Lattice; creation can then take minutes.",
    )
    apikey_name = _text("API key name", "The header that carries the key.")
    apikey_value = _ref_field("API key value")
    invocation_resource_arn = _text(
        "Private API (resource configuration ARN)",
        "Only when the partner API is private, reached through VPC Lattice.",
    )
    kms_key = _text(
        "KMS key identifier",
        "The customer managed key for the connection's secret (ID, ARN or alias). Empty: an "
        "AWS owned key.",
    )

    SECTION_FIELDS = {
        "BASIC": ("basic_username", "basic_password"),
        "OAUTH_CLIENT_CREDENTIALS": (
            "oauth_client_id",
            "oauth_client_secret",
            "oauth_endpoint",
            "oauth_http_method",
            "oauth_resource_arn",
        ),
        "API_KEY": ("apikey_name", "apikey_value"),
    }
    REQUIRED = {
        "BASIC": ("basic_username", "basic_password"),
        "OAUTH_CLIENT_CREDENTIALS": (
            "oauth_client_id",
            "oauth_client_secret",
            "oauth_endpoint",
            "oauth_http_method",
        ),
        "API_KEY": ("apikey_name", "apikey_value"),
    }
    REF_FIELDS = ("basic_password", "oauth_client_secret", "apikey_value")

    def __init__(self, *args, not_kept: dict | None = None, **kwargs):
        """`not_kept`: the secret fields whose text was no reference, and was dropped (by name:
        the parse error)."""
        super().__init__(*args, **kwargs)
        self.not_kept = not_kept or {}
        # Marked required (the page says so; screen readers hear it): the name, the type, and
        # what each type needs (its section shows only when it is chosen).
        self.marked_required = {"name", "authorization_type"}
        for fields in self.REQUIRED.values():
            self.marked_required.update(fields)
        for name in self.marked_required:
            if not isinstance(self.fields[name].widget, forms.RadioSelect):
                self.fields[name].widget.attrs["aria-required"] = "true"

    def clean(self):
        data = super().clean()
        if not data.get("name"):
            self.add_error("name", ValidationError("Name is required.", code="required"))
        chosen = data.get("authorization_type")
        # Sections not chosen are ignored and discarded (they all post when JavaScript is off).
        for kind, fields in self.SECTION_FIELDS.items():
            if kind == chosen:
                continue
            for field in fields:
                data[field] = ""
                self.errors.pop(field, None)
        for field in self.REQUIRED.get(chosen, ()):
            if field in self.not_kept:
                exc = self.not_kept[field]
                self.add_error(field, not_kept_error(exc, exc.code))
            elif not data.get(field):
                label = self.fields[field].label
                self.add_error(field, ValidationError(f"{label} is required.", code="required"))
        for field in self.REF_FIELDS:
            if data.get(field):
                try:
                    data[field] = vault.parse_reference(data[field])
                except vault.InvalidReference as exc:
                    self.add_error(field, ValidationError(exc.message, code=exc.code))
        return data


class ParameterForm(forms.Form):
    key = forms.CharField(
        label="Key",
        required=False,
        max_length=2048,
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    value = forms.CharField(
        label="Value",
        required=False,
        max_length=4096,
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    # Its meaning is said once beside the table (a help text per row is noise to a screen reader).
    is_secret = forms.BooleanField(label="Value is secret", required=False)

    def __init__(self, *args, not_kept: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.dropped = (not_kept or {}).get(self.add_prefix("value"))

    def clean(self):
        data = super().clean()
        key, value, secret = data.get("key", ""), data.get("value", ""), data.get("is_secret")
        if secret and self.dropped is not None:  # a secret row whose text was no reference
            if not key:
                self.add_error("key", ValidationError("Key is required.", code="required"))
            self.add_error("value", not_kept_error(self.dropped, f"secret_{self.dropped.code}"))
            return data
        if not key and not value:
            return data  # an empty row is ignored
        if not key:
            self.add_error("key", ValidationError("Key is required.", code="required"))
        if not value:
            message = "Enter a Vault reference." if secret else "Value is required."
            self.add_error("value", ValidationError(message, code="required"))
            return data
        if secret:
            try:
                data["value"] = vault.parse_reference(value)
            except vault.InvalidReference as exc:
                self.add_error(
                    "value",
                    ValidationError(
                        f"This row is marked secret, so its value must be a Vault reference: "
                        f"{exc.message}",
                        code=f"secret_{exc.code}",
                    ),
                )
        elif _looks_like_reference(value):
            self.add_error(
                "value",
                ValidationError(
                    "This looks like a Vault reference: tick “Value is secret” so it is "
                    "resolved from Vault, or enter the literal value.",
                    code="reference_not_marked_secret",
                ),
            )
        return data

    def is_blank(self) -> bool:
        return not (self.cleaned_data.get("key") or self.cleaned_data.get("value"))


def _looks_like_reference(value: str) -> bool:
    try:
        vault.parse_reference(value)
    except vault.InvalidReference:
        return False
    return True


# No empty row to start with: the lists are optional, and "Add header" (and the like) adds one.
ParameterFormSet = formset_factory(
    ParameterForm, extra=0, max_num=MAX_ROWS, validate_max=True, absolute_max=MAX_ROWS + 1
)

# (prefix, document path, title)
PARAMETER_LISTS = [
    ("oauth_header", ("OAuthParameters", "OAuthHttpParameters", "HeaderParameters"), "Headers"),
    (
        "oauth_query",
        ("OAuthParameters", "OAuthHttpParameters", "QueryStringParameters"),
        "Query strings",
    ),
    ("oauth_body", ("OAuthParameters", "OAuthHttpParameters", "BodyParameters"), "Body"),
    ("inv_header", ("InvocationHttpParameters", "HeaderParameters"), "Headers"),
    ("inv_query", ("InvocationHttpParameters", "QueryStringParameters"), "Query strings"),
    ("inv_body", ("InvocationHttpParameters", "BodyParameters"), "Body"),
]
# What one row of each list is, for its "Add ..." button and the error summary.
ROW_NOUNS = {"header": "header", "query": "query string parameter", "body": "body parameter"}
LIST_NAMES = {
    prefix: ("OAuth " if prefix.startswith("oauth_") else "Invocation ") + title.lower()
    for prefix, _, title in PARAMETER_LISTS
}
FIELD_PATHS = {
    "Name": "name",
    "Description": "description",
    "AuthorizationType": "authorization_type",
    "KmsKeyIdentifier": "kms_key",
    "AuthParameters.BasicAuthParameters.Username": "basic_username",
    "AuthParameters.BasicAuthParameters.Password": "basic_password",
    "AuthParameters.BasicAuthParameters": "authorization_type",
    "AuthParameters.OAuthParameters": "authorization_type",
    "AuthParameters.ApiKeyAuthParameters": "authorization_type",
    "AuthParameters.OAuthParameters.ClientParameters.ClientID": "oauth_client_id",
    "AuthParameters.OAuthParameters.ClientParameters.ClientSecret": "oauth_client_secret",
    "AuthParameters.OAuthParameters.AuthorizationEndpoint": "oauth_endpoint",
    "AuthParameters.OAuthParameters.HttpMethod": "oauth_http_method",
    # A private OAuth endpoint's connectivity sits beside OAuthParameters, not inside it.
    "AuthParameters.ConnectivityParameters.ResourceParameters.ResourceConfigurationArn": (
        "oauth_resource_arn"
    ),
    "AuthParameters.ApiKeyAuthParameters.ApiKeyName": "apikey_name",
    "AuthParameters.ApiKeyAuthParameters.ApiKeyValue": "apikey_value",
    "InvocationConnectivityParameters.ResourceParameters.ResourceConfigurationArn": (
        "invocation_resource_arn"
    ),
}


class RequestForms:
    """The main form and its six parameter formsets, validated and converted as one unit."""

    max_rows = MAX_ROWS
    names = LIST_NAMES
    nouns = {prefix: ROW_NOUNS[prefix.split("_")[1]] for prefix, _, _ in PARAMETER_LISTS}

    @classmethod
    def with_row_added(cls, data, prefix: str, **kwargs) -> RequestForms:
        """The no-JavaScript "Add row": the form as posted, with one more empty row under
        `prefix` (up to MAX_ROWS), shown without errors."""
        data = data.copy()
        key = f"{prefix}-TOTAL_FORMS"
        if any(prefix == known for known, _, _ in PARAMETER_LISTS) and key in data:
            raw = data[key]  # few digits only: int() refuses more than 4,300 (a 500)
            count = int(raw) if raw.isdecimal() and raw.isascii() and len(raw) < 10 else MAX_ROWS
            data[key] = str(min(count + 1, MAX_ROWS))
        forms = cls(data, **kwargs)
        forms.suppress_errors()
        return forms

    def __init__(
        self, data=None, *, initial: dict | None = None, fixed_name: str = "", new: bool = False
    ):
        """`fixed_name`: the form of an update, whose connection keeps its name; `new`: a new
        connection, whose target is chosen here."""
        initial = initial or {}
        form_initial = dict(initial.get("form") or {})
        if fixed_name:
            form_initial["name"] = fixed_name
        self.not_kept: dict[str, vault.InvalidReference] = {}
        if data is not None:
            data = data.copy()
            self.not_kept = _drop_secret_text(data)
        self.form = ConnectionRequestForm(data, initial=form_initial, not_kept=self.not_kept)
        if new:
            self.form.fields["target"].initial = Target.default().pk
        else:
            del self.form.fields["target"]  # a connection, or a request, stays where it is
        if fixed_name:
            self.form.fields["name"].disabled = True
            self.form.fields["name"].help_text = "A connection's name cannot change."
        self.formsets = {
            prefix: ParameterFormSet(
                data,
                prefix=prefix,
                initial=initial.get(prefix),
                form_kwargs={"not_kept": self.not_kept},
            )
            for prefix, _, _ in PARAMETER_LISTS
        }
        self._row_map: dict[str, tuple[str, int]] = {}

    def sections_open(self) -> dict[str, bool]:
        """Which optional parts of the form show open: those holding something (or an error)."""
        form = self.form

        def filled(*names):
            return any(form[name].value() or form.has_error(name) for name in names)

        def rows(*prefixes):
            return any(self.formsets[p].total_form_count() for p in prefixes)

        return {
            "oauth_http": rows("oauth_header", "oauth_query", "oauth_body"),
            "oauth_private": filled("oauth_resource_arn"),
            "inv_http": rows("inv_header", "inv_query", "inv_body"),
            "inv_private": filled("invocation_resource_arn"),
            "kms": filled("kms_key"),
        }

    def is_valid(self) -> bool:
        valid = self.form.is_valid()
        chosen = getattr(self.form, "cleaned_data", {}).get("authorization_type")
        for prefix, formset in self.formsets.items():
            if prefix.startswith("oauth_") and chosen != "OAUTH_CLIENT_CREDENTIALS":
                continue  # a section not chosen is discarded, rows included
            valid = formset.is_valid() and valid
        return valid

    def list_sections(self):
        return [(prefix, title, self.formsets[prefix]) for prefix, _, title in PARAMETER_LISTS]

    def to_document(self) -> dict:
        """The request document. With errors on the form: built from what did clean (the rest
        left blank), so that the document's own checks can still be run on it."""
        data = self.form.cleaned_data
        kind = data.get("authorization_type", "")
        document: dict = {"Name": data.get("name", ""), "AuthorizationType": kind}
        if data.get("description"):
            document["Description"] = data["description"]
        auth: dict = {}
        if kind == "BASIC":
            auth["BasicAuthParameters"] = {
                "Username": data.get("basic_username", ""),
                "Password": _leaf(data.get("basic_password")),
            }
        elif kind == "API_KEY":
            auth["ApiKeyAuthParameters"] = {
                "ApiKeyName": data.get("apikey_name", ""),
                "ApiKeyValue": _leaf(data.get("apikey_value")),
            }
        elif kind:
            oauth = {
                "ClientParameters": {
                    "ClientID": data.get("oauth_client_id", ""),
                    "ClientSecret": _leaf(data.get("oauth_client_secret")),
                },
                "AuthorizationEndpoint": data.get("oauth_endpoint", ""),
                "HttpMethod": data.get("oauth_http_method", ""),
            }
            auth["OAuthParameters"] = oauth
            if data.get("oauth_resource_arn"):
                # The model puts a private authorization endpoint's connectivity in
                # AuthParameters.ConnectivityParameters, beside OAuthParameters.
                auth["ConnectivityParameters"] = {
                    "ResourceParameters": {"ResourceConfigurationArn": data["oauth_resource_arn"]}
                }
        for prefix, path, _ in PARAMETER_LISTS:
            if prefix.startswith("oauth_") and kind != "OAUTH_CLIENT_CREDENTIALS":
                continue
            rows = []
            for index, row in enumerate(self.formsets[prefix].forms):
                if not row.cleaned_data or row.errors or row.is_blank():
                    continue
                doc_path = "AuthParameters." + ".".join(path) + f"[{len(rows)}]"
                self._row_map[doc_path] = (prefix, index)
                rows.append(
                    {
                        "Key": row.cleaned_data["key"],
                        "Value": _leaf(row.cleaned_data["value"]),
                        "IsValueSecret": bool(row.cleaned_data["is_secret"]),
                    }
                )
            if rows:
                node = auth
                for part in path[:-1]:
                    node = node.setdefault(part, {})
                node[path[-1]] = rows
        document["AuthParameters"] = auth
        if data.get("invocation_resource_arn"):
            document["InvocationConnectivityParameters"] = {
                "ResourceParameters": {"ResourceConfigurationArn": data["invocation_resource_arn"]}
            }
        if data.get("kms_key"):
            document["KmsKeyIdentifier"] = data["kms_key"]
        return document

    def add_issues(self, issues: list[doc.Issue], *, beside_errors: bool = True) -> None:
        """Put each document problem next to the field it is about (`beside_errors` False: not
        where the field already shows an error of its own)."""
        for issue in issues:
            error = ValidationError(issue.message, code=issue.code)
            path = issue.path
            if path.startswith("AuthParameters.") and "Parameters[" in path:
                row_path, _, leaf = path.rpartition(".")
                if row_path in self._row_map and leaf in ("Key", "Value"):
                    prefix, index = self._row_map[row_path]
                    self._add(
                        self.formsets[prefix].forms[index], leaf.lower(), error, beside_errors
                    )
                    continue
                list_path = path.split("[")[0]
                for prefix, lpath, _ in PARAMETER_LISTS:
                    if list_path.endswith(".".join(lpath)):
                        formset = self.formsets[prefix]
                        if beside_errors or not formset.non_form_errors():
                            formset._non_form_errors = formset.error_class([error.message])
                        break
                else:
                    self._add(self.form, None, error, beside_errors)
                continue
            if path.startswith("InvocationHttpParameters") or path.endswith("Parameters"):
                self._add(self.form, None, error, beside_errors)
                continue
            self._add(self.form, FIELD_PATHS.get(path), error, beside_errors)

    @staticmethod
    def _add(form, field, error, beside_errors: bool) -> None:
        if beside_errors or not form.has_error(field or "__all__"):
            form.add_error(field, error)

    def has_errors(self) -> bool:
        return bool(self.form.errors) or any(
            formset.total_error_count() for formset in self.formsets.values()
        )

    def suppress_errors(self) -> None:
        """Render what was entered without validating it (the no-JavaScript Check)."""
        self.form._errors = ErrorDict(renderer=self.form.renderer)
        self.form.cleaned_data = {}
        for formset in self.formsets.values():
            formset._non_form_errors = formset.error_class(
                error_class="nonform", renderer=formset.renderer
            )
            formset._errors = []
            for row in formset.forms:
                row._errors = ErrorDict(renderer=row.renderer)
                row.cleaned_data = {}
        # ...except that text dropped from a secret field is said to be dropped.
        for name, exc in self.not_kept.items():
            if name in self.form.fields:
                self.form.add_error(name, not_kept_error(exc, exc.code))
                continue
            prefix, index, _ = name.split("-")
            rows = self.formsets[prefix].forms
            if int(index) < len(rows):
                rows[int(index)].add_error("value", not_kept_error(exc, f"secret_{exc.code}"))


def _drop_secret_text(data) -> dict[str, vault.InvalidReference]:
    """Blank every secret field (a reference field, or the value of a row marked secret) whose
    text is no Vault reference: it may be the secret itself, and must not come back in the page.
    Returns the parse error of each, by field name."""
    names = list(ConnectionRequestForm.REF_FIELDS)
    prefixes = tuple(prefix for prefix, _, _ in PARAMETER_LISTS)
    for key in list(data.keys()):
        head, _, tail = key.rpartition("-")
        if tail == "is_secret" and head.startswith(prefixes) and data.get(key):
            names.append(f"{head}-value")
    dropped = {}
    for name in names:
        text = data.get(name, "")
        if not text:
            continue
        try:
            vault.parse_reference(text)
        except vault.InvalidReference as exc:
            dropped[name] = exc
            data[name] = ""
    return dropped


def _leaf(value):
    """A parsed reference as the document stores it; anything else (plain text) as it is."""
    return value.leaf if isinstance(value, vault.Reference) else (value or "")


def initial_from_document(document: dict) -> dict:
    """Form and formset initial data from a stored document (for editing)."""
    auth = document.get("AuthParameters", {})
    basic = auth.get("BasicAuthParameters", {})
    oauth = auth.get("OAuthParameters", {})
    client = oauth.get("ClientParameters", {})
    apikey = auth.get("ApiKeyAuthParameters", {})

    def ref(leaf):
        return str(vault.Reference.from_leaf(leaf)) if doc.is_reference(leaf) else ""

    def arn(node):
        return node.get("ResourceParameters", {}).get("ResourceConfigurationArn", "")

    form = {
        "name": document.get("Name", ""),
        "description": document.get("Description", ""),
        "authorization_type": document.get("AuthorizationType"),
        "basic_username": basic.get("Username", ""),
        "basic_password": ref(basic.get("Password")),
        "oauth_client_id": client.get("ClientID", ""),
        "oauth_client_secret": ref(client.get("ClientSecret")),
        "oauth_endpoint": oauth.get("AuthorizationEndpoint", ""),
        "oauth_http_method": oauth.get("HttpMethod", "POST"),
        "oauth_resource_arn": arn(auth.get("ConnectivityParameters", {})),
        "apikey_name": apikey.get("ApiKeyName", ""),
        "apikey_value": ref(apikey.get("ApiKeyValue")),
        "invocation_resource_arn": arn(document.get("InvocationConnectivityParameters", {})),
        "kms_key": document.get("KmsKeyIdentifier", ""),
    }
    initial = {"form": form}
    for prefix, path, _ in PARAMETER_LISTS:
        node = auth
        for part in path:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        rows = node if isinstance(node, list) else []
        initial[prefix] = [
            {
                "key": row.get("Key", ""),
                "value": ref(row["Value"]) if row.get("IsValueSecret") else row.get("Value", ""),
                "is_secret": bool(row.get("IsValueSecret")),
            }
            for row in rows
        ]
    return initial


class ReasonForm(forms.Form):
    """Deauthorize (a reason is required) and delete (optional)."""

    reason = forms.CharField(
        label="Reason",
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3}),
        error_messages={"max_length": "At most %(limit_value)d characters."},
    )

    def __init__(self, *args, required: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["reason"].required = required
        self.fields["reason"].error_messages["required"] = "Say why."


class RotateForm(forms.Form):
    """One optional version per secret of the connection; empty: the newest Vault has."""

    def __init__(self, *args, secrets: list[dict], **kwargs):
        super().__init__(*args, **kwargs)
        self.secrets = secrets
        for i, secret in enumerate(secrets):
            secret["field"] = f"version_{i}"
            self.fields[secret["field"]] = forms.IntegerField(
                label=f"Version of {secret['reference']}",
                required=False,
                min_value=1,
                max_value=2**63 - 1,
                help_text="Empty: the newest version.",
                disabled=secret.get("kv_version") == 1,  # KV v1 keeps no versions
            )

    def versions(self) -> dict[str, int | None]:
        return {s["path"]: self.cleaned_data.get(s["field"]) for s in self.secrets}


# ---------------------------------------------------------------------------
# Audit review


RANGES = {"1h": ("Last hour", 3600), "24h": ("24 hours", 86400), "7d": ("7 days", 7 * 86400),
          "30d": ("30 days", 30 * 86400)}  # fmt: skip
_TEXT_FILTER_HELP = "Exact; end with * for every value that starts with it (partner-*)."


def _utc_moment(text: str, *, end: bool) -> datetime | None:
    """A day (YYYY-MM-DD) or a minute (YYYY-MM-DDTHH:MM, seconds allowed) in UTC, as a bound:
    the start of it, or with `end` the start of the next day or minute (so that the day or the
    minute is included). None when the text is neither."""
    text = text.strip().replace(" ", "T")
    try:
        if "T" not in text:
            day = date.fromisoformat(text)
            moment = datetime.combine(day, time.min, tzinfo=UTC)
            if end:
                return moment + timedelta(days=1) if day < date.max else None
            return moment
        moment = datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        raise ValidationError(
            "Enter a day (2026-03-02) or a day and time (2026-03-02T14:30), in UTC.",
            code="invalid",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC).replace(second=0, microsecond=0)
    return moment + timedelta(minutes=1) if end else moment


class AuditFilterForm(forms.Form):
    """The audit log's filters and its keyset cursor. Text filters match exactly, or as a prefix
    when they end with * (both served by the (field, id) indexes); times are UTC days or
    minutes, both ends included, or a recent range (1 h, 24 h, 7 d, 30 d).

    audit_list.html writes the inputs out itself: widgets rendered through templates cost more
    than the whole table of events.
    """

    actor = forms.CharField(required=False, max_length=150, help_text=_TEXT_FILTER_HELP)
    action = forms.CharField(required=False, max_length=64, help_text=_TEXT_FILTER_HELP)
    connection = forms.CharField(
        label="Connection name", required=False, max_length=64, help_text=_TEXT_FILTER_HELP
    )
    outcome = forms.ChoiceField(
        required=False,
        choices=[("", "any"), *zip(audit_review.OUTCOMES, audit_review.OUTCOMES, strict=True)],
    )
    arn = forms.CharField(label="ARN", required=False, max_length=1600, help_text=_TEXT_FILTER_HELP)
    range = forms.ChoiceField(
        required=False, choices=[("", "any time"), *((k, v[0]) for k, v in RANGES.items())]
    )
    since = forms.CharField(label="From (UTC)", required=False, max_length=32)
    until = forms.CharField(label="To (UTC, included)", required=False, max_length=32)
    before = forms.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    after = forms.IntegerField(required=False, min_value=0, max_value=2**63 - 1)

    FILTERS = {
        "actor": "actor_username",
        "action": "action",
        "connection": "connection_name",
        "outcome": "outcome",
        "arn": "arn",
    }
    TEXT = ("actor", "action", "connection", "arn")
    # Page links and range links are not inputs: their errors link nowhere in the summary.
    summary_targets = {"before": "", "after": "", "range": ""}

    def clean_since(self):
        text = self.cleaned_data["since"]
        return _utc_moment(text, end=False) if text else None

    def clean_until(self):
        text = self.cleaned_data["until"]
        return _utc_moment(text, end=True) if text else None

    def clean(self):
        data = super().clean()
        if data.get("range"):  # a recent range: from that long ago, to now
            data["since"] = timezone.now() - timedelta(seconds=RANGES[data["range"]][1])
            data["until"] = None
        if data.get("since") and data.get("until") and data["since"] >= data["until"]:
            self.add_error("until", "The end comes before the start.")
        if data.get("before") is not None and data.get("after") is not None:
            raise forms.ValidationError("A page link has either “before” or “after”, not both.")
        return data

    def filters(self) -> dict:
        found = {
            arg: self.cleaned_data[f] for f, arg in self.FILTERS.items() if self.cleaned_data[f]
        }
        for bound in ("since", "until"):
            if self.cleaned_data.get(bound):
                found[bound] = self.cleaned_data[bound]
        return found

    def query(self, **changed) -> str:
        """The filters as a query string (no cursor), for page and export links; `changed`
        replaces some (None drops one)."""
        names = [*self.FILTERS, "range", "since", "until"]
        values = {f: self.data[f] for f in names if self.data.get(f)}
        values.update(changed)
        return urlencode({k: v for k, v in values.items() if v})

    def shown(self, name: str) -> str:
        """A time filter as its input shows it (YYYY-MM-DDTHH:MM, the minute included), or as
        typed when it has an error."""
        if self.errors.get(name) or not hasattr(self, "cleaned_data"):
            return self.data.get(name, "")
        if self.cleaned_data.get("range"):
            return ""
        moment = self.cleaned_data.get(name)
        if not moment:
            return ""
        if name == "until":
            moment -= timedelta(minutes=1)
        return moment.strftime("%Y-%m-%dT%H:%M")


_FINGERPRINT = re.compile(r"hmac-sha256:[0-9a-f]{64}")
_PATH_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-/]*")


class SecretUseForm(forms.Form):
    """One search box (a reference, a path prefix or a fingerprint), and the links event pages
    make (?fingerprint=, ?reference=)."""

    q = forms.CharField(
        label="Reference, path prefix or fingerprint", required=False, max_length=1024
    )
    fingerprint = forms.RegexField(
        required=False,
        regex=r"^hmac-sha256:[0-9a-f]{64}$",
        error_messages={"invalid": "A fingerprint is hmac-sha256: and 64 hex digits."},
    )
    reference = forms.CharField(required=False, max_length=1024)
    before = forms.IntegerField(required=False, min_value=1, max_value=2**63 - 1)

    summary_targets = {"fingerprint": "#id_q", "reference": "#id_q", "before": ""}

    def clean(self):
        data = super().clean()
        data["version"], data["prefix"] = None, ""
        q = (data.get("q") or "").strip()
        if q and (data.get("fingerprint") or data.get("reference")):
            raise forms.ValidationError("Give either a fingerprint or a Vault reference.")
        if q:
            if _FINGERPRINT.fullmatch(q):
                data["fingerprint"] = q
            elif "#" in q:
                data["reference"] = q
            elif _PATH_PREFIX.fullmatch(q) and "/" in q and ".." not in q:
                data["prefix"] = q
            else:
                self.add_error(
                    "q",
                    ValidationError(
                        "Enter a Vault reference (secret/app/partner#password), a path prefix "
                        "(secret/app/) or a fingerprint (hmac-sha256: and 64 hex digits).",
                        code="invalid",
                    ),
                )
                return data
        if data.get("reference"):  # as request pages show it: mount/path#key, maybe @version
            try:
                ref = vault.parse_reference(data["reference"])
            except vault.InvalidReference as exc:
                self.add_error("q" if q else "reference", exc.message)
            else:
                data["reference"], data["version"] = ref.secret, ref.version
        if data.get("fingerprint") and data.get("reference"):
            raise forms.ValidationError("Give either a fingerprint or a Vault reference.")
        return data

    def searched(self) -> bool:
        data = self.cleaned_data
        return bool(data.get("fingerprint") or data.get("reference") or data.get("prefix"))

    def shown(self) -> str:
        """What the search box shows: what was searched, never text that was refused (it may
        be a secret value pasted by mistake)."""
        if self.errors or not hasattr(self, "cleaned_data"):
            return ""
        data = self.cleaned_data
        if data.get("reference"):
            version = data.get("version")
            return data["reference"] + (f"@{version}" if version else "")
        return data.get("fingerprint") or data.get("prefix") or ""
