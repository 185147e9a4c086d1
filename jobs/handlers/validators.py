"""Payload validators for the built-in job types.

Each validator takes the payload as submitted and returns it normalized, or
raises PayloadError mapping every bad field to its messages, so a client sees
all of its mistakes at once.
"""

from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from jobs.errors import PayloadError

MAX_TEXT_LENGTH = 10_000
MAX_FIBONACCI_N = 1000
MAX_SLEEP_SECONDS = 3600
MAX_VIDEO_SECONDS = 600
MAX_VIDEO_STEPS = 100
MAX_RECIPIENTS = 50
MAX_URL_LENGTH = 2048
MAX_COMMAND_SECONDS = 3600
MAX_ARGV_ITEMS = 256

_MISSING = object()


class _Fields:
    """Read typed fields from a payload dict, collecting errors instead of stopping at the first."""

    def __init__(self, payload: Any, *, bare: str | None = None):
        if payload is None:
            payload = {}
        elif bare is not None and not isinstance(payload, (dict, list)):
            # Clients of other products send the only field as the whole payload: "hello world".
            payload = {bare: payload}
        if not isinstance(payload, dict):
            raise PayloadError("Must be a JSON object.")
        self.data = dict(payload)
        self.seen: set = set()
        self.errors: dict[str, list[str]] = {}

    def error(self, name: str, message: str) -> None:
        """Record `message` against field `name`."""
        self.errors.setdefault(str(name), []).append(message)

    def present(self, name: str, default: Any) -> bool:
        """Return whether field `name` was given; flag it if it is required and missing.

        Null is taken as left out for a field whose default is null: a
        validator must accept its own output, and the worker validates
        every payload again before it runs it.
        """
        self.seen.add(name)
        if name in self.data and not (default is None and self.data[name] is None):
            return True
        if default is _MISSING:
            self.error(name, "This field is required.")
        return False

    def string(self, name: str, *, max_length: int, default: Any = _MISSING, blank: bool = True) -> Any:
        """Return field `name` as a string of at most `max_length` characters."""
        if not self.present(name, default):
            return default
        value = self.data[name]
        if not isinstance(value, str):
            self.error(name, "Must be a string.")
        elif not blank and not value.strip():
            self.error(name, "This field may not be blank.")
        elif len(value) > max_length:
            self.error(name, f"Must be at most {max_length} characters.")
        return value

    def integer(self, name: str, *, min_value: int, max_value: int, default: Any = _MISSING) -> Any:
        """Return field `name` as an int in [min_value, max_value]."""
        if not self.present(name, default):
            return default
        value = self.data[name]
        # bool is an int subclass; `true` is never a count.
        if isinstance(value, bool) or not isinstance(value, int) or not min_value <= value <= max_value:
            self.error(name, f"Must be an integer between {min_value} and {max_value}.")
        return value

    def number(self, name: str, *, max_value: float, default: Any = _MISSING) -> Any:
        """Return field `name` as a number above 0 and at most `max_value`."""
        if not self.present(name, default):
            return default
        value = self.data[name]
        # The comparison also rejects NaN and infinity.
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= max_value:
            self.error(name, f"Must be a number greater than 0 and at most {max_value}.")
        return value

    def boolean(self, name: str, *, default: Any = _MISSING) -> Any:
        """Return field `name` as a bool."""
        if not self.present(name, default):
            return default
        value = self.data[name]
        if not isinstance(value, bool):
            self.error(name, "Must be true or false.")
        return value

    def string_list(self, name: str, *, max_items: int, single: bool = False) -> Any:
        """Return field `name` as a non-empty list of strings; with `single`, also accept one string."""
        if not self.present(name, _MISSING):
            return _MISSING
        value = self.data[name]
        if single and isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.error(name, "Must be a string or a list of strings." if single else "Must be a list of strings.")
        elif not value:
            self.error(name, "Must not be empty.")
        elif len(value) > max_items:
            self.error(name, f"Must have at most {max_items} items.")
        return value

    def done(self, **values: Any) -> dict[str, Any]:
        """Return `values` as the normalized payload, or raise PayloadError with every error found."""
        for key in self.data:
            if key not in self.seen:
                self.error(key, "Unknown field.")
        if self.errors:
            raise PayloadError(self.errors)
        return values


def text_payload(payload: Any) -> dict[str, Any]:
    """Return `{"text": str}` from a dict or a bare string."""
    fields = _Fields(payload, bare="text")
    return fields.done(text=fields.string("text", max_length=MAX_TEXT_LENGTH))


def fibonacci_payload(payload: Any) -> dict[str, Any]:
    """Return `{"n": int}` from a dict or a bare int."""
    fields = _Fields(payload, bare="n")
    return fields.done(n=fields.integer("n", min_value=0, max_value=MAX_FIBONACCI_N))


def sleep_payload(payload: Any) -> dict[str, Any]:
    """Return `{"seconds": number}` from a dict or a bare number."""
    fields = _Fields(payload, bare="seconds")
    return fields.done(seconds=fields.number("seconds", max_value=MAX_SLEEP_SECONDS))


def fail_payload(payload: Any) -> dict[str, Any]:
    """Return `{"message": str, "permanent": bool}`, filling in defaults."""
    fields = _Fields(payload)
    return fields.done(
        message=fields.string("message", max_length=1000, default="Failed on purpose."),
        permanent=fields.boolean("permanent", default=False),
    )


def email_payload(payload: Any) -> dict[str, Any]:
    """Return `{"to": [address, ...], "subject": str, "body": str}`; `to` may be one address."""
    fields = _Fields(payload)
    to = fields.string_list("to", max_items=MAX_RECIPIENTS, single=True)
    if "to" not in fields.errors:
        to = [address.strip() for address in to]
        for address in to:
            try:
                validate_email(address)
            except ValidationError:
                fields.error("to", f"{address!r} is not a valid email address.")
    subject = fields.string("subject", max_length=255, blank=False)
    # A newline in a header would let the subject inject headers; Django refuses it at send time.
    if isinstance(subject, str) and ("\n" in subject or "\r" in subject):
        fields.error("subject", "Must not contain line breaks.")
    body = fields.string("body", max_length=50_000)
    return fields.done(to=to, subject=subject, body=body)


def video_payload(payload: Any) -> dict[str, Any]:
    """Return `{"url": str | None, "duration": number, "steps": int}`, filling in defaults."""
    fields = _Fields(payload)
    return fields.done(
        url=fields.string("url", max_length=MAX_URL_LENGTH, default=None),
        duration=fields.number("duration", max_value=MAX_VIDEO_SECONDS, default=2),
        steps=fields.integer("steps", min_value=1, max_value=MAX_VIDEO_STEPS, default=10),
    )


def url_payload(payload: Any) -> dict[str, Any]:
    """Return `{"url": str}` for an http(s) URL with a host, from a dict or a bare string."""
    fields = _Fields(payload, bare="url")
    url = fields.string("url", max_length=MAX_URL_LENGTH, blank=False)
    if "url" not in fields.errors:
        url = url.strip()
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 -- raises ValueError for a malformed port
        except ValueError:
            fields.error("url", "Enter a valid URL.")
        else:
            if parts.scheme not in ("http", "https"):
                fields.error("url", "Must be an http or https URL.")
            elif not parts.hostname:
                fields.error("url", "Must include a host.")
    return fields.done(url=url)


def command_payload(payload: Any) -> dict[str, Any]:
    """Return `{"argv": [str, ...], "timeout": number}`, filling in the timeout."""
    fields = _Fields(payload)
    argv = fields.string_list("argv", max_items=MAX_ARGV_ITEMS)
    if "argv" not in fields.errors:
        if not argv[0]:
            fields.error("argv", "The program name may not be blank.")
        if any("\0" in arg for arg in argv):
            fields.error("argv", "Must not contain NUL characters.")
    timeout = fields.number("timeout", max_value=MAX_COMMAND_SECONDS, default=60)
    return fields.done(argv=argv, timeout=timeout)
