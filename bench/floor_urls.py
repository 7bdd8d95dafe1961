"""Bench-only URLconf (never the app's): the least an approval through Django has to do.

`approve_empty_post_ms` times a signed-in POST to `floor/`: middleware, session, user,
permission, redirect, nothing else. `approve_floor_ms` times one to `floor/<pk>/`: the same, the
request loaded, then two transactions that each update the request row and append audit events
(one, then two), as the claim and the finish do; no Vault, no AWS.
"""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpResponseRedirect
from django.urls import path
from django.views.decorators.http import require_POST

from config.urls import handler403, urlpatterns  # noqa: F401 - the app's pages stay
from connections_app import audit
from connections_app.models import ConnectionRequest
from connections_app.roles import CAN_APPROVE


def _may_approve(request) -> None:
    if not request.user.has_perm(CAN_APPROVE):
        raise PermissionDenied


@require_POST
@login_required
def empty(request):
    _may_approve(request)
    return HttpResponseRedirect("/")


@require_POST
@login_required
def floor(request, pk):
    _may_approve(request)
    obj = ConnectionRequest.objects.get(pk=pk)
    event = dict(actor=request.user, request=obj, data={"bench": "floor"})
    with transaction.atomic():
        ConnectionRequest.objects.select_for_update().get(pk=pk).save(update_fields=["updated_at"])
        audit.append([dict(event, action="bench.floor.claim")])
    with transaction.atomic():
        ConnectionRequest.objects.filter(pk=pk).update(updated_at=obj.updated_at)
        audit.append([dict(event, action=f"bench.floor.finish.{i}") for i in (1, 2)])
    return HttpResponseRedirect("/")


urlpatterns = [*urlpatterns, path("floor/", empty), path("floor/<int:pk>/", floor)]
