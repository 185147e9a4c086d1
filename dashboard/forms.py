"""Forms of the dashboard: the job list's filters, the submit form and the schedule form.

The submit form shows one input per field of a job type's PayloadSchema
(every built-in type has one), and a JSON text area for any other type.
Which inputs are required, what an empty one sends, and each input's
label, help and placeholder follow from the schema, the type's one
declaration of its payload. Either way the payload is validated once, by
jobs.spec.build (through jobs.submission), so the errors shown next to each
input are the same ones the API returns.
"""

import json
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from django import forms

from jobs import flow
from jobs.errors import UnknownJobType
from jobs.flow import QUEUE_NAME_MESSAGE, QUEUE_NAME_PATTERN
from jobs.handlers.validators import Field, PayloadSchema
from jobs.models import JobStatus, Misfire, Overlap, Priority, priority_label
from jobs.queue import MAX_SECONDS
from jobs.registry import get_handler, handlers
from jobs.schedules import FIELDS, ScheduleInvalid, clean as clean_schedule

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
    """One payload input of the Submit form."""

    name: str
    label: str
    # text, textarea, int, number, bool, or lines (a list of strings, one per line)
    kind: str = "text"
    # Marked as required: left empty, the payload is refused.
    required: bool = False
    help: str = ""
    placeholder: str = ""
    # Left empty, the input is sent as "" rather than left out of the payload.
    send_empty: bool = False

    @property
    def input_name(self) -> str:
        return f"p_{self.name}"


# The input for each kind of payload field.
_INPUT_KINDS = {"string": "text", "integer": "int", "number": "number", "boolean": "bool", "strings": "lines"}
JSON_FIELD = PayloadField("payload", "Payload (JSON)", "textarea", placeholder='{"key": "value"}')


def _payload_field(field: Field) -> PayloadField:
    kind = _INPUT_KINDS[field.kind]
    if kind == "text" and field.multiline:
        kind = "textarea"
    # An input left empty is "" for a string field the payload must have, and left out otherwise.
    send_empty = field.required and field.kind == "string"
    # So left empty it is refused, unless it is "" the field takes, or a checkbox, which is never empty.
    required = field.required and not (send_empty and field.blank) and field.kind != "boolean"
    return PayloadField(
        name=field.name, label=field.label or field.name.replace("_", " ").capitalize(), kind=kind,
        required=required, help=field.help, placeholder=field.example, send_empty=send_empty,
    )


def payload_fields(type_name: str) -> tuple[PayloadField, ...]:
    """Return the inputs of `type_name`'s payload: one per field of its schema, or a JSON text area."""
    try:
        schema = get_handler(type_name).validate
    except UnknownJobType:
        schema = None
    if not isinstance(schema, PayloadSchema):
        return (JSON_FIELD,)
    return tuple(_payload_field(field) for field in schema.fields)


def _number(text: str, kind: str):
    try:
        return int(text) if kind == "int" else _int_or_float(text)
    except ValueError:
        return text  # left as text, so the type's validator names the problem


def _int_or_float(text: str):
    """Return "5" as 5 and "2.5" as 2.5, as JSON would have them."""
    try:
        return int(text)
    except ValueError:
        return float(text)


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
    payload: dict[str, Any] = {}
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
        if raw or field.send_empty:
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
    return [(h.name, h.name) for h in handlers() if user.is_staff or not h.requires_staff]


class SubmitJobForm(forms.Form):
    type = forms.ChoiceField()
    priority = forms.ChoiceField(choices=PRIORITY_CHOICES, initial="normal")
    # The API's rule; like the API, it trims spaces first.
    queue = forms.RegexField(
        QUEUE_NAME_PATTERN, strip=True, required=False, error_messages={"invalid": QUEUE_NAME_MESSAGE},
        help_text="Empty: the default queue.",
    )
    delay = forms.FloatField(required=False, min_value=0, max_value=MAX_SECONDS, help_text="Seconds to wait before it runs.")
    max_retries = forms.IntegerField(required=False, min_value=0, max_value=100, help_text="Empty: the type's default.")
    # One submission per rendered form: a double click or a resent POST
    # finds the job the first one made instead of making another.
    idempotency_key = forms.CharField(widget=forms.HiddenInput, max_length=64)

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["type"]).choices = type_choices(user)
        if not user.is_staff:  # high priority is for staff (jobs.submission.bound_spec)
            priority = cast(forms.ChoiceField, self.fields["priority"])
            priority.choices = [choice for choice in PRIORITY_CHOICES if choice[0] != "high"]
        if not self.is_bound:
            self.initial.setdefault("idempotency_key", uuid.uuid4().hex)

    def options(self) -> dict:
        """Return the enqueue options the form sets."""
        data = self.cleaned_data
        options = {"priority": data["priority"]}
        if data.get("queue"):
            options["queue"] = data["queue"]
        if data.get("delay"):
            options["delay"] = data["delay"]
        if data.get("max_retries") is not None:
            options["max_retries"] = data["max_retries"]
        return options


class QueueControlsForm(forms.Form):
    """A queue's limits as the Queues page edits them: empty means no limit, rates as "100/m"."""

    concurrency = forms.CharField(required=False, label="Concurrency", help_text="Held at once, across all workers.")
    rate = forms.CharField(required=False, label="Rate", help_text="Starts per period: 100/m, 5/s, 10/30s.")
    key_concurrency = forms.CharField(required=False, label="Per key", help_text="Each concurrency key's default limit.")
    key_rate = forms.CharField(required=False, label="Rate per key")

    @classmethod
    def for_row(cls, row: dict) -> "QueueControlsForm":
        control = row["control"]
        if control is None:
            return cls()
        return cls(initial={
            "concurrency": control.concurrency or "", "key_concurrency": control.key_concurrency or "",
            "rate": flow.format_rate(control.rate_limit, control.rate_period),
            "key_rate": flow.format_rate(control.key_rate_limit, control.key_rate_period),
        })

    def clean(self):
        """Return the QueueControl fields to set (jobs.queue.set_queue_controls), each checked."""
        data = super().clean() or {}
        changes: dict[str, Any] = {}
        for name in ("concurrency", "key_concurrency"):
            try:
                changes[name] = flow.check_limit(data.get(name, "").strip() or None, "The limit")
            except ValueError as exc:
                self.add_error(name, str(exc))
        for name, prefix in (("rate", ""), ("key_rate", "key_")):
            try:
                rate = flow.parse_rate(data.get(name, "").strip())
            except ValueError as exc:
                self.add_error(name, str(exc))
                continue
            changes[f"{prefix}rate_limit"] = rate[0] if rate else None
            if rate:
                changes[f"{prefix}rate_period"] = rate[1]
        return changes


class KeyLimitForm(forms.Form):
    """One concurrency key's own limits, as the Queues page sets them."""

    key = forms.CharField(label="Key", max_length=200, help_text="e.g. tenant:42")
    concurrency = forms.CharField(required=False, label="Concurrency")
    rate = forms.CharField(required=False, label="Rate", help_text="e.g. 5/s")

    def clean(self):
        """Return the key and the KeyLimit fields to set (jobs.queue.set_key_limit), each checked."""
        data = super().clean() or {}
        changes: dict[str, Any] = {}
        try:
            changes["key"] = flow.check_key(data.get("key", "").strip())
        except ValueError as exc:
            self.add_error("key", str(exc))
        try:
            changes["concurrency"] = flow.check_limit(data.get("concurrency", "").strip() or None, "The limit")
        except ValueError as exc:
            self.add_error("concurrency", str(exc))
        try:
            rate = flow.parse_rate(data.get("rate", "").strip())
        except ValueError as exc:
            self.add_error("rate", str(exc))
        else:
            changes["rate_limit"] = rate[0] if rate else None
            if rate:
                changes["rate_period"] = rate[1]
        return changes


class ScheduleForm(forms.Form):
    """Add or change a schedule. The whole definition is checked by jobs.schedules.clean, as the API checks it."""

    name = forms.CharField(max_length=100)
    cron = forms.CharField(max_length=200, required=False, help_text='e.g. "*/5 * * * *"; or give an interval.',
                           widget=forms.TextInput(attrs={"placeholder": "*/5 * * * *", "class": "mono"}))
    interval_seconds = forms.IntegerField(min_value=1, required=False, label="Interval (seconds)")
    timezone = forms.CharField(max_length=64, initial="UTC", help_text="An IANA zone, such as Europe/Berlin.")
    type = forms.ChoiceField(choices=())
    payload = forms.CharField(required=False, initial="{}", widget=forms.Textarea(attrs={"rows": 3, "class": "mono"}),
                              help_text="JSON.")
    queue = forms.RegexField(QUEUE_NAME_PATTERN, required=False, error_messages={"invalid": QUEUE_NAME_MESSAGE})
    priority = forms.ChoiceField(choices=PRIORITY_CHOICES, initial="normal")
    misfire = forms.ChoiceField(choices=Misfire.choices, initial=Misfire.ONCE)
    catch_up_limit = forms.IntegerField(min_value=1, max_value=1000, initial=10)
    overlap = forms.ChoiceField(choices=Overlap.choices, initial=Overlap.ALLOW)
    jitter_seconds = forms.FloatField(min_value=0, max_value=3600, initial=0, required=False)
    max_retries = forms.IntegerField(min_value=0, max_value=100, required=False)
    timeout = forms.FloatField(min_value=0.001, max_value=MAX_SECONDS, required=False)
    ttl = forms.FloatField(min_value=0.001, max_value=MAX_SECONDS, required=False)
    enabled = forms.BooleanField(required=False, initial=True)

    definition: dict

    def __init__(self, *args, instance=None, **kwargs):
        self.instance = instance
        if instance is not None and not kwargs.get("data") and not args:
            kwargs["initial"] = {
                **{name: getattr(instance, name) for name in FIELDS},
                "payload": json.dumps(instance.payload), "priority": priority_label(instance.priority),
            }
        super().__init__(*args, **kwargs)
        names = [h.name for h in handlers()]
        if instance is not None and instance.type not in names:
            names.append(instance.type)  # shown as it is; saving it says the type is unknown
        cast(forms.ChoiceField, self.fields["type"]).choices = [(name, name) for name in sorted(names)]

    def clean_payload(self):
        text = self.cleaned_data["payload"].strip() or "{}"
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).") from None

    def clean(self):
        super().clean()
        data = self.cleaned_data
        if self.errors:
            return data
        values = {name: data.get(name) for name in FIELDS}
        values["priority"] = Priority[str(values["priority"]).upper()]
        values["jitter_seconds"] = values["jitter_seconds"] or 0.0
        values["cron"] = values["cron"] or ""
        try:
            self.definition = clean_schedule(values)
        except ScheduleInvalid as exc:
            for name, problems in exc.errors.items():
                self.add_error(name if name in self.fields else None, problems)
        return data
