import os

from django.core.management.base import BaseCommand

from jobs.stack import run_stack


class Command(BaseCommand):
    help = "Run the whole system: migrate, ensure an admin login, then the web server and the workers until Ctrl-C."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--worker-processes", type=int, default=1)
        parser.add_argument("--concurrency", type=int, default=10)

    def handle(self, *args, **options):
        raise SystemExit(
            run_stack(
                host=options["host"], port=options["port"], processes=options["worker_processes"],
                concurrency=options["concurrency"], stdout=self.stdout,
            )
        )
