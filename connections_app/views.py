"""Thin views: translate HTTP into service calls and back."""

from __future__ import annotations

import itertools
import logging
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError
from django.http import Http404, HttpResponseNotAllowed, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_POST

from . import audit_review, eventbridge, health, selectors, services, vault
from . import document as doc
from .forms import (
    NOT_KEPT,
    RANGES,
    AuditFilterForm,
    ReasonForm,
    RequestForms,
    RotateForm,
    SecretUseForm,
    initial_from_document,
)
from .models import AuditEvent, Connection, ConnectionRequest, Target
from .roles import CAN_APPROVE, CAN_AUDIT, CAN_REQUEST
from .templatetags.connections_extras import until

R = ConnectionRequest
log = logging.getLogger(__name__)


def forbidden(request, exception=None):
    message = getattr(exception, "message", "") or "You do not have permission to do that."
    return render(request, "403.html", {"message": message}, status=403)


def _number(request, name: str) -> int | None:
    """A whole-number query parameter (an id, a cursor), or None when absent or not one."""
    text = request.GET.get(name, "")
    return int(text) if text.isdecimal() and len(text) < 19 else None


def _number_posted(request, name: str) -> int:
    text = request.POST.get(name, "")
    return int(text) if text.isdecimal() and len(text) < 19 else 0


@login_required
def home(request):
    """The fleet at a glance: per target and overall, each figure a link to its list."""
    user = request.user
    if not selectors.may_see_connections(user):
        return render(request, "connections_app/home.html", {"no_role": True})
    return render(
        request,
        "connections_app/home.html",
        {
            **selectors.fleet(user),
            "labels": selectors.FILTER_LABELS,
            "approver": user.has_perm(CAN_APPROVE),
        },  # fmt: skip
    )


# ---------------------------------------------------------------------------
# Requests


def _visible_request(request, pk) -> ConnectionRequest:
    found = selectors.visible_request(request.user, pk)
    if found is None:
        raise Http404("No such request.")
    return found


def _reference_checks(forms: RequestForms, user) -> dict[str, dict]:
    """The no-JavaScript Check: every reference typed in the form, resolved without its value.
    Over the user's budget of checks: the refusal on the form, and no check."""
    fields = [(name, forms.form.data.get(name, "")) for name in forms.form.REF_FIELDS]
    for formset in forms.formsets.values():
        for row in formset.forms:
            if row.data.get(row.add_prefix("is_secret")):
                fields.append((row.add_prefix("value"), row.data.get(row.add_prefix("value"), "")))
    parsed = {name: _parse(text) for name, text in fields if text}
    # Text dropped from a secret field (no reference: perhaps the value itself) is said so.
    parsed.update(
        {
            name: vault.InvalidReference(forms_not_kept_message(exc), code=exc.code)
            for name, exc in forms.not_kept.items()
        }
    )
    try:
        answers = services.reference_checks(
            [ref for ref in parsed.values() if isinstance(ref, vault.Reference)], user=user
        )
    except services.ActionRefused as exc:
        forms.form.add_error(None, exc.message)
        return {}
    return {
        name: _check_view(answers[ref] if isinstance(ref, vault.Reference) else ref)
        for name, ref in parsed.items()
    }


def forms_not_kept_message(exc: vault.InvalidReference) -> str:
    return f"{NOT_KEPT} {exc.message}"


def _parse(text: str) -> vault.Reference | vault.InvalidReference:
    try:
        return vault.parse_reference(text)
    except vault.InvalidReference as exc:
        return exc


def _check_view(answer: vault.SecretInfo | vault.VaultError) -> dict:
    if isinstance(answer, vault.VaultError):
        return {"ok": False, "code": answer.code, "message": answer.message}
    return {
        "ok": True,
        "mount": answer.mount,
        "kv_version": answer.kv_version,
        "version": answer.version,
        # Vault gives nanoseconds ("2026-11-28T14:14:54.064483808Z"): to the second is enough.
        "updated": answer.updated[:19].replace("T", " ") + " UTC" if answer.updated else None,
    }


@sensitive_post_parameters()
@login_required
@permission_required(CAN_REQUEST, raise_exception=True)
def request_new(request):
    def save(document, target):
        obj = services.request_create(requester=request.user, document=document, target=target)
        messages.success(request, f"Request “{obj.name}” saved; it awaits approval.")
        return obj

    initial = {"form": {"oauth_http_method": "POST"}}
    again = _filed_again_from(request, kinds=(R.CREATE,))
    if again is not None:  # "File again": the form filled in from an earlier request
        initial = initial_from_document(again.document)
        initial["form"]["target"] = again.target_id
    return _request_form(request, initial, save, again=again)


def _filed_again_from(request, *, kinds, connection=None) -> ConnectionRequest | None:
    """The request named by ?from= on a form's first GET (the "File again" link): one the user
    may see, of one of `kinds`, and of `connection` when given."""
    pk = _number(request, "from")
    if request.method != "GET" or pk is None:
        return None
    found = selectors.visible_request(request.user, pk)
    if found is None or found.kind not in kinds:
        return None
    if connection is not None and found.connection_id != connection.pk:
        return None
    return found


@sensitive_post_parameters()
@login_required
def request_edit(request, pk):
    obj = _visible_request(request, pk)
    refused = services.refusal("edit", obj, request.user)
    if refused is not None and refused.code == "not_owner":
        raise refused
    if refused is not None and request.method != "POST":
        messages.error(request, refused.message)
        return redirect("request_detail", pk=pk)
    # A POST always comes back as typed: if the request was decided or expired meanwhile, the
    # service's refusal is shown above the form.
    initial = initial_from_document(obj.document)
    return _request_form(request, initial, lambda doc: _edit(request, obj, doc), obj=obj,
                         fixed_name=obj.name if obj.connection_id else "")  # fmt: skip


def _edit(request, obj, document):
    obj = services.request_update(request=obj, editor=request.user, document=document)
    messages.success(request, f"Request “{obj.name}” updated (revision {obj.revision}).")
    return obj


def _request_form(
    request, initial, save, *, obj=None, connection=None, fixed_name="", kind="", again=None
):
    """The connection form: new, edit, update or re-authorize. `save(document)` files it
    (new: `save(document, target)`)."""
    kwargs = {"fixed_name": fixed_name, "new": obj is None and connection is None}
    checks = {}
    if request.method == "POST":
        if "_add_row" in request.POST:
            # Without JavaScript: the form again as typed, with one more row and no errors yet.
            forms = RequestForms.with_row_added(request.POST, request.POST["_add_row"], **kwargs)
        elif "_check" in request.POST:
            forms = RequestForms(request.POST, **kwargs)
            # Only the references are checked: a half-filled form shows no other errors yet.
            forms.suppress_errors()
            checks = _reference_checks(forms, request.user)
        else:
            forms = RequestForms(request.POST, **kwargs)
            if forms.is_valid():
                saved = _save_request(forms, save)
                if saved is not None:
                    return redirect("request_detail", pk=saved.pk)
            else:
                # The document's own checks on what did clean: every problem in one round.
                forms.add_issues(doc.validate(forms.to_document()), beside_errors=False)
    else:
        forms = RequestForms(initial=initial, **kwargs)
    return render(
        request,
        "connections_app/request_form.html",
        {
            "forms": forms,
            "form": forms.form,
            "obj": obj,
            "connection": connection,
            "checks": checks,
            "kind": kind,
            "again": again,
        },
        status=400 if request.method == "POST" and forms.has_errors() else 200,
    )


def _save_request(forms: RequestForms, save):
    """File the form's document; None, with the problems put on the form, if refused."""
    try:
        if "target" in forms.form.fields:  # a new connection: where it is made
            return save(forms.to_document(), forms.form.cleaned_data.get("target"))
        return save(forms.to_document())
    except services.DocumentInvalid as exc:
        forms.add_issues(exc.issues)
    except services.ActionRefused as exc:
        forms.form.add_error(None, exc.message)
    return None


@require_POST
@login_required
@permission_required(CAN_REQUEST, raise_exception=True)
def reference_check(request):
    """The Check button beside a reference: version and update time, never the value."""
    ref = _parse(request.POST.get("reference", ""))
    if isinstance(ref, vault.Reference):
        try:
            ref = services.reference_checks([ref], user=request.user)[ref]
        except services.ActionRefused as exc:
            answer = {"ok": False, "code": exc.code, "message": exc.message}
            return JsonResponse(answer, status=429)
    return JsonResponse(_check_view(ref))


@login_required
@permission_required(CAN_REQUEST, raise_exception=True)
def request_mine(request):
    objs = selectors.requests_of(request.user)
    return render(request, "connections_app/request_list.html", {"requests": objs})


DETAIL = "connections_app/request_detail.html"


@login_required
def request_detail(request, pk):
    return render(request, DETAIL, _detail_context(request, _visible_request(request, pk)))


def _detail_context(request, obj: ConnectionRequest) -> dict:
    allowed = services.allowed_actions(obj, request.user)
    reviews = bool(allowed & {"approve", "retry"})
    # The approver sees each secret against the connection, and whether it resolves now.
    review = selectors.change_review(obj) if reviews else None
    changes, base_label, secrets_compared = selectors.change_base(obj, review)
    redacted = doc.redact(obj.document)
    context = {
        "obj": obj,
        "document": redacted,
        "document_rows": audit_review.change_rows(
            redacted, changes, secrets_compared=secrets_compared
        ),
        "base_changes": changes,
        "base_label": base_label,
        "aws_base": base_label == "what AWS holds now",
        "review": review,
        "decides": bool(allowed & {"approve", "retry", "reject"}),
        "references": [
            {"path": doc.path_text(path), "reference": str(ref)}
            for path, ref in doc.references(obj.document)
        ],
        # The actions offered are exactly those the services would accept now.
        "allowed": allowed,
        # Listed only from the second revision on; their documents are not shown.
        "revisions": (
            obj.revisions.select_related("author").defer("document") if obj.revision > 1 else []
        ),
        "events": audit_review.history(obj.pk),
        "again_url": _again_url(request.user, obj),
    }
    if context["decides"]:
        context["deciders"] = selectors.deciders(obj)
    if review is not None:
        secrets = review["secrets"]
        for item in secrets:
            item["check"] = _check_view(item["check"])
            item["secret"], item["pinned"] = item["ref"].secret, item["ref"].version
        context["unresolved"] = sum(1 for item in secrets if not item["check"]["ok"])
    context["next_step"] = _next_step(obj, allowed, context["again_url"])
    return context


def _again_url(user, obj: ConnectionRequest) -> str:
    """Where "File again" leads for a closed request (rejected, cancelled, expired), or for
    the requester's failed rotate, deauthorize or delete (not edited in a form: filing it again
    cancels it), when the user may file that change now: its form, filled in (?from=)."""
    replaced = (
        obj.shown_status == R.FAILED
        and obj.kind not in services.EDITABLE_KINDS
        and obj.requester_id == user.pk
    )
    if obj.shown_status not in (R.REJECTED, R.CANCELLED, R.EXPIRED) and not replaced:
        return ""
    if obj.kind == R.CREATE:
        return f"{reverse('request_new')}?from={obj.pk}" if user.has_perm(CAN_REQUEST) else ""
    connection = obj.connection
    if connection is None:
        return ""
    kind = obj.kind
    if kind == R.UPDATE:
        kind = (
            "adopt"
            if not connection.managed
            else "reauthorize"
            if connection.state == "DEAUTHORIZED"
            else R.UPDATE
        )
    opened = services.open_change(connection, but=obj if replaced else None)
    if services.change_refusal(kind, connection, user, open_change=opened) is not None:
        return ""
    return f"{reverse(f'connection_{kind}', args=[connection.pk])}?from={obj.pk}"


def _next_step(obj: ConnectionRequest, allowed: set[str], again_url: str) -> dict | None:
    """What happens now, or what the requester can do, said at the top of the page."""
    status = obj.shown_status
    if status == R.PENDING:
        return {"text": f"Waiting for an approver; it expires in {until(obj.expires_at)}."}
    if status == R.FAILED:
        text = f"The submission failed: {obj.error_message}"
        if "edit" in allowed:
            text += " Edit it and save to send it back for approval, or cancel it."
        elif again_url:
            text += " File it again (that cancels this one), or cancel it."
        elif "cancel" in allowed:
            text += " Cancel it, or ask an approver to retry it."
        elif "retry" in allowed:
            text += " Retry it (AWS is asked first), or reject it to close it."
        return {"text": text}
    said = {
        R.REJECTED: "Rejected"
        + (f" by {obj.decided_by.get_username()}" if obj.decided_by else "")
        + (f": “{obj.decision_comment}”." if obj.decision_comment else "."),
        R.CANCELLED: "Cancelled by its requester.",
        R.EXPIRED: "Expired: nobody decided it in time.",
    }
    if status in said:
        return {"text": said[status] + (" File it again to start over." if again_url else "")}
    return None


# The decision panel's one text box: the comment when approving, the reason when rejecting
# (posted as "reason" by older pages and clients).
_TYPED = {"approve": "comment", "reject": "comment"}
_BAD_TEXT = ("reason_required", "too_long", "null_character")


def _act(request, pk, action, *, form: str = ""):
    obj = _visible_request(request, pk)
    try:
        message = action(obj)
        messages.success(request, message)
    except services.ActionRefused as exc:
        if form:
            page = _detail_context(request, _visible_request(request, pk))
            if form in page["allowed"]:  # the form is still offered: show it again, as typed
                anyway = exc.code == "anyway_required"
                page["refused"] = {
                    "form": form,
                    "code": exc.code,
                    "message": exc.message,
                    "text": _decision_text(request),
                    "anyway": bool(request.POST.get("anyway")),
                }
                target = "#id_anyway" if anyway else "#id_comment"
                page["refused_items"] = [{"href": target, "message": exc.message}]
                status = 400 if exc.code in _BAD_TEXT else 409
                return render(request, DETAIL, page, status=status)
        messages.error(request, exc.message)
    except DatabaseError:
        log.exception("Database error during %s", request.path)
        messages.error(
            request,
            "The database connection was lost before the result was recorded. Nothing is lost: "
            "once the request shows as retryable, Retry checks AWS first and never creates a "
            "second connection.",
        )
    return redirect("request_detail", pk=pk)


def _decision_text(request) -> str:
    return request.POST.get("comment") or request.POST.get("reason", "")


@login_required
def request_cancel(request, pk):
    """GET: are you sure? (works without JavaScript); POST: cancel."""
    if request.method == "GET":
        obj = _visible_request(request, pk)
        refused = services.refusal("cancel", obj, request.user)
        if refused is not None:
            messages.error(request, refused.message)
            return redirect("request_detail", pk=pk)
        return render(request, "connections_app/request_cancel.html", {"obj": obj})
    if request.method != "POST":
        return HttpResponseNotAllowed(["GET", "POST"])

    def act(obj):
        services.request_cancel(request=obj, actor=request.user)
        return "Request cancelled."

    return _act(request, pk, act)


@require_POST
@login_required
def request_approve(request, pk):
    def act(obj):
        anyway = bool(request.POST.get("anyway"))
        if _number_posted(request, "unresolved") and not anyway:
            # The page said a reference does not resolve: approving needs "approve anyway".
            raise services.ActionRefused(
                "A secret reference does not resolve now: tick “Approve anyway” to approve all "
                "the same, or reject the request.",
                code="anyway_required",
            )
        obj = services.request_approve(
            request=obj,
            approver=request.user,
            comment=request.POST.get("comment", ""),
            seen_hash=request.POST.get("document_hash", ""),
            anyway=anyway,
        )
        return _submit_message(obj)

    return _act(request, pk, act, form="approve")


@require_POST
@login_required
def request_retry(request, pk):
    def act(obj):
        obj = services.request_retry(
            request=obj, approver=request.user, seen_hash=request.POST.get("document_hash", "")
        )
        return _submit_message(obj)

    return _act(request, pk, act)


def _submit_message(obj: ConnectionRequest) -> str:
    if obj.status not in R.SUCCEEDED:
        raise services.ActionRefused(f"Submission failed: {obj.error_message}", code=obj.error_code)
    done = {"create": "created", "update": "updated", "rotate": "rotated",
            "deauthorize": "deauthorized", "delete": "deleted"}[obj.kind]  # fmt: skip
    connection = obj.connection
    message = f"Connection {obj.name} {done} ({connection.state})."
    if not connection.secret_arn and connection.state != Connection.DELETED:
        message += " AWS did not describe it yet: Refresh fetches its secret ARN and state reason."
    return message


@require_POST
@login_required
def request_reject(request, pk):
    def act(obj):
        services.request_reject(request=obj, approver=request.user, reason=_decision_text(request))
        return "Request rejected."

    return _act(request, pk, act, form="reject")


@login_required
@permission_required(CAN_APPROVE, raise_exception=True)
def approval_queue(request):
    target = _number(request, "target")
    return render(
        request,
        "connections_app/approval_queue.html",
        {
            "queue": selectors.approval_queue(
                user=request.user, after=_number(request, "after"), target=target
            ),
            "target": target and Target.objects.filter(pk=target).first(),
            "failed": selectors.unfinished_submissions(request.user, target),
            "me": request.user.pk,
        },
    )


# ---------------------------------------------------------------------------
# Connections


def _connection(request, pk) -> Connection:
    if not selectors.may_see_connections(request.user):
        raise PermissionDenied("You may not see connections.")
    return get_object_or_404(Connection.objects.select_related("target"), pk=pk)


@login_required
def connection_list(request):
    if not selectors.may_see_connections(request.user):
        raise PermissionDenied("You may not see connections.")
    state = request.GET.get("state", "")
    prefix = request.GET.get("q", "").strip()[:64]
    target = _number(request, "target")
    after = request.GET.get("after", "").rpartition(" ")
    cursor = (after[0], int(after[2])) if after[2].isdecimal() and len(after[2]) < 19 else None
    page = selectors.connections_page(state=state, prefix=prefix, target=target, after=cursor)
    filters = (("state", state), ("q", prefix), ("target", target))
    query = urlencode({k: v for k, v in filters if v})
    return render(
        request,
        "connections_app/connection_list.html",
        {
            "page": page,
            "state": state,
            "q": prefix,
            "target": target,
            "targets": selectors.target_choices(),
            "query": query,
            "paged": cursor is not None,
            "states": [
                (key, selectors.FILTER_LABELS.get(key, key)) for key in selectors.STATE_FILTERS
            ],
            "may_refresh": _may_refresh(request.user),
        },
    )


def _may_refresh(user) -> bool:
    return user.has_perm(CAN_APPROVE) or user.has_perm(CAN_REQUEST)


@require_POST
@login_required
def connection_refresh_all(request):
    """Refresh every connection in a passing state: one describe each, as the worker does."""
    if not _may_refresh(request.user):
        raise PermissionDenied("You may not refresh connections.")
    done = services.connections_refresh_passing()
    failed = [(c.name, error) for c, error in done if error]
    if not done:
        messages.success(request, "No connection is in a passing state: nothing to refresh.")
    else:
        states = ", ".join(f"{c.name}: {c.state}" for c, error in done if not error)
        messages.success(request, f"Refreshed {len(done) - len(failed)} of {len(done)}. {states}")
    for name, error in failed:
        messages.error(request, f"{name}: {error}")
    return redirect("connection_list")


@login_required
def connection_detail(request, pk):
    connection = _connection(request, pk)
    opened = services.open_change(connection)
    destinations, destinations_error = selectors.api_destinations(connection)
    return render(
        request,
        "connections_app/connection_detail.html",
        {
            "connection": connection,
            "document_rows": audit_review.document_rows(connection.document),
            "secrets": selectors.pushed_secrets(connection),
            "destinations": destinations,
            "destinations_error": destinations_error,
            "open_change": opened,
            "changes_allowed": services.allowed_changes(connection, request.user, opened),
            "may_refresh": _may_refresh(request.user),
            **selectors.connection_history(connection),
        },
    )


@require_POST
@login_required
def connection_refresh(request, pk):
    if not (request.user.has_perm(CAN_APPROVE) or request.user.has_perm(CAN_REQUEST)):
        raise PermissionDenied("You may not refresh connections.")
    connection = _connection(request, pk)
    try:
        connection = services.connection_refresh(connection=connection, actor=request.user)
        messages.success(request, f"{connection.name}: {connection.state}.")
    except eventbridge.EventBridgeError as exc:
        messages.error(request, exc.message)
    return redirect("connection_detail", pk=pk)


def _replacing(request, connection: Connection, kind: str) -> ConnectionRequest | None:
    """The user's own failed `kind` change to this connection that the form files again in
    its place: named by ?from= (the "File again" link), then by the form's `replaces` field."""
    posted = request.method == "POST"
    pk = _number_posted(request, "replaces") if posted else _number(request, "from")
    found = selectors.visible_request(request.user, pk) if pk else None
    if (
        found is None
        or (found.kind, found.connection_id, found.requester_id)
        != (kind, connection.pk, request.user.pk)
        or not (posted or found.status == R.FAILED)
    ):
        return None
    return found


def _change_refused(
    request, connection: Connection, kind: str, *, typed: bool = True, replacing=None
):
    """Opening a change form the user may not file now: back to the connection, saying why
    (None: they may). With `typed`, a POST goes on, so that what was typed comes back with the
    refusal (the service refuses it). The failed change being filed again does not count as
    the connection's open one."""
    opened = services.open_change(connection, but=replacing)
    refused = services.change_refusal(kind, connection, request.user, open_change=opened)
    if refused is not None and refused.code in ("not_requester", "not_approver"):
        raise refused
    if refused is None or (typed and request.method == "POST"):
        return None
    messages.error(request, refused.message)
    return redirect("connection_detail", pk=connection.pk)


@sensitive_post_parameters()
@login_required
def connection_update(request, pk, kind="update"):
    """Update, re-authorize or adopt: the connection form, starting from what was last pushed
    (adopt: from what AWS describes, the secrets left for the requester to name in Vault)."""
    connection = _connection(request, pk)
    if refused := _change_refused(request, connection, kind):
        return refused

    def save(document):
        obj = services.change_file(
            connection=connection, requester=request.user, kind=kind, document=document
        )
        messages.success(request, f"Request to {kind} “{obj.name}” saved; it awaits approval.")
        return obj

    again = _filed_again_from(request, kinds=(R.UPDATE,), connection=connection)
    if again is not None:  # "File again": as the earlier request had it, references included
        initial = initial_from_document(again.document)
    elif kind == "adopt":
        initial = initial_from_document(selectors.adoption_document(connection))
    else:
        initial = initial_from_document(doc.unredacted(connection.document))
    return _request_form(
        request,
        initial,
        save,
        connection=connection,
        fixed_name=connection.name,
        kind=kind,
        again=again,
    )


def _filed(request, form, file):
    """Run `file()`, a service call filing a change: on success its page, else None with the
    refusal on the form (beside the reason when it is about the reason)."""
    try:
        obj = file()
    except services.DocumentInvalid as exc:
        for issue in exc.issues:
            form.add_error(None, f"{issue.path}: {issue.message}")
    except services.ActionRefused as exc:
        about_reason = exc.code in ("reason_required", "too_long", "null_character")
        form.add_error("reason" if about_reason and "reason" in form.fields else None, exc.message)
    else:
        messages.success(request, f"Request to {obj.kind} “{obj.name}” saved; it awaits approval.")
        return redirect("request_detail", pk=obj.pk)
    return None


@login_required
def connection_rotate(request, pk):
    """Rotate: every secret re-read at the newest Vault version, or at one the requester picks."""
    connection = _connection(request, pk)
    replacing = _replacing(request, connection, R.ROTATE)
    # Nothing typed to keep, and the page reads Vault: refused before anything is asked.
    if refused := _change_refused(request, connection, R.ROTATE, typed=False, replacing=replacing):
        return refused
    secrets = selectors.rotation_candidates(connection)
    again = replacing or _filed_again_from(request, kinds=(R.ROTATE,), connection=connection)
    initial = {}
    if again is not None:  # the versions the earlier request named
        pinned = {doc.path_text(path): ref.version for path, ref in doc.references(again.document)}
        initial = {f"version_{i}": pinned.get(s["path"]) for i, s in enumerate(secrets)}
    data = request.POST if request.method == "POST" else None
    form = RotateForm(data, secrets=secrets, initial=initial)
    if request.method == "POST" and form.is_valid():

        def file():
            document = services.rotation_document(connection, form.versions(), user=request.user)
            return services.change_file(
                connection=connection,
                requester=request.user,
                kind=R.ROTATE,
                document=document,
                replaces=replacing,
            )

        if filed := _filed(request, form, file):
            return filed
    return render(
        request,
        "connections_app/connection_rotate.html",
        {"connection": connection, "form": form, "again": again, "replacing": replacing},
        status=400 if form.errors else 200,
    )


@login_required
def connection_remove(request, pk, kind):
    """Deauthorize (a reason is required) or delete (refused while API destinations use it)."""
    connection = _connection(request, pk)
    replacing = _replacing(request, connection, kind)
    if refused := _change_refused(request, connection, kind, replacing=replacing):
        return refused
    data = request.POST if request.method == "POST" else None
    again = replacing or _filed_again_from(request, kinds=(kind,), connection=connection)
    initial = {"reason": again.reason} if again is not None else {}
    form = ReasonForm(data, required=kind == R.DEAUTHORIZE, initial=initial)
    destinations, destinations_error = (
        selectors.api_destinations(connection) if kind == R.DELETE else ([], "")
    )
    if request.method == "POST" and form.is_valid():

        def file():
            return services.change_file(
                connection=connection,
                requester=request.user,
                kind=kind,
                reason=form.cleaned_data["reason"],
                replaces=replacing,
            )

        if filed := _filed(request, form, file):
            return filed
    return render(
        request,
        "connections_app/connection_remove.html",
        {
            "connection": connection,
            "form": form,
            "kind": kind,
            "destinations": destinations,
            "destinations_error": destinations_error,
            "again": again,
            "replacing": replacing,
        },
        status=400 if form.errors else 200,
    )


# ---------------------------------------------------------------------------
# Notifications


@login_required
def notifications(request):
    """What was written for me (and for my groups' chat channels), and when it went out; the
    email channel can be muted (approvers' reminders come all the same)."""
    if request.method == "POST":
        services.notifications_mute(user=request.user, email=request.POST.get("email") != "on")
        messages.success(request, "Saved.")
        return redirect("notifications")
    return render(
        request, "connections_app/notifications.html", selectors.notifications_of(request.user)
    )


# ---------------------------------------------------------------------------
# Audit


def _list_context(form: AuditFilterForm) -> dict:
    context = {
        "form": form,
        "actions": audit_review.ACTIONS,
        "outcomes": audit_review.OUTCOMES,
        "text_help": form.fields["actor"].help_text,
    }
    if form.errors:
        context["errors"] = form.errors
        context["cursor_errors"] = [
            f"This page link is not valid ({name}: {' '.join(form.errors[name])}) Start again "
            "from the newest events."
            for name in ("before", "after")
            if name in form.errors
        ]
    return context


@login_required
@permission_required(CAN_AUDIT, raise_exception=True)
def audit_list(request):
    form = AuditFilterForm(request.GET)
    context = _list_context(form)
    if not form.is_valid():
        return render(request, "connections_app/audit_list.html", context, status=400)
    cursor = form.cleaned_data
    filters = form.filters()
    events = audit_review.events_filtered(**filters)
    with audit_review.planned_for_these_values(filters):
        page = audit_review.page_of(events, before=cursor["before"], after=cursor["after"])
        context["page"] = page
        if audit_review.cheap_to_count(filters):
            context["count"], context["count_more"] = audit_review.count_up_to(events)
        else:  # what the page itself says: all of them, or more than it shows
            more = page.older is not None or page.newer is not None
            context["count"], context["count_more"] = len(page.events), more
    context["query"] = form.query()
    context["paged"] = cursor["before"] is not None or cursor["after"] is not None
    context["ranges"] = [
        (key, label, form.query(range=key, since=None, until=None), cursor["range"] == key)
        for key, (label, _) in RANGES.items()
    ]
    if not context["count"]:  # nothing matches: did they mean another value?
        context["suggestions"] = [
            {
                **found,
                "links": [(v, form.query(**{found["field"]: v})) for v in found["values"]],
                "prefix": form.query(**{found["field"]: found["text"] + "*"}),
            }
            for found in audit_review.suggestions(cursor)
        ]
    return render(request, "connections_app/audit_list.html", context)


@login_required
@permission_required(CAN_AUDIT, raise_exception=True)
def audit_export(request, fmt):
    """The current filter's events, newest first, streamed in constant memory."""
    form = AuditFilterForm(request.GET)
    if not form.is_valid():
        return render(request, "connections_app/audit_list.html", _list_context(form), status=400)
    chunks = audit_review.export_chunks(audit_review.events_filtered(**form.filters()))
    if fmt == "jsonl":
        body = (audit_review.jsonl_lines(rows) for rows in chunks)
        content_type = "application/jsonl; charset=utf-8"
    else:
        body = itertools.chain(
            [audit_review.CSV_HEADER], (audit_review.csv_lines(rows) for rows in chunks)
        )
        content_type = "text/csv; charset=utf-8"
    response = StreamingHttpResponse(body, content_type=content_type)
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{fmt}"'
    return response


@login_required
@permission_required(CAN_AUDIT, raise_exception=True)
def audit_detail(request, pk):
    event = get_object_or_404(AuditEvent, pk=pk)
    review = audit_review.event_review(event, verify_all=request.GET.get("verify") == "all")
    # Ids have no gaps: the next event exists when the chain goes on past this one.
    newer = AuditEvent.objects.filter(id=event.id + 1).exists()
    return render(
        request,
        "connections_app/audit_detail.html",
        {"event": event, "next_id": event.id + 1 if newer else None, **review},
    )


@login_required
@permission_required(CAN_AUDIT, raise_exception=True)
def audit_secret_uses(request):
    """Where one secret value (fingerprint) was used, how one reference's value changed, or
    what lies under a path prefix; beside the reads, the requests that named the secret."""
    form = SecretUseForm(request.GET)
    page = "connections_app/audit_secret_uses.html"
    if not form.is_valid():
        return render(request, page, {"form": form}, status=400)
    data = form.cleaned_data
    if not form.searched():
        return render(request, page, {"form": form})
    if data["prefix"]:
        requests = selectors.requests_referencing(prefix=data["prefix"])
        return render(
            request,
            page,
            {
                "form": form,
                "key": "prefix",
                "value": data["prefix"],
                "requests": requests,
                "references": _references_under(requests, data["prefix"]),
            },
        )
    rows, older = audit_review.secret_uses_page(
        fingerprint=data["fingerprint"],
        reference=data["reference"],
        version=data["version"],
        before=data["before"],
    )
    key = "fingerprint" if data["fingerprint"] else "reference"
    if key == "reference":
        referenced = [data["reference"]]
    else:  # the references this value was read through, on this page
        referenced = sorted({use.reference for row in rows for use in row["uses"]})
    if data["version"] is not None and key == "reference":
        data["reference"] += f"@{data['version']}"  # the next page asks the same question
    return render(
        request,
        page,
        {
            "form": form,
            "rows": rows,
            "older": older,
            "key": key,
            "value": data[key],
            "query": urlencode({key: data[key]}),
            "requests": selectors.requests_referencing(references=referenced),
        },
    )


def _references_under(requests, prefix: str) -> list[str]:
    """The references under `prefix` that these requests name, each to search on its own."""
    found = {
        ref.secret
        for obj in requests
        for _, ref in doc.references(obj.document)
        if ref.secret.startswith(prefix)
    }
    return sorted(found)


# ---------------------------------------------------------------------------
# Health


@require_GET
def healthz(request):
    ok, body = health.cached_probe()
    response = JsonResponse(body, status=200 if ok else 503)
    # A failing probe's 503 is its answer, not a server error: Django would log it as one,
    # and mail the admins once per probe (a load balancer probes every few seconds).
    response._has_been_logged = True
    return response


@login_required
def status(request):
    if not request.user.is_superuser:
        raise PermissionDenied("Only administrators can see the status page.")
    started = timezone.now()
    ok, body = health.probe()
    took = timezone.now() - started
    config = {
        "Vault address": settings.VAULT_ADDR,
        "Vault auth method": vault.auth_method(),
        "Vault namespace": settings.VAULT_NAMESPACE or "(none)",
        "AWS region": settings.AWS_REGION,
        "AWS endpoint": eventbridge.endpoint_url(),
        "AWS account": eventbridge.account_id() or "(unknown)",
    }
    return render(
        request,
        "connections_app/status.html",
        {
            "ok": ok,
            "health": body,
            "components": _components(body),
            "checked_at": started,
            "checked_in_ms": round(took.total_seconds() * 1000),
            "config": config,
        },
    )


_SAID = {"reachable": "reachable", "sealed": "sealed", "authenticated": "authenticated",
         "error": "error"}  # fmt: skip


def _components(body: dict) -> list[dict]:
    """The probe's answer as rows a person reads: each part, fine or not, and what was seen."""
    names = {"database": "Database", "vault": "Vault", "aws": "AWS (EventBridge)"}
    rows = []
    for key, name in names.items():
        part = body.get(key, {})
        details = [
            (_SAID.get(k, k), "yes" if v is True else "no" if v is False else v)
            for k, v in part.items()
            if k != "ok" and v is not None
        ]
        rows.append({"name": name, "ok": part.get("ok"), "details": details})
    return rows
