import json

from django.core.management.base import BaseCommand
from django.core.serializers.json import DjangoJSONEncoder

from jobs.models import JobStatus
from jobs.selectors import queue_overview


def format_overview(overview: dict) -> str:
    """Return the overview as a table of queues by status, then one line per live worker."""
    header = ["queue", *JobStatus.values, "total"]
    rows = [[name, *counts.values(), sum(counts.values())] for name, counts in overview["queues"].items()]
    rows.append(["all", *overview["statuses"].values(), overview["total"]])
    table = [header, *([str(cell) for cell in row] for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [
        "  ".join([row[0].ljust(widths[0]), *(cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True))])
        for row in table
    ]
    workers = overview["workers"]
    lines += ["", f"Live workers: {len(workers)}"]
    lines += [
        f"  {w['hostname']}:{w['pid']}  queues {', '.join(w['queues']) or 'all'}  busy {w['busy']}/{w['concurrency']}"
        f"  running {w['running']}  claimed {w['claimed']}"
        f"  processed {w['processed']}  failed {w['failed']}  heartbeat {w['heartbeat_age_seconds']:.0f}s ago"
        for w in workers
    ]
    return "\n".join(lines)


class Command(BaseCommand):
    help = "Show how many jobs are in each status, per queue, and which workers are alive."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")

    def handle(self, *args, **options):
        overview = queue_overview()
        if options["json"]:
            self.stdout.write(json.dumps(overview, cls=DjangoJSONEncoder, indent=2))
        else:
            self.stdout.write(format_overview(overview))
