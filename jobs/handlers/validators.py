"""Payload validators for the built-in job types.

Each validator takes the payload as submitted and returns it normalized, or
raises PayloadError mapping every bad field to its messages, so a client sees
all of its mistakes at once. Each is a PayloadSchema: its fields are data,
declared once per type with how the dashboard's Submit form shows them, so
the form asks for exactly what the validator takes.
"""

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from urllib3.exceptions import LocationParseError
from urllib3.util import Url, parse_url

from jobs import conf
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


@dataclass(frozen=True)
class Field:
    """One field of a payload: its JSON kind, whether it may be left out, and its bounds.

    `kind` is "string", "integer", "number" (above 0), "boolean" or
    "strings" (a non-empty list of strings). A field without a default is
    required; one whose default is None also accepts null, as left out.
    """

    name: str
    kind: str
    default: Any = _MISSING
    # string: whether an empty (or all-space) string is accepted.
    blank: bool = True
    max_length: int = 0
    min_value: int = 0
    max_value: float = 0
    max_items: int = 0
    # strings: whether one string stands for a list of one.
    single: bool = False
    # number: the value is how many seconds the job runs, which users' limits bound.
    duration: bool = False
    # How the dashboard's Submit form shows it: a label (else the name,
    # capitalized), a help text, an example value as the placeholder, and
    # for a string, a text area instead of one line.
    label: str = ""
    help: str = ""
    example: str = ""
    multiline: bool = False

    @property
    def required(self) -> bool:
        """Return whether a payload must have this field."""
        return self.default is _MISSING


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
        validator must accept its own output, and the worker checks every
        stored payload against its schema again before it runs it.
        """
        self.seen.add(name)
        if name in self.data and not (default is None and self.data[name] is None):
            return True
        if default is _MISSING:
            self.error(name, "This field is required.")
        return False

    def read(self, field: Field) -> Any:
        """Return `field`'s value, or its default if it was left out; record what is wrong with it."""
        if not self.present(field.name, field.default):
            return field.default
        return getattr(self, f"_{field.kind}")(field, self.data[field.name])

    def _string(self, field: Field, value: Any) -> Any:
        if not isinstance(value, str):
            self.error(field.name, "Must be a string.")
        elif not field.blank and not value.strip():
            self.error(field.name, "This field may not be blank.")
        elif len(value) > field.max_length:
            self.error(field.name, f"Must be at most {field.max_length} characters.")
        return value

    def _integer(self, field: Field, value: Any) -> Any:
        # bool is an int subclass; `true` is never a count.
        if isinstance(value, bool) or not isinstance(value, int) or not field.min_value <= value <= field.max_value:
            self.error(field.name, f"Must be an integer between {field.min_value} and {field.max_value}.")
        return value

    def _number(self, field: Field, value: Any) -> Any:
        # The comparison also rejects NaN and infinity.
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= field.max_value:
            self.error(field.name, f"Must be a number greater than 0 and at most {field.max_value}.")
        return value

    def _boolean(self, field: Field, value: Any) -> Any:
        if not isinstance(value, bool):
            self.error(field.name, "Must be true or false.")
        return value

    def _strings(self, field: Field, value: Any) -> Any:
        if field.single and isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.error(field.name, "Must be a string or a list of strings." if field.single else "Must be a list of strings.")
        elif not value:
            self.error(field.name, "Must not be empty.")
        elif len(value) > field.max_items:
            self.error(field.name, f"Must have at most {field.max_items} items.")
        return value

    def done(self, **values: Any) -> dict[str, Any]:
        """Return `values` as the normalized payload, or raise PayloadError with every error found."""
        for key in self.data:
            if key not in self.seen:
                self.error(key, "Unknown field.")
        if self.errors:
            raise PayloadError(self.errors)
        return values


class PayloadSchema:
    """A payload validator declared as its fields, which the dashboard's Submit form reads too.

    Calling it with a payload returns the payload normalized, or raises
    PayloadError with every bad field. `check(values, fields)`, if given,
    runs after the fields are read: it may normalize `values` further and
    record more errors with `fields.error(name, message)`.
    """

    def __init__(self, *fields: Field, bare: str | None = None, check: Callable | None = None):
        self.fields = fields
        # The field a payload that is a bare value (not an object) stands for.
        self.bare = bare
        self.check = check

    def __call__(self, payload: Any) -> dict[str, Any]:
        reader = _Fields(payload, bare=self.bare)
        values = {field.name: reader.read(field) for field in self.fields}
        if self.check is not None:
            self.check(values, reader)
        return reader.done(**values)


text_payload = PayloadSchema(
    Field("text", "string", max_length=MAX_TEXT_LENGTH, label="Text", multiline=True, example="hello world"),
    bare="text",
)

fibonacci_payload = PayloadSchema(
    Field("n", "integer", min_value=0, max_value=MAX_FIBONACCI_N, label="n", help=f"0 to {MAX_FIBONACCI_N}",
          example="10"),
    bare="n",
)

sleep_payload = PayloadSchema(
    Field("seconds", "number", max_value=MAX_SLEEP_SECONDS, duration=True, label="Seconds", example="5"),
    bare="seconds",
)

fail_payload = PayloadSchema(
    Field("message", "string", default="Failed on purpose.", max_length=1000, label="Error message",
          example="Failed on purpose."),
    Field("permanent", "boolean", default=False, label="Permanent: skip the retries, straight to the DLQ"),
)


def _check_email(values: dict[str, Any], fields: _Fields) -> None:
    if "to" not in fields.errors:
        values["to"] = [address.strip() for address in values["to"]]
        for address in values["to"]:
            try:
                validate_email(address)
            except ValidationError:
                fields.error("to", f"{address!r} is not a valid email address.")
    subject = values["subject"]
    # A newline in a header would let the subject inject headers; Django refuses it at send time.
    if isinstance(subject, str) and ("\n" in subject or "\r" in subject):
        fields.error("subject", "Must not contain line breaks.")


# `to` may be one address; the normalized payload always has a list.
email_payload = PayloadSchema(
    Field("to", "strings", max_items=MAX_RECIPIENTS, single=True, label="To", help="One address per line",
          example="ada@example.com"),
    Field("subject", "string", max_length=255, blank=False, label="Subject"),
    Field("body", "string", max_length=50_000, label="Body", multiline=True),
    check=_check_email,
)

video_payload = PayloadSchema(
    Field("url", "string", default=None, max_length=MAX_URL_LENGTH, label="Video URL",
          example="https://example.com/video.mp4"),
    Field("duration", "number", default=2, max_value=MAX_VIDEO_SECONDS, duration=True, label="Duration (seconds)",
          example="2"),
    Field("steps", "integer", default=10, min_value=1, max_value=MAX_VIDEO_STEPS, label="Progress steps",
          example="10"),
)


# The authority of an absolute URL: what follows "scheme://" up to the path, query or fragment.
_AUTHORITY = re.compile(r"\A[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)")


def parse_web_url(url: str) -> Url:
    """Return `url` parsed by urllib3, the HTTP client's own parser; raise ValueError saying what is wrong.

    Parsers disagree on where a part of a URL ends: urllib3 ends the host at
    a backslash, urllib.parse reads on past it, and each drops or keeps
    whitespace and control characters its own way. So a URL with any of
    those is refused, and so is one with userinfo (user:password@), which
    only serves to hide the host. What is fetched is built from the parts
    returned here, never from the text again. The fragment, which is never
    sent, is dropped.
    """
    if any(char == "\\" or char.isspace() or unicodedata.category(char) in ("Cc", "Cf") for char in url):
        raise ValueError("Must not contain backslashes, whitespace or control characters.")
    try:
        parts = parse_url(url)
    except LocationParseError:
        raise ValueError("Enter a valid URL.") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("Must be an http or https URL.")
    if not parts.host:
        raise ValueError("Must include a host.")
    authority = _AUTHORITY.match(url)
    if parts.auth is not None or (authority and "@" in authority.group(1)):
        raise ValueError("Must not contain a user name or password.")
    return Url(scheme=parts.scheme, host=parts.host, port=parts.port, path=parts.path, query=parts.query)


def _check_url(values: dict[str, Any], fields: _Fields) -> None:
    if "url" in fields.errors:
        return
    try:
        values["url"] = parse_web_url(values["url"].strip()).url
    except ValueError as exc:
        fields.error("url", str(exc))


# An http(s) URL with a host, normalized by parse_web_url.
url_payload = PayloadSchema(
    Field("url", "string", max_length=MAX_URL_LENGTH, blank=False, label="URL", example="https://example.com"),
    bare="url", check=_check_url,
)


def allowed_program(program: str) -> bool:
    """Return whether run_command may run `program`: it is one of JOBS_SHELL_ALLOWED_COMMANDS, exactly."""
    return program in conf.get("JOBS_SHELL_ALLOWED_COMMANDS")


def _check_command(values: dict[str, Any], fields: _Fields) -> None:
    if "argv" not in fields.errors:
        program = values["argv"][0]
        if not program:
            fields.error("argv", "The program name may not be blank.")
        elif not allowed_program(program):
            # The list itself is not shown: this message reaches users who are not staff too.
            fields.error("argv", f"{program!r} is not a program this server runs (JOBS_SHELL_ALLOWED_COMMANDS).")
        if any("\0" in arg for arg in values["argv"]):
            fields.error("argv", "Must not contain NUL characters.")


command_payload = PayloadSchema(
    Field("argv", "strings", max_items=MAX_ARGV_ITEMS, label="Command",
          help="Program and arguments, one per line; no shell"),
    Field("timeout", "number", default=60, max_value=MAX_COMMAND_SECONDS, label="Timeout (seconds)", example="60"),
    check=_check_command,
)
