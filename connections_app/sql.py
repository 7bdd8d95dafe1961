"""Plain SQL for the few statements on the approval path, which runs them on every approval.

Building a query through the ORM costs this machine about half a millisecond of Python, more
than PostgreSQL takes to run these statements; here the text is built from model metadata
only (table and column names), and every value is a parameter.
"""

from __future__ import annotations

from django.db import connection


def table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def execute(sql: str, params=()) -> tuple[list[tuple], int]:
    """(rows, rowcount) of one statement on the default database."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return (cursor.fetchall() if cursor.description else []), cursor.rowcount


def _prepared(model, name: str, value):
    field = model._meta.get_field(name)
    return connection.ops.quote_name(field.column), field.get_db_prep_save(value, connection)


def insert(model, rows: list[dict]) -> None:
    """One multi-row INSERT; each row maps the same field names (or attnames) to values."""
    if not rows:
        return
    names = list(rows[0])
    columns = ", ".join(_prepared(model, name, None)[0] for name in names)
    params = [_prepared(model, name, row[name])[1] for row in rows for name in names]
    marks = f"({', '.join(['%s'] * len(names))})"
    values = ", ".join([marks] * len(rows))
    execute(f"INSERT INTO {table(model)} ({columns}) VALUES {values}", params)  # noqa: S608


def update(model, values: dict, **where) -> int:
    """UPDATE rows whose fields equal each `where` value (`name__gt`: exceed it); row count."""
    sets, conditions, params = [], [], []
    for name, value in values.items():
        column, param = _prepared(model, name, value)
        sets.append(f"{column} = %s")
        params.append(param)
    for key, value in where.items():
        name, _, lookup = key.partition("__")
        if lookup not in ("", "gt"):
            raise ValueError(f"unsupported lookup: {key}")
        column, param = _prepared(model, name, value)
        conditions.append(f"{column} {'>' if lookup == 'gt' else '='} %s")
        params.append(param)
    sql = f"UPDATE {table(model)} SET {', '.join(sets)} WHERE {' AND '.join(conditions)}"  # noqa: S608
    return execute(sql, params)[1]
