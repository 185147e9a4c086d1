"""Per-user submission limits: the sliding minute kept in SubmissionWindow."""

import pytest
from django.db import connection

from jobs.models import Job, SubmissionWindow
from jobs.submission import (
    RateLimited, Usage, _seconds_until_room, _submitted_in_last_minute, lock_user, submit_job,
)
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def user(settings):
    settings.JOBS_USER_MAX_ACTIVE = 100
    settings.JOBS_USER_SUBMISSIONS_PER_MINUTE = 3
    return UserFactory()


def submit(user, text="x", **kwargs):
    return submit_job(user=user, type="reverse_string", payload=text, **kwargs)


def move_window_back(user, minutes: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE jobs_submissionwindow SET minute = minute - make_interval(mins => %s) WHERE user_id = %s",
            [minutes, user.pk],
        )


def test_the_previous_minute_counts_by_the_share_still_in_the_window():
    """Weigh the previous minute by how much of it the last 60 seconds still cover."""
    usage = Usage(current=2, previous=10, elapsed=15.0)
    assert _submitted_in_last_minute(usage, 15.0) == pytest.approx(10 * 0.75 + 2)
    assert _submitted_in_last_minute(usage, 60.0) == 2


def test_retry_after_is_when_the_submission_fits():
    """Wait until the sliding estimate makes room: later this minute, or in the next one."""
    # 10 last minute, 2 now (this one included), limit 8: room once 6 of the 10 have slid out.
    sliding = Usage(current=2, previous=10, elapsed=15.0)
    wait = _seconds_until_room(sliding, limit=8)
    assert wait == 9  # 60 * 0.4 - 15
    assert _submitted_in_last_minute(sliding, 15.0 + wait) <= 8
    # This minute alone is over the limit: the next minute, once enough of this one has slid out.
    full = Usage(current=5, previous=0, elapsed=50.0)
    assert _seconds_until_room(full, limit=4) == 10 + 15  # 60 * (1 - 3/4) into the next minute


def test_submissions_are_counted_in_the_current_minute(user):
    """Allow the limit per minute and refuse the next, without counting the refused one."""
    for n in range(3):
        submit(user, f"n{n}")
    with pytest.raises(RateLimited) as refused:
        submit(user, "four")
    assert 1 <= refused.value.retry_after <= 60
    assert SubmissionWindow.objects.get(user=user).current == 3
    assert Job.objects.filter(owner=user).count() == 3


def test_the_window_slides_into_the_next_minutes(user):
    """Carry this minute's count into the previous one a minute later, and forget it after two."""
    for n in range(3):
        submit(user, f"n{n}")
    move_window_back(user, 1)
    usage = lock_user(user)
    assert (usage.current, usage.previous) == (0, 3)
    move_window_back(user, 2)
    usage = lock_user(user)
    assert (usage.current, usage.previous) == (0, 0)
    submit(user, "allowed again")


def test_a_replayed_request_is_not_counted_again(user):
    """Count an Idempotency-Key's first request, not its replays."""
    first = submit(user, "same", idempotency_key="k")
    again = submit(user, "same", idempotency_key="k")
    assert again.replayed and again.job.pk == first.job.pk
    assert SubmissionWindow.objects.get(user=user).current == 1


def test_staff_have_no_window(settings):
    """Skip the window for staff, who have no limits."""
    staff = UserFactory(is_staff=True)
    for n in range(5):
        submit(staff, f"n{n}")
    assert not SubmissionWindow.objects.filter(user=staff).exists()
