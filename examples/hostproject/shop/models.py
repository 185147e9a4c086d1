from django.contrib.auth.models import AbstractUser
from django.db import models


class Customer(AbstractUser):
    """This project's own user model (AUTH_USER_MODEL): Skipjack's jobs belong to customers."""

    loyalty_number = models.CharField(max_length=20, blank=True)


class Order(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="orders")
    total_cents = models.PositiveIntegerField()
    receipt_sent = models.BooleanField(default=False)

    def __str__(self):
        return f"Order {self.pk} of {self.customer}"
