from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError

from accounts.throttling import session_login_refusal


class LoginThrottleMixin(AuthenticationForm):
    """Count each attempt on the API's login limits, and refuse it before the password is checked once they are used up.

    `retry_after` holds the seconds to wait when it was refused.
    """

    retry_after: int | None = None

    def clean(self):
        self.retry_after = session_login_refusal(self.request, self.cleaned_data.get("username"))
        if self.retry_after is not None:
            raise ValidationError(
                "Too many login attempts. Try again in %(seconds)s seconds.",
                code="throttled", params={"seconds": self.retry_after},
            )
        return super().clean()


class LoginForm(LoginThrottleMixin, AuthenticationForm):
    """The dashboard's login."""


class AdminLoginForm(LoginThrottleMixin, AdminAuthenticationForm):
    """The admin's login."""
