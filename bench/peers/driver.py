"""The enqueue side of every system, driven the same way.

Each system's app module (skipjack_app, pgqueuer_app, ...) defines two
coroutines, `enqueue_one(payload)` and `enqueue_batch(payloads)`, and calls
`main()`. This module turns them into the two commands the harness runs,
each printing one line of JSON:

    enqueue --count N --batch B
        Enqueue N no-op jobs as fast as one client can: one call per job
        when B is 1, else one call per batch of B jobs.
    offer --rate R --duration D [--latency] [--tick T]
        Offer R jobs/s for D seconds on a fixed schedule. With --latency,
        one call per job, each carrying its enqueue time as {"t": time.time()}.
        Without, one batch every T seconds.

Payloads are dicts; an app converts them to whatever its system stores.
"""

import argparse
import asyncio
import json
import sys
import time


async def _enqueue(args, enqueue_one, enqueue_batch) -> dict:
    started = time.perf_counter()
    if args.batch <= 1:
        for _ in range(args.count):
            await enqueue_one({})
    else:
        left = args.count
        while left > 0:
            size = min(args.batch, left)
            await enqueue_batch([{}] * size)
            left -= size
    return {"count": args.count, "seconds": time.perf_counter() - started}


async def _offer(args, enqueue_one, enqueue_batch) -> dict:
    offered = 0
    behind = 0.0
    started = time.perf_counter()
    end = started + args.duration
    if args.latency:
        interval = 1.0 / args.rate
        due = started
        while due < end:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                behind = max(behind, -delay)
            await enqueue_one({"t": time.time()})
            offered += 1
            due += interval
    else:
        due = started
        owed = 0.0
        while due < end:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                behind = max(behind, -delay)
            owed += args.rate * args.tick
            size = int(owed)
            owed -= size
            if size:
                await enqueue_batch([{}] * size)
                offered += size
            due += args.tick
    return {"offered": offered, "seconds": time.perf_counter() - started, "max_behind_seconds": behind}


def main(enqueue_one, enqueue_batch, *, setup=None, teardown=None) -> None:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    enqueue = commands.add_parser("enqueue")
    enqueue.add_argument("--count", type=int, required=True)
    enqueue.add_argument("--batch", type=int, default=1)
    offer = commands.add_parser("offer")
    offer.add_argument("--rate", type=float, required=True)
    offer.add_argument("--duration", type=float, required=True)
    offer.add_argument("--latency", action="store_true")
    offer.add_argument("--tick", type=float, default=0.1)
    args = parser.parse_args()

    async def run():
        if setup is not None:
            await setup()
        try:
            if args.command == "enqueue":
                return await _enqueue(args, enqueue_one, enqueue_batch)
            return await _offer(args, enqueue_one, enqueue_batch)
        finally:
            if teardown is not None:
                await teardown()

    result = asyncio.run(run())
    sys.stdout.write(json.dumps(result) + "\n")


def main_for_task(task) -> None:
    """main() for a Django task, enqueued as application code would through the Tasks API.

    One `.enqueue()` a call, outside any transaction (each call commits on
    its own). The Tasks API has no batch enqueue, so a "batch" is that many
    calls inside one transaction. Called after django.setup().
    """
    from django.db import transaction

    async def enqueue_one(payload):
        task.enqueue(**payload)

    async def enqueue_batch(payloads):
        with transaction.atomic():
            for payload in payloads:
                task.enqueue(**payload)

    main(enqueue_one, enqueue_batch)
