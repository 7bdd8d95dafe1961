"""connections_app.sql: the plain statements return what the ORM would, on either database."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from connections_app import services, sql
from connections_app.models import ConnectionRequest

R = ConnectionRequest
pytestmark = pytest.mark.django_db


@pytest.fixture
def filed(requester, make_document):
    return services.request_create(requester=requester, document=make_document())


def test_get_matches_the_orm_field_for_field(filed):
    plain, orm = sql.get(R, id=filed.pk), R.objects.get(pk=filed.pk)
    for field in R._meta.concrete_fields:
        assert getattr(plain, field.attname) == getattr(orm, field.attname), field.name
    assert plain.created_at.tzinfo is not None  # converted as the ORM converts it
    assert isinstance(plain.document, dict) and plain.document == filed.document
    user = sql.get(User, id=filed.requester_id)
    assert user.username == filed.requester.username and user.is_active is True


def test_select_loads_chosen_fields_in_order(requester):
    for name in ("b-req", "a-req", "c-req"):
        R.objects.create(name=name, authorization_type="API_KEY", requester=requester,
                         document={}, document_hash=name, expires_at=timezone.now())  # fmt: skip
    rows = sql.select(R, fields=("id", "name"), order_by="-name", requester_id=requester.pk)
    assert [r.name for r in rows] == ["c-req", "b-req", "a-req"]
    assert "status" in rows[0].get_deferred_fields()
    # Asked for in another order than the model's, each value still lands in its own field.
    (row,) = sql.select(R, fields=("document_hash", "name", "id"), name="b-req")
    assert (row.name, row.document_hash, row.id) == (
        "b-req",
        "b-req",
        R.objects.get(name="b-req").pk,
    )
    (row,) = sql.select(R, fields=("authorization_type", "status"), name="a-req")
    assert (row.status, row.authorization_type) == ("pending", "API_KEY")


def test_update_counts_rows_and_honours_greater_than(filed):
    later = timezone.now() + timedelta(days=30)
    assert sql.update(R, {"status": R.CANCELLED}, id=filed.pk, expires_at__gt=later) == 0
    assert sql.update(R, {"status": R.CANCELLED}, id=filed.pk, status=R.PENDING) == 1
    assert R.objects.get(pk=filed.pk).status == R.CANCELLED


def test_ids_beyond_the_column_match_nothing_and_unknown_lookups_are_refused(filed):
    assert sql.get(R, id=10**30) is None
    assert sql.update(R, {"status": R.CANCELLED}, id=-(10**30)) == 0
    with pytest.raises(ValueError, match="unsupported lookup"):
        sql.select(R, name__contains="x")
