"""Cursors and connection settings for the queue's hot statements."""

import functools
import weakref

import psycopg
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.backends.postgresql.base import ServerBindingCursor
from django.db.backends.signals import connection_created
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
    db = connections[DEFAULT_DB_ALIAS]  # once: each look-up through `connection` costs one
    db.close_if_health_check_failed()
    db.ensure_connection()
    db.validate_thread_sharing()
    with db.wrap_database_errors:
        cursor = _cursor_class(db.alias, db.vendor)(db.connection)
    if db.queries_logged:
        return db.make_debug_cursor(cursor)
    return db.make_cursor(cursor)


# The psycopg connections already set: connection_created fires each time
# Django takes a connection from the pool, not only when one is opened.
_PLANNED_EVERY_RUN: weakref.WeakSet[psycopg.Connection] = weakref.WeakSet()


def plan_every_run(*, connection, **kwargs) -> None:
    """Have PostgreSQL plan each run of a prepared statement on `connection` with its parameters.

    Left to itself, PostgreSQL switches a prepared statement to one generic
    plan after five runs if that looks no dearer, and keeps it until the
    next ANALYZE. The worker's claims and completions read the jobs table,
    and a generic plan made while it was nearly empty (a hash join over a
    sequential scan) cost 31 ms per completion at 300,000 rows instead of
    0.1 ms. Planned on every run, they are still parsed only once. The
    inserts of enqueue() read no table, so elsewhere their generic plan is
    the right one, and a third faster than planning each run.
    """
    if connection.connection in _PLANNED_EVERY_RUN:
        return  # a pooled connection keeps its setting: one round trip per connection, not per checkout
    # Django connects in autocommit mode, where the setting lasts as long as
    # the connection; in a transaction, a rollback would undo it.
    lasting = connection.get_autocommit()
    with connection.cursor() as cursor:
        cursor.execute("SET plan_cache_mode = force_custom_plan")
    if lasting:
        _PLANNED_EVERY_RUN.add(connection.connection)


def plan_every_run_in_this_process() -> None:
    """Apply plan_every_run to this thread's open connection and to every connection the process opens later."""
    if connection.settings_dict["OPTIONS"].get("prepare_threshold") is None:
        return  # nothing is prepared (behind a pooler that could not keep it), so nothing is planned ahead
    connection_created.connect(plan_every_run, dispatch_uid="jobs.db.plan_every_run")
    if connection.connection is not None:
        plan_every_run(connection=connection)
