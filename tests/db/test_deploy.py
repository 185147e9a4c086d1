"""Deployment files: docker-compose, the Dockerfile, monitoring provisioning, and the production settings."""

import json
import re
import uuid

import pytest
from django.test import Client

from jobs import metrics, queue
from tests.factories import JobFactory
from tests.unit.test_deploy import DASHBOARD


@pytest.mark.django_db
def test_dashboard_queries_only_metrics_that_exist():
    """Query in the provisioned dashboard only metrics that /metrics exports, and cover depth, throughput, failures and wait."""
    JobFactory(status="dead")
    queue.enqueue("reverse_string", {"text": "a"})
    (claimed,) = queue.claim_jobs(worker_id=uuid.uuid4(), limit=1)
    queue.complete_jobs([queue.Completion(claimed, "a", 0.1)])
    queue.enqueue("reverse_string", {"text": "b"}, max_retries=0)
    (failing,) = queue.claim_jobs(worker_id=uuid.uuid4(), limit=1)
    queue.fail_job(failing, error="boom", run_seconds=0.1)
    metrics.count_rate_limit_rejection("submit")
    Client().get("/admin/login/")
    # Every sample's name, and every family's, so a counter that has not counted anything yet still counts.
    exported = set(re.findall(r"^(?:# HELP )?([a-z_:]+)", Client().get("/metrics").content.decode(), re.MULTILINE))

    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    used = {name for expr in exprs for name in re.findall(r"\b((?:skipjack|django)_[a-z_]+)\b", expr)}
    assert used <= exported, used - exported
    for expr in exprs:
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
    titles = " ".join(panel["title"] for panel in dashboard["panels"]).lower()
    for topic in ("waiting", "jobs by status", "completed", "failed", "queue wait", "dead-letter"):
        assert topic in titles
