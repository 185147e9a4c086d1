from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend

from jobs.registry import unstorable


def username_for_login(login: str) -> str:
    """Return the username a login name means: the owner's of that email address (the oldest account), else itself."""
    if "@" in login:
        user = get_user_model().objects.filter(email__iexact=login).order_by("pk").first()
        if user is not None:
            return user.get_username()
    return login


class UsernameOrEmailBackend(ModelBackend):
    """Authenticate with the username, or with the email address in its place."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if isinstance(username, str) and unstorable(username):
            return None  # no account has such a name, and PostgreSQL would refuse to look it up
        if username:
            username = username_for_login(username)
        return super().authenticate(request, username=username, password=password, **kwargs)
