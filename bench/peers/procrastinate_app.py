"""Procrastinate's side of the benchmark (runs in bench/.venvs/procrastinate).

    procrastinate --app=procrastinate_app.app worker ...   a worker
    python procrastinate_app.py enqueue|offer ...           the enqueue side (see driver.py)
"""

import os

from driver import main
from probe import probe
from procrastinate import App, PsycopgConnector

app = App(connector=PsycopgConnector(conninfo=os.environ["BENCH_DSN"]))


@app.task(name="bench_noop")
async def bench_noop(t=None):
    probe.hit(t)


async def setup():
    await app.open_async()


async def teardown():
    await app.close_async()


async def enqueue_one(payload):
    await bench_noop.defer_async(**payload)


async def enqueue_batch(payloads):
    await bench_noop.batch_defer_async(*payloads)


if __name__ == "__main__":
    main(enqueue_one, enqueue_batch, setup=setup, teardown=teardown)
