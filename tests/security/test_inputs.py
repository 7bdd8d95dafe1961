"""Hostile text in the places people type freely: approval comments and rejection reasons
(bounded, no NUL), and audit exports opened in a spreadsheet (no formula runs)."""

import csv
import io

import pytest
from django.urls import reverse

from connections_app import services
from connections_app.models import AuditEvent, ConnectionRequest

R = ConnectionRequest
pytestmark = [pytest.mark.usefixtures("servers"), pytest.mark.django_db]


@pytest.fixture
def pending(requester, make_document):
    return services.request_create(requester=requester, document=make_document("API_KEY"))


@pytest.mark.parametrize(
    "text, code",
    [("x" * 2001, "too_long"), ("fine\x00then", "null_character"), ("x" * 2_500_000, "too_long")],
    ids=["2001 characters", "NUL", "2.5 MB"],
)
@pytest.mark.parametrize("form, field", [("approve", "comment"), ("reject", "reason")])
def test_comments_and_reasons_are_bounded(
    form, field, text, code, pending, approver_client, security_report
):
    before = AuditEvent.objects.count()
    response = approver_client.post(
        reverse(f"request_{form}", args=[pending.pk]),
        {field: text, "document_hash": pending.document_hash},
    )
    page = response.content.decode()
    assert response.status_code == 400
    assert f'data-testid="{form}-error"' in page  # beside the box it came from
    assert "at most 2,000 characters" in page or "may not contain NUL" in page
    assert AuditEvent.objects.count() == before  # nothing recorded
    assert R.objects.get(pk=pending.pk).status == R.PENDING
    nul = " with NUL" if "\x00" in text else ""
    security_report.add(
        "hostile inputs",
        f"{form} {field}: {len(text):,} characters{nul}",
        f"HTTP 400, message beside the field ({code}), nothing recorded",
    )


def test_exported_cells_never_run_as_formulas(user_factory, make_document, auditor_client,
                                              security_report):  # fmt: skip
    """Connection names may start with "-" (the model's pattern allows it), usernames with
    "+" or "@" (Django's validator does)."""
    name = "-2-3-cmd"
    requester = user_factory("+1+1", groups=["connection-requesters"])
    services.request_create(requester=requester, document=make_document(name=name))
    text = b"".join(auditor_client.get(reverse("audit_export_csv")).streaming_content).decode()
    rows = list(csv.reader(io.StringIO(text)))
    header, rows = rows[0], rows[1:]
    names = [row[header.index("connection_name")] for row in rows]
    assert f"'{name}" in names and name not in names
    actors = [row[header.index("actor_username")] for row in rows]
    assert "'+1+1" in actors
    risky = ("=", "+", "-", "@", "\t", "\r")
    assert not [cell for row in rows for cell in row if cell.startswith(risky)]
    security_report.add(
        "hostile inputs",
        "CSV export of a connection named -2-3-cmd filed by user +1+1",
        "the cells are '-2-3-cmd and '+1+1 (OWASP): no cell of the export starts with = + - @ "
        "tab or CR",
    )
