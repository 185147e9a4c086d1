import json

from django.core.management.base import BaseCommand, CommandError

from jobs import queue, schedules
from jobs.durations import parse_duration
from jobs.models import Schedule


def parse_json(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"--payload is not valid JSON: {exc}.") from exc


def parse_every(text: str) -> int:
    """Return the seconds of an interval given as 90, 90s, 15m or 2h."""
    try:
        seconds = float(text) if text.replace(".", "", 1).isdigit() else parse_duration(text).total_seconds()
    except ValueError as exc:
        raise CommandError(f"--every: {exc}") from exc
    if not seconds.is_integer() or seconds < 1:
        raise CommandError("--every must be a whole number of seconds, 1 or more.")
    return int(seconds)


def named(name: str) -> Schedule:
    try:
        return Schedule.objects.get(name=name)
    except Schedule.DoesNotExist:
        raise CommandError(f"No schedule named {name!r}; `manage.py schedules list` shows them.") from None


def describe(schedule: Schedule) -> str:
    zone = schedules.zone(schedule.timezone)
    when = schedule.next_fire_at.astimezone(zone).isoformat(timespec="seconds") if schedule.next_fire_at else "never"
    state = "enabled" if schedule.enabled else f"paused{': ' + schedule.paused_reason if schedule.paused_reason else ''}"
    return (f"{schedule.name}  {schedule.when} ({schedule.timezone})  {schedule.type}  {state}  next {when}  "
            f"[{schedule.source}{', edited' if schedule.edited_at else ''}]")


class Command(BaseCommand):
    help = "List, add, pause, resume, run now or remove schedules: jobs enqueued by cron expression or interval."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        actions.add_parser("list", help="Every schedule, with its next tick in its zone.")
        add = actions.add_parser("add", help="Add a schedule.")
        add.add_argument("name")
        add.add_argument("type", help="The job type each tick enqueues.")
        add.add_argument("--cron", help='A cron expression: 5 fields, or 6 with seconds first ("*/5 * * * *").')
        add.add_argument("--every", help="An interval instead: 90, 90s, 15m, 2h.")
        add.add_argument("--timezone", default="UTC", help="The IANA zone of the cron expression (default UTC).")
        add.add_argument("--payload", default="{}", help="The job's JSON payload (default {}).")
        add.add_argument("--queue", default="")
        add.add_argument("--priority", default="normal", help="high, normal or low.")
        add.add_argument("--max-retries", type=int)
        add.add_argument("--timeout", type=float)
        add.add_argument("--ttl", type=float)
        add.add_argument("--misfire", default="once", help="skip, once or catch_up (default once).")
        add.add_argument("--catch-up-limit", type=int, default=10)
        add.add_argument("--overlap", default="allow", help="allow, skip or replace (default allow).")
        add.add_argument("--jitter", type=float, default=0.0, help="Seconds each job may start after its tick.")
        add.add_argument("--paused", action="store_true", help="Add it paused.")
        for action in ("pause", "resume", "run", "remove"):
            actions.add_parser(action, help=f"{action.capitalize()} a schedule by name.").add_argument("name")

    def handle(self, *args, action, **options):
        try:
            getattr(self, f"do_{action}")(**options)
        except queue.ScheduleInvalid as exc:
            raise CommandError(str(exc)) from exc

    def do_list(self, **options):
        rows = list(Schedule.objects.all())
        for schedule in rows:
            self.stdout.write(describe(schedule))
        if not rows:
            self.stdout.write("No schedules.")

    def do_add(self, *, name, type, cron, every, payload, paused, jitter, catch_up_limit, **options):
        data = {
            "name": name, "type": type, "cron": cron or "", "interval_seconds": parse_every(every) if every else None,
            "payload": parse_json(payload), "enabled": not paused, "jitter_seconds": jitter,
            "catch_up_limit": catch_up_limit,
            **{key: options[key] for key in ("timezone", "queue", "priority", "max_retries", "timeout", "ttl",
                                              "misfire", "overlap")},
        }
        self.stdout.write(f"Added {describe(queue.create_schedule(data))}")

    def do_pause(self, *, name, **options):
        self.stdout.write(f"Paused {describe(queue.pause_schedule(named(name).pk))}")

    def do_resume(self, *, name, **options):
        self.stdout.write(f"Resumed {describe(queue.resume_schedule(named(name).pk))}")

    def do_run(self, *, name, **options):
        job_id = queue.run_schedule_now(named(name).pk)
        self.stdout.write(f"Enqueued job {job_id} for {name}." if job_id else f"{name} fired this very moment already.")

    def do_remove(self, *, name, **options):
        queue.delete_schedule(named(name).pk)
        self.stdout.write(f"Removed {name} and its tick history.")
