"""Passwords in the sweep's URLs (``execution.storage``, ``tracking.uri``).

Written as ``${ENV_VAR}`` a password stays out of every file: the spec keeps the reference and it is
expanded only where a connection is opened. Written literally it is used, but everything the sweep
stores or prints (run dir files, MLflow params/tags/artifacts, the console, the Ray job) shows ``***``
instead; a later ``sweep resume``/``report`` then needs the URL again (or the ``${ENV_VAR}`` form).
"""

from __future__ import annotations

import os
import re
from urllib.parse import quote

from sweep.errors import SecretError

MASK = "***"
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# scheme://user:PASSWORD@host  and  ?password=PASSWORD
_USERINFO = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<secret>[^@\s/]+)(?=@)", re.IGNORECASE)
_QUERY = re.compile(r"(?P<head>[?&](?:password|passwd|pwd|token|secret)=)(?P<secret>[^&\s]+)", re.IGNORECASE)
_QUERY_KEY = re.compile(r"[?&](?:password|passwd|pwd|token|secret)=$", re.IGNORECASE)
_known: dict[str, str] = {}  # masked URL -> the URL it stands for, for this process only
_raw: set[str] = set()  # values of ${ENV_VAR}s expanded into URLs (masked wherever they appear)


def _secrets_in(url: str) -> list[str]:
    return [m.group("secret") for pattern in (_USERINFO, _QUERY) for m in pattern.finditer(url)]


def mask(text: str) -> str:
    """``text`` with every URL password replaced by ``***`` (``${ENV_VAR}`` references are kept: they
    are not secrets), and every password this process has expanded removed wherever it appears."""

    def hide(match: re.Match[str]) -> str:
        secret = match.group("secret")
        return match.group(0) if _ENV.fullmatch(secret) or secret == MASK else match.group("head") + MASK

    out = _QUERY.sub(hide, _USERINFO.sub(hide, text))
    for real in {s for url in _known.values() for s in _secrets_in(url)} | _raw:
        if len(real) >= 4:  # a 1-3 character "password" would mask innocent text
            out = out.replace(real, MASK)
    return out


def resolve(url: str, field: str) -> str:
    """The URL to connect with: ``${ENV_VAR}`` expanded; a masked URL this process has seen gives the
    real one; a masked URL from a record raises ``SecretError`` naming the field and the fix."""
    if url in _known:
        return _known[url]

    def env(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise SecretError(f"{field}: {match.group(0)} is not set in the environment; export {name}=... and retry")
        value = os.environ[name]
        _raw.add(value)
        # inside the URL's user:password@ or ?password= a '/', '#', '@' or '%' must be percent-encoded
        before = url[: match.start()]
        in_userinfo = "://" in before and "@" not in before.split("://", 1)[1] and "@" in url[match.end() :]
        return quote(value, safe="") if in_userinfo or _QUERY_KEY.search(before) else value

    real = _ENV.sub(env, url)
    if MASK in _secrets_in(real):
        raise SecretError(
            f"{field}: the password of {url!r} was not stored; pass the URL again ({field} URL, or "
            "execution.storage=URL / tracking.uri=URL to sweep resume), or write the password as ${ENV_VAR} "
            "in the spec so it never needs storing"
        )
    _known[mask(real)] = real
    _known[url] = real
    return real


def without_credentials(url: str) -> str:
    """``scheme://user:password@host/...`` -> ``scheme://host/...``: an address to show or open."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://)[^@/\s]*@", r"\1", url, flags=re.IGNORECASE)
