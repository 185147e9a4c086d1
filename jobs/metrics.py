"""Prometheus metrics at /metrics: the web process's own, its database's, and the queue's.

django-prometheus measures requests and database queries of the process
that serves the scrape. The queue's figures are different: jobs are
enqueued by every web process and run by every worker process, so they are
read from PostgreSQL when Prometheus scrapes, by QueueCollector. They are
therefore right with any number of workers, a worker serves no endpoint of
its own, and every web process reports the same values.

    gauges      skipjack_jobs{queue,status}                  jobs in each status
                skipjack_queue_oldest_waiting_seconds{queue} age of the oldest due, unclaimed job
                skipjack_dlq_jobs{queue}                     jobs in the dead-letter queue
                skipjack_workers_alive, skipjack_worker_slots, skipjack_worker_slots_busy
    counters    skipjack_jobs_{enqueued,completed,failed,retried,dead}_total{type,queue}
                skipjack_rate_limit_rejections_total{kind}
                skipjack_schedule_ticks_total{schedule,outcome}  enqueued, skipped, missed, paused
    histograms  skipjack_job_queue_wait_seconds{type}, skipjack_job_run_seconds{type}
                skipjack_schedule_lag_seconds                tick time to its job's enqueue

The job counters and histograms are kept in the database by jobs.counters;
rate-limit rejections are counted in Redis, which every web process already
asks on each throttled request, so a flood of refused requests costs the
database nothing.

The job gauges (skipjack_jobs, skipjack_queue_oldest_waiting_seconds,
skipjack_dlq_jobs) read the jobs table. They are kept in the shared cache, so
that every web process serves the same copy, and a copy older than
METRICS_CACHE_SECONDS is read again by one process, in a thread of its own:
no scrape waits for the jobs table, nor keeps a web process's request thread
from other users' requests, but the first one with no copy at all. The
counters, histograms and worker gauges read small tables and stay exact at
every scrape.

Only scrapers are answered: a request with METRICS_TOKEN as its bearer
token, or from an address in METRICS_ALLOW_IPS.
"""

import functools
import ipaddress
import logging
import os
import threading
import time
from collections import defaultdict

import psycopg
import redis
from django.conf import settings
from django.core.cache import cache
from django.db import Error as DatabaseError, connection, transaction
from django.http import HttpResponse
from django.utils.crypto import constant_time_compare
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import REGISTRY, CollectorRegistry, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from jobs import counters, health, selectors
from jobs.models import JobStatus

logger = logging.getLogger("jobs.metrics")

RATE_LIMIT_KEY = "skipjack:metrics:rate_limit_rejections"
# Longest a scrape may spend in the database before it gives up on the queue's figures.
SCRAPE_STATEMENT_TIMEOUT_MS = 5000
# The cached job gauges, and the mark of the process that reads them again.
JOB_GAUGES_KEY = "metrics:job-gauges"
JOB_GAUGES_REFRESH_KEY = "metrics:job-gauges:refresh"
# A copy is kept this long (or twice METRICS_CACHE_SECONDS) after it was
# stored, served however stale while the process that refreshes it waits for
# the database.
JOB_GAUGES_KEPT_SECONDS = 60
# Time a refresh may take (two statements) before another process may start one.
JOB_GAUGES_REFRESH_SECONDS = 2 * SCRAPE_STATEMENT_TIMEOUT_MS / 1000 + 5

_redis_client: redis.Redis | None = None
_registered = False
_register_lock = threading.Lock()


def _redis() -> redis.Redis | None:
    """Return the client of the Redis at REDIS_URL, or None in a project that sets no REDIS_URL."""
    global _redis_client
    url = getattr(settings, "REDIS_URL", None)
    if not url:
        return None
    if _redis_client is None:
        # Short timeouts: a metric must never hold up the request it counts.
        _redis_client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    return _redis_client


def count_rate_limit_rejection(kind: str) -> None:
    """Count one request refused by a rate limit; `kind` names the limit ("login", "submit", ...).

    The count is shared by every web process, in the Redis at REDIS_URL (a
    project without one has no such counter). Use a fixed set of kinds, not
    anything taken from the request: each kind is a time series. Never
    raises: a Redis outage loses the count, not the response.
    """
    client = _redis()
    if client is None:
        return
    try:
        client.hincrby(RATE_LIMIT_KEY, kind, 1)
    except redis.RedisError as exc:
        logger.debug("could not count a rate-limit rejection: %s", exc)


class QueueCollector(Collector):
    """The queue's gauges, counters and histograms, read from the database at each scrape.

    The job gauges come through job_gauges, their shared cached copy.

    If the database cannot be read, the scrape still succeeds, without the
    queue's figures and with skipjack_queue_metrics_up at 0, so the web
    process's own metrics stay visible during an outage. After a failure,
    the next scrape first tries a direct connection with a short timeout
    rather than wait for the pool's.
    """

    def __init__(self):
        self._database_failed = False

    def describe(self):
        # Nothing to declare up front: registering must not query the database.
        return []

    def collect(self):
        started = time.monotonic()
        try:
            if self._database_failed:
                health.check_database()
            families = self._from_database()
            self._database_failed = False
        except (DatabaseError, psycopg.Error) as exc:
            self._database_failed = True
            logger.warning("cannot read the queue's metrics: %s", exc, extra={"event": "metrics_error"})
            families = []
        yield from families
        yield from self._rate_limit_rejections()
        yield GaugeMetricFamily(
            "skipjack_queue_metrics_up", "1 if this scrape could read the queue's figures from the database.",
            value=1 if families else 0,
        )
        yield GaugeMetricFamily(
            "skipjack_queue_metrics_scrape_seconds", "Seconds this scrape spent reading the queue's figures.",
            value=time.monotonic() - started,
        )

    def _from_database(self) -> list:
        with transaction.atomic():
            _bound_statements()
            gauges = job_gauges.get()
            workers = selectors.worker_capacity()
            totals = counters.totals()
            schedule_families = self._schedule_metrics(totals)
        return [
            *self._gauges(gauges.by_queue, gauges.oldest, workers),
            GaugeMetricFamily(
                "skipjack_queue_gauges_age_seconds",
                "Seconds since skipjack_jobs, skipjack_queue_oldest_waiting_seconds and skipjack_dlq_jobs were read.",
                value=max(0.0, time.time() - gauges.read_at),
            ),
            *self._counters(totals),
            *self._histograms(totals),
            *schedule_families,
        ]

    def _gauges(self, by_queue: dict, oldest: dict, workers: dict) -> list:
        jobs = GaugeMetricFamily("skipjack_jobs", "Jobs in each status, by queue.", labels=["queue", "status"])
        waiting = GaugeMetricFamily(
            "skipjack_queue_oldest_waiting_seconds",
            "Seconds since the oldest job that is due and not yet claimed became due; 0 when none waits.",
            labels=["queue"],
        )
        dlq = GaugeMetricFamily("skipjack_dlq_jobs", "Jobs in the dead-letter queue, by queue.", labels=["queue"])
        for queue, statuses in by_queue.items():
            for status, count in statuses.items():
                jobs.add_metric([queue, status], count)
            dlq.add_metric([queue], statuses[JobStatus.DEAD])
            waiting.add_metric([queue], oldest.get(queue, 0.0))
        return [
            jobs, waiting, dlq,
            GaugeMetricFamily("skipjack_workers_alive", "Worker processes with a fresh heartbeat.", value=workers["alive"]),
            GaugeMetricFamily("skipjack_worker_slots", "Handler slots of the live workers.", value=workers["slots"]),
            GaugeMetricFamily(
                "skipjack_worker_slots_busy", "Slots running a job at the workers' last heartbeats.", value=workers["busy"]
            ),
        ]

    def _counters(self, totals) -> list:
        families = {
            name: CounterMetricFamily(f"skipjack_jobs_{name}", help, labels=["type", "queue"])
            for name, help in counters.COUNTERS.items()
        }
        for name, type, queue, _le, value in totals:
            if name in families:
                families[name].add_metric([type, queue], value)
        return list(families.values())

    def _histograms(self, totals) -> list:
        families = []
        for histogram, help in counters.HISTOGRAMS.items():
            buckets: dict[str, dict[float, float]] = defaultdict(dict)
            sums: dict[str, float] = defaultdict(float)
            for name, type, _queue, le, value in totals:
                if name == f"{histogram}_bucket":
                    buckets[type][le] = value
                elif name == f"{histogram}_sum":
                    sums[type] = value
            family = HistogramMetricFamily(f"skipjack_job_{histogram}", help, labels=["type"])
            for type, counts in sorted(buckets.items()):
                cumulative, exposed = 0.0, []
                for bound in counters.BUCKETS:
                    cumulative += counts.get(bound, 0.0)
                    exposed.append((floatToGoString(bound), cumulative))
                family.add_metric([type], exposed, sum_value=sums[type])
            families.append(family)
        return families

    def _schedule_metrics(self, totals) -> list:
        """The scheduler's ticks by schedule and outcome, and the lag from each tick to its job's enqueue."""
        ticks = CounterMetricFamily(
            "skipjack_schedule_ticks", "Ticks of each schedule, by outcome: enqueued, skipped (the overlap policy), "
            "missed (the misfire policy) or paused.", labels=["schedule", "outcome"])
        for name, *counts in selectors.schedule_tick_counts():
            for outcome, count in zip(("enqueued", "skipped", "missed", "paused"), counts, strict=True):
                ticks.add_metric([name, outcome], count)
        buckets: dict[float, float] = {}
        total = 0.0
        for name, _type, _queue, le, value in totals:
            if name == "schedule_lag_seconds_bucket":
                buckets[le] = value
            elif name == "schedule_lag_seconds_sum":
                total = value
        lag = HistogramMetricFamily(
            "skipjack_schedule_lag_seconds", "Seconds from a tick's time until its job was enqueued, over all schedules.")
        cumulative, exposed = 0.0, []
        for bound in counters.BUCKETS:
            cumulative += buckets.get(bound, 0.0)
            exposed.append((floatToGoString(bound), cumulative))
        lag.add_metric([], exposed, sum_value=total)
        return [ticks, lag]

    def _rate_limit_rejections(self):
        client = _redis()
        if client is None:
            return
        try:
            counts = client.hgetall(RATE_LIMIT_KEY)
        except redis.RedisError as exc:
            logger.warning("cannot read rate-limit rejections: %s", exc, extra={"event": "metrics_error"})
            return
        family = CounterMetricFamily(
            "skipjack_rate_limit_rejections", "Requests refused by a rate limit, by limit.", labels=["kind"]
        )
        for kind, count in sorted(counts.items()):
            family.add_metric([kind.decode() if isinstance(kind, bytes) else kind], float(count))
        yield family


def _bound_statements() -> None:
    """Give each statement of the current transaction at most SCRAPE_STATEMENT_TIMEOUT_MS."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('statement_timeout', %s, true)", [str(SCRAPE_STATEMENT_TIMEOUT_MS)])


class JobGauges:
    """The figures read from the jobs table at `read_at` (time.time())."""

    def __init__(self, by_queue: dict, oldest: dict, read_at: float):
        self.by_queue = by_queue
        self.oldest = oldest
        self.read_at = read_at

    @classmethod
    def read(cls) -> "JobGauges":
        read_at = time.time()
        by_queue = {queue: {str(status): count for status, count in statuses.items()}
                    for queue, statuses in selectors.status_counts(per="queue").items()}
        return cls(by_queue, selectors.oldest_waiting_by_queue(), read_at)

    def as_cached(self) -> dict:
        # Plain values, which any version of this class reads back.
        return {"by_queue": self.by_queue, "oldest": self.oldest, "read_at": self.read_at}

    @classmethod
    def from_cached(cls, cached: dict) -> "JobGauges":
        return cls(cached["by_queue"], cached["oldest"], cached["read_at"])


class JobGaugeCache:
    """The job gauges, shared by every web process through the cache and refreshed by one of them at a time."""

    def __init__(self):
        # Held while this process refreshes; the cache's mark stands for it across processes.
        self._refreshing = threading.Lock()

    def get(self) -> JobGauges:
        """Return the cached gauges, starting a refresh if they are stale; read them here if there are none.

        Runs inside the scrape's transaction: only a read here waits for the jobs table.
        """
        fresh_for = getattr(settings, "METRICS_CACHE_SECONDS", 5.0)
        if fresh_for <= 0:
            return JobGauges.read()
        try:
            cached = cache.get(JOB_GAUGES_KEY)
        except redis.RedisError as exc:
            logger.warning("cannot read the cached job gauges: %s", exc, extra={"event": "metrics_error"})
            return JobGauges.read()
        if cached is None:
            # The first scrape, or no scrape for a while: nothing to serve but a fresh read.
            gauges = JobGauges.read()
            self._store(gauges, fresh_for)
            return gauges
        gauges = JobGauges.from_cached(cached)
        if time.time() - gauges.read_at >= fresh_for:
            self._refresh_in_background(fresh_for)
        return gauges

    def _store(self, gauges: JobGauges, fresh_for: float) -> None:
        try:
            cache.set(JOB_GAUGES_KEY, gauges.as_cached(), timeout=max(JOB_GAUGES_KEPT_SECONDS, 2 * fresh_for))
        except redis.RedisError as exc:
            logger.warning("cannot cache the job gauges: %s", exc, extra={"event": "metrics_error"})

    def _refresh_in_background(self, fresh_for: float) -> None:
        if not self._refreshing.acquire(blocking=False):
            return  # this process is at it
        try:
            # Another process may be at it too; the mark expires if it died meanwhile.
            started = cache.add(JOB_GAUGES_REFRESH_KEY, os.getpid(), timeout=JOB_GAUGES_REFRESH_SECONDS)
        except redis.RedisError:
            started = False
        if not started:
            self._refreshing.release()
            return
        refresh = threading.Thread(target=self._refresh, args=(fresh_for,), name="skipjack-metrics-refresh", daemon=True)
        refresh.start()

    def _refresh(self, fresh_for: float) -> None:
        try:
            with transaction.atomic():
                _bound_statements()
                gauges = JobGauges.read()
            self._store(gauges, fresh_for)
        except (DatabaseError, psycopg.Error) as exc:
            logger.warning("cannot read the job gauges: %s", exc, extra={"event": "metrics_error"})
        except Exception:  # noqa: BLE001 - a refresh must never take the process down; the next scrape tries again
            logger.exception("refreshing the job gauges failed")
        finally:
            # This thread's connection goes back to the pool; it will not be asked again.
            connection.close()
            try:
                cache.delete(JOB_GAUGES_REFRESH_KEY)
            except redis.RedisError:
                pass  # the mark expires
            self._refreshing.release()


job_gauges = JobGaugeCache()


def registry():
    """Return the registry to expose: the process's own metrics plus the queue's.

    With PROMETHEUS_MULTIPROC_DIR set (several server processes behind one
    port), the process metrics are merged from that directory instead.
    """
    global _registered
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        merged.register(QueueCollector())
        return merged
    with _register_lock:
        if not _registered:
            REGISTRY.register(QueueCollector())
            _registered = True
    return REGISTRY


@functools.lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _address_allowed(address: str, entries: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped  # 127.0.0.1 as a server on :: sees it
    return any(ip in network for network in _networks(entries))


_closed_warned = False


def scrape_refusal(request) -> HttpResponse | None:
    """Return the response that refuses this scrape, or None if it may read the metrics.

    It may if it carries METRICS_TOKEN as a bearer token, or if it comes from
    an address in METRICS_ALLOW_IPS (the client address uvicorn reports:
    behind a proxy in FORWARDED_ALLOW_IPS, the one the proxy forwarded).
    """
    global _closed_warned
    token = getattr(settings, "METRICS_TOKEN", "")
    allowed = tuple(getattr(settings, "METRICS_ALLOW_IPS", ()))
    if token and constant_time_compare(request.headers.get("Authorization", ""), f"Bearer {token}"):
        return None
    if allowed and _address_allowed(request.META.get("REMOTE_ADDR", ""), allowed):
        return None
    if token:
        return HttpResponse("Unauthorized\n", status=401, content_type="text/plain",
                            headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    if not allowed and not _closed_warned:
        _closed_warned = True
        logger.warning("/metrics refuses every scrape: set METRICS_TOKEN or METRICS_ALLOW_IPS",
                       extra={"event": "metrics_closed"})
    return HttpResponse("Forbidden\n", status=403, content_type="text/plain")


@never_cache
@require_GET
def metrics_view(request):
    """Serve the metrics in the format the scraper asks for, to a scraper that may read them."""
    refusal = scrape_refusal(request)
    if refusal is not None:
        return refusal
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(registry()), content_type=content_type)
