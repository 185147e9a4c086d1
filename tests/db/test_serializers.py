"""The API's serializers share field copies, and answer exactly as with DRF's own deep copies."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework import serializers

from jobs.api.serializers import JobCreateSerializer, JobDetailSerializer, JobSerializer
from jobs.models import JobStatus
from tests.factories import JobFactory


def with_deep_copies(serializer_class):
    """Return `serializer_class` as DRF would build it, copying every field deeply per instance."""
    return type(f"Deep{serializer_class.__name__}", (serializer_class,), {"get_fields": serializers.Serializer.get_fields})


@pytest.mark.django_db
def test_job_representations_match_drfs_deep_copies():
    """Render jobs in several states, alone and in a list, the same as with deep-copied fields."""
    now = timezone.now()
    attempt = {"attempt": 1, "worker": "w1", "started_at": now.isoformat(), "finished_at": now.isoformat(),
               "outcome": "failed", "error": "boom", "traceback": "Traceback ..."}
    jobs = [
        JobFactory(status=JobStatus.QUEUED, payload={"text": "a"}),
        JobFactory(status=JobStatus.RUNNING, attempts=1, timeout=2.5, unique_key="k"),
        JobFactory(status=JobStatus.COMPLETED, attempts=1, result={"n": [1, 2]}, finished_at=now, history=[attempt]),
        JobFactory(status=JobStatus.DEAD, attempts=4, error="boom", finished_at=now, history=[attempt] * 4,
                   expires_at=now + timedelta(hours=1)),
    ]
    for job in jobs:
        assert JobDetailSerializer(job).data == with_deep_copies(JobDetailSerializer)(job).data
    assert JobSerializer(jobs, many=True).data == with_deep_copies(JobSerializer)(jobs, many=True).data


@pytest.mark.parametrize("data", [
    {"type": "reverse_string", "payload": "hello", "priority": "high", "queue": "emails", "max_retries": 2},
    {"type": "reverse_string", "payload": "hello", "delay": 5, "ttl": 60, "unique_key": "u", "timeout": 1.5},
    {"type": "no_such_type"},
    {"type": "reverse_string", "payload": {"not": "a string"}},
    {"type": "reverse_string", "payload": "x", "priority": "urgent", "queue": "bad queue!", "timeout": 0},
    {"type": "reverse_string", "payload": "x", "delay": 1, "run_at": "2030-01-01T00:00:00Z"},
    {"type": "reverse_string", "status": "completed", "owner": 1},
    {"payload": "x", "max_retries": 101},
])
def test_job_input_validation_matches_drfs_deep_copies(data):
    """Accept and refuse job submissions, field by field, the same as with deep-copied fields."""
    lean, deep = JobCreateSerializer(data=data), with_deep_copies(JobCreateSerializer)(data=data)
    assert lean.is_valid() == deep.is_valid()
    assert lean.errors == deep.errors
    if not lean.errors:
        assert lean.validated_data == deep.validated_data


def test_each_serializer_binds_its_own_field_copies():
    """Give two serializers alive at once their own fields, each bound to its serializer."""
    first, second = JobCreateSerializer(data={}), JobCreateSerializer(data={})
    assert first.fields["type"] is not second.fields["type"]
    assert first.fields["type"].parent is first and second.fields["type"].parent is second
    assert JobCreateSerializer._declared_fields["type"].parent is None  # the class's own stay unbound
