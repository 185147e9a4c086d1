"""Django's task priorities (-100 to 100, higher first) and the jobs table's priorities.

The jobs table serves three priorities, high, normal and low; a task's
priority goes to the nearest of them by its sign, and a task read back
shows the named point of its job's priority on Django's scale.
"""

from jobs.models import Priority

# Where high, normal and low stand on Django's scale.
NAMED_POINTS = {Priority.HIGH: 50, Priority.NORMAL: 0, Priority.LOW: -50}


def job_priority(task_priority: int) -> int:
    """Return the job priority that serves a task of `task_priority`."""
    if task_priority > 0:
        return Priority.HIGH
    return Priority.NORMAL if task_priority == 0 else Priority.LOW


def task_priority(job_priority: int) -> int:
    """Return the priority on Django's scale of a job of `job_priority`."""
    return NAMED_POINTS.get(Priority(job_priority), 0)
