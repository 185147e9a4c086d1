"""Only the jobs.queue package changes a job's state: the rule the queue's guarantees rest on, checked in the source.

Every transition there is one guarded UPDATE (the statuses it may start
from, the lease it holds). A `job.status = ...; job.save()` or an
`.update(status=...)` anywhere else would bypass the guards, the counters
and the live events alike.
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
WRITER = ROOT / "jobs" / "queue"
PACKAGES = ("jobs", "dashboard", "accounts", "queueproject")

# The columns that make up a job's state.
STATE_FIELDS = {"status", "attempts", "leased_by", "lease_token", "lease_expires_at", "started_at", "finished_at",
                "result", "run_at", "error", "history", "progress", "expires_at"}
# Attributes whose assignment on any object is a state change in the making (`job.status = ...`).
STATE_ATTRIBUTES = {"status", "attempts", "leased_by", "lease_token", "lease_expires_at"}
RAW_WRITE = re.compile(r"\b(UPDATE|INSERT\s+INTO|DELETE\s+FROM)\s+(\{JOB_TABLE\}|\"?jobs_job\b)", re.IGNORECASE)


def state_writes(source: str) -> list[str]:
    """Return a line per place in `source` that writes a job's state."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "update":
            fields = {kw.arg for kw in node.keywords} & STATE_FIELDS
            if fields:
                found.append(f"line {node.lineno}: .update({', '.join(sorted(fields))}=...)")
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for leaf in ast.walk(target):
                    if isinstance(leaf, ast.Attribute) and leaf.attr in STATE_ATTRIBUTES and isinstance(leaf.ctx, ast.Store):
                        found.append(f"line {node.lineno}: .{leaf.attr} = ...")
        elif (text := sql_text(node)) and (write := RAW_WRITE.search(text)):
            found.append(f"line {node.lineno}: SQL {write.group(0)!r}")
    return found


def sql_text(node: ast.AST) -> str | None:
    """Return a string literal's text; an f-string's with each {expression} as written."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else "{" + ast.unparse(part.value) + "}"
                       for part in node.values)
    return None


def project_modules():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts and WRITER not in path.parents:
                yield path


@pytest.mark.parametrize("snippet", [
    "job.status = 'completed'\njob.save()",
    "Job.objects.filter(pk=1).update(status='dead', lease_token=None)",
    "cursor.execute(f'UPDATE {JOB_TABLE} SET status = %s', ['queued'])",
    "job.attempts += 1",
])
def test_the_check_finds_each_kind_of_state_write(snippet):
    assert state_writes(snippet)


def test_only_jobs_queue_writes_a_jobs_state():
    offenders = {str(path.relative_to(ROOT)): writes for path in project_modules()
                 if (writes := state_writes(path.read_text()))}
    assert offenders == {}, "change job state through jobs.queue only"
    # The writer itself is found, so the check looks where the writes are:
    # in its modules (the ORM updates of jobs.queue.actions) and its SQL.
    assert state_writes((WRITER / "actions.py").read_text())
    assert RAW_WRITE.search((WRITER / "queries.sql").read_text())
