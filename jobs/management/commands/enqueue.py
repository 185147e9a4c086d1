import json

from django.core.management.base import BaseCommand, CommandError

from jobs import queue
from jobs.errors import PayloadError, UnknownJobType
from jobs.models import JobStatus


def parse_payload(text: str):
    """Return PAYLOAD as JSON; a bare word such as `hello` is taken as a JSON string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if text.lstrip()[:1] in ("{", "[", '"'):  # meant as JSON, so a typo, not a string
            raise CommandError(f"PAYLOAD is not valid JSON: {exc}.") from exc
        return text


class Command(BaseCommand):
    help = "Enqueue one job: TYPE and a JSON PAYLOAD (a bare word is taken as a string)."

    def add_arguments(self, parser):
        parser.add_argument("type", help="Job type, e.g. reverse_string.")
        parser.add_argument(
            "payload", nargs="?", default="{}", help='JSON payload, e.g. \'{"text": "hi"}\' or hello (default: {}).'
        )
        parser.add_argument("--priority", default="normal", help="high, normal or low (default: normal).")
        parser.add_argument("--delay", type=float, help="Seconds to wait before the job may run.")
        parser.add_argument("--queue", help="Queue to put it on (default: JOBS_DEFAULT_QUEUE).")
        parser.add_argument("--max-retries", type=int, help="Retries after the first attempt (default: the type's).")
        parser.add_argument("--timeout", type=float, help="Seconds one attempt may run.")
        parser.add_argument("--ttl", type=float, help="Seconds the job may wait to start before it expires.")
        parser.add_argument("--unique-key", help="Return the unfinished job with this key instead of adding another.")

    def handle(self, *args, **options):
        try:
            job = queue.enqueue(
                options["type"], parse_payload(options["payload"]), priority=options["priority"],
                delay=options["delay"], queue=options["queue"], max_retries=options["max_retries"],
                timeout=options["timeout"], ttl=options["ttl"], unique_key=options["unique_key"],
            )
        except UnknownJobType as exc:
            raise CommandError(str(exc)) from exc
        except PayloadError as exc:
            raise CommandError(f"Invalid payload for {options['type']}: {exc}") from exc
        except ValueError as exc:  # a bad option, such as an unknown priority
            raise CommandError(str(exc)) from exc
        verb = "Already enqueued (same unique key)" if job.deduplicated else "Enqueued"
        when = f", runs at {job.run_at.isoformat(timespec='seconds')}" if job.status == JobStatus.SCHEDULED else ""
        self.stdout.write(f"{verb}: job {job.pk} ({job.type}) on queue {job.queue}, status {job.status}{when}.")
