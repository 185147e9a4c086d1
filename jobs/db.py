"""A cursor for the queue's hot statements."""

import functools

from django.db import connection
from django.db.backends.postgresql.base import ServerBindingCursor
from django_prometheus.db.common import ExportingCursorWrapper


@functools.cache
def _cursor_class(alias: str, vendor: str) -> type:
    # Counted and timed in django-prometheus's metrics like every other query.
    return ExportingCursorWrapper(ServerBindingCursor, alias, vendor)


def statement_cursor():
    """Return a Django cursor that sends parameters apart from the SQL text.

    Django's own cursors interpolate parameters into the text on the client,
    so PostgreSQL parses and plans every claim and completion afresh: a tenth
    of the CPU of a drain. With server-side binding the text stays the same
    from call to call, and psycopg prepares it on the connection once it has
    run DB_PREPARE_THRESHOLD times (settings.py, where it can be turned off
    for a pooler that cannot keep prepared statements). Queries are still
    logged in DEBUG and have their errors translated like any other.
    """
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    with connection.wrap_database_errors:
        cursor = _cursor_class(connection.alias, connection.vendor)(connection.connection)
    if connection.queries_logged:
        return connection.make_debug_cursor(cursor)
    return connection.make_cursor(cursor)
