"""The retry rule: after a failed attempt, retry with exponential backoff, or give up.

One decision serves every way an attempt can fail: the handler raised or
timed out (the worker), or the worker itself vanished and its lease ran out
(the rescue). So a job that kills its worker backs off like any other
failure instead of being retried at once, over and over.
"""

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from jobs import conf
from jobs.models import JobStatus

if TYPE_CHECKING:
    from jobs.registry import Handler


def backoff_seconds(attempt: int, *, base: float, cap: float, jitter: float = 0.1, rng: random.Random | None = None) -> float:
    """Return the delay before the retry that follows failed attempt number `attempt` (1-based).

    The delay doubles per attempt from `base` (5 s, 10 s, 20 s, ... by default),
    never exceeds `cap`, and is spread by +/- `jitter` so that jobs which
    failed together do not all retry in the same instant.
    """
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    # Cap the exponent first: 2 ** 2000 is a valid int but not a valid float.
    delay = min(cap, base * 2 ** min(attempt - 1, 62))
    spread = (rng or random).uniform(-jitter, jitter)
    return max(0.0, min(cap, delay * (1 + spread)))


@dataclass(frozen=True, slots=True)
class Decision:
    """What becomes of a job after a failed attempt."""

    status: str  # JobStatus.RETRYING or JobStatus.DEAD
    delay: float  # seconds from `now` until the retry; 0 for a dead job
    run_at: datetime | None  # now + delay for a retry; None for a dead job

    @property
    def dead(self) -> bool:
        return self.status == JobStatus.DEAD


def backoff_for(type_name: str, handler: "Handler | None" = None) -> tuple[float, float]:
    """Return the (base, cap) of `type_name`'s backoff: its handler's, else the JOBS_BACKOFF_* settings.

    `handler` is the type's handler if the caller resolved it already.
    """
    from jobs.tasks.runtime import (
        handler_for,  # imported here: the tasks' backend imports the queue, which imports this
    )

    try:
        handler = handler or handler_for(type_name)
        base, cap = handler.backoff_base, handler.backoff_cap
    except LookupError:  # an unknown type fails for good anyway
        base = cap = None
    return (base if base is not None else conf.get("JOBS_BACKOFF_BASE"),
            cap if cap is not None else conf.get("JOBS_BACKOFF_CAP"))


def decide(*, type_name: str, attempts: int, max_retries: int, now: datetime, permanent: bool = False,
           rng: random.Random | None = None, handler: "Handler | None" = None) -> Decision:
    """Return what follows failed attempt number `attempts` of a job that may be retried `max_retries` times.

    A permanent failure, or one with no retry left, makes the job dead;
    anything else retries it after the backoff of its type (of `handler`,
    if the caller resolved it already).
    """
    if permanent or attempts > max_retries:
        return Decision(JobStatus.DEAD, 0.0, None)
    base, cap = backoff_for(type_name, handler)
    delay = backoff_seconds(attempts, base=base, cap=cap, jitter=conf.get("JOBS_BACKOFF_JITTER"), rng=rng)
    return Decision(JobStatus.RETRYING, delay, now + timedelta(seconds=delay))
