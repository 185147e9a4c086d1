"""The send_email job type: staff only, unless an operator opens it to users within limits.

Mail goes out from DEFAULT_FROM_EMAIL with the submitter's subject and body,
so open to everyone it would be a relay. While JOBS_EMAIL_USER_RECIPIENTS is
empty (the default) only staff, and code enqueueing without an owner, may
send. Otherwise a user who is not staff may send only to the recipients it
lists, and to at most JOBS_EMAIL_RECIPIENTS_PER_DAY of them a day (UTC).
Both are checked when the job is submitted and again when it runs; the
daily count is kept in PostgreSQL (EmailAllowance) and taken by each
sending attempt in one statement, so it holds exactly across processes.
"""

from datetime import UTC, datetime, time, timedelta

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import connection

from jobs import conf
from jobs.errors import PayloadError, PermanentError
from jobs.handlers.validators import email_payload
from jobs.models import EmailAllowance
from jobs.registry import JobContext, check_owner_at_run, job_handler

ALLOWANCE_TABLE = EmailAllowance._meta.db_table
SELF = "self"
_TODAY = "(statement_timestamp() AT TIME ZONE 'UTC')::date"

# Add an attempt's recipients to the user's count for today if the sum stays
# within the limit, starting from zero on a new day; return the new count, or
# no row if the attempt does not fit. A first attempt of a day that does not
# fit inserts nothing. Two attempts at once wait for each other on the row
# (or on the insert of it), and the second sees the first's sum.
_SPEND = f"""
    INSERT INTO {ALLOWANCE_TABLE} AS a (user_id, day, recipients)
    SELECT %(user)s, {_TODAY}, %(count)s::integer WHERE %(count)s::integer <= %(limit)s::integer
    ON CONFLICT (user_id) DO UPDATE
        SET day = excluded.day,
            recipients = CASE WHEN a.day = excluded.day THEN a.recipients ELSE 0 END + excluded.recipients
        WHERE CASE WHEN a.day = excluded.day THEN a.recipients ELSE 0 END + excluded.recipients <= %(limit)s::integer
    RETURNING recipients
"""  # noqa: S608 - constants only; values are parameters
_SENT_TODAY = f"SELECT recipients FROM {ALLOWANCE_TABLE} WHERE user_id = %s AND day = {_TODAY}"  # noqa: S608 - constants only; values are parameters


def recipients_sent_today(user) -> int:
    """Return how many recipients `user`'s send_email jobs have sent to today (UTC)."""
    with connection.cursor() as cursor:
        cursor.execute(_SENT_TODAY, [user.pk])
        row = cursor.fetchone()
    return row[0] if row else 0


def spend_recipients(user, count: int) -> bool:
    """Count `count` more recipients for `user` today; return False, counting nothing, if that passes the limit."""
    with connection.cursor() as cursor:
        cursor.execute(_SPEND, {"user": user.pk, "count": count, "limit": conf.get("JOBS_EMAIL_RECIPIENTS_PER_DAY")})
        return cursor.fetchone() is not None


def _may_send_to(address: str, allowed: set[str], own: str) -> bool:
    address = address.lower()
    domain = "@" + address.rsplit("@", 1)[-1]
    return address in allowed or domain in allowed or (SELF in allowed and bool(own) and address == own)


def _seconds_to_midnight() -> int:
    now = datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), time(), tzinfo=UTC)
    return max(1, int((midnight - now).total_seconds()))


def check_recipients(user, payload) -> None:
    """Refuse, for a user who is not staff, recipients not in JOBS_EMAIL_USER_RECIPIENTS, or more than are left today.

    Raise PayloadError on `to`, or RateLimited (a 429) once the day's
    recipients are used up. Reading what is left does not take it: each
    sending attempt takes its recipients when it runs (spend_recipients).
    """
    from jobs.errors import RateLimited
    from jobs.metrics import count_rate_limit_rejection

    allowed = {entry.strip().lower() for entry in conf.get("JOBS_EMAIL_USER_RECIPIENTS")}
    own = (user.email or "").strip().lower()
    refused = [address for address in payload["to"] if not _may_send_to(address, allowed, own)]
    if refused:
        raise PayloadError({"to": [f"{address!r} is not an address you may send email to." for address in refused]})
    limit = conf.get("JOBS_EMAIL_RECIPIENTS_PER_DAY")
    left = max(0, limit - recipients_sent_today(user))
    if len(payload["to"]) > left:
        count_rate_limit_rejection("email_recipients_per_day")
        raise RateLimited(
            f"You may send email to {limit} recipients a day, and have {left} left today (UTC).",
            retry_after=_seconds_to_midnight(),
        )


@job_handler(
    "send_email",
    validate=email_payload,
    staff_only=True,
    open_to_users_by="JOBS_EMAIL_USER_RECIPIENTS",
    check_user=check_recipients,
)
def send_email(job: JobContext) -> dict:
    """Send an email through Django's email backend."""
    owner = check_owner_at_run(job)
    to = job.payload["to"]
    if owner is not None and not owner.is_staff and not spend_recipients(owner, len(to)):
        limit = conf.get("JOBS_EMAIL_RECIPIENTS_PER_DAY")
        raise PermanentError(f"Not sent: its owner may send email to {limit} recipients a day, and today's are used up.")
    message = EmailMessage(job.payload["subject"], job.payload["body"], settings.DEFAULT_FROM_EMAIL, to)
    # An SMTP failure raises here, so the job is retried; its recipients stay counted.
    message.send(fail_silently=False)
    return {"sent": len(to)}
