"""The queue's SQL statements, read once from queries.sql and handed out by name.

A block starts at a line `-- name: <name>` and runs to the next one. The
comment lines of a block explain it to the reader and stay in the file:
what is sent is the statement alone, so its text (and psycopg's prepared
statement) stays short.
"""

import functools
import re
from pathlib import Path

from jobs.models import FinishedCount, Job, JobCounter, KeyLimit, QueueControl, Schedule, ScheduleTick, StartLog

QUERIES_FILE = Path(__file__).with_name("queries.sql")
# The tables the statements name, as the models know them.
TABLES = {"jobs_job": Job, "jobs_jobcounter": JobCounter, "jobs_finishedcount": FinishedCount,
          "jobs_queuecontrol": QueueControl, "jobs_keylimit": KeyLimit, "jobs_startlog": StartLog,
          "jobs_schedule": Schedule, "jobs_scheduletick": ScheduleTick}

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    """Return {name: statement} for the named blocks of `text`, without their comment lines."""
    parts = _NAME.split(text)
    queries = {}
    for name, block in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"{QUERIES_FILE.name} names {name!r} twice.")
        lines = [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("--")]
        queries[name] = "\n".join(lines).rstrip().rstrip(";")
    return queries


@functools.cache
def queries() -> dict[str, str]:
    for table, model in TABLES.items():
        if model._meta.db_table != table:  # the file names tables literally, for the reader and the planner
            raise RuntimeError(f"{QUERIES_FILE.name} expects table {table}, but {model.__name__} uses "
                               f"{model._meta.db_table}.")
    return parse(QUERIES_FILE.read_text())


def query(name: str) -> str:
    """Return the statement named `name` in queries.sql."""
    return queries()[name]
