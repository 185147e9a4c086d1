"""Forms of the dashboard: the job list's filters and the submit form.

The submit form shows one input per payload field for the built-in job
types, and a JSON text area for any other type. Either way the payload is
validated by the job type's own validator (through jobs.submission), so the
errors shown next to each input are the same ones the API returns.
"""

import json
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django import forms

from jobs.models import JobStatus, Priority
from jobs.registry import handlers

SINCE_CHOICES = {
    "15m": ("Last 15 minutes", timedelta(minutes=15)),
    "1h": ("Last hour", timedelta(hours=1)),
    "24h": ("Last 24 hours", timedelta(hours=24)),
    "7d": ("Last 7 days", timedelta(days=7)),
}
PRIORITY_CHOICES = [(p.label, p.label.capitalize()) for p in Priority]


class JobFilterForm(forms.Form):
    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *JobStatus.choices])
    type = forms.CharField(required=False, max_length=100)
    queue = forms.CharField(required=False, max_length=64)
    priority = forms.ChoiceField(required=False, choices=[("", "Any priority"), *PRIORITY_CHOICES])
    since = forms.ChoiceField(
        required=False, choices=[("", "Any time"), *((key, label) for key, (label, _) in SINCE_CHOICES.items())]
    )
    # Keyset cursors: the page of jobs older than `before`, or newer than `after`.
    before = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)
    after = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def filters(self) -> dict:
        """Return the filters as keyword arguments of selectors.filtered_jobs."""
        data = self.cleaned_data
        return {
            "status": data.get("status") or None,
            "type": data.get("type") or None,
            "queue": data.get("queue") or None,
            "priority": Priority[data["priority"].upper()] if data.get("priority") else None,
            "since": SINCE_CHOICES[data["since"]][1] if data.get("since") else None,
        }


@dataclass(frozen=True)
class PayloadField:
    name: str
    label: str
    # text, textarea, int, number, bool, or lines (a list of strings, one per line)
    kind: str = "text"
    required: bool = False
    help: str = ""
    placeholder: str = ""

    @property
    def input_name(self) -> str:
        return f"p_{self.name}"


_TEXT = (PayloadField("text", "Text", "textarea", required=True, placeholder="hello world"),)

# The payload inputs of the built-in job types. Other types get a JSON text area.
PAYLOAD_FIELDS: dict[str, tuple[PayloadField, ...]] = {
    "reverse_string": _TEXT,
    "uppercase_text": _TEXT,
    "fibonacci_calc": (PayloadField("n", "n", "int", required=True, help="0 to 1000", placeholder="10"),),
    "sleep": (PayloadField("seconds", "Seconds", "number", required=True, placeholder="5"),),
    "fail": (
        PayloadField("message", "Error message", placeholder="Failed on purpose."),
        PayloadField("permanent", "Permanent: skip the retries, straight to the DLQ", "bool"),
    ),
    "send_email": (
        PayloadField("to", "To", "lines", required=True, help="One address per line", placeholder="ada@example.com"),
        PayloadField("subject", "Subject", required=True),
        PayloadField("body", "Body", "textarea"),
    ),
    "process_video": (
        PayloadField("url", "Video URL", placeholder="https://example.com/video.mp4"),
        PayloadField("duration", "Duration (seconds)", "number", placeholder="2"),
        PayloadField("steps", "Progress steps", "int", placeholder="10"),
    ),
    "scrape_website": (PayloadField("url", "URL", required=True, placeholder="https://example.com"),),
    "run_command": (
        PayloadField("argv", "Command", "lines", required=True, help="Program and arguments, one per line; no shell"),
        PayloadField("timeout", "Timeout (seconds)", "number", placeholder="60"),
    ),
}
JSON_FIELD = PayloadField("payload", "Payload (JSON)", "textarea", placeholder='{"key": "value"}')


def payload_fields(type_name: str) -> tuple[PayloadField, ...]:
    return PAYLOAD_FIELDS.get(type_name, (JSON_FIELD,))


def _number(text: str, kind: str):
    try:
        return int(text) if kind == "int" else float(text)
    except ValueError:
        return text  # left as text, so the type's validator names the problem


def payload_from_post(type_name: str, data) -> tuple[object, dict[str, list[str]]]:
    """Return the payload the submitted inputs describe, and errors found before validation."""
    fields = payload_fields(type_name)
    if fields == (JSON_FIELD,):
        text = data.get(JSON_FIELD.input_name, "").strip()
        if not text:
            return {}, {}
        try:
            return json.loads(text), {}
        except ValueError as exc:
            return None, {"payload": [f"Enter valid JSON: {exc}."]}
    payload = {}
    for field in fields:
        raw = data.get(field.input_name, "")
        if field.kind == "bool":
            payload[field.name] = raw in ("on", "true", "1")
            continue
        if field.kind == "lines":
            items = [line.strip() for line in raw.splitlines() if line.strip()]
            if items:
                payload[field.name] = items
            continue
        if field.kind in ("int", "number"):
            raw = raw.strip()
            if raw:
                payload[field.name] = _number(raw, field.kind)
            continue
        if raw or field.required:
            payload[field.name] = raw
    return payload, {}


def field_rows(type_name: str, data, errors: dict[str, list[str]]) -> tuple[list[dict], list[str]]:
    """Return the payload inputs to render, each with its value and errors, and the errors that fit no input."""
    fields = payload_fields(type_name)
    names = {field.name for field in fields}
    rows = [
        {"field": field, "value": data.get(field.input_name, ""), "errors": errors.get(field.name, [])}
        for field in fields
    ]
    other = [
        message if key == "payload" else f"{key}: {message}"
        for key, messages in errors.items() if key not in names
        for message in messages
    ]
    return rows, other


def type_choices(user) -> list[tuple[str, str]]:
    """Return the job types `user` may submit, as (name, label) choices."""
    return [(h.name, h.name) for h in handlers() if user.is_staff or not h.staff_only]


class SubmitJobForm(forms.Form):
    type = forms.ChoiceField()
    priority = forms.ChoiceField(choices=PRIORITY_CHOICES, initial="normal")
    queue = forms.CharField(required=False, max_length=64, help_text="Empty: the default queue.")
    delay = forms.FloatField(required=False, min_value=0, max_value=365 * 24 * 3600, help_text="Seconds to wait before it runs.")
    max_retries = forms.IntegerField(required=False, min_value=0, max_value=100, help_text="Empty: the type's default.")
    # One submission per rendered form: a double click or a resent POST
    # finds the job the first one made instead of making another.
    idempotency_key = forms.CharField(widget=forms.HiddenInput, max_length=64)

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["type"].choices = type_choices(user)
        if not self.is_bound:
            self.initial.setdefault("idempotency_key", uuid.uuid4().hex)

    def options(self) -> dict:
        """Return the enqueue options the form sets."""
        data = self.cleaned_data
        options = {"priority": data["priority"]}
        if data.get("queue"):
            options["queue"] = data["queue"].strip()
        if data.get("delay"):
            options["delay"] = data["delay"]
        if data.get("max_retries") is not None:
            options["max_retries"] = data["max_retries"]
        return options
