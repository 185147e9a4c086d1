"""Celery's side of the benchmark (runs in bench/.venvs/celery), Redis as the broker.

    celery -A celery_app worker ...             a worker
    python celery_app.py enqueue|offer ...      the enqueue side (see driver.py)

Results are disabled. Celery has no batch publish: a "batch" is one
apply_async per job over one producer connection.
"""

import os

from celery import Celery
from driver import main
from probe import probe

app = Celery("bench", broker=os.environ["BENCH_REDIS_URL"])
app.conf.update(
    task_ignore_result=True,
    result_backend=None,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench_noop")
def bench_noop(t=None):
    probe.hit(t)


_state = {}


async def setup():
    _state["producer_cm"] = app.producer_or_acquire()
    _state["producer"] = _state["producer_cm"].__enter__()


async def teardown():
    _state["producer_cm"].__exit__(None, None, None)


async def enqueue_one(payload):
    bench_noop.apply_async(kwargs=payload, producer=_state["producer"])


async def enqueue_batch(payloads):
    producer = _state["producer"]
    for payload in payloads:
        bench_noop.apply_async(kwargs=payload, producer=producer)


if __name__ == "__main__":
    main(enqueue_one, enqueue_batch, setup=setup, teardown=teardown)
