from django.core.management.base import BaseCommand, CommandError

from jobs import queue
from jobs.durations import parse_duration

# Longer selections are listed by their first ids only.
SHOWN_IDS = 50


def parse_ids(values: list[str]) -> list[int]:
    """Return the job ids in repeated and/or comma-separated --id values."""
    parts = [part.strip() for value in values for part in value.split(",") if part.strip()]
    if not all(part.isascii() and part.isdigit() and int(part) < 2**63 for part in parts):  # ids are bigints
        raise CommandError(f"--id takes job ids (whole numbers), got {', '.join(values)!r}.")
    return [int(part) for part in parts]


def parse_selection(*, ids, type, queue, older_than, all, **options) -> dict:
    """Return the dead_jobs() filters the selector options ask for.

    Refuse a selection with no selector, so that a forgotten flag cannot
    requeue the whole DLQ: that takes --all, on its own.
    """
    if bool(ids or type or queue or older_than) == all:
        raise CommandError(
            "Choose jobs with --id, --type, --queue or --older-than, or pass --all alone for every dead job."
        )
    try:
        age = parse_duration(older_than) if older_than else None
    except ValueError as exc:
        raise CommandError(f"--older-than: {exc}") from exc
    return {"ids": parse_ids(ids) if ids else None, "type": type, "queue": queue, "older_than": age}


def describe(ids: list[int]) -> str:
    """Return "3 dead jobs: 4, 5, 9", shortening a long list of ids."""
    shown = ", ".join(map(str, ids[:SHOWN_IDS]))
    if len(ids) > SHOWN_IDS:
        shown += f" and {len(ids) - SHOWN_IDS} more"
    return f"{len(ids)} dead job{'' if len(ids) == 1 else 's'}" + (f": {shown}" if ids else "")


class Command(BaseCommand):
    help = "Requeue dead jobs (the DLQ) chosen by id, type, queue or age, or all of them with --all."

    def add_arguments(self, parser):
        parser.add_argument("--id", dest="ids", action="append", default=[], help="Job id; repeat or comma-separate.")
        parser.add_argument("--type", help="Only dead jobs of this type.")
        parser.add_argument("--queue", help="Only dead jobs in this queue.")
        parser.add_argument("--older-than", help="Only jobs that died longer ago than this: 30s, 15m, 2h, 7d.")
        parser.add_argument("--all", action="store_true", help="Every dead job; required when no selector is given.")
        parser.add_argument("--limit", type=int, help="Requeue at most this many, lowest ids first.")
        parser.add_argument("--dry-run", action="store_true", help="Show what would be requeued and change nothing.")

    def handle(self, *args, limit, dry_run, **options):
        if limit is not None and limit < 1:
            raise CommandError("--limit must be 1 or more.")
        dead = queue.dead_jobs(**parse_selection(**options))
        if dry_run:  # the same choice requeue_dead makes: lowest ids first
            chosen = list(dead.order_by("pk").values_list("pk", flat=True)[:limit])
            self.stdout.write(f"Would requeue {describe(chosen)} (dry run: nothing changed).")
        else:
            self.stdout.write(f"Requeued {describe(queue.requeue_dead(dead, limit=limit))}.")
