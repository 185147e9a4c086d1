import sys

from django.core.management.base import BaseCommand, CommandError

from jobs.supervisor import child_command, supervise
from jobs.worker import RESTART, Worker, restart_process


def positive(kind):
    def parse(value):
        number = kind(value)
        if number <= 0:
            raise ValueError(value)
        return number

    parse.__name__ = f"positive {kind.__name__}"
    return parse


class Command(BaseCommand):
    help = "Run Skipjack workers: claim jobs from the PostgreSQL queue with SKIP LOCKED and run them."

    def add_arguments(self, parser):
        parser.add_argument("--queues", default="", help="Comma-separated queues to serve (default: all).")
        parser.add_argument("--concurrency", type=positive(int), default=10, help="Handler threads per process.")
        parser.add_argument("--processes", type=positive(int), default=1, help="Worker processes to run.")
        parser.add_argument("--prefetch", type=int, default=None, help="Jobs claimed ahead of free slots (default: concurrency).")
        parser.add_argument("--burst", action="store_true", help="Drain the queue, then exit.")
        parser.add_argument("--shutdown-timeout", type=float, default=30.0, help="Seconds running jobs get to finish on SIGTERM.")
        parser.add_argument("--poll-interval", type=positive(float), default=None, help="Seconds between polls when idle.")
        parser.add_argument("--lease", type=positive(float), default=None, help="Seconds a running job's lease lasts.")

    def handle(self, *args, **options):
        if options["prefetch"] is not None and options["prefetch"] < 0:
            raise CommandError("--prefetch must be 0 or more")
        if options["processes"] > 1:
            code = supervise(child_command(sys.argv), options["processes"], burst=options["burst"])
        else:
            code = Worker(
                queues=[q.strip() for q in options["queues"].split(",") if q.strip()],
                concurrency=options["concurrency"],
                prefetch=options["prefetch"],
                burst=options["burst"],
                shutdown_timeout=options["shutdown_timeout"],
                poll_interval=options["poll_interval"],
                lease_seconds=options["lease"],
            ).run()
        if code == RESTART:
            restart_process()
        if code:
            sys.exit(code)
