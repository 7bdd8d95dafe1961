"""Plain SQL for the statements every page or every approval runs.

Building a query through the ORM costs this machine about half a millisecond of Python, more
than PostgreSQL takes to run these statements. The text here is built from model metadata only
(table and column names); every value is a parameter, converted as the ORM converts it.
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


def _column(model, name: str) -> tuple:
    field = model._meta.get_field(name)
    return field, connection.ops.quote_name(field.column)


class _NoMatch(Exception):
    """A condition no row can meet (an id beyond the column's range, say)."""


def _where(model, where: dict) -> tuple[str, list]:
    """Each field equals its value (`name__gt`: exceeds it)."""
    conditions, params = [], []
    for key, value in where.items():
        name, _, lookup = key.partition("__")
        if lookup not in ("", "gt"):
            raise ValueError(f"unsupported lookup: {key}")
        field, column = _column(model, name)
        param = field.get_db_prep_value(value, connection)
        bounds = connection.ops.integer_field_ranges.get(field.get_internal_type())
        out_of_range = bounds and isinstance(param, int) and not bounds[0] <= param <= bounds[1]
        if out_of_range and not lookup:
            raise _NoMatch  # as the ORM does, rather than a database error
        conditions.append(f"{column} {'>' if lookup == 'gt' else '='} %s")
        params.append(param)
    return " AND ".join(conditions), params


def select(model, *, fields: tuple[str, ...] = (), order_by: str = "", **where) -> list:
    """Model instances of the rows matching `where` (as in `update`), with only `fields` loaded
    (default: every concrete field), ordered by one column (`-name`: descending)."""
    # In the model's own field order: from_db() assigns the values in that order.
    wanted = {model._meta.get_field(name) for name in fields}
    chosen = [field for field in model._meta.concrete_fields if not wanted or field in wanted]
    columns = ", ".join(connection.ops.quote_name(field.column) for field in chosen)
    try:
        condition, params = _where(model, where)
    except _NoMatch:
        return []
    query = f"SELECT {columns} FROM {table(model)} WHERE {condition}"  # noqa: S608
    if order_by:
        _, column = _column(model, order_by.lstrip("-"))
        query += f" ORDER BY {column}{' DESC' if order_by.startswith('-') else ''}"
    rows, _ = execute(query, params)
    names = [field.attname for field in chosen]
    converters = []
    for i, field in enumerate(chosen):
        col = field.get_col(model._meta.db_table)
        for convert in connection.ops.get_db_converters(col) + field.get_db_converters(connection):
            converters.append((i, convert, col))
    instances = []
    for row in rows:
        values = list(row)
        for i, convert, col in converters:
            values[i] = convert(values[i], col, connection)
        instances.append(model.from_db(connection.alias, names, values))
    return instances


def get(model, **where):
    """The one row matching `where` as a model instance, or None."""
    found = select(model, **where)
    return found[0] if found else None


def insert(model, rows: list[dict]) -> None:
    """One multi-row INSERT; each row maps the same field names (or attnames) to values."""
    if not rows:
        return
    names = list(rows[0])
    fields = [_column(model, name) for name in names]
    params = [
        field.get_db_prep_save(row[name], connection)
        for row in rows
        for name, (field, _) in zip(names, fields, strict=True)
    ]
    columns = ", ".join(column for _, column in fields)
    marks = f"({', '.join(['%s'] * len(names))})"
    values = ", ".join([marks] * len(rows))
    execute(f"INSERT INTO {table(model)} ({columns}) VALUES {values}", params)  # noqa: S608


def update(model, values: dict, **where) -> int:
    """UPDATE the rows matching `where` (as in `get`); returns how many changed."""
    sets, params = [], []
    for name, value in values.items():
        field, column = _column(model, name)
        sets.append(f"{column} = %s")
        params.append(field.get_db_prep_save(value, connection))
    try:
        condition, where_params = _where(model, where)
    except _NoMatch:
        return 0
    sql = f"UPDATE {table(model)} SET {', '.join(sets)} WHERE {condition}"  # noqa: S608
    return execute(sql, params + where_params)[1]
