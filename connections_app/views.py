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
from django.http import Http404, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_POST

from . import audit_review, eventbridge, health, selectors, services, vault
from . import document as doc
from .forms import AuditFilterForm, RequestForms, SecretUseForm, initial_from_document
from .models import AuditEvent, ConnectionRequest
from .roles import CAN_APPROVE, CAN_AUDIT, CAN_REQUEST

R = ConnectionRequest
log = logging.getLogger(__name__)


def forbidden(request, exception=None):
    message = getattr(exception, "message", "") or "You do not have permission to do that."
    return render(request, "403.html", {"message": message}, status=403)


@login_required
def home(request):
    user = request.user
    if user.has_perm(CAN_APPROVE):
        return redirect("approval_queue")
    if user.has_perm(CAN_REQUEST):
        return redirect("request_mine")
    if user.has_perm(CAN_AUDIT):
        return redirect("audit_list")
    return render(request, "connections_app/home.html")


# ---------------------------------------------------------------------------
# Requests


def _visible_request(request, pk) -> ConnectionRequest:
    found = selectors.visible_request(request.user, pk)
    if found is None:
        raise Http404("No such request.")
    return found


def _reference_checks(forms: RequestForms) -> dict[str, dict]:
    """The no-JavaScript Check: every reference typed in the form, resolved without its value."""
    fields = [(name, forms.form.data.get(name, "")) for name in forms.form.REF_FIELDS]
    for formset in forms.formsets.values():
        for row in formset.forms:
            if row.data.get(row.add_prefix("is_secret")):
                fields.append((row.add_prefix("value"), row.data.get(row.add_prefix("value"), "")))
    parsed = {name: _parse(text) for name, text in fields if text}
    answers = services.reference_checks(
        [ref for ref in parsed.values() if isinstance(ref, vault.Reference)]
    )
    return {
        name: _check_view(answers[ref] if isinstance(ref, vault.Reference) else ref)
        for name, ref in parsed.items()
    }


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
    return _request_form(request, None)


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
    return _request_form(request, obj)


def _request_form(request, obj: ConnectionRequest | None):
    checks = {}
    if request.method == "POST":
        if "_add_row" in request.POST:
            # Without JavaScript: the form again as typed, with one more row and no errors yet.
            forms = RequestForms.with_row_added(request.POST, request.POST["_add_row"])
        elif "_check" in request.POST:
            forms = RequestForms(request.POST)
            # Only the references are checked: a half-filled form shows no other errors yet.
            checks = _reference_checks(forms)
            forms.suppress_errors()
        else:
            forms = RequestForms(request.POST)
            if forms.is_valid():
                saved = _save_request(request, forms, obj)
                if saved is not None:
                    return redirect("request_detail", pk=saved.pk)
            else:
                # The document's own checks on what did clean: every problem in one round.
                forms.add_issues(doc.validate(forms.to_document()), beside_errors=False)
    else:
        initial = (
            initial_from_document(obj.document) if obj else {"form": {"oauth_http_method": "POST"}}
        )
        forms = RequestForms(initial=initial)
    return render(
        request,
        "connections_app/request_form.html",
        {"forms": forms, "form": forms.form, "obj": obj, "checks": checks},
        status=400 if request.method == "POST" and forms.has_errors() else 200,
    )


def _save_request(request, forms: RequestForms, obj: ConnectionRequest | None):
    """File or update the request; None, with the problems put on the form, if refused."""
    document = forms.to_document()
    try:
        if obj is None:
            obj = services.request_create(requester=request.user, document=document)
            messages.success(request, f"Request “{obj.name}” saved; it awaits approval.")
        else:
            obj = services.request_update(request=obj, editor=request.user, document=document)
            messages.success(request, f"Request “{obj.name}” updated (revision {obj.revision}).")
        return obj
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
        ref = services.reference_checks([ref])[ref]
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
    user = request.user
    allowed = services.allowed_actions(obj, user)
    refs = doc.references(obj.document)
    references = [{"path": doc.path_text(path), "reference": str(ref)} for path, ref in refs]
    if allowed & {"approve", "retry"}:  # the approver sees whether a submission would work
        answers = services.reference_checks([ref for _, ref in refs])
        for item, (_, ref) in zip(references, refs, strict=True):
            item["check"] = _check_view(answers[ref])
    return {
        "obj": obj,
        "document": doc.redact(obj.document),
        "references": references,
        "checked": allowed & {"approve", "retry"},
        "unresolved": sum(1 for item in references if not item.get("check", {"ok": True})["ok"]),
        # The actions offered are exactly those the services would accept now.
        "allowed": allowed,
        # Listed only from the second revision on; their documents are not shown.
        "revisions": (
            obj.revisions.select_related("author").defer("document") if obj.revision > 1 else []
        ),
        "events": audit_review.history(obj.pk),
    }


# The text box of each action that has one: kept, with the refusal beside it, when refused.
_TYPED = {"approve": "comment", "reject": "reason"}
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
                page["refused"] = {
                    "form": form,
                    "message": exc.message,
                    "text": request.POST.get(_TYPED[form], ""),
                }
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


@require_POST
@login_required
def request_cancel(request, pk):
    def act(obj):
        services.request_cancel(request=obj, actor=request.user)
        return "Request cancelled."

    return _act(request, pk, act)


@require_POST
@login_required
def request_approve(request, pk):
    def act(obj):
        obj = services.request_approve(
            request=obj,
            approver=request.user,
            comment=request.POST.get("comment", ""),
            seen_hash=request.POST.get("document_hash", ""),
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
    if obj.status == R.CREATED and not obj.secret_arn:
        return (
            f"Connection {obj.name} created ({obj.connection_state}), but AWS did not describe it "
            "yet: Refresh on the Connections page fetches its secret ARN and state reason."
        )
    if obj.status == R.CREATED:
        return f"Connection {obj.name} created ({obj.connection_state})."
    raise services.ActionRefused(f"Submission failed: {obj.error_message}", code=obj.error_code)


@require_POST
@login_required
def request_reject(request, pk):
    def act(obj):
        services.request_reject(
            request=obj, approver=request.user, reason=request.POST.get("reason", "")
        )
        return "Request rejected."

    return _act(request, pk, act, form="reject")


@login_required
@permission_required(CAN_APPROVE, raise_exception=True)
def approval_queue(request):
    after = request.GET.get("after", "")
    after = int(after) if after.isdecimal() and len(after) < 19 else None
    return render(
        request,
        "connections_app/approval_queue.html",
        {
            "queue": selectors.approval_queue(after=after),
            "failed": selectors.unfinished_submissions(),
            "me": request.user.pk,
        },
    )


# ---------------------------------------------------------------------------
# Connections


@login_required
@permission_required(CAN_APPROVE, raise_exception=True)
def connection_list(request):
    return render(
        request,
        "connections_app/connection_list.html",
        {"connections": selectors.connections_created()},
    )


@require_POST
@login_required
@permission_required(CAN_APPROVE, raise_exception=True)
def connection_refresh(request, pk):
    obj = get_object_or_404(R, pk=pk)
    try:
        obj = services.connection_refresh(request=obj, actor=request.user)
        messages.success(request, f"{obj.name}: {obj.connection_state}.")
    except (services.ActionRefused, eventbridge.EventBridgeError) as exc:
        messages.error(request, exc.message)
    return redirect("connection_list")


# ---------------------------------------------------------------------------
# Audit


def _list_context(form: AuditFilterForm) -> dict:
    context = {"form": form, "actions": audit_review.ACTIONS, "outcomes": audit_review.OUTCOMES}
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
    events = audit_review.events_filtered(**form.filters())
    context["page"] = audit_review.page_of(events, before=cursor["before"], after=cursor["after"])
    context["query"] = form.query()
    context["paged"] = cursor["before"] is not None or cursor["after"] is not None
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
    return render(request, "connections_app/audit_detail.html", {"event": event, **review})


@login_required
@permission_required(CAN_AUDIT, raise_exception=True)
def audit_secret_uses(request):
    """Where one secret value (fingerprint) was used, or how one reference's value changed."""
    form = SecretUseForm(request.GET)
    if not form.is_valid():
        return render(request, "connections_app/audit_secret_uses.html", {"form": form}, status=400)
    data = form.cleaned_data
    rows, older = audit_review.secret_uses_page(
        fingerprint=data["fingerprint"],
        reference=data["reference"],
        version=data["version"],
        before=data["before"],
    )
    key = "fingerprint" if data["fingerprint"] else "reference"
    if data["version"] is not None and key == "reference":
        data["reference"] += f"@{data['version']}"  # the next page asks the same question
    return render(
        request,
        "connections_app/audit_secret_uses.html",
        {
            "form": form,
            "rows": rows,
            "older": older,
            "key": key,
            "value": data[key],
            "query": urlencode({key: data[key]}),
        },
    )


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
    ok, body = health.probe()
    config = {
        "Vault address": settings.VAULT_ADDR,
        "Vault auth method": vault.auth_method(),
        "Vault namespace": settings.VAULT_NAMESPACE or "(none)",
        "AWS region": settings.AWS_REGION,
        "AWS endpoint": eventbridge.endpoint_url(),
        "AWS account": eventbridge.account_id() or "(unknown)",
    }
    return render(
        request, "connections_app/status.html", {"ok": ok, "health": body, "config": config}
    )
