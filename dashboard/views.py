"""The dashboard's pages: thin views over dashboard.selectors and the job services.

Every page is server-rendered. A page's live part sits in one element with
id "live"; the browser re-requests the same URL with the HX-Target header
set to "live" when an event says something changed (and after every
reconnect), and gets only that fragment back.
"""

import re

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render, resolve_url
from django.urls import reverse
from django.utils.cache import add_never_cache_headers, patch_vary_headers
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from dashboard import selectors
from dashboard.charts import throughput_chart
from dashboard.forms import (
    JobFilterForm,
    KeyLimitForm,
    QueueControlsForm,
    ScheduleForm,
    SubmitJobForm,
    field_rows,
    payload_from_post,
)
from jobs import queue, selectors as jobs_selectors
from jobs.errors import IllegalTransition, JobTypeNotAllowed, PayloadError, UnknownJobType
from jobs.models import ACTIVE_STATUSES, Job, JobStatus, KeyLimit, Schedule
from jobs.registry import handlers
from jobs.schedules import ScheduleInvalid
from jobs.submission import (
    IdempotencyConflict,
    OptionNotAllowed,
    SubmissionRefused,
    requeue_dead_for_user,
    requeue_room,
    retry_for_user,
    submit_job,
)
from jobs.tasks.runtime import task_names
from jobs.waiting import reason_for

LIVE_TARGET = "live"
GROUP_KEY = re.compile(r"^[0-9a-f]{32}$")
# A selection on the DLQ pages names at most this many jobs.
MAX_SELECTION = 500


class LogoutView(auth_views.LogoutView):
    """Log out (a POST, as Django's own), then go to LOGOUT_REDIRECT_URL, or else to the login page.

    The dashboard's own, so that it needs no URL named "logout" in the project it is mounted in.
    """

    def get_default_redirect_url(self):
        return resolve_url(settings.LOGOUT_REDIRECT_URL or settings.LOGIN_URL)


def _render(request, template: str, fragment: str, context: dict, status: int = 200):
    """Render the whole page, or only its live fragment when htmx asks for that."""
    is_refresh = request.headers.get("HX-Request") == "true" and request.headers.get("HX-Target") == LIVE_TARGET
    response = render(request, fragment if is_refresh else template, context, status=status)
    patch_vary_headers(response, ["HX-Request", "HX-Target"])
    # Live data: a browser must never show a cached copy after a reconnect.
    add_never_cache_headers(response)
    return response


def _visible_job(user, job_id: int) -> Job:
    try:
        return selectors.job_for_user(user, job_id)
    except Job.DoesNotExist:
        # The same answer for "no such job" and "someone else's job".
        raise Http404("No such job.") from None


# --- Overview -----------------------------------------------------------------------


@login_required
@require_GET
def overview(request):
    data = selectors.overview(request.user)
    context = {**data, "chart": throughput_chart(data["throughput"]), "statuses": JobStatus}
    return _render(request, "dashboard/overview.html", "dashboard/_overview.html", context)


# --- Jobs -------------------------------------------------------------------------------


@login_required
@require_GET
def job_list(request):
    form = JobFilterForm(request.GET)
    page = None
    status = 200
    if form.is_valid():
        jobs = selectors.filtered_jobs(request.user, **form.filters())
        page = selectors.job_page(jobs, before=form.cleaned_data["before"], after=form.cleaned_data["after"])
    else:
        status = 400
    context = {"form": form, "page": page, "type_names": [h.name for h in handlers()] + task_names()}
    return _render(request, "dashboard/jobs.html", "dashboard/_jobs.html", context, status=status)


def _timeline(job: Job) -> list[dict]:
    """Return what happened to `job`, oldest first, from its timestamps and attempt history."""
    from dashboard.templatetags.dashboard import parse_time

    entries = [{"at": job.created_at, "kind": "created", "text": f"Created in queue {job.queue}"}]
    if job.run_at and job.created_at and (job.run_at - job.created_at).total_seconds() > 1 and not job.history:
        entries.append({"at": job.run_at, "kind": "scheduled", "text": "Due to run"})
    for attempt in job.history:
        number = attempt.get("attempt")
        started = parse_time(attempt.get("started_at"))
        if started:
            entries.append({"at": started, "kind": "started", "text": f"Attempt {number} started"})
        finished = parse_time(attempt.get("finished_at"))
        if finished:
            outcome = attempt.get("outcome", "")
            error = attempt.get("error") or ""
            entries.append({"at": finished, "kind": outcome, "text": f"Attempt {number} {outcome}", "detail": error})
    if job.status == JobStatus.RUNNING and job.started_at:
        entries.append({"at": job.started_at, "kind": "started", "text": f"Attempt {job.attempts} started"})
    if job.status == JobStatus.RETRYING:
        entries.append({"at": job.run_at, "kind": "retrying", "text": "Next attempt due"})
    if job.finished_at and job.status in (JobStatus.DEAD, JobStatus.CANCELLED, JobStatus.EXPIRED):
        text = {"dead": "Moved to the DLQ", "cancelled": "Cancelled", "expired": "Expired"}[job.status]
        entries.append({"at": job.finished_at, "kind": job.status, "text": text})
    return sorted((e for e in entries if e["at"]), key=lambda e: e["at"])


@login_required
@require_GET
def job_detail(request, job_id: int):
    job = _visible_job(request.user, job_id)
    context = {
        "job": job,
        "attempts": list(reversed(job.history)),
        "timeline": _timeline(job),
        "can_cancel": job.status in ACTIVE_STATUSES,
        "can_retry": job.status in queue.REQUEUEABLE_STATUSES,
        "can_run_now": job.status in (JobStatus.SCHEDULED, JobStatus.RETRYING),
        "waiting": reason_for(job),
    }
    return _render(request, "dashboard/job_detail.html", "dashboard/_job_detail.html", context)


def _job_action(request, job_id: int, action, success: str):
    """Apply `action` to a job the user may see; report the outcome and go back to the job."""
    job = _visible_job(request.user, job_id)
    try:
        action(job.pk)
    except IllegalTransition as exc:
        messages.error(request, str(exc))
    except SubmissionRefused as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, success.format(id=job.pk))
    return redirect("dashboard:job-detail", job_id=job.pk)


@login_required
@require_POST
def job_cancel(request, job_id: int):
    running = _visible_job(request.user, job_id).status == JobStatus.RUNNING
    return _job_action(request, job_id, queue.cancel_job, (
        "Asked job {id} to stop: it ends cancelled once its handler stops, within the grace period."
        if running else "Cancelled job {id}."))


@login_required
@require_POST
def job_retry(request, job_id: int):
    return _job_action(
        request, job_id, lambda pk: retry_for_user(request.user, pk),
        "Job {id} is queued again, with a fresh set of retries.",
    )


@login_required
@require_POST
def job_run_now(request, job_id: int):
    return _job_action(request, job_id, queue.retry_now, "Job {id} runs as soon as a worker is free.")


# --- The DLQ ----------------------------------------------------------------------------


@login_required
@require_GET
def dlq(request):
    context = {"groups": selectors.dlq_groups(request.user), "max_groups": selectors.DLQ_MAX_GROUPS}
    return _render(request, "dashboard/dlq.html", "dashboard/_dlq.html", context)


@login_required
@require_GET
def dlq_group(request, group: str):
    if not GROUP_KEY.match(group):
        raise Http404("No such group.")
    form = JobFilterForm(request.GET)
    form.is_valid()
    summary = selectors.dlq_group(request.user, group)
    page = selectors.job_page(
        selectors.dlq_group_jobs(request.user, group),
        before=form.cleaned_data.get("before"), after=form.cleaned_data.get("after"),
    )
    context = {"group": group, "summary": summary, "page": page}
    return _render(request, "dashboard/dlq_group.html", "dashboard/_dlq_group.html", context)


def _selection(user, data) -> dict:
    """Return what a DLQ requeue request names: a group, or a list of job ids."""
    group = data.get("group", "")
    if group:
        if not GROUP_KEY.match(group):
            raise Http404("No such group.")
        summary = selectors.dlq_group(user, group)
        return {"group": group, "summary": summary, "count": summary["count"] if summary else 0, "jobs": []}
    try:
        ids = sorted({int(value) for value in data.getlist("id")})
    except ValueError:
        ids = None
    if not ids or len(ids) > MAX_SELECTION:
        return {"invalid": f"Select between 1 and {MAX_SELECTION} jobs."}
    jobs = list(Job.objects.for_user(user).dead().filter(pk__in=ids).only("id", "type", "error", "finished_at"))
    return {"ids": [job.pk for job in jobs], "jobs": jobs, "count": len(jobs)}


@login_required
@require_http_methods(["GET", "POST"])
def dlq_requeue(request):
    """Confirm (GET) and then requeue (POST) one dead job, a selection, or a whole group."""
    data = request.POST if request.method == "POST" else request.GET
    selection = _selection(request.user, data)
    if "invalid" in selection:
        messages.error(request, selection["invalid"])
        return redirect("dashboard:dlq")
    back = reverse("dashboard:dlq-group", args=[selection["group"]]) if selection.get("group") else reverse("dashboard:dlq")
    if request.method == "GET":
        context = {**selection, "room": requeue_room(request.user), "back": back}
        return _render(request, "dashboard/dlq_confirm.html", "dashboard/dlq_confirm.html", context)
    if selection.get("group"):
        ids = selectors.dlq_group_ids(request.user, selection["group"])
    else:
        ids = selection["ids"]
    if not ids:
        messages.info(request, "Nothing to requeue: those jobs have left the DLQ already.")
        return redirect(back)
    try:
        requeued = requeue_dead_for_user(request.user, job_ids=ids)
    except SubmissionRefused as exc:
        messages.error(request, exc.message)
        return redirect(back)
    left = len(ids) - len(requeued)
    text = f"Requeued {len(requeued)} job{'s' if len(requeued) != 1 else ''}."
    if left:
        text += f" {left} stay in the DLQ: requeueing them would pass your limits of unfinished jobs and of jobs a minute."
    (messages.warning if left else messages.success)(request, text)
    return redirect(back)


# --- Workers ------------------------------------------------------------------------------


@login_required
@require_GET
def workers(request):
    if not request.user.is_staff:
        raise PermissionDenied("Only staff see the workers.")
    context = {"workers": list(selectors.workers_for_dashboard())}
    return _render(request, "dashboard/workers.html", "dashboard/_workers.html", context)


# --- Queues (staff) ----------------------------------------------------------------------


def _staff_only(request, what: str) -> None:
    if not request.user.is_staff:
        raise PermissionDenied(f"Only staff {what}.")


def _controlled_queue(request, name: str, what: str) -> str:
    """Return `name` if staff may change it here: refuse other users, and answer 404 for an unknown queue."""
    _staff_only(request, what)
    if name not in jobs_selectors.known_queues():
        raise Http404("No such queue.")
    return name


def _queues_page_refused(request, name: str, **forms):
    """Give the Queues page back (400) with `name`'s form as posted, saying what is wrong."""
    return _render(request, "dashboard/queues.html", "dashboard/_queues.html", _queues_context(name, **forms),
                   status=400)


@login_required
@require_GET
def queues(request):
    _staff_only(request, "see the queues")
    return _render(request, "dashboard/queues.html", "dashboard/_queues.html", _queues_context())


def _queues_context(name: str | None = None, form=None, key_form=None) -> dict:
    """The Queues page: each queue with its limits form and key limits; `name`'s forms as posted, with errors."""
    keys: dict[str, list] = {}
    for limit in KeyLimit.objects.order_by("queue", "key"):
        keys.setdefault(limit.queue, []).append(limit)
    rows = []
    for row in jobs_selectors.queue_list():
        mine = row["name"] == name
        rows.append({**row, "form": form if mine and form is not None else QueueControlsForm.for_row(row),
                     "keys": keys.get(row["name"], []),
                     "key_form": key_form if mine and key_form is not None else KeyLimitForm()})
    return {"queues": rows}


@login_required
@require_POST
def queue_pause(request, name: str):
    _controlled_queue(request, name, "pause queues")
    paused = request.POST.get("paused") == "true"
    (queue.pause_queue if paused else queue.resume_queue)(name)
    messages.success(request, f"Queue {name} is {'paused: workers claim none of its jobs' if paused else 'resumed'}.")
    return redirect("dashboard:queues")


@login_required
@require_POST
def queue_limits(request, name: str):
    _controlled_queue(request, name, "change queue limits")
    form = QueueControlsForm(request.POST)
    if form.is_valid():
        try:
            queue.set_queue_controls(name, **form.cleaned_data)
        except ValueError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Queue {name}: limits saved; every worker follows them within a second.")
            return redirect("dashboard:queues")
    return _queues_page_refused(request, name, form=form)


@login_required
@require_POST
def queue_key_limit(request, name: str):
    _controlled_queue(request, name, "change key limits")
    if request.POST.get("remove"):
        key = request.POST.get("key", "")
        if queue.remove_key_limit(name, key):
            messages.success(request, f"Key {key} of queue {name}: its type's and queue's limits apply again.")
        return redirect("dashboard:queues")
    form = KeyLimitForm(request.POST)
    if form.is_valid():
        changes = {field: value for field, value in form.cleaned_data.items() if field != "key"}
        try:
            queue.set_key_limit(name, form.cleaned_data["key"], **changes)
        except ValueError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Key {form.cleaned_data['key']} of queue {name}: limits saved.")
            return redirect("dashboard:queues")
    return _queues_page_refused(request, name, key_form=form)


# --- Submit ---------------------------------------------------------------------------------


def _submit_context(request, form, type_name: str, payload_errors: dict) -> dict:
    data = request.POST if request.method == "POST" else {}
    rows, other_errors = field_rows(type_name, data, payload_errors)
    return {"form": form, "type_name": type_name, "payload_rows": rows, "payload_errors": other_errors}


def _chosen_type(request, form) -> str:
    choices = [name for name, _ in form.fields["type"].choices]
    wanted = (request.POST if request.method == "POST" else request.GET).get("type")
    if wanted in choices:
        return wanted
    return "reverse_string" if "reverse_string" in choices else (choices[0] if choices else "")


@login_required
@require_http_methods(["GET", "POST"])
def submit(request):
    if request.method == "GET":
        form = SubmitJobForm(user=request.user)
        type_name = _chosen_type(request, form)
        form.initial["type"] = type_name
        return _render(request, "dashboard/submit.html", "dashboard/submit.html", _submit_context(request, form, type_name, {}))

    form = SubmitJobForm(request.POST, user=request.user)
    type_name = _chosen_type(request, form)
    payload, payload_errors = payload_from_post(type_name, request.POST)
    status = 400
    if form.is_valid() and not payload_errors:
        try:
            submission = submit_job(
                user=request.user, type=form.cleaned_data["type"], payload=payload,
                idempotency_key=form.cleaned_data["idempotency_key"], **form.options(),
            )
        except PayloadError as exc:
            payload_errors = exc.errors
        except (UnknownJobType, JobTypeNotAllowed) as exc:
            form.add_error("type", str(exc))
        except OptionNotAllowed as exc:
            for name, problems in exc.errors.items():
                for problem in problems:
                    if name in form.fields:
                        form.add_error(name, problem)
                    else:
                        form.add_error(None, f"{name}: {problem}")
        except SubmissionRefused as exc:
            form.add_error(None, exc.message)
            status = 429
        except IdempotencyConflict:
            form.add_error(None, "This form was sent before with other values. Check the fields and send it again.")
            form.data = data = request.POST.copy()
            data["idempotency_key"] = SubmitJobForm(user=request.user).initial["idempotency_key"]
        except ValueError as exc:
            form.add_error(None, str(exc))
        else:
            job = submission.job
            if not submission.replayed:
                messages.success(request, f"Submitted {job.type} job {job.pk}.")
            return redirect("dashboard:job-detail", job_id=job.pk)
    response = render(request, "dashboard/submit.html", _submit_context(request, form, type_name, payload_errors), status=status)
    add_never_cache_headers(response)
    return response


@login_required
@require_GET
def submit_fields(request):
    """Return the payload inputs of the type chosen in the picker."""
    form = SubmitJobForm(user=request.user)
    type_name = _chosen_type(request, form)
    rows, _ = field_rows(type_name, {}, {})
    return render(request, "dashboard/_payload_fields.html", {"payload_rows": rows, "type_name": type_name})


# --- Schedules (staff) ---------------------------------------------------------------------------

SCHEDULE_ACTIONS = {
    "pause": (queue.pause_schedule, "Paused {name}."),
    "resume": (queue.resume_schedule, "Resumed {name}: it fires from its next tick."),
    "run": (queue.run_schedule_now, "Enqueued {name}'s job now."),
    "remove": (queue.delete_schedule, "Removed {name} and its tick history."),
}


def _schedule_errors(form, exc: ScheduleInvalid) -> None:
    for name, problems in exc.errors.items():
        form.add_error(name if name in form.fields else None, problems)


@login_required
@require_http_methods(["GET", "POST"])
def schedules(request):
    """List the schedules (live), and add one (POST)."""
    _staff_only(request, "see the schedules")
    form = ScheduleForm(request.POST if request.method == "POST" else None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                schedule = queue.create_schedule(form.definition)
            except ScheduleInvalid as exc:
                _schedule_errors(form, exc)
            else:
                messages.success(request, f"Added schedule {schedule.name}.")
                return redirect("dashboard:schedules")
        status = 400
    context = {"rows": selectors.schedules_for_dashboard(), "form": form}
    return _render(request, "dashboard/schedules.html", "dashboard/_schedules.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def schedule_edit(request, schedule_id: int):
    _staff_only(request, "see the schedules")
    schedule = get_object_or_404(Schedule, pk=schedule_id)
    form = ScheduleForm(request.POST, instance=schedule) if request.method == "POST" else ScheduleForm(instance=schedule)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                schedule = queue.update_schedule(schedule.pk, form.definition)
            except ScheduleInvalid as exc:
                _schedule_errors(form, exc)
            else:
                messages.success(request, f"Saved schedule {schedule.name}.")
                return redirect("dashboard:schedules")
        status = 400
    response = render(request, "dashboard/schedule_edit.html", {"form": form, "schedule": schedule}, status=status)
    add_never_cache_headers(response)
    return response


@login_required
@require_POST
def schedule_action(request, schedule_id: int, action: str):
    _staff_only(request, "see the schedules")
    schedule = get_object_or_404(Schedule, pk=schedule_id)
    if action not in SCHEDULE_ACTIONS:
        raise Http404("No such action.")
    do, done = SCHEDULE_ACTIONS[action]
    try:
        do(schedule.pk)
    except ScheduleInvalid as exc:
        messages.error(request, f"{schedule.name}: {exc}")
    except Schedule.DoesNotExist:
        messages.info(request, f"{schedule.name} was removed meanwhile.")
    else:
        messages.success(request, done.format(name=schedule.name))
    return redirect("dashboard:schedules")
