from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from jobs.models import Job, JobStatus, Priority, Worker
from tests.factories import JobFactory, UserFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:jobs_job_changelist"


def results(response) -> list[int]:
    return sorted(job.pk for job in response.context["cl"].result_list)


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def run_action(client, action, *jobs):
    return client.post(
        reverse(CHANGELIST), {"action": action, "_selected_action": [job.pk for job in jobs]}, follow=True
    )


def status_of(job) -> str:
    return Job.objects.get(pk=job.pk).status


# --- access ---------------------------------------------------------------------


def test_anonymous_users_are_sent_to_the_login_page(client):
    job = JobFactory()

    for url in (reverse(CHANGELIST), reverse("admin:jobs_job_change", args=[job.pk])):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")


def test_jobs_cannot_be_added_from_the_admin(admin_client):
    assert admin_client.get(reverse("admin:jobs_job_add")).status_code == 403


# --- changelist -----------------------------------------------------------------


def test_changelist_lists_jobs_with_their_columns(admin_client):
    owner = UserFactory(username="alice")
    job = JobFactory(owner=owner, priority=Priority.HIGH, attempts=2, max_retries=3)

    response = admin_client.get(reverse(CHANGELIST))

    assert response.status_code == 200
    assert results(response) == [job.pk]
    content = response.content.decode()
    assert "alice" in content
    assert "high" in content
    assert "2/4" in content  # attempts made of the 1 + max_retries allowed


def test_changelist_offers_the_queue_actions_but_not_bulk_delete(admin_client):
    response = admin_client.get(reverse(CHANGELIST))

    actions = [name for name, _ in response.context["action_form"].fields["action"].choices if name]
    assert actions == ["requeue_dead_jobs", "cancel_jobs", "retry_jobs_now"]


def test_changelist_offers_and_shows_the_claimed_status(admin_client):
    """Offer every status in the filter, claimed included, and list a claimed job as claimed."""
    claimed = JobFactory(status=JobStatus.CLAIMED)
    JobFactory(status=JobStatus.RUNNING, attempts=1, started_at=timezone.now())

    response = admin_client.get(reverse(CHANGELIST), {"status__exact": "claimed"})

    assert results(response) == [claimed.pk]
    html = response.content.decode()
    for status in JobStatus.values:
        assert f"?status__exact={status}" in html
    assert '<td class="field-status">Claimed</td>' in html


def test_changelist_filters_by_status_queue_type_priority_and_owner(admin_client):
    owner = UserFactory()
    match = JobFactory(
        status=JobStatus.DEAD, queue="emails", type="send_email", priority=Priority.HIGH, owner=owner
    )
    JobFactory(status=JobStatus.QUEUED, queue="emails", type="send_email", priority=Priority.HIGH, owner=owner)
    JobFactory(status=JobStatus.DEAD, queue="default", type="send_email", priority=Priority.HIGH, owner=owner)
    JobFactory(status=JobStatus.DEAD, queue="emails", type="reverse_string", priority=Priority.HIGH, owner=owner)
    JobFactory(status=JobStatus.DEAD, queue="emails", type="send_email", priority=Priority.LOW, owner=owner)
    JobFactory(status=JobStatus.DEAD, queue="emails", type="send_email", priority=Priority.HIGH)

    response = admin_client.get(
        reverse(CHANGELIST),
        {
            "status__exact": "dead", "queue": "emails", "type": "send_email",
            "priority__exact": Priority.HIGH, "owner__id__exact": owner.pk,
        },
    )

    assert response.status_code == 200
    assert results(response) == [match.pk]


def test_each_filter_alone_narrows_the_changelist(admin_client):
    dead = JobFactory(status=JobStatus.DEAD, queue="emails", type="send_email", priority=Priority.LOW)
    queued = JobFactory(status=JobStatus.QUEUED)

    for params in ({"status__exact": "dead"}, {"queue": "emails"}, {"type": "send_email"}, {"priority__exact": int(Priority.LOW)}):
        assert results(admin_client.get(reverse(CHANGELIST), params)) == [dead.pk], params
    assert results(admin_client.get(reverse(CHANGELIST), {"owner__isnull": "True"})) == sorted([dead.pk, queued.pk])


def test_type_filter_offers_the_registered_types(admin_client):
    response = admin_client.get(reverse(CHANGELIST))

    type_filter = next(f for f in response.context["cl"].filter_specs if getattr(f, "parameter_name", None) == "type")
    assert ("reverse_string", "reverse_string") in type_filter.lookup_choices


@pytest.mark.parametrize(
    "field, value, term",
    [
        ("trace_id", "0123abcd" * 4, "0123abcd" * 4),
        ("unique_key", "order-77", "order-77"),
        ("type", "uppercase_text", "uppercase"),
        ("error", "ConnectionRefusedError: port 25", "refused"),
    ],
)
def test_search_finds_jobs_by_trace_id_unique_key_type_and_error(admin_client, field, value, term):
    match = JobFactory(**{field: value})
    JobFactory()

    response = admin_client.get(reverse(CHANGELIST), {"q": term})

    assert response.status_code == 200
    assert results(response) == [match.pk]


@pytest.mark.parametrize("prefix", ["", "#", " "])
def test_search_by_a_number_finds_the_job_with_that_id(admin_client, prefix):
    jobs = JobFactory.create_batch(3)

    response = admin_client.get(reverse(CHANGELIST), {"q": f"{prefix}{jobs[1].pk}"})

    assert results(response) == [jobs[1].pk]


def test_search_by_a_number_beyond_any_id_finds_nothing(admin_client):
    JobFactory()

    response = admin_client.get(reverse(CHANGELIST), {"q": "9" * 30})

    assert response.status_code == 200
    assert results(response) == []


def test_changelist_drills_down_by_created_date(admin_client):
    job = JobFactory()
    JobFactory(created_at=timezone.now() - timedelta(days=800))
    today = timezone.localdate(job.created_at)

    response = admin_client.get(
        reverse(CHANGELIST),
        {"created_at__year": today.year, "created_at__month": today.month, "created_at__day": today.day},
    )

    assert results(response) == [job.pk]


@pytest.mark.parametrize("query, parameter", [
    ("q=%00", "q"), ("q=a%00b", "q"), ("type=%00", "type"), ("status=%00", "status"), ("queue=%00", "queue"),
    ("priority=%00", "priority"), ("owner__id__exact=%00", "owner__id__exact"), ("error=boom%00", "error"),
    ("created_at__year=%00", "created_at__year"), ("o=%00", "o"), ("%00=1", "\x00"),
])
def test_changelist_answers_a_nul_in_its_query_with_400(admin_client, query, parameter):
    """Refuse a NUL in any query parameter, its name or its value, with 400 naming it; PostgreSQL stores no NUL."""
    JobFactory()
    response = admin_client.get(f"{reverse(CHANGELIST)}?{query}")
    assert response.status_code == 400
    assert repr(parameter) in response.content.decode()


def test_worker_changelist_answers_a_nul_in_its_query_with_400(admin_client):
    response = admin_client.get(reverse("admin:jobs_worker_changelist") + "?hostname=%00")
    assert response.status_code == 400


def test_unfiltered_changelist_shows_the_planner_estimate_for_a_huge_table(admin_client, monkeypatch):
    """Show PostgreSQL's own estimate, not a count, once the table is past the threshold (lowered here to 100)."""
    from django.db import connection

    from jobs import queue

    monkeypatch.setattr("jobs.admin.ESTIMATED_COUNT_ABOVE", 100)
    dead = JobFactory(status=JobStatus.DEAD)
    queue.enqueue_many("reverse_string", ["x"] * 299)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Job._meta.db_table}")
        queue.enqueue_many("reverse_string", ["after the analyze"] * 50)  # counted, not estimated
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [Job._meta.db_table])
        (estimate,) = cursor.fetchone()

    unfiltered = admin_client.get(reverse(CHANGELIST))
    filtered = admin_client.get(reverse(CHANGELIST), {"status__exact": "dead"})

    assert estimate == 300
    assert unfiltered.context["cl"].result_count == estimate != Job.objects.count()
    assert filtered.context["cl"].result_count == 1
    assert results(filtered) == [dead.pk]


def test_unfiltered_changelist_counts_exactly_when_the_table_is_small(admin_client):
    JobFactory.create_batch(3)

    assert admin_client.get(reverse(CHANGELIST)).context["cl"].result_count == 3


# --- change page ------------------------------------------------------------------


@pytest.fixture
def hostile_job():
    return JobFactory(
        status=JobStatus.DEAD,
        payload={"text": "<script>alert('payload')</script>"},
        result={"html": "<img src=x onerror=alert(1)>"},
        error="ValueError: <b>bad</b>",
        attempts=1,
        history=[
            {
                "attempt": 1,
                "worker": "6f1c1c9e-0000-4000-8000-000000000001",
                "started_at": "2025-01-02T03:04:05.123456+00:00",
                "finished_at": "2025-01-02T03:04:09.000000+00:00",
                "outcome": "failed",
                "error": "ValueError: <b>bad</b>",
                "traceback": 'Traceback (most recent call last):\n  File "<script>x</script>.py"\nValueError',
            },
            "an entry that is not a dict <i>",
        ],
    )


def test_change_page_shows_payload_and_result_as_escaped_pretty_json(admin_client, hostile_job):
    response = admin_client.get(reverse("admin:jobs_job_change", args=[hostile_job.pk]))

    content = response.content.decode()
    assert response.status_code == 200
    assert "<script>alert" not in content
    assert "<img src=x" not in content
    pretty_payload = "{\n  &quot;text&quot;: &quot;&lt;script&gt;alert(&#x27;payload&#x27;)&lt;/script&gt;&quot;\n}"
    assert f"{pretty_payload}</pre>" in content
    assert "&lt;img src=x onerror=alert(1)&gt;" in content
    assert "ValueError: &lt;b&gt;bad&lt;/b&gt;" in content


def test_change_page_renders_the_history_as_an_escaped_table(admin_client, hostile_job):
    response = admin_client.get(reverse("admin:jobs_job_change", args=[hostile_job.pk]))

    content = response.content.decode()
    assert '<table class="job-history">' in content
    assert "<th>started at</th>" in content
    assert "<td>2025-01-02 03:04:05</td>" in content
    assert "<td>failed</td>" in content
    assert "<pre" in content and "File &quot;&lt;script&gt;x&lt;/script&gt;.py&quot;" in content
    assert "<script>x</script>" not in content
    assert "an entry that is not a dict &lt;i&gt;" in content


def test_change_page_is_read_only(admin_client, hostile_job):
    url = reverse("admin:jobs_job_change", args=[hostile_job.pk])

    page = admin_client.get(url)
    post = admin_client.post(url, {"status": JobStatus.QUEUED, "type": "reverse_string"})

    assert 'name="_save"' not in page.content.decode()
    assert post.status_code == 403
    assert status_of(hostile_job) == JobStatus.DEAD


# --- actions -------------------------------------------------------------------


def test_requeue_action_requeues_only_dead_jobs(admin_client):
    dead = JobFactory(status=JobStatus.DEAD, attempts=4)
    completed = JobFactory(status=JobStatus.COMPLETED)

    response = run_action(admin_client, "requeue_dead_jobs", dead, completed)

    assert status_of(dead) == JobStatus.QUEUED
    assert status_of(completed) == JobStatus.COMPLETED
    assert messages_of(response) == ["Requeued 1 job. Skipped 1 job that was not dead."]


def test_cancel_action_cancels_only_unfinished_jobs(admin_client):
    queued = JobFactory(status=JobStatus.QUEUED)
    running = JobFactory(status=JobStatus.RUNNING, attempts=1)
    completed = JobFactory(status=JobStatus.COMPLETED)
    dead = JobFactory(status=JobStatus.DEAD)

    response = run_action(admin_client, "cancel_jobs", queued, running, completed, dead)

    assert [status_of(j) for j in (queued, running, completed, dead)] == [
        JobStatus.CANCELLED, JobStatus.RUNNING, JobStatus.COMPLETED, JobStatus.DEAD,
    ]
    # The running one's worker is asked to stop it: it keeps its lease until the handler stops.
    assert Job.objects.get(pk=running.pk).lease_token is not None
    assert Job.objects.get(pk=running.pk).cancel_requested_at is not None
    assert messages_of(response) == ["Cancelled 2 jobs. Skipped 2 jobs that were already finished."]


def test_retry_now_action_makes_only_scheduled_and_retrying_jobs_due(admin_client):
    later = timezone.now() + timedelta(hours=1)
    scheduled = JobFactory(status=JobStatus.SCHEDULED, run_at=later)
    retrying = JobFactory(status=JobStatus.RETRYING, run_at=later, attempts=1)
    dead = JobFactory(status=JobStatus.DEAD)

    response = run_action(admin_client, "retry_jobs_now", scheduled, retrying, dead)

    assert [status_of(j) for j in (scheduled, retrying, dead)] == [JobStatus.QUEUED, JobStatus.QUEUED, JobStatus.DEAD]
    assert Job.objects.get(pk=scheduled.pk).run_at < later
    assert messages_of(response) == ["Queued 2 jobs to run now. Skipped 1 job that was not scheduled or retrying."]


def test_an_action_legal_for_no_selected_job_changes_nothing_and_says_so(admin_client):
    completed = JobFactory(status=JobStatus.COMPLETED)

    response = run_action(admin_client, "requeue_dead_jobs", completed)

    assert status_of(completed) == JobStatus.COMPLETED
    assert messages_of(response) == ["Requeued 0 jobs. Skipped 1 job that was not dead."]


def test_staff_who_may_only_view_jobs_get_no_actions(client):
    viewer = UserFactory(is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_job"))
    client.force_login(viewer)
    dead = JobFactory(status=JobStatus.DEAD)

    changelist = client.get(reverse(CHANGELIST))
    run_action(client, "requeue_dead_jobs", dead)

    assert changelist.status_code == 200
    assert changelist.context["action_form"] is None
    assert status_of(dead) == JobStatus.DEAD


# --- workers ------------------------------------------------------------------------


@pytest.fixture
def workers():
    alive = Worker.objects.create(hostname="alive-box", pid=11, queues=["emails", "default"], concurrency=4, busy=2)
    stale = Worker.objects.create(
        hostname="stale-box", pid=12, queues=[], concurrency=4, heartbeat_at=timezone.now() - timedelta(minutes=5)
    )
    stopped = Worker.objects.create(hostname="stopped-box", pid=13, queues=[], concurrency=4, stopped_at=timezone.now())
    return alive, stale, stopped


def test_worker_changelist_shows_which_workers_are_alive(admin_client, workers):
    response = admin_client.get(reverse("admin:jobs_worker_changelist"))

    assert response.status_code == 200
    alive = {w.hostname: w.alive for w in response.context["cl"].result_list}
    assert alive == {"alive-box": True, "stale-box": False, "stopped-box": False}
    content = response.content.decode()
    assert "emails, default" in content
    assert "icon-yes.svg" in content and "icon-no.svg" in content


def test_worker_admin_is_read_only(admin_client, workers):
    alive = workers[0]
    url = reverse("admin:jobs_worker_change", args=[alive.pk])

    assert admin_client.get(reverse("admin:jobs_worker_add")).status_code == 403
    assert admin_client.get(url).status_code == 200
    assert admin_client.post(url, {"hostname": "renamed"}).status_code == 403
    assert admin_client.get(reverse("admin:jobs_worker_delete", args=[alive.pk])).status_code == 403
    assert Worker.objects.get(pk=alive.pk).hostname == "alive-box"
