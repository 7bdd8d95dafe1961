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


# ---------------------------------------------------------------------------
# Errors: a summary at the top of the page, each item a link to its field


def _label(form, name: str) -> str:
    field = form.fields.get(name)
    return str(field.label) if field is not None and field.label else name.replace("_", " ")


def _item(href: str, label: str, message: str) -> dict:
    # "Name is required." needs no "Name: " before it; "Headers, row 1, value" gives
    # "Headers, row 1: Value is required."
    head, _, last = label.rpartition(", ")
    if not label or message.lower().startswith(label.lower()):
        text = message
    elif head and message.lower().startswith(last.lower()):
        text = f"{head}: {message}"
    else:
        text = f"{label}: {message}"
    return {"href": href, "message": text}


def _form_items(form, *, what: str = "") -> list[dict]:
    """Items of one Django form: its own errors first (linked to its first field), then each
    field's, in field order."""
    first = next((form[name] for name in form.fields if not form[name].is_hidden), None)
    anchor = f"#{first.auto_id}" if first is not None and first.auto_id else ""
    items = [_item(anchor, what, str(e)) for e in form.non_field_errors()]
    for name in form.fields:
        if not form.has_error(name):
            continue
        bound = form[name]
        target = f"#{bound.auto_id}"
        if bound.widget_type == "radioselect":
            target = f"{target}_0"  # the first choice: a fieldset cannot take the focus
        # A form may say where an error of a field it does not show as such is fixed.
        target = getattr(form, "summary_targets", {}).get(name, target)
        label = f"{what}, {_label(form, name).lower()}" if what else _label(form, name)
        items += [_item(target, label, str(e)) for e in bound.errors]
    return items


def error_items(source) -> list[dict]:
    """[{href, message}] for a form, for the request form with its parameter lists, or as given
    (a list of such dicts)."""
    if not source:
        return []
    if isinstance(source, list | tuple):
        return list(source)
    if hasattr(source, "formsets"):  # forms.RequestForms
        from connections_app.forms import LIST_NAMES

        items = _form_items(source.form)
        for prefix, formset in source.formsets.items():
            name = LIST_NAMES[prefix]
            for error in formset.non_form_errors():
                items.append(_item(f"#params-{prefix}", name, str(error)))
            for index, row in enumerate(formset.forms):
                if row.errors:
                    items += _form_items(row, what=f"{name}, row {index + 1}")
        return items
    if getattr(source, "is_bound", False) and source.errors is not None:
        return _form_items(source)
    return []


@register.inclusion_tag("connections_app/_error_summary.html")
def error_summary(*sources):
    """GOV.UK's error summary: at the top, announced, focused on load by app.js."""
    return {"items": [item for source in sources for item in error_items(source)]}


@register.simple_tag
def error_title(*sources) -> str:
    """ "Error: " before a page's title when its form has errors (GOV.UK)."""
    return "Error: " if any(error_items(source) for source in sources) else ""


@register.filter
def marked_required(bound) -> bool:
    """Shown as required: required by the field, or by the form for the section it is in."""
    if bound.field.disabled:
        return False
    return bound.field.required or bound.name in getattr(bound.form, "marked_required", ())


@register.filter
def shown(form, name: str) -> str:
    """A field's value as a form that normalises it shows it (`form.shown(name)`)."""
    return form.shown(name)


@register.filter
def utc(value, precision: str = "seconds") -> str:
    """A time as this app shows every time: UTC, said so; "–" for none."""
    if not value:
        return "–"
    text = value.astimezone(UTC).strftime(
        "%Y-%m-%d %H:%M:%S" if precision == "seconds" else "%Y-%m-%d %H:%M"
    )
    return f"{text} UTC"
