import socket

from django.core.management.base import BaseCommand, CommandError

from jobs.selectors import live_workers


class Command(BaseCommand):
    help = (
        "Exit 0 if a worker on this host has a fresh heartbeat in the database, 1 otherwise. "
        "Used as the worker container's health check."
    )

    def add_arguments(self, parser):
        parser.add_argument("--hostname", default=socket.gethostname(), help="Host to look for (default: this one).")

    def handle(self, *args, **options):
        workers = live_workers().filter(hostname=options["hostname"])
        if not workers.exists():
            raise CommandError(f"No live worker on {options['hostname']}.")
        self.stdout.write(f"{workers.count()} live worker(s) on {options['hostname']}.")
