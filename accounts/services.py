from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction


class AccountExists(Exception):
    """The username was taken by a concurrent registration."""


def user_register(*, username: str, email: str, password: str):
    """Create a user account; raise AccountExists if the username was taken meanwhile."""
    try:
        with transaction.atomic():
            return get_user_model().objects.create_user(username=username, email=email, password=password)
    except IntegrityError as exc:
        raise AccountExists("This username is taken.") from exc
