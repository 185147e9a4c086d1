import uuid

from django.conf import settings
from django.db import models


class RevokeReason(models.TextChoices):
    # Its user logged out with one of its refresh tokens.
    LOGOUT = "logout"
    # A refresh token it had already rotated out came back: a copy is in other hands.
    REUSE = "reuse"
    # An operator revoked it in the admin.
    ADMIN = "admin"


class TokenFamily(models.Model):
    """The refresh tokens of one API login, of which only the newest is live.

    A refresh replaces `current_jti` with the new token's id in one guarded
    UPDATE, so of any number of concurrent refreshes with one token exactly
    one succeeds. No refresh moves `expires_at`: the session ends then,
    however often its tokens were refreshed.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="token_families")
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    # The id (jti) of the one refresh token that may be used now.
    current_jti = models.CharField(max_length=64)
    # The token the last refresh replaced, and when: used again within
    # API_REFRESH_REUSE_GRACE it is refused without ending the session (a
    # client that sent its refresh twice); any other used token ends it.
    previous_jti = models.CharField(max_length=64, blank=True, default="")
    rotated_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoke_reason = models.CharField(max_length=16, choices=RevokeReason.choices, blank=True, default="")

    class Meta:
        verbose_name = "API session"
        verbose_name_plural = "API sessions"

    def __str__(self) -> str:
        return f"{self.user} since {self.created_at:%Y-%m-%d %H:%M}"
