import uuid
from datetime import timedelta

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from jobs.models import HELD_STATUSES, Job, JobStatus, Priority


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    @factory.post_generation
    def password(user, create, extracted, **kwargs):
        user.set_password(extracted or "correct-horse-battery")
        if create:
            user.save(update_fields=["password"])


class JobFactory(factory.django.DjangoModelFactory):
    """A job in any state: pass status=..., attempts=..., and the lease fields follow.

    A claimed or running job gets a lease: pass leased_by=worker.id to give it to a worker.
    """

    class Meta:
        model = Job

    type = "reverse_string"
    payload = factory.LazyFunction(lambda: {"text": "hello world"})
    queue = "default"
    priority = Priority.NORMAL
    status = JobStatus.QUEUED
    attempts = 0
    max_retries = 3
    run_at = factory.LazyFunction(timezone.now)
    trace_id = factory.LazyFunction(lambda: uuid.uuid4().hex)

    class Params:
        # A running job whose worker vanished: the lease ran out a minute ago.
        stale = factory.Trait(
            status=JobStatus.RUNNING,
            attempts=1,
            leased_by=factory.LazyFunction(uuid.uuid4),
            lease_token=factory.LazyFunction(uuid.uuid4),
            lease_expires_at=factory.LazyFunction(lambda: timezone.now() - timedelta(minutes=1)),
            started_at=factory.LazyFunction(lambda: timezone.now() - timedelta(minutes=2)),
        )

    @factory.lazy_attribute
    def lease_token(self):
        return uuid.uuid4() if self.status in HELD_STATUSES else None

    @factory.lazy_attribute
    def leased_by(self):
        return uuid.uuid4() if self.status in HELD_STATUSES else None

    @factory.lazy_attribute
    def lease_expires_at(self):
        return timezone.now() + timedelta(seconds=30) if self.status in HELD_STATUSES else None

    @factory.lazy_attribute
    def finished_at(self):
        finished = (JobStatus.COMPLETED, JobStatus.DEAD, JobStatus.CANCELLED, JobStatus.EXPIRED)
        return timezone.now() if self.status in finished else None
