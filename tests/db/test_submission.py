"""Per-user submission limits: the allowance kept in SubmissionAllowance."""

from datetime import timedelta

import pytest
from django.db.models import F
from django.utils import timezone

from jobs.models import Job, SubmissionAllowance
from jobs.submission import RateLimited, TooManyActiveJobs, submit_job
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def user(settings):
    settings.JOBS_USER_MAX_ACTIVE = 100
    settings.JOBS_USER_SUBMISSIONS_PER_MINUTE = 3
    return UserFactory()


def submit(user, text="x", **kwargs):
    return submit_job(user=user, type="reverse_string", payload=text, **kwargs)


def seconds_ahead(user) -> float:
    return (SubmissionAllowance.objects.get(user=user).refilled_at - timezone.now()).total_seconds()


def test_a_burst_of_the_limit_then_one_per_share_of_the_minute(user):
    """Allow the limit at once, refuse the next until a third of a minute has come back, without counting it."""
    for n in range(3):
        submit(user, f"n{n}")
    assert 59 < seconds_ahead(user) <= 60
    with pytest.raises(RateLimited) as refused:
        submit(user, "four")
    assert refused.value.retry_after == 20  # 60 s / 3, less the few ms since
    assert 59 < seconds_ahead(user) <= 60, "the refused submission took nothing"
    assert Job.objects.filter(owner=user).count() == 3


def test_the_allowance_comes_back_at_the_limit_per_minute(user):
    """Give one submission back every 60/limit seconds, and all of them after a minute."""
    for n in range(3):
        submit(user, f"n{n}")
    SubmissionAllowance.objects.filter(user=user).update(refilled_at=F("refilled_at") - timedelta(seconds=21))
    submit(user, "one came back")
    with pytest.raises(RateLimited):
        submit(user, "but only one")
    SubmissionAllowance.objects.filter(user=user).update(refilled_at=timezone.now() - timedelta(minutes=5))
    for n in range(3):
        submit(user, f"again {n}")
    assert 59 < seconds_ahead(user) <= 60, "a full allowance holds the limit, never more"


def test_a_replayed_request_is_not_counted_again(user):
    """Count an Idempotency-Key's first request, not its replays."""
    first = submit(user, "same", idempotency_key="k")
    again = submit(user, "same", idempotency_key="k")
    assert again.replayed and again.job.pk == first.job.pk
    assert 19 < seconds_ahead(user) <= 20


def test_a_limit_of_zero_refuses_every_submission(user, settings):
    settings.JOBS_USER_SUBMISSIONS_PER_MINUTE = 0
    with pytest.raises(RateLimited) as refused:
        submit(user)
    assert refused.value.retry_after is None
    assert not Job.objects.exists()


def test_the_cap_on_unfinished_jobs_refuses_the_one_past_it(user, settings):
    """Refuse a submission past the cap with TooManyActiveJobs, and give its share of the allowance back."""
    settings.JOBS_USER_MAX_ACTIVE = 2
    submit(user, "a")
    submit(user, "b")
    ahead = seconds_ahead(user)
    with pytest.raises(TooManyActiveJobs, match="You have 2 unfinished jobs; the limit is 2"):
        submit(user, "c")
    assert Job.objects.filter(owner=user).count() == 2
    assert seconds_ahead(user) <= ahead


@pytest.mark.parametrize("cap", [0, -1])
def test_a_cap_below_one_refuses_every_submission(user, settings, cap):
    settings.JOBS_USER_MAX_ACTIVE = cap
    with pytest.raises(TooManyActiveJobs):
        submit(user)
    assert not Job.objects.exists()


def test_staff_have_no_allowance(settings):
    """Keep no allowance for staff, who have no limits."""
    staff = UserFactory(is_staff=True)
    for n in range(5):
        submit(staff, f"n{n}")
    assert not SubmissionAllowance.objects.filter(user=staff).exists()
