import os
from importlib.util import find_spec

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Run the whole system: migrate, ensure an admin login, then the web server and the workers until Ctrl-C."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--worker-processes", type=int, default=1)
        parser.add_argument("--concurrency", type=int, default=10)
        parser.add_argument("--access-log", action="store_true",
                            help="Log every HTTP request and WebSocket (by default only warnings and errors).")

    def handle(self, *args, **options):
        if find_spec("queueproject") is None:
            raise CommandError("serve runs Skipjack's own project, from its checkout (python3 dev.py run); "
                               "in your project, run your web server and manage.py runworker.")
        from jobs.stack import port_in_use, run_stack

        host, port = options["host"], options["port"]
        if port_in_use(host, port):
            raise CommandError(f"Port {port} on {host} is in use. Choose another with --port, e.g. --port {port + 1}.")
        raise SystemExit(
            run_stack(
                host=host, port=port, processes=options["worker_processes"], concurrency=options["concurrency"],
                access_log=options["access_log"], stdout=self.stdout, stderr=self.stderr,
            )
        )
