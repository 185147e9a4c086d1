"""The send_email job type."""

from django.conf import settings
from django.core.mail import EmailMessage

from jobs.handlers.validators import email_payload
from jobs.registry import JobContext, job_handler


@job_handler("send_email", validate=email_payload)
def send_email(job: JobContext) -> dict:
    """Send an email through Django's email backend."""
    to = job.payload["to"]
    message = EmailMessage(job.payload["subject"], job.payload["body"], settings.DEFAULT_FROM_EMAIL, to)
    # An SMTP failure raises here, so the job is retried.
    message.send(fail_silently=False)
    return {"sent": len(to)}
