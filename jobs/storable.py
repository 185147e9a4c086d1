"""Make what a job produced storable in PostgreSQL.

A handler's result, its error message and its traceback may carry anything
a hostile page, file or peer put there. Python's json module writes NUL
(as the escape \\u0000) and lone surrogates, but PostgreSQL refuses both, in
`jsonb` and in `text` alike: one such string would fail the whole batched
write it is part of. Everything a worker writes passes through here first,
and each offending character becomes U+FFFD, the replacement character.
Errors and tracebacks also have the passwords of the URLs they quote hidden.
"""

import json
import re
from typing import Any

from jobs.redaction import redact_url_credentials

REPLACEMENT = "\ufffd"

# In text: NUL and any surrogate code point (a str holds a valid astral
# character as one code point, so every surrogate in it is a lone one).
_UNSTORABLE_CHARS = re.compile("[\x00\ud800-\udfff]")
# In JSON written with ensure_ascii=False: a raw surrogate, or the escape
# \u0000 preceded by an even number of backslashes (an odd number means the
# text was a literal backslash followed by "u0000").
_UNSTORABLE_JSON = re.compile(r"[\ud800-\udfff]|(?<!\\)((?:\\\\)*)\\u0000")


def storable_text(text: str) -> str:
    """Return `text` with NUL and lone surrogates replaced by U+FFFD, and the credentials of URLs hidden.

    It is an error or a traceback, which the job's owner and staff read:
    a URL quoted in it must not show its password (jobs.redaction).
    """
    return redact_url_credentials(_UNSTORABLE_CHARS.sub(REPLACEMENT, text))


def _fix_json(match: re.Match) -> str:
    return REPLACEMENT if match.group(1) is None else match.group(1) + REPLACEMENT


def storable_json(value: Any) -> tuple[Any, int]:
    """Return `value` made storable as jsonb, and the size in bytes of its JSON.

    Keys and values are fixed at any depth. Raise ValueError, TypeError or
    RecursionError for a value that is no JSON at all (NaN, a set, an int
    too long to write, nesting past the interpreter's limit).
    """
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    try:
        encoded = text.encode()
    except UnicodeEncodeError:  # a lone surrogate
        encoded = None
    if encoded is None or "\\u0000" in text:
        text = _UNSTORABLE_JSON.sub(_fix_json, text)
        value = json.loads(text)
        encoded = text.encode()
    return value, len(encoded)
