"""`manage.py queues`: list queues, pause and resume them, and set their limits and their keys' limits.

    manage.py queues list
    manage.py queues pause emails [reports ...]
    manage.py queues resume emails
    manage.py queues set emails --rate 100/m --concurrency 10
    manage.py queues set api --key-concurrency 2 --key-rate 5/s
    manage.py queues key api tenant:42 --concurrency 5        (or --remove)
    manage.py queues reset emails                             (JOBS_QUEUES again; or --all)
    manage.py queues why 1234                                 (why job 1234 waits)

Every change is all or nothing and reaches every worker within a second.
"""

from django.core.management.base import BaseCommand, CommandError

from jobs import flow, queue, selectors
from jobs.models import Job, KeyLimit
from jobs.waiting import reason_for

NONE = ("none", "off", "")


def limit_option(value: str | None, option: str) -> dict:
    """Return {} for an option not given, else the checked limit (None for "none")."""
    if value is None:
        return {}
    try:
        return {"value": None if value.lower() in NONE else flow.check_limit(value, option)}
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def rate_option(value: str | None, option: str, prefix: str = "") -> dict:
    """Return the fields a --rate option sets: {} if not given, the limit and period, or no limit for "none"."""
    if value is None:
        return {}
    if value.lower() in NONE:
        return {f"{prefix}rate_limit": None}
    try:
        rate = flow.parse_rate(value)
    except ValueError as exc:
        raise CommandError(f"{option}: {exc}") from None
    if rate is None:
        return {f"{prefix}rate_limit": None}
    return {f"{prefix}rate_limit": rate[0], f"{prefix}rate_period": rate[1]}


def describe_limits(concurrency, rate_limit, rate_period, what="") -> str:
    parts = []
    if concurrency is not None:
        parts.append(f"{what}concurrency {concurrency}")
    if rate_limit is not None:
        parts.append(f"{what}rate {flow.format_rate(rate_limit, rate_period)}")
    return ", ".join(parts)


class Command(BaseCommand):
    help = "List queues, pause and resume them, and set their limits (flow control)."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        actions.add_parser("list", help="Each queue with its state, limits and job counts.")
        for name, text in (("pause", "Stop claiming the queues' jobs; running ones finish."),
                           ("resume", "Claim the queues' jobs again.")):
            action = actions.add_parser(name, help=text)
            action.add_argument("names", nargs="+", metavar="QUEUE")
            action.add_argument("--create", action="store_true", help="Also a queue nothing knows of yet.")
        limits = actions.add_parser("set", help="Set a queue's limits; 'none' removes one.")
        limits.add_argument("name", metavar="QUEUE")
        limits.add_argument("--concurrency", help="At most N of its jobs held at once, across all workers.")
        limits.add_argument("--rate", help="At most N starts per period: 100/m, 5/s, 10/30s, 1000/h.")
        limits.add_argument("--key-concurrency", help="The default limit of each concurrency key.")
        limits.add_argument("--key-rate", help="At most N starts per key per period.")
        limits.add_argument("--create", action="store_true", help="Also a queue nothing knows of yet.")
        key = actions.add_parser("key", help="Set or remove one concurrency key's own limits.")
        key.add_argument("name", metavar="QUEUE")
        key.add_argument("key", metavar="KEY")
        key.add_argument("--concurrency", help="At most N jobs with this key held at once.")
        key.add_argument("--rate", help="At most N starts of jobs with this key per period.")
        key.add_argument("--remove", action="store_true", help="Drop the key's own limits.")
        reset = actions.add_parser("reset", help="Apply JOBS_QUEUES to the queues again, undoing run-time changes.")
        reset.add_argument("names", nargs="*", metavar="QUEUE")
        reset.add_argument("--all", action="store_true", help="Every queue JOBS_QUEUES configures.")
        why = actions.add_parser("why", help="Say why a job waits.")
        why.add_argument("job_id", type=int, metavar="JOB_ID")

    def handle(self, *args, action, **options):
        if action in ("pause", "resume"):
            self.handle_pause(paused=action == "pause", **options)
        else:
            getattr(self, f"handle_{action}")(**options)

    def known(self, names: list[str], create: bool = False) -> None:
        for name in names:
            try:
                flow.check_queue_name(name)
            except ValueError as exc:
                raise CommandError(str(exc)) from None
        unknown = sorted(set(names) - selectors.known_queues())
        if unknown and not create:
            raise CommandError(f"No queue {unknown[0]!r} is configured, controlled, served or has ever had a job "
                               f"(pass --create to control it anyway).")

    def handle_list(self, **options):
        rows = selectors.queue_list()
        self.stdout.write(f"{'QUEUE':<24} {'STATE':<8} {'WAITING':>8} {'RUNNING':>8}  LIMITS")
        for row in rows:
            control = row["control"]
            counts = row["counts"]
            waiting = counts["queued"] + counts["scheduled"] + counts["retrying"]
            limits = ""
            if control is not None:
                limits = "; ".join(part for part in (
                    describe_limits(control.concurrency, control.rate_limit, control.rate_period),
                    describe_limits(control.key_concurrency, control.key_rate_limit, control.key_rate_period,
                                    "per key: "),
                    f"{row['key_limits']} keys with their own" if row["key_limits"] else "",
                ) if part)
            state = "paused" if control is not None and control.paused else "active"
            self.stdout.write(f"{row['name']:<24} {state:<8} {waiting:>8} "
                              f"{counts['running'] + counts['claimed']:>8}  {limits or '-'}")

    def handle_pause(self, *, paused: bool, names, create, **options):
        """Pause (or resume) the named queues, each in its own transaction, all names checked first."""
        self.known(names, create)
        for name in names:
            (queue.pause_queue if paused else queue.resume_queue)(name)
        self.stdout.write(f"Paused {', '.join(names)}: workers claim none of their jobs from now on." if paused
                          else f"Resumed {', '.join(names)}.")

    def handle_set(self, *, name, concurrency, rate, key_concurrency, key_rate, create, **options):
        self.known([name], create)
        changes = {}
        if (given := limit_option(concurrency, "--concurrency")):
            changes["concurrency"] = given["value"]
        if (given := limit_option(key_concurrency, "--key-concurrency")):
            changes["key_concurrency"] = given["value"]
        changes.update(rate_option(rate, "--rate"), **rate_option(key_rate, "--key-rate", "key_"))
        if not changes:
            raise CommandError("Give at least one of --concurrency, --rate, --key-concurrency, --key-rate.")
        try:
            control = queue.set_queue_controls(name, **changes)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        limits = "; ".join(part for part in (
            describe_limits(control.concurrency, control.rate_limit, control.rate_period),
            describe_limits(control.key_concurrency, control.key_rate_limit, control.key_rate_period, "per key: "),
        ) if part)
        self.stdout.write(f"Queue {name}: {limits or 'no limits'}.")

    def handle_key(self, *, name, key, concurrency, rate, remove, **options):
        self.known([name])
        try:
            flow.check_key(key)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if remove:
            if concurrency is not None or rate is not None:
                raise CommandError("--remove takes no limits.")
            if not queue.remove_key_limit(name, key):
                raise CommandError(f"Key {key} of queue {name} has no limits of its own.")
            self.stdout.write(f"Key {key} of queue {name}: its type's and queue's limits apply again.")
            return
        changes = {}
        if (given := limit_option(concurrency, "--concurrency")):
            changes["concurrency"] = given["value"]
        changes.update(rate_option(rate, "--rate"))
        if not changes:
            raise CommandError("Give --concurrency or --rate, or --remove.")
        try:
            limit: KeyLimit = queue.set_key_limit(name, key, **changes)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Key {key} of queue {name}: "
                          f"{describe_limits(limit.concurrency, limit.rate_limit, limit.rate_period) or 'no limits'}.")

    def handle_reset(self, *, names, all, **options):
        if bool(names) == all:
            raise CommandError("Name the queues to reset, or pass --all alone.")
        try:
            written = queue.apply_queue_settings(names=None if all else names, overwrite=True)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Applied JOBS_QUEUES to {', '.join(written) or 'no queue'}.")

    def handle_why(self, *, job_id, **options):
        job = Job.objects.filter(pk=job_id).first()
        if job is None:
            raise CommandError(f"No job {job_id}.")
        reason = reason_for(job)
        self.stdout.write(f"Job {job_id} is {job.status}." if reason is None else
                          f"Job {job_id} waits: {reason.message}")
