import random
from datetime import UTC, datetime, timedelta

import pytest

from jobs.models import JobStatus
from jobs.retry import backoff_seconds, decide


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


def test_decide_retries_after_the_backoff_from_the_given_now(settings):
    """Compute the retry from the time passed in, not the wall clock."""
    settings.JOBS_BACKOFF_JITTER = 0
    now = datetime(2030, 1, 1, tzinfo=UTC)
    decision = decide(type_name="reverse_string", attempts=2, max_retries=3, now=now)
    assert (decision.status, decision.delay, decision.run_at) == (JobStatus.RETRYING, 10, now + timedelta(seconds=10))


def test_decide_gives_up_after_the_last_retry_or_on_a_permanent_failure():
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert decide(type_name="reverse_string", attempts=4, max_retries=3, now=now).dead
    assert decide(type_name="reverse_string", attempts=1, max_retries=3, now=now, permanent=True).dead
    assert not decide(type_name="reverse_string", attempts=3, max_retries=3, now=now).dead


def test_decide_uses_the_handlers_own_backoff(settings):
    from jobs.registry import job_handler

    settings.JOBS_BACKOFF_JITTER = 0
    job_handler("slow_to_retry", backoff_base=60, backoff_cap=90)(lambda job: None)
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert [decide(type_name="slow_to_retry", attempts=n, max_retries=9, now=now).delay for n in (1, 2, 3)] == [60, 90, 90]


def test_attempts_are_one_based():
    """Refuse attempt 0: the first failed attempt is number 1."""
    with pytest.raises(ValueError):
        backoff_seconds(0, base=5, cap=10)
