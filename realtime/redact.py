"""Credentials out of source names: what is shown, logged or stored never carries them.

A stream URL may carry a user name and password (`rtsp://user:pass@host/...`) or a
secret in its query or path (`?password=...`, `?token=...`, XMEye's
`/user=admin&password=...`). Only the decoder is given the URL as typed; every name
printed, logged, summarised or stored goes through `redact`. When in doubt it hides too
much: a display name that says less is harmless, a leaked password is not.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

MASK = "***"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# parameter names that carry secrets or name an account, matched anywhere in the name
_SECRET_NAME = re.compile(r"pass|pwd|secret|token|auth|key|sig|credential|session|cookie|user|usr|login|account", re.I)
# name=value after any URL delimiter, so path parameters are covered as well as the query
_PARAMETER = re.compile(r"(?P<lead>[/?&;])(?P<name>[^=/?&;#]+)=(?P<value>[^&;#]*)")


def redact(spec: str) -> str:
    """The source as it may be shown: a URL's user info and secret parameters masked.

    Anything that is not a URL (a camera index, a file path) is returned unchanged.
    """
    match = _SCHEME.match(spec.lstrip())
    if match is None:
        return spec
    head = spec[: len(spec) - len(spec.lstrip())] + match.group(0)
    rest = spec.lstrip()[match.end() :]
    # The authority ends at the first "/". A "?" or "#" before the last "@" is taken as
    # part of an unencoded password rather than the start of a query: hide, not leak.
    slash = rest.find("/")
    authority, tail = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    at = authority.rfind("@")
    if at >= 0:
        authority = MASK + authority[at:]
    return head + _PARAMETER.sub(_mask_parameter, authority + tail)


def _mask_parameter(match: re.Match[str]) -> str:
    if not _SECRET_NAME.search(unquote(match["name"])):
        return match.group(0)
    return f"{match['lead']}{match['name']}={MASK}"
