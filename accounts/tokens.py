"""The API's refresh tokens: each belongs to one login's TokenFamily, whose row says whether it is live."""

from datetime import datetime

from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken, Token
from rest_framework_simplejwt.utils import datetime_to_epoch

# The claim naming the token's family (accounts.models.TokenFamily).
FAMILY_CLAIM = "fam"


class SessionRefreshToken(Token):
    """A refresh token of one login session.

    simplejwt's RefreshToken checks and writes its blacklist in separate
    statements, so one token refreshed concurrently could start several
    chains. This one carries its family's id instead, and
    accounts.services.session_refresh rotates the family in one statement.
    """

    token_type = "refresh"  # noqa: S105 - a token type, not a password
    lifetime = api_settings.REFRESH_TOKEN_LIFETIME
    no_copy_claims = (*RefreshToken.no_copy_claims, FAMILY_CLAIM)
    access_token_class = AccessToken
    # RefreshToken's property, which reads only what every Token has. Typed as
    # what it gives: its annotation would take only a RefreshToken for self.
    access_token: AccessToken = RefreshToken.access_token  # type: ignore[assignment]

    def end_by(self, moment: datetime) -> None:
        """Expire no later than `moment`, the end of the token's session."""
        self.payload["exp"] = min(self.payload["exp"], datetime_to_epoch(moment))
