"""The no-op task django-tasks-db's worker runs, imported by its module path (not from __main__)."""

from django_tasks import task
from probe import probe


@task()
def bench_noop(t=None):
    probe.hit(t)
