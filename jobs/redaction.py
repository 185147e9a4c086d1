"""Hide the credentials of URLs in text that is logged or stored with a job.

An error message or a traceback may quote a URL as it was given, password
and all: a database or Redis URL in a connection error, a URL in a job's
payload that a library repeats when it refuses it. Such text ends up in
logs, which are shipped elsewhere, and in a job's `error` and `history`,
which its owner and staff read. Neither must carry the password.

Django configures logging before it loads the apps, so this module must
not import models.
"""

import re

# scheme://userinfo@ : userinfo runs up to the @, and holds no space, /, ? or #.
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^\s/?#@]+)@")


def _hidden(match: re.Match) -> str:
    scheme, userinfo = match.groups()
    user, colon, _ = userinfo.partition(":")
    # A name alone (https://token@host) is as likely a token as a user name.
    return f"{scheme}{user}:***@" if colon else f"{scheme}***@"


def redact_url_credentials(text: str) -> str:
    """Return `text` with every URL's password hidden (user:***@), and a bare name before the @ too (***@)."""
    if "@" not in text:
        return text
    return _URL_USERINFO.sub(_hidden, text)
