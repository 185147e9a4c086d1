"""The dashboard in a real browser: headless Chromium against uvicorn and a real worker.

Each test drives Debian's chromium through Playwright at a real ASGI server
(uvicorn in a subprocess) on the test database, with a `runworker`
subprocess doing the jobs, so what the browser sees arrives the way it does
in production: committed by the worker, published to Redis, pushed over the
WebSocket, re-read over HTTP.

Screenshots of every page, at desktop and phone width, land in
test-artifacts/screenshots/ for a person to look at; the desktop overview
becomes docs/screenshots/dashboard.png, the README's picture, when that is
missing or UPDATE_README_SCREENSHOT=1.
"""

import os
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from jobs.models import FinishedCount, Job, JobStatus, Priority
from tests.conftest import ROOT, ServerProcess, wait_for
from tests.factories import JobFactory, UserFactory

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
README_SCREENSHOT = ROOT / "docs" / "screenshots" / "dashboard.png"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
PASSWORD = "correct-horse-battery"
# How long the browser may take to show a change: delivery is well under a
# second, the rest is slack for a loaded CI machine.
LIVE_TIMEOUT_MS = 15_000

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.process,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium"),
]


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    """Run uvicorn with the project's ASGI application on the test database; yield its base URL."""
    with django_db_blocker.unblock():
        process = ServerProcess(env={"DEBUG": "0"})
    try:
        yield process.wait_until_up(timeout=60).url
    finally:
        process.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop on this thread, which makes
    # Django refuse the ORM here; the tests' own queries are plain
    # synchronous code all the same. Set for the module, so the database
    # flush after each test runs under it too.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def worker(start_worker):
    return start_worker("--poll-interval", "0.2", "--concurrency", "4")


def log_in(browser, server, user, viewport=DESKTOP):
    """Return a page of a new browser context, logged in as `user` through the login form."""
    context = browser.new_context(viewport=viewport, device_scale_factor=1)
    context.set_default_timeout(LIVE_TIMEOUT_MS)
    page = context.new_page()
    page.goto(f"{server}/dashboard/")
    assert "/accounts/login/" in page.url
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server}/dashboard/")
    wait_live(page)
    return page


def wait_live(page):
    """Wait until the page's WebSocket is open."""
    page.wait_for_selector('#live-status[data-state="live"]')


def mark_no_reload(page):
    page.evaluate("window.__stillTheSamePage = true")


def assert_not_reloaded(page):
    assert page.evaluate("window.__stillTheSamePage === true"), "the page was reloaded"


def shoot(page, name: str):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def test_user_submits_a_job_and_watches_it_complete(browser, server, worker):
    """Log in, submit reverse_string through the form, and see it become completed without a reload."""
    from playwright.sync_api import expect

    alice = UserFactory(username="alice")
    page = log_in(browser, server, alice)
    page.click("nav >> text=Submit job")
    with page.expect_response("**/dashboard/submit/fields/*"):  # the picker swaps in the type's fields
        page.select_option("select[name=type]", "reverse_string")
    page.fill("textarea[name=p_text]", "hello from the browser")
    page.click("summary:has-text('Options')")
    page.fill("input[name=delay]", "2")  # scheduled first, so the change to completed happens on screen
    page.click("button:has-text('Submit job')")
    page.wait_for_url(f"{server}/dashboard/jobs/*/")
    wait_live(page)
    job = Job.objects.get(owner=alice)
    expect(page.locator("#job-status")).not_to_have_text("completed")
    mark_no_reload(page)
    expect(page.locator("#job-status")).to_have_text("completed")
    assert_not_reloaded(page)
    expect(page.locator("pre.code").nth(1)).to_contain_text('"resworb eht morf olleh"')
    assert Job.objects.get(pk=job.pk).status == JobStatus.COMPLETED

    # The jobs list shows new rows live, too.
    page.click("nav >> text=Jobs")
    wait_live(page)
    mark_no_reload(page)
    from jobs import queue

    queued = queue.enqueue("uppercase_text", "live row", owner=alice)
    expect(page.locator(f'tr[data-job-id="{queued.pk}"]')).to_be_visible()
    expect(page.locator(f'[data-status-for="{queued.pk}"]')).to_have_text("completed")
    assert_not_reloaded(page)
    page.context.close()


def test_failing_job_lands_in_the_dlq_and_is_requeued(browser, server, worker):
    """Watch a failing job appear in the DLQ without a reload, then requeue it with the button."""
    from playwright.sync_api import expect

    alice = UserFactory(username="alice")
    dlq = log_in(browser, server, alice)
    dlq.click("nav >> text=DLQ")
    wait_live(dlq)
    expect(dlq.locator(".empty")).to_contain_text("The DLQ is empty")
    mark_no_reload(dlq)

    form = dlq.context.new_page()
    form.goto(f"{server}/dashboard/submit/")
    form.select_option("select[name=type]", "fail")
    form.wait_for_selector("input[name=p_message]")
    form.fill("input[name=p_message]", "Payment gateway said <no>")
    form.click("summary:has-text('Options')")
    form.fill("input[name=max_retries]", "0")
    form.click("button:has-text('Submit job')")
    form.wait_for_url(f"{server}/dashboard/jobs/*/")
    job = Job.objects.get(owner=alice)
    expect(form.locator("#job-status")).to_have_text("dead")
    form.close()

    group = dlq.locator(".dlq-group")
    expect(group).to_have_count(1)
    expect(group).to_contain_text("RuntimeError: Payment gateway said <no>")
    assert_not_reloaded(dlq)

    group.locator("text=View jobs").click()
    dlq.check(f'input[name=id][value="{job.pk}"]')
    dlq.click("button:has-text('Requeue selected')")
    expect(dlq.locator("h1")).to_have_text("Requeue 1 job?")
    assert Job.objects.get(pk=job.pk).status == JobStatus.DEAD  # nothing happens before the confirmation
    dlq.click("button:has-text('Requeue 1 job')")
    expect(dlq.locator(".message-success")).to_have_text("Requeued 1 job.")
    # Requeued with a fresh set of retries, it ran again, failed again, and is back in the DLQ.
    wait_for(lambda: len(Job.objects.get(pk=job.pk).history) == 2, message="the requeued job to run again")
    dlq.context.close()


def test_second_user_sees_none_of_the_first_users_jobs(browser, server):
    """Show a second user no trace of the first user's jobs: not listed, not counted, not reachable."""
    from playwright.sync_api import expect

    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    secret = JobFactory(owner=alice, type="uppercase_text", payload={"text": "alice's secret"})
    JobFactory(owner=alice, status=JobStatus.DEAD, attempts=1, error="RuntimeError: alice's failure")
    page = log_in(browser, server, bob)
    expect(page.locator('[data-status-count="queued"] .stat-value')).to_have_text("0")
    expect(page.locator('[data-status-count="dead"] .stat-value')).to_have_text("0")
    page.click("nav >> text=Jobs")
    expect(page.locator(".empty")).to_contain_text("No jobs match")
    assert page.locator("tr[data-job-id]").count() == 0
    page.click("nav >> text=DLQ")
    expect(page.locator(".empty")).to_contain_text("The DLQ is empty")
    response = page.goto(f"{server}/dashboard/jobs/{secret.pk}/")
    assert response.status == 404
    assert "alice's secret" not in page.content()
    page.context.close()


def _demo_data(owner, staff):
    """Fill the table with the kind of mix an operator sees: every status, a recent history of throughput."""
    now = timezone.now()
    for minute in range(15):
        finished = now - timedelta(minutes=minute, seconds=10)
        completed = (minute * 7) % 11 + 3
        for _ in range(completed):
            JobFactory(owner=owner, status=JobStatus.COMPLETED, type="reverse_string", finished_at=finished,
                       started_at=finished - timedelta(seconds=1), progress=100, result="dlrow olleh", attempts=1)
        if minute % 4 == 1:
            JobFactory(owner=owner, status=JobStatus.DEAD, type="send_email", attempts=4, finished_at=finished,
                       payload={"to": ["ops@example.com"], "subject": "Report", "body": "..."},
                       error="ConnectionRefusedError: [Errno 111] Connection refused (smtp.example.com:587)")
        # What the finishing statements would have counted for the chart.
        FinishedCount.objects.create(minute=finished.replace(second=0, microsecond=0), owner_id=owner.pk,
                                     completed=completed, dead=int(minute % 4 == 1))
    JobFactory(owner=owner, status=JobStatus.DEAD, type="scrape_website", attempts=1, finished_at=now,
               payload={"url": "https://example.com/missing"}, error="PermanentError: HTTP 404 for https://example.com/missing")
    for priority, queue_name, n in ((Priority.HIGH, "emails", 3), (Priority.NORMAL, "default", 6), (Priority.LOW, "reports", 2)):
        for index in range(n):
            JobFactory(owner=staff, priority=priority, queue=queue_name, type="process_video",
                       payload={"duration": 5}, run_at=now - timedelta(seconds=40 * (index + 1)))
    JobFactory(owner=owner, status=JobStatus.RUNNING, type="process_video", progress=60, attempts=1,
               started_at=now - timedelta(seconds=3))
    JobFactory(owner=owner, status=JobStatus.SCHEDULED, type="fibonacci_calc", payload={"n": 90},
               run_at=now + timedelta(minutes=10))
    JobFactory(owner=owner, status=JobStatus.RETRYING, type="send_email", attempts=1,
               payload={"to": ["ada@example.com"], "subject": "Hi", "body": "..."},
               error="SMTPServerDisconnected: Connection unexpectedly closed", run_at=now + timedelta(seconds=20),
               history=[{"attempt": 1, "outcome": "failed", "worker": "7f3c2a90-1d4e-4b8e-9a51-6c2f0e8d4b17",
                         "error": "SMTPServerDisconnected: Connection unexpectedly closed",
                         "traceback": "Traceback (most recent call last):\n  File \"jobs/handlers/mail.py\", line 31, in send_email\n"
                                      "    connection.send_messages(messages)\nsmtplib.SMTPServerDisconnected: Connection unexpectedly closed",
                         "started_at": (now - timedelta(seconds=12)).isoformat(),
                         "finished_at": (now - timedelta(seconds=10)).isoformat()}])
    JobFactory(owner=owner, status=JobStatus.CANCELLED, type="sleep", payload={"seconds": 600})
    from jobs import queue as jobs_queue

    nightly = jobs_queue.create_schedule({
        "name": "nightly-report", "cron": "0 3 * * *", "timezone": "Europe/Berlin", "type": "send_email",
        "payload": {"to": ["ops@example.com"], "subject": "Nightly report", "body": "..."}, "misfire": "skip"})
    jobs_queue.run_schedule_now(nightly.pk)
    jobs_queue.create_schedule({"name": "heartbeat", "interval_seconds": 300, "type": "reverse_string",
                                "payload": "beat", "overlap": "skip", "enabled": False})


def test_screenshots_of_every_page_at_desktop_and_phone_width(browser, server, start_worker):
    """Render every page at 1280x800 and 390x844 without horizontal overflow, and keep screenshots."""
    worker = start_worker("--poll-interval", "0.2", "--queues", "media")  # online, and leaves the demo data alone
    staff = UserFactory(username="operator", is_staff=True)
    alice = UserFactory(username="alice")
    _demo_data(alice, staff)
    wait_for(lambda: worker.proc.poll() is None and Job.objects.exists(), message="the worker")
    from jobs.models import Worker

    wait_for(lambda: Worker.objects.filter(pid=worker.pid).exists(), message="the worker to register")
    detail = Job.objects.filter(status=JobStatus.RETRYING).get()
    group = None
    pages = {
        "overview": "/dashboard/",
        "jobs": "/dashboard/jobs/",
        "job-detail": f"/dashboard/jobs/{detail.pk}/",
        "dlq": "/dashboard/dlq/",
        "workers": "/dashboard/workers/",
        "queues": "/dashboard/queues/",
        "schedules": "/dashboard/schedules/",
        "submit": "/dashboard/submit/",
    }
    for size_name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        page = log_in(browser, server, staff, viewport=viewport)
        for name, path in pages.items():
            page.goto(f"{server}{path}")
            wait_live(page)
            page.wait_for_load_state("networkidle")
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{name} is wider than the {size_name} viewport by {overflow}px"
            shoot(page, f"{name}-{size_name}")
        page.goto(f"{server}/dashboard/dlq/")
        if group is None:
            group = page.locator(".dlq-group").first.get_attribute("data-group")
        page.goto(f"{server}/dashboard/dlq/{group}/")
        shoot(page, f"dlq-group-{size_name}")
        page.goto(f"{server}/dashboard/dlq/requeue/?group={group}")
        shoot(page, f"dlq-confirm-{size_name}")
        page.goto(f"{server}/dashboard/submit/")
        page.select_option("select[name=type]", "fibonacci_calc")
        page.wait_for_selector("input[name=p_n]")
        page.fill("input[name=p_n]", "5000")
        page.click("button:has-text('Submit job')")
        page.wait_for_selector(".field-error")
        shoot(page, f"submit-errors-{size_name}")
        page.context.close()
        anonymous = browser.new_context(viewport=viewport).new_page()
        anonymous.goto(f"{server}/accounts/login/")
        shoot(anonymous, f"login-{size_name}")
        anonymous.context.close()
    # The README's picture is refreshed on request only, so a test run leaves the tree clean.
    if not README_SCREENSHOT.exists() or os.environ.get("UPDATE_README_SCREENSHOT") == "1":
        README_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SCREENSHOTS / "overview-desktop.png", README_SCREENSHOT)


def csp_violations(context) -> list[str]:
    """Collect, from now on, what the Content-Security-Policy refuses in any page of `context`."""
    violations = []

    def on_console(message):
        if "Content Security Policy" in message.text:
            violations.append(message.text)

    context.on("console", on_console)
    # Also what the console may not say, from every document the context loads.
    context.add_init_script(
        "document.addEventListener('securitypolicyviolation', e => console.error("
        "'Content Security Policy: ' + e.violatedDirective + ' refused ' + (e.blockedURI || 'inline')));"
    )
    return violations


def test_every_page_and_swagger_ui_work_under_the_content_security_policy(browser, server, start_worker):
    """Serve every page with the policy, and have the browser refuse nothing on them while they work."""
    from playwright.sync_api import expect

    start_worker("--poll-interval", "0.2")
    staff = UserFactory(username="operator", is_staff=True, is_superuser=True)
    alice = UserFactory(username="alice")
    _demo_data(alice, staff)
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(LIVE_TIMEOUT_MS)
    violations = csp_violations(context)
    page = context.new_page()
    login = page.goto(f"{server}/accounts/login/")
    policy = login.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy and "unsafe-eval" not in policy
    page.context.close()

    page = log_in(browser, server, staff)
    violations = csp_violations(page.context)
    detail = Job.objects.filter(status=JobStatus.RETRYING).get()
    for path in ("/dashboard/", "/dashboard/jobs/", f"/dashboard/jobs/{detail.pk}/", "/dashboard/dlq/",
                 "/dashboard/workers/", "/dashboard/queues/", "/dashboard/schedules/"):
        response = page.goto(f"{server}{path}")
        assert response.headers["content-security-policy"] == policy
        wait_live(page)  # htmx and its WebSocket extension run
        page.wait_for_load_state("networkidle")
    # htmx swaps the type's fields in, and a submitted job changes live on its page.
    page.goto(f"{server}/dashboard/submit/")
    with page.expect_response("**/dashboard/submit/fields/*"):
        page.select_option("select[name=type]", "uppercase_text")
    page.fill("textarea[name=p_text]", "under the policy")
    page.click("button:has-text('Submit job')")
    page.wait_for_url(f"{server}/dashboard/jobs/*/")
    expect(page.locator("#job-status")).to_have_text("completed")
    # The admin, and Swagger UI with its operations rendered from the schema.
    page.goto(f"{server}/admin/jobs/job/")
    expect(page.locator("#result_list")).to_be_visible()
    page.goto(f"{server}/api/docs/")
    expect(page.locator(".opblock").first).to_be_visible()
    expect(page.locator(".opblock-summary-path", has_text="/api/jobs/{job_id}/cancel/")).to_have_count(1)
    page.locator(".opblock-summary", has_text="/api/jobs/stats/").first.click()
    expect(page.locator("button.try-out__btn").first).to_be_visible()
    page.wait_for_load_state("networkidle")
    page.context.close()
    assert violations == [], violations
