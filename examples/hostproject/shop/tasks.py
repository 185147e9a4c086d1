"""The shop's background work, as Django tasks: enqueued with .enqueue(), run by `manage.py runworker`."""

try:
    from django.tasks import task
except ImportError:  # Django 5.2: the django-tasks backport
    from django_tasks import task

from shop.models import Order


@task
def add(a: int, b: int) -> int:
    return a + b


@task(queue_name="emails", takes_context=True)
def send_receipt(context, order_id: int) -> dict:
    """Mark an order's receipt as sent, saying on which attempt it was."""
    sent = Order.objects.filter(pk=order_id, receipt_sent=False).update(receipt_sent=True)
    return {"order": order_id, "sent": bool(sent), "attempt": context.attempt}


@task(priority=10)
def refund(order_id: int) -> None:
    raise ValueError(f"order {order_id} cannot be refunded")
