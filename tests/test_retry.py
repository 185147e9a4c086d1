import random
from datetime import datetime, timedelta, timezone

import pytest

from jobs.retry import backoff_seconds, next_run_at


def test_backoff_doubles_from_the_base():
    """Give about 5 s, 10 s, 20 s, 40 s with the default base and no jitter."""
    delays = [backoff_seconds(n, base=5, cap=3600, jitter=0) for n in range(1, 5)]
    assert delays == [5, 10, 20, 40]


def test_backoff_is_capped():
    """Never wait longer than the cap, however many attempts failed."""
    assert backoff_seconds(30, base=5, cap=600, jitter=0) == 600
    assert backoff_seconds(10_000, base=5, cap=600, jitter=0.5) <= 600


def test_backoff_jitter_stays_within_its_band():
    """Spread retries by at most +/- jitter around the exponential delay."""
    rng = random.Random(7)
    delays = {backoff_seconds(3, base=5, cap=3600, jitter=0.1, rng=rng) for _ in range(200)}
    assert min(delays) >= 18 and max(delays) <= 22
    assert len(delays) > 100  # really spread, not one value


def test_next_run_at_adds_the_delay_to_the_given_now():
    """Compute the next run from the time passed in, not the wall clock."""
    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    assert next_run_at(2, now=now, base=5, cap=3600, jitter=0) == now + timedelta(seconds=10)


def test_attempts_are_one_based():
    """Refuse attempt 0: the first failed attempt is number 1."""
    with pytest.raises(ValueError):
        backoff_seconds(0, base=5, cap=10)
