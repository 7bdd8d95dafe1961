import functools
import json
from datetime import UTC
from html import escape

from django import template
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import mark_safe

register = template.Library()


@register.filter
def get_item(mapping, key):
    return (mapping or {}).get(key)


@register.filter
def pretty_json(value) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


_UNITS = (("day", 86400), ("hour", 3600), ("minute", 60))


@register.filter
def waited(since) -> str:
    """How long ago, in its two largest units ("3 days, 4 hours"): what `timesince` says, at a
    fraction of its cost (it translates every part), for the queue's every row."""
    return _span(max(0, int((timezone.now() - since).total_seconds())))


def _span(seconds: int) -> str:
    parts = []
    for unit, size in _UNITS:
        count, seconds = divmod(seconds, size)
        if count or parts:
            parts.append(f"{count} {unit}{'' if count == 1 else 's'}")
        if len(parts) == 2:
            break
    parts = [part for part in parts if not part.startswith("0 ")]
    return ", ".join(parts) or "under a minute"


@register.filter
def until(when) -> str:
    """How long until `when`, as `waited` says it ("2 days, 3 hours"); "now" once past."""
    left = int((when - timezone.now()).total_seconds())
    return _span(left) if left > 0 else "now"


@register.filter
@functools.lru_cache(maxsize=4096)
def request_url(pk: int) -> str:
    """A request page's address. Reversing costs more than the rest of a queue row, and an
    approver reloads the same oldest rows all day; the URLconf never changes while serving."""
    return reverse("request_detail", args=[pk])


@register.filter
def get_field(form, name):
    return form[name]


def _utc(value) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if value else ""


@register.simple_tag
def connection_rows(connections) -> str:
    """<tr>s of the connections list; every value escaped. Fifty rows through the template
    engine (`{% url %}`, `|date` and the flags per row) cost more than the page's 12 ms budget
    (bench fleet: connections_page_ms_3000); this costs well under one."""
    detail = reverse("connection_detail", args=[0]).removesuffix("0/")  # connections/<id>/
    rows = []
    for c in connections:
        flags = "".join(
            f'<span class="flag{" warn" if warn else ""}">{label}</span> '
            for shown, label, warn in (
                (not c.managed, "unmanaged", False),
                (c.changed_outside, "changed outside", True),
                (c.deleted_outside, "deleted outside", True),
                (bool(c.drift), "Vault newer", True),
            )
            if shown
        )
        state = escape(c.state)
        by_aws = ' <strong class="changed">by AWS</strong>' if c.deauthorized_by_aws else ""
        reason = f" <small>{escape(c.state_reason)}</small>" if c.state_reason else ""
        rows.append(
            f'<tr><td><a href="{detail}{c.pk}/">{escape(c.name)}</a></td>'
            f"<td>{escape(c.target.name)}</td>"
            f'<td><span class="badge state state-{state.lower()}">{state}</span>{by_aws}{reason}'
            f"</td><td>{flags}</td><td>{escape(c.authorization_type)}</td>"
            f"<td>{_utc(c.modified_at)}</td><td>{_utc(c.checked_at)}</td></tr>"
        )
    return mark_safe("\n".join(rows))  # noqa: S308 - built above from escaped values
