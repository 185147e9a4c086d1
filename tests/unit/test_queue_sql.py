"""The queue's statements file: every statement by name, whole, and true to the models."""

import pytest

from jobs.counters import FINISHED_BUCKET
from jobs.queue import sql


def test_every_statement_is_found_by_its_name_without_its_comments():
    queries = sql.queries()
    assert {"insert_job", "claim_jobs", "start_jobs", "record_outcomes", "release_jobs",
            "renew_leases", "rescue_jobs", "expire_jobs", "stage_due_jobs", "prune_finished"} <= set(queries)
    for name, statement in queries.items():
        assert statement.strip(), name
        assert not any(line.lstrip().startswith("--") for line in statement.splitlines()), name
        assert not statement.endswith(";"), name


def test_a_name_given_twice_is_refused():
    with pytest.raises(ValueError, match="names 'a' twice"):
        sql.parse("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")


def test_the_statements_count_finished_jobs_in_the_buckets_the_chart_reads():
    text = sql.QUERIES_FILE.read_text()
    assert f"interval '{int(FINISHED_BUCKET.total_seconds())} seconds'" in text
    assert text.count("date_bin(") == text.count(f"interval '{int(FINISHED_BUCKET.total_seconds())} seconds'")
