"""The benchmark's no-op task for Skipjack through Django's Tasks API (JOBS_TASK_MODULES=bench.tasks)."""

try:
    from django.tasks import task
except ImportError:  # Django 5.2: the django-tasks backport
    from django_tasks import task

from bench.peers.probe import probe


@task
def bench_noop(t=None):
    """Do nothing but tell the benchmark probe that the task started."""
    probe.hit(t)
