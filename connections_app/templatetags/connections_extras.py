import functools
import json

from django import template
from django.urls import reverse
from django.utils import timezone

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
