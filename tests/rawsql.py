"""Plain SQL for tests that tamper with the database behind the app's back."""

from django.db import connection


def execute(sql: str, params=()) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description else []
