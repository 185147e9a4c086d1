"""send_email is no open relay: staff only by default, or allowed recipients and a daily quota, to the end.

The handler runs here on the test database; the whole path runs on real
servers: the API on uvicorn, PostgreSQL, Redis and worker processes.
"""

import pytest
from django.core import mail
from django.test import override_settings

from dashboard.forms import type_choices
from jobs import queue
from jobs.errors import IllegalTransition, JobTypeNotAllowed, PayloadError, PermanentError
from jobs.models import EmailAllowance, Job, JobStatus
from jobs.registry import JobContext, get_handler, validate_payload
from jobs.submission import RateLimited
from tests.factories import JobFactory, UserFactory

pytestmark = pytest.mark.django_db

locmem = override_settings(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend")


def email(to, subject="Hi", body="Hello."):
    return {"to": to, "subject": subject, "body": body}


def run(job: Job):
    """Run `job`'s handler here, as a worker would (validating its payload first); return the result."""
    payload = validate_payload(job.type, job.payload)
    return get_handler(job.type).func(JobContext(job_id=job.pk, type=job.type, payload=payload, attempt=1))


def test_send_email_is_for_staff_only_by_default():
    """Refuse send_email to users who are not staff, and leave it out of their Submit page, while no recipients are opened to them."""
    user, staff = UserFactory(), UserFactory(is_staff=True)
    with pytest.raises(JobTypeNotAllowed, match="Only staff may submit send_email jobs"):
        queue.enqueue("send_email", email("victim@example.com"), owner=user)
    assert queue.enqueue("send_email", email("victim@example.com"), owner=staff).pk
    assert queue.enqueue("send_email", email("victim@example.com")).pk  # code, without an owner
    assert "send_email" not in dict(type_choices(user))
    with override_settings(JOBS_EMAIL_USER_RECIPIENTS=("self",)):
        assert "send_email" in dict(type_choices(user))


@override_settings(JOBS_EMAIL_USER_RECIPIENTS=("self", "@example.org", "ops@example.com"))
def test_users_may_send_only_to_the_recipients_an_operator_allows():
    """Accept their own address, a listed address and any address of a listed domain; refuse the rest, naming each."""
    user = UserFactory(email="Alice@Example.net")
    for to in (["alice@example.net"], ["anyone@example.org", "OPS@example.com"]):
        assert queue.enqueue("send_email", email(to), owner=user).pk
    with pytest.raises(PayloadError) as excinfo:
        queue.enqueue("send_email", email(["ops@example.com", "bob@example.com", "x@sub.example.org"]), owner=user)
    assert excinfo.value.errors == {"to": [
        "'bob@example.com' is not an address you may send email to.",
        "'x@sub.example.org' is not an address you may send email to.",
    ]}
    with override_settings(JOBS_EMAIL_USER_RECIPIENTS=("ops@example.com",)), pytest.raises(PayloadError):
        queue.enqueue("send_email", email("alice@example.net"), owner=user)


@locmem
@override_settings(JOBS_EMAIL_USER_RECIPIENTS=("@example.com",), JOBS_EMAIL_RECIPIENTS_PER_DAY=3)
def test_a_user_who_is_not_staff_sends_to_at_most_the_daily_quota_of_recipients():
    """Refuse a submission past what is left today (429), and send no attempt past the quota, whatever was accepted."""
    mail.outbox = []
    user = UserFactory()
    with pytest.raises(RateLimited, match="3 recipients a day, and have 3 left"):
        queue.enqueue("send_email", email([f"u{n}@example.com" for n in range(4)]), owner=user)
    first = queue.enqueue("send_email", email(["a@example.com", "b@example.com"]), owner=user)
    second = queue.enqueue("send_email", email(["c@example.com", "d@example.com"]), owner=user)
    assert run(first) == {"sent": 2}
    with pytest.raises(PermanentError, match="3 recipients a day"):
        run(second)
    assert [message.to for message in mail.outbox] == [["a@example.com", "b@example.com"]]
    assert EmailAllowance.objects.get(user=user).recipients == 2
    with pytest.raises(RateLimited, match="have 1 left"):
        queue.enqueue("send_email", email(["e@example.com", "f@example.com"]), owner=user)


@locmem
def test_no_mail_goes_out_for_an_owner_who_lost_staff():
    """Send nothing for a staff member's job once they are not staff, and neither retry nor requeue it for them."""
    mail.outbox = []
    owner = UserFactory(is_staff=True)
    job = JobFactory(type="send_email", owner=owner, payload=email(["a@example.com"]))
    dead = JobFactory(type="send_email", owner=owner, status=JobStatus.DEAD, payload=email(["a@example.com"]))
    owner.is_staff = False
    owner.save()
    with pytest.raises(PermanentError, match="Only staff may submit send_email jobs"):
        run(job)
    assert mail.outbox == []
    with pytest.raises(IllegalTransition):
        queue.retry_job(dead.pk)
    assert queue.requeue_dead(Job.objects.all()) == []
