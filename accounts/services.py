from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import IntegrityError, transaction
from django.db.models import Q


def user_register(*, username: str, email: str, password: str) -> bool:
    """Create a user account unless the username or the email address is in use; return whether it was created.

    Both outcomes hash the password, so the time taken does not tell them apart.
    """
    User = get_user_model()
    if User.objects.filter(Q(username__iexact=username) | Q(email__iexact=email)).exists():
        make_password(password)
        return False
    try:
        with transaction.atomic():
            User.objects.create_user(username=username, email=email, password=password)
    except IntegrityError:
        return False  # a concurrent registration took the username
    return True
