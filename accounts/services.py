import uuid
from datetime import datetime

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.db.models.functions import Now
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed, InvalidToken, TokenError
from rest_framework_simplejwt.settings import api_settings

from accounts.models import RevokeReason, TokenFamily
from accounts.tokens import FAMILY_CLAIM, SessionRefreshToken

SESSION_ENDED = "This session has ended. Log in again."


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


def _token_pair(refresh: SessionRefreshToken, ends_at: datetime) -> dict:
    refresh.end_by(ends_at)
    access = refresh.access_token
    access["exp"] = min(access["exp"], refresh["exp"])
    return {"access": str(access), "refresh": str(refresh)}


def session_start(user) -> dict:
    """Start an API session for `user`; return its first access and refresh tokens."""
    refresh = SessionRefreshToken.for_user(user)
    ends_at = refresh.current_time + settings.API_SESSION_LIFETIME
    TokenFamily.objects.filter(user=user, expires_at__lte=Now()).delete()  # the user's sessions that are over
    family = TokenFamily.objects.create(
        user=user, created_at=refresh.current_time, expires_at=ends_at, current_jti=refresh[api_settings.JTI_CLAIM],
    )
    refresh[FAMILY_CLAIM] = str(family.pk)
    return _token_pair(refresh, ends_at)


def _decode(raw: str) -> tuple[SessionRefreshToken, uuid.UUID]:
    try:
        token = SessionRefreshToken(raw)  # type: ignore[arg-type]  # the encoded token, which simplejwt annotates as a Token
    except TokenError as exc:
        raise InvalidToken(exc.args[0]) from exc
    try:
        return token, uuid.UUID(str(token.get(FAMILY_CLAIM)))
    except ValueError as exc:
        # Signed by us but from before sessions had families.
        raise InvalidToken(SESSION_ENDED) from exc


def session_refresh(raw: str) -> dict:
    """Trade a session's live refresh token for a new pair, the new refresh token replacing it.

    Raise a 401 if the user is gone, inactive or has changed password since
    the session began, or the session has ended. A refresh token that was
    already replaced ends its session, unless it is the one the last refresh
    replaced, within API_REFRESH_REUSE_GRACE: that is a client that sent it
    twice (the concurrent losers of a race), and it is only refused.
    """
    token, family_id = _decode(raw)
    # A deleted user, an inactive one, or a password changed since the token
    # was issued (its claim is bound to the password hash): 401.
    user = JWTAuthentication().get_user(token)
    used_jti = token[api_settings.JTI_CLAIM]
    refresh = SessionRefreshToken.for_user(user)
    refresh[FAMILY_CLAIM] = str(family_id)
    new_jti = refresh[api_settings.JTI_CLAIM]
    # Concurrent refreshes with one token queue on the family's row lock; the
    # first replaces current_jti, and the others, re-reading the row once it
    # is committed, no longer match it and change nothing.
    rotated = TokenFamily.objects.filter(
        pk=family_id, user_id=user.pk, current_jti=used_jti, revoked_at=None, expires_at__gt=Now(),
    ).update(current_jti=new_jti, previous_jti=used_jti, rotated_at=Now())
    if rotated:
        return _token_pair(refresh, TokenFamily.objects.values_list("expires_at", flat=True).get(pk=family_id))
    # Not the live token: a copy of an old one. End the session, unless it is
    # the token just replaced and the grace period has not passed.
    ended = (
        TokenFamily.objects.filter(pk=family_id, revoked_at=None)
        .exclude(current_jti=used_jti)
        .exclude(previous_jti=used_jti, rotated_at__gt=Now() - settings.API_REFRESH_REUSE_GRACE)
        .update(revoked_at=Now(), revoke_reason=RevokeReason.REUSE)
    )
    if ended:
        raise AuthenticationFailed("This refresh token was already used, so its session has ended. Log in again.",
                                   code="token_reused")
    if TokenFamily.objects.filter(pk=family_id, previous_jti=used_jti, revoked_at=None, expires_at__gt=Now()).exists():
        raise AuthenticationFailed("This refresh token was already used. Use the one that replaced it.",
                                   code="token_used")
    raise AuthenticationFailed(SESSION_ENDED, code="session_ended")


def session_end(raw: str) -> None:
    """End the session of a refresh token: none of its tokens can be refreshed any more."""
    _, family_id = _decode(raw)
    TokenFamily.objects.filter(pk=family_id, revoked_at=None).update(revoked_at=Now(), revoke_reason=RevokeReason.LOGOUT)
