"""Parse the short durations operators type: 30s, 15m, 2h, 7d, 1w, or 1h30m."""

import re
from datetime import timedelta

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
# Far enough back for any real DLQ, near enough that now() minus it is still a date.
MAX_DURATION = timedelta(days=100 * 365)


def parse_duration(text: str) -> timedelta:
    """Return the timedelta that `text` spells; raise ValueError with a one-line reason otherwise."""
    compact = (text or "").strip().lower().replace(" ", "")
    if not compact or _PART.sub("", compact):
        raise ValueError(
            f"Invalid duration {text!r}: use a number and a unit (s, m, h, d or w), e.g. 30s, 15m, 2h, 7d."
        )
    total = timedelta()
    for amount, unit in _PART.findall(compact):
        try:
            total += timedelta(**{_UNITS[unit]: float(amount)})
        except OverflowError:
            total = MAX_DURATION + timedelta(1)
            break
    if total > MAX_DURATION:
        raise ValueError(f"Duration {text!r} is too long; the most is {MAX_DURATION.days}d.")
    return total
