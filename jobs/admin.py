"""Admin for the queue: jobs and workers are read here; jobs change only through jobs.queue."""

import json

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet
from django.http import HttpResponseBadRequest
from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.dateparse import parse_datetime
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join

from jobs import flow, queue, registry, schedules, selectors
from jobs.models import Job, KeyLimit, QueueControl, Schedule, ScheduleSource, Worker
from jobs.queue.control import KEY_FIELDS, QUEUE_FIELDS
from jobs.tasks.runtime import task_names
from jobs.waiting import reason_for

# Above this many rows (by the planner's estimate) an unfiltered changelist
# shows the estimate: an exact count(*) would read the whole jobs table on
# every page view.
ESTIMATED_COUNT_ABOVE = 100_000

HISTORY_COLUMNS = ("attempt", "worker", "started_at", "finished_at", "outcome", "error", "traceback")


def estimated_job_count(using: str) -> int:
    """Return PostgreSQL's estimate of the rows in the jobs table, or -1 before its first ANALYZE."""
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [Job._meta.db_table])
        row = cursor.fetchone()
    return row[0] if row else -1


class EstimatedCountPaginator(Paginator):
    """Count an unfiltered, large jobs table from the planner's estimate; count anything else exactly."""

    @cached_property
    def count(self):
        jobs = self.object_list
        if isinstance(jobs, QuerySet) and not jobs.query.where:
            estimate = estimated_job_count(jobs.db)
            if estimate > ESTIMATED_COUNT_ABOVE:
                return estimate
        return super().count


class JobTypeFilter(admin.SimpleListFilter):
    """Offer the registered job types, which costs no SELECT DISTINCT over the jobs table."""

    title = "type"
    parameter_name = "type"

    def lookups(self, request, model_admin):
        names = [handler.name for handler in registry.handlers()] + task_names()
        return [(name, name) for name in names]

    def queryset(self, request, queryset):
        return queryset.filter(type=self.value()) if self.value() else queryset


def _jobs(n: int) -> str:
    return f"{n} job" if n == 1 else f"{n} jobs"


def _pretty_json(value) -> str:
    return format_html(
        '<pre style="white-space: pre-wrap; margin: 0">{}</pre>',
        json.dumps(value, indent=2, ensure_ascii=False, default=str),
    )


def _history_time(value) -> str:
    moment = parse_datetime(value) if isinstance(value, str) else None
    if moment is None:
        return "" if value is None else str(value)
    if timezone.is_aware(moment):
        moment = timezone.localtime(moment)
    return date_format(moment, "Y-m-d H:i:s")


def _history_row(entry) -> str:
    if not isinstance(entry, dict):  # written by hand or by an older version: show it as it is
        return format_html('<tr><td colspan="{}">{}</td></tr>', len(HISTORY_COLUMNS), _pretty_json(entry))
    traceback = entry.get("traceback") or ""
    return format_html(
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        entry.get("attempt", ""),
        entry.get("worker") or "",
        _history_time(entry.get("started_at")),
        _history_time(entry.get("finished_at")),
        entry.get("outcome", ""),
        entry.get("error") or "",
        format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', traceback) if traceback else "",
    )


class RefuseUnstorableQueryMixin(admin.ModelAdmin):
    """Answer 400 to a changelist whose query string holds text PostgreSQL cannot take.

    Every filter, search and lookup in the query string ends up as a
    parameter of the changelist's SQL, and PostgreSQL refuses a NUL in any
    text parameter: without this, `?type=%00` is a 500.
    """

    def changelist_view(self, request, extra_context=None):
        for name, values in request.GET.lists():
            for text in (name, *values):
                problem = registry.unstorable(text)
                if problem:
                    return HttpResponseBadRequest(
                        f"The query parameter {name!r} must not contain {problem}.",
                        content_type="text/plain; charset=utf-8",
                    )
        return super().changelist_view(request, extra_context)


@admin.register(Job)
class JobAdmin(RefuseUnstorableQueryMixin, admin.ModelAdmin):
    list_display = (
        "id", "type", "status", "priority", "queue", "owner", "attempts_of_max",
        "run_at", "created_at", "finished_at",
    )
    list_filter = ("status", "queue", JobTypeFilter, "priority", "owner")
    search_fields = ("=trace_id", "=unique_key", "type", "error")
    list_select_related = ("owner",)
    date_hierarchy = "created_at"
    # The table can hold millions of rows: never count all of them per page view.
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    actions = ("requeue_dead_jobs", "cancel_jobs", "retry_jobs_now")

    fieldsets = (
        (None, {"fields": ("id", "type", "status", "waiting_reason", "priority", "queue", "concurrency_key", "owner",
                           "trace_id", "unique_key")}),
        ("Schedule", {"fields": (
            "attempts", "max_retries", "timeout", "run_at", "expires_at",
            "created_at", "started_at", "finished_at", "progress",
        )}),
        ("Lease", {"fields": ("leased_by", "lease_token", "lease_expires_at"), "classes": ("collapse",)}),
        ("Payload and result", {"fields": ("payload_json", "result_json", "error_text")}),
        ("Attempts", {"fields": ("history_table",), "classes": ("wide",)}),
    )
    readonly_fields = tuple(flatten_fieldsets(fieldsets))

    # --- Read-only: a job's state is changed only by jobs.queue, through the actions.

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        # Allowed on the changelist, so the actions (which need "change") are
        # offered; never on one job, so its page is view-only and a POST to it
        # is refused instead of saving the whole row over a worker's writes.
        return obj is None and super().has_change_permission(request)

    def get_actions(self, request):
        actions = super().get_actions(request)
        # Its confirmation page lists every selected row, which "select all"
        # over millions of jobs would make unusable.
        actions.pop("delete_selected", None)
        return actions

    def get_search_results(self, request, queryset, search_term):
        """Also match a job by its id when the search term is a number, e.g. "42" or "#42"."""
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip().removeprefix("#")
        if term.isascii() and term.isdigit() and int(term) < 2**63:  # ids are bigints
            results |= queryset.filter(pk=int(term))
        return results, may_have_duplicates

    # --- Columns and fields

    @admin.display(description="attempts", ordering="attempts")
    def attempts_of_max(self, obj):
        """Show attempts made out of attempts allowed: the first run plus max_retries retries."""
        return f"{obj.attempts}/{obj.max_retries + 1}"

    @admin.display(description="waiting because")
    def waiting_reason(self, obj):
        reason = reason_for(obj)
        return self.get_empty_value_display() if reason is None else reason.message

    @admin.display(description="payload")
    def payload_json(self, obj):
        return _pretty_json(obj.payload)

    @admin.display(description="result")
    def result_json(self, obj):
        return self.get_empty_value_display() if obj.result is None else _pretty_json(obj.result)

    @admin.display(description="error")
    def error_text(self, obj):
        if not obj.error:
            return self.get_empty_value_display()
        return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', obj.error)

    @admin.display(description="history")
    def history_table(self, obj):
        entries = obj.history if isinstance(obj.history, list) else [obj.history]
        if not entries:
            return self.get_empty_value_display()
        return format_html(
            '<table class="job-history"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>',
            format_html_join("", "<th>{}</th>", ((column.replace("_", " "),) for column in HISTORY_COLUMNS)),
            format_html_join("", "{}", ((_history_row(entry),) for entry in entries)),
        )

    # --- Actions: each delegates to jobs.queue, which skips rows the change is not legal for.

    @admin.action(description="Requeue selected dead jobs", permissions=["change"])
    def requeue_dead_jobs(self, request, queryset):
        selected = queryset.count()
        requeued = queue.requeue_dead(queryset)
        self._report(request, len(requeued), selected, done="Requeued {}.", not_legal="not dead")

    @admin.action(description="Cancel selected jobs", permissions=["change"])
    def cancel_jobs(self, request, queryset):
        selected = queryset.count()
        cancelled = queue.cancel_jobs(queryset)
        self._report(request, cancelled, selected, done="Cancelled {}.", not_legal="already finished")

    @admin.action(description="Retry selected jobs now", permissions=["change"])
    def retry_jobs_now(self, request, queryset):
        selected = queryset.count()
        queued = queue.retry_jobs_now(queryset)
        self._report(request, queued, selected, done="Queued {} to run now.", not_legal="not scheduled or retrying")

    def _report(self, request, changed: int, selected: int, *, done: str, not_legal: str) -> None:
        """Tell the user how many jobs changed and how many were skipped as not legal in their state."""
        text = done.format(_jobs(changed))
        skipped = max(selected - changed, 0)
        if skipped:
            text += f" Skipped {_jobs(skipped)} {'that was' if skipped == 1 else 'that were'} {not_legal}."
        self.message_user(request, text, messages.SUCCESS if changed else messages.WARNING)


@admin.register(Worker)
class WorkerAdmin(RefuseUnstorableQueryMixin, admin.ModelAdmin):
    """Workers register and update themselves; the admin only shows them."""

    list_display = (
        "hostname", "pid", "queues_served", "concurrency", "busy", "processed", "failed",
        "started_at", "heartbeat_at", "alive",
    )
    fields = (
        "id", "hostname", "pid", "queues_served", "concurrency", "busy", "processed", "failed",
        "started_at", "heartbeat_at", "stopped_at", "alive",
    )
    readonly_fields = fields

    def get_queryset(self, request):
        return selectors.with_liveness(super().get_queryset(request))

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="queues")
    def queues_served(self, obj):
        return ", ".join(obj.queues) if obj.queues else "all"

    @admin.display(boolean=True, ordering="alive")
    def alive(self, obj):
        return obj.alive


# --- Flow control: queues' and keys' limits, written through jobs.queue so workers hear of them at once.


class LimitsForm(forms.ModelForm):
    """Checks every limit as the API and the command do: whole numbers from 1, or empty for none."""

    LIMITS = ("concurrency", "rate_limit", "key_concurrency", "key_rate_limit")
    PERIODS = ("rate_period", "key_rate_period")

    def clean(self):
        data = super().clean() or {}
        for name, value in list(data.items()):
            try:
                if name in self.LIMITS:
                    data[name] = flow.check_limit(value, name.replace("_", " "))
                elif name in self.PERIODS:
                    data[name] = flow.check_period(value, name.replace("_", " "))
                elif name == "name":
                    flow.check_queue_name(value)
                elif name == "key":
                    flow.check_key(value)
            except ValueError as exc:
                self.add_error(name, str(exc))
        return data


@admin.register(QueueControl)
class QueueControlAdmin(admin.ModelAdmin):
    form = LimitsForm
    list_display = ("name", "paused", "concurrency", "rate", "key_concurrency", "key_rate", "updated_at")
    list_editable = ("paused",)
    fields = ("name", "paused", "paused_at", "concurrency", "rate_limit", "rate_period", "key_concurrency",
              "key_rate_limit", "key_rate_period", "updated_at")
    readonly_fields = ("paused_at", "updated_at")
    actions = ("pause", "resume")

    def get_readonly_fields(self, request, obj=None):
        return (*self.readonly_fields, "name") if obj is not None else self.readonly_fields

    @admin.display(description="rate")
    def rate(self, obj):
        return flow.format_rate(obj.rate_limit, obj.rate_period) or self.get_empty_value_display()

    @admin.display(description="rate per key")
    def key_rate(self, obj):
        return flow.format_rate(obj.key_rate_limit, obj.key_rate_period) or self.get_empty_value_display()

    def save_model(self, request, obj, form, change):
        fields = {name: form.cleaned_data[name] for name in QUEUE_FIELDS if name in form.cleaned_data}
        saved = queue.set_queue_controls(obj.name, **fields)
        obj.pk, obj.paused_at, obj.updated_at = saved.pk, saved.paused_at, saved.updated_at

    @admin.action(description="Pause selected queues", permissions=["change"])
    def pause(self, request, queryset):
        self._each(request, queryset, queue.pause_queue, "Paused")

    @admin.action(description="Resume selected queues", permissions=["change"])
    def resume(self, request, queryset):
        self._each(request, queryset, queue.resume_queue, "Resumed")

    def _each(self, request, queryset, change, done: str) -> None:
        names = list(queryset.values_list("name", flat=True))
        for name in names:
            change(name)
        self.message_user(request, f"{done} {', '.join(names)}.", messages.SUCCESS)


@admin.register(KeyLimit)
class KeyLimitAdmin(admin.ModelAdmin):
    form = LimitsForm
    list_display = ("queue", "key", "concurrency", "rate", "updated_at")
    list_filter = ("queue",)
    search_fields = ("=key", "key")
    fields = ("queue", "key", "concurrency", "rate_limit", "rate_period", "updated_at")
    readonly_fields = ("updated_at",)

    def get_readonly_fields(self, request, obj=None):
        return (*self.readonly_fields, "queue", "key") if obj is not None else self.readonly_fields

    @admin.display(description="rate")
    def rate(self, obj):
        return flow.format_rate(obj.rate_limit, obj.rate_period) or self.get_empty_value_display()

    def save_model(self, request, obj, form, change):
        fields = {name: form.cleaned_data[name] for name in KEY_FIELDS if name in form.cleaned_data}
        saved = queue.set_key_limit(obj.queue, obj.key, **fields)
        obj.pk, obj.updated_at = saved.pk, saved.updated_at

    def delete_model(self, request, obj):
        queue.remove_key_limit(obj.queue, obj.key)

    def delete_queryset(self, request, queryset):
        for queue_name, key in queryset.values_list("queue", "key"):
            queue.remove_key_limit(queue_name, key)

# --- Schedules ---------------------------------------------------------------------------------


class ScheduleForm(forms.ModelForm):
    """A schedule's definition, checked whole by jobs.schedules.clean: its refusals are the form's errors."""

    class Meta:
        model = Schedule
        fields = list(schedules.FIELDS)

    definition: dict

    def clean(self):
        super().clean()
        data = self.cleaned_data
        instance = self.instance
        if instance.pk and instance.source != ScheduleSource.RUNTIME and data.get("name") != instance.name:
            self.add_error("name", "A schedule declared in code or settings keeps its name.")
        try:
            # The admin's own form class lists the read-only fields too: the definition's are these.
            self.definition = schedules.clean({name: data.get(name) for name in schedules.FIELDS})
        except schedules.ScheduleInvalid as exc:
            for name, problems in exc.errors.items():
                self.add_error(name if name in self.fields else None, problems)
        return data


@admin.register(Schedule)
class ScheduleAdmin(RefuseUnstorableQueryMixin, admin.ModelAdmin):
    form = ScheduleForm
    list_display = ("name", "when", "timezone", "type", "enabled", "next_fire_at", "last_fire_at", "source")
    list_filter = ("enabled", "source")
    search_fields = ("name", "type")
    readonly_fields = ("next_fire_at", "last_fire_at", "last_job_id", "paused_reason", "source", "declaration",
                       "edited_at", "recent_ticks")
    actions = ("pause_schedules", "resume_schedules", "run_schedules_now")

    def save_model(self, request, obj, form, change):
        # Through the queue's services: they set the next tick and mark a declared schedule as edited.
        if change:
            saved = queue.update_schedule(obj.pk, form.definition)
        else:
            saved = queue.create_schedule(form.definition)
        obj.pk = saved.pk

    def delete_model(self, request, obj):
        queue.delete_schedule(obj.pk)

    @admin.display(description="last ticks")
    def recent_ticks(self, obj):
        if not obj.pk:
            return "—"
        ticks = selectors.schedule_ticks([obj.pk], per_schedule=10)[obj.pk]
        if not ticks:
            return "No ticks yet."
        rows = format_html_join(
            "", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((date_format(timezone.localtime(t.tick_at), "Y-m-d H:i:s"), t.outcome,
              f"#{t.job_id} ({t.job_status})" if t.job_id else "—", t.detail) for t in ticks),
        )
        return format_html("<table><tr><th>tick</th><th>outcome</th><th>job</th><th>detail</th></tr>{}</table>", rows)

    @admin.action(description="Pause selected schedules", permissions=["change"])
    def pause_schedules(self, request, queryset):
        for pk in queryset.values_list("pk", flat=True):
            queue.pause_schedule(pk)
        self.message_user(request, "Paused the selected schedules.", messages.SUCCESS)

    @admin.action(description="Resume selected schedules", permissions=["change"])
    def resume_schedules(self, request, queryset):
        for schedule in queryset:
            try:
                queue.resume_schedule(schedule.pk)
            except schedules.ScheduleInvalid as exc:
                self.message_user(request, f"{schedule.name} stays paused: {exc}", messages.ERROR)
        self.message_user(request, "Resumed the selected schedules that could be.", messages.SUCCESS)

    @admin.action(description="Run selected schedules now", permissions=["change"])
    def run_schedules_now(self, request, queryset):
        for schedule in queryset:
            try:
                job_id = queue.run_schedule_now(schedule.pk)
            except schedules.ScheduleInvalid as exc:
                self.message_user(request, f"{schedule.name}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"{schedule.name}: enqueued job {job_id}.", messages.SUCCESS)
