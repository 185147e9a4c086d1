"""The retry schedule: exponential backoff with jitter, capped."""

import random
from datetime import datetime, timedelta


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


def next_run_at(attempt: int, *, now: datetime, base: float, cap: float, jitter: float = 0.1, rng: random.Random | None = None) -> datetime:
    """Return when to run the job again after failed attempt number `attempt`."""
    return now + timedelta(seconds=backoff_seconds(attempt, base=base, cap=cap, jitter=jitter, rng=rng))
