"""Operator controls of flow control: pause, resume and limits, per queue and per key.

Every change is one transaction: checked whole first (jobs.flow), then
written, then announced at commit on the workers' channel, so that they
read the new state at once instead of at their next poll. Nothing is
half-applied: a bad value raises ValueError before anything is written.
"""

from typing import Any

from django.db import transaction
from django.utils import timezone

from jobs import flow
from jobs.models import KeyLimit, QueueControl
from jobs.queue.produce import FLOW_CHANGED, notify

# The QueueControl fields an operator may set, with the check of each.
QUEUE_FIELDS = {
    "paused": None,
    "concurrency": flow.check_limit,
    "rate_limit": flow.check_limit,
    "rate_period": flow.check_period,
    "key_concurrency": flow.check_limit,
    "key_rate_limit": flow.check_limit,
    "key_rate_period": flow.check_period,
}
KEY_FIELDS = {"concurrency": flow.check_limit, "rate_limit": flow.check_limit, "rate_period": flow.check_period}


def _checked(changes: dict[str, Any], checks: dict) -> dict[str, Any]:
    """Return `changes` with each value checked; raise ValueError naming the first bad one."""
    unknown = sorted(set(changes) - set(checks))
    if unknown:
        raise ValueError(f"Unknown setting {unknown[0]!r}; use {', '.join(checks)}.")
    checked = {}
    for name, value in changes.items():
        if name == "paused":
            if not isinstance(value, bool):
                raise ValueError("paused must be true or false.")
            checked[name] = value
        else:
            checked[name] = checks[name](value, name.replace("_", " "))
    return checked


def _announce() -> None:
    notify([FLOW_CHANGED])


def set_queue_controls(name: str, **changes) -> QueueControl:
    """Change a queue's controls (QUEUE_FIELDS) at once; return its row, made if it had none.

    Raise ValueError, changing nothing, for a bad name or value.
    """
    flow.check_queue_name(name)
    changes = _checked(changes, QUEUE_FIELDS)
    with transaction.atomic():
        control, _ = QueueControl.objects.select_for_update().get_or_create(name=name)
        if "paused" in changes and changes["paused"] != control.paused:
            control.paused_at = timezone.now() if changes["paused"] else None
        for field, value in changes.items():
            setattr(control, field, value)
        control.save()
        _announce()
    return control


def pause_queue(name: str) -> QueueControl:
    """Stop every worker from claiming jobs of queue `name`; its running jobs finish."""
    return set_queue_controls(name, paused=True)


def resume_queue(name: str) -> QueueControl:
    return set_queue_controls(name, paused=False)


def set_key_limit(queue_name: str, key: str, **changes) -> KeyLimit:
    """Set the limits of concurrency key `key` in a queue (KEY_FIELDS); return its row.

    Raise ValueError, changing nothing, for a bad name, key or value.
    """
    flow.check_queue_name(queue_name)
    flow.check_key(key)
    changes = _checked(changes, KEY_FIELDS)
    with transaction.atomic():
        limit, _ = KeyLimit.objects.select_for_update().get_or_create(queue=queue_name, key=key)
        for field, value in changes.items():
            setattr(limit, field, value)
        limit.save()
        _announce()
    return limit


def remove_key_limit(queue_name: str, key: str) -> bool:
    """Drop a key's own limits (its type's and queue's apply again); return whether it had any."""
    with transaction.atomic():
        removed, _ = KeyLimit.objects.filter(queue=queue_name, key=key).delete()
        _announce()
    return bool(removed)


def apply_queue_settings(*, names: list[str] | None = None, overwrite: bool = False) -> list[str]:
    """Write JOBS_QUEUES to the queues' rows; return the names of the rows written.

    By default only queues without a row get one, so that what an operator
    changed at run time stays. With `overwrite`, the rows of `names` (or of
    every configured queue) are set to the settings again. Raise ValueError
    for a bad JOBS_QUEUES, or a name in `names` that it does not configure.
    """
    configured = flow.configured_queues()
    unknown = sorted(set(names or []) - set(configured))
    if unknown:
        raise ValueError(f"JOBS_QUEUES configures no queue {unknown[0]!r}.")
    written = []
    with transaction.atomic():
        for name, limits in configured.items():
            if names is not None and name not in names:
                continue
            values = limits.as_fields()
            values["paused_at"] = timezone.now() if limits.paused else None
            if overwrite:
                QueueControl.objects.update_or_create(name=name, defaults=values)
                written.append(name)
            elif QueueControl.objects.get_or_create(name=name, defaults=values)[1]:
                written.append(name)
        if written:
            _announce()
    return written
