"""Flow control's rules: queue and key names, rates, limits and the JOBS_QUEUES setting.

    JOBS_QUEUES = {
        "emails": {"rate": "100/m"},                       # at most 100 starts a minute
        "video": {"concurrency": 4},                       # at most 4 held at once, anywhere
        "api-calls": {"key_concurrency": 2, "key_rate": "5/s"},  # per concurrency key
        "reports": {"paused": True},
    }

The limits themselves are rows (jobs.models.QueueControl, KeyLimit), which
the claim reads, so they hold across every worker and change with no
restart. This module only parses and checks what an operator writes; the
writes are jobs.queue.control's.

Settings and rows: at start-up a worker creates the row of each queue in
JOBS_QUEUES that has none. It never overwrites a row, so a change made at
run time (admin, API, dashboard, `manage.py queues`) outlives the next
deploy; `manage.py queues reset NAME` (or `--all`) applies the settings
again.
"""

import math
import re
from dataclasses import dataclass, fields
from typing import Any

from jobs import conf

# The queues a user may name: the rule of the API and of the dashboard's Submit page.
# \Z, not $, which would also match before a final newline.
QUEUE_NAME_PATTERN = r"\A[A-Za-z0-9_.-]{1,64}\Z"
QUEUE_NAME_MESSAGE = "Use 1 to 64 letters, digits and . - _ only."
# A concurrency key: "tenant:42", "customer:acme.com", "owner:7".
KEY_PATTERN = r"\A[A-Za-z0-9_.:@/+=#-]{1,200}\Z"
KEY_MESSAGE = "Use 1 to 200 letters, digits and _ . : @ / + = # - only."
# The key of one user's jobs ("owner:<id>", jobs.submission.owner_concurrency),
# whose limit holds in every queue together; the claim names it too (queries.sql).
OWNER_KEY_PREFIX = "owner:"
# Per-key and per-queue limits at most this: beyond it a limit means nothing.
MAX_LIMIT = 1_000_000
# The longest rate period, a day: the start log is kept that long at most.
MAX_PERIOD = 24 * 3600.0

_RATE = re.compile(r"\A\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*(s|sec|second|m|min|minute|h|hour|d|day)s?\s*\Z", re.IGNORECASE)
_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600, "d": 86400,
          "day": 86400}


def check_queue_name(name: Any) -> str:
    """Return `name` if it is a valid queue name; raise ValueError saying why not."""
    if not isinstance(name, str) or not re.match(QUEUE_NAME_PATTERN, name):
        raise ValueError(f"Invalid queue name {name!r}. {QUEUE_NAME_MESSAGE}")
    return name


def check_key(key: Any) -> str:
    """Return `key` if it is a valid concurrency key; raise ValueError saying why not."""
    if not isinstance(key, str) or not re.match(KEY_PATTERN, key):
        raise ValueError(f"Invalid concurrency key {key!r}. {KEY_MESSAGE}")
    return key


def check_limit(value: Any, what: str = "limit") -> int | None:
    """Return a limit (a whole number from 1 to MAX_LIMIT) or None for none; raise ValueError otherwise."""
    return None if value is None else check_count(value, what)


def check_count(value: Any, what: str) -> int:
    """Return a whole number from 1 to MAX_LIMIT (an int or its digits); raise ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        else:
            raise ValueError(f"{what} must be a whole number from 1 to {MAX_LIMIT:,}, or empty for none.")
    if not 1 <= value <= MAX_LIMIT:
        raise ValueError(f"{what} must be a whole number from 1 to {MAX_LIMIT:,}, or empty for none.")
    return value


def check_period(value: Any, what: str = "rate period") -> float:
    """Return a rate period in seconds (above 0, at most a day); raise ValueError otherwise."""
    try:
        period = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of seconds above 0 and at most {MAX_PERIOD:g}.") from None
    if isinstance(value, bool) or not math.isfinite(period) or not 0 < period <= MAX_PERIOD:
        raise ValueError(f"{what} must be a number of seconds above 0 and at most {MAX_PERIOD:g}.")
    return period


def parse_rate(text: Any) -> tuple[int, float] | None:
    """Return (starts, period in seconds) for "100/m", "5/s", "10/30s" or "1000/h"; None for None or "".

    Raise ValueError for anything else.
    """
    if text is None or text == "":
        return None
    match = _RATE.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"Invalid rate {text!r}: write starts per period, e.g. 100/m, 5/s, 10/30s or 1000/h.")
    count, multiple, unit = match.groups()
    period = (float(multiple) if multiple else 1.0) * _UNITS[unit.lower()]
    return check_count(int(count), "A rate's number of starts"), check_period(period, "A rate's period")


def format_rate(limit: int | None, period: float) -> str:
    """Return "100/m" for (100, 60): the form parse_rate reads back."""
    if limit is None:
        return ""
    for unit, seconds in (("d", 86400), ("h", 3600), ("m", 60)):
        if period == seconds:
            return f"{limit}/{unit}"
    return f"{limit}/{period:g}s"


@dataclass(frozen=True)
class QueueLimits:
    """What JOBS_QUEUES says of one queue, as a QueueControl row stores it."""

    paused: bool = False
    concurrency: int | None = None
    rate_limit: int | None = None
    rate_period: float = 60.0
    key_concurrency: int | None = None
    key_rate_limit: int | None = None
    key_rate_period: float = 60.0

    SETTING_KEYS = ("paused", "concurrency", "rate", "key_concurrency", "key_rate")

    @classmethod
    def from_setting(cls, name: str, options: Any) -> "QueueLimits":
        """Return the limits of JOBS_QUEUES[name]; raise ValueError naming what is wrong."""
        check_queue_name(name)
        if not isinstance(options, dict):
            raise ValueError(f"JOBS_QUEUES[{name!r}] must be a dict of {', '.join(cls.SETTING_KEYS)}.")
        unknown = sorted(set(options) - set(cls.SETTING_KEYS))
        if unknown:
            raise ValueError(f"JOBS_QUEUES[{name!r}] has unknown options {unknown}; use {', '.join(cls.SETTING_KEYS)}.")
        paused = options.get("paused", False)
        if not isinstance(paused, bool):
            raise ValueError(f"JOBS_QUEUES[{name!r}]['paused'] must be True or False.")
        values: dict[str, Any] = {"paused": paused}
        for option in ("concurrency", "key_concurrency"):
            values[option] = check_limit(options.get(option), f"JOBS_QUEUES[{name!r}][{option!r}]")
        for option, prefix in (("rate", ""), ("key_rate", "key_")):
            try:
                rate = parse_rate(options.get(option))
            except ValueError as exc:
                raise ValueError(f"JOBS_QUEUES[{name!r}][{option!r}]: {exc}") from None
            if rate is not None:
                values[f"{prefix}rate_limit"], values[f"{prefix}rate_period"] = rate
        return cls(**values)

    def as_fields(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def configured_queues() -> dict[str, QueueLimits]:
    """Return JOBS_QUEUES parsed; raise ValueError for the first bad entry."""
    setting = conf.get("JOBS_QUEUES") or {}
    if not isinstance(setting, dict):
        raise ValueError("JOBS_QUEUES must be a dict of queue names to their options.")
    return {name: QueueLimits.from_setting(name, options) for name, options in setting.items()}
