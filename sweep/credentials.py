"""Passwords in the sweep's URLs (``execution.storage``, ``tracking.uri``).

Written as ``${ENV_VAR}`` a password stays out of every file: the spec keeps the reference and it is
expanded only where a connection is opened. Written literally it is used, but everything the sweep
stores or prints (run dir files, MLflow params/tags/artifacts, the console, the Ray job) shows ``***``
instead; a later ``sweep resume``/``report`` then needs the URL again (or the ``${ENV_VAR}`` form).

A URL is parsed, not pattern-matched: in ``scheme://user:PASSWORD@host...`` the password is everything
after the user's ``:`` up to the last ``@`` of the URL, so it may hold ``/ : ? # @ %``. SQLAlchemy reads up
to the first ``@`` (``postgresql://u:pa/ss@db/x`` has the password ``pa/ss``); the last ``@`` covers that and
urllib's reading, at the price of masking too much when a path holds an ``@`` (``http://h:5000/a@b`` shows
``http://h:***@b``), never too little. Credential query parameters (``?password=``, ``sslpassword=``,
``access_token=``, ...) are masked too. In free text (an error message) every ``scheme://`` up to the next
space is such a URL; ``?key=value`` outside any URL is still checked by its key.
"""

from __future__ import annotations

import os
import re
from urllib.parse import quote, unquote

from sweep.errors import SecretError

MASK = "***"
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# a scheme is the whole run of scheme characters before '://' (so "x_postgresql://" still counts)
_URL = re.compile(r"(?<![a-z0-9+.-])[a-z][a-z0-9+.-]*://\S*", re.IGNORECASE)
_PARAM = re.compile(r"[?&](?P<key>[^=&?#\s]+)=(?P<value>[^&\s]*)")
# query keys whose value is a credential (compared lower-case, '-' read as '_'): exact names, and any
# name ending in one of the suffixes (sslpassword, client_secret, access_token, x_amz_signature, ...)
_SECRET_KEYS = frozenset({"pwd", "pass", "auth", "key", "apikey", "api_key", "sig"})
_SECRET_SUFFIXES = ("password", "passwd", "secret", "token", "signature")
_known: dict[str, str] = {}  # masked URL -> the URL it stands for, for this process only
_raw: set[str] = set()  # values of ${ENV_VAR}s expanded into URLs (masked wherever they appear)


def _userinfo(url: str) -> tuple[int, int] | None:
    """Where ``user:password`` of ``url`` (which starts with ``scheme://``) lies: from ``://`` to the last
    ``@``; None without an ``@``, or when the user (before the first ``:``) holds a ``/`` (an ``@`` in the path)."""
    start = url.index("://") + 3
    end = url.rfind("@", start)
    return None if end < 0 or "/" in url[start:end].partition(":")[0] else (start, end)


def _is_secret_key(key: str) -> bool:
    name = unquote(key).lower().replace("-", "_")
    return name in _SECRET_KEYS or name.endswith(_SECRET_SUFFIXES)


def _params(text: str, offset: int = 0) -> list[tuple[int, int]]:
    """Spans of the credential values among ``text``'s ``?key=value&...`` parameters."""
    found = [m for m in _PARAM.finditer(text) if _is_secret_key(m["key"])]
    return [(offset + m.start("value"), offset + m.end("value")) for m in found]


def _spans(text: str) -> list[tuple[int, int]]:
    """Spans of the passwords and credential parameters in ``text``: each ``scheme://...`` up to a space
    is parsed as a URL; between URLs only ``?key=value`` parameters are looked at."""
    found, last = [], 0
    for match in _URL.finditer(text):
        found += _params(text[last : match.start()], last)
        url, at = match.group(0), match.start()
        userinfo = _userinfo(url)
        if userinfo is not None and ":" in url[userinfo[0] : userinfo[1]]:
            found.append((at + url.index(":", userinfo[0]) + 1, at + userinfo[1]))
        after = userinfo[1] if userinfo else url.index("://") + 3
        found += _params(url[after:], at + after)
        last = match.end()
    return found + _params(text[last:], last)


def _kept(secret: str) -> bool:
    """``${ENV_VAR}`` is a reference, not a secret; ``***`` is already masked; empty is no password."""
    return not secret or secret == MASK or _ENV.fullmatch(secret) is not None


def _secrets_in(text: str) -> list[str]:
    return [text[start:end] for start, end in _spans(text)]


def has_literal_password(url: str) -> bool:
    """Whether ``url`` holds a password written out (not a ``${ENV_VAR}`` reference, not ``***``)."""
    return any(not _kept(secret) for secret in _secrets_in(url))


def mask(text: str) -> str:
    """``text`` with every URL password replaced by ``***`` (``${ENV_VAR}`` references are kept: they
    are not secrets), and every password this process has expanded removed wherever it appears."""
    out = text
    for start, end in sorted(_spans(text), reverse=True):
        if not _kept(text[start:end]):
            out = out[:start] + MASK + out[end:]
    known = {s for url in _known.values() for s in _secrets_in(url)} | _raw
    for real in sorted(known | {unquote(s) for s in known} | {quote(s, safe="") for s in known}, key=len, reverse=True):
        if len(real) >= 4:  # a 1-3 character "password" would mask innocent text
            out = out.replace(real, MASK)
    return out


def resolve(url: str, field: str) -> str:
    """The URL to connect with: ``${ENV_VAR}`` expanded; a masked URL this process has seen gives the
    real one; a masked URL from a record raises ``SecretError`` naming the field and the fix."""
    if url in _known:
        return _known[url]
    userinfo = _userinfo(url) if _URL.match(url) else None
    encoded = ([userinfo] if userinfo else []) + _spans(url)

    def env(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise SecretError(f"{field}: {match.group(0)} is not set in the environment; export {name}=... and retry")
        value = os.environ[name]
        _raw.add(value)
        # inside user:password@ or a credential ?key= a '/', ':', '#', '@', '%' or space is percent-encoded,
        # or the URL would be read differently
        inside = any(start <= match.start() and match.end() <= end for start, end in encoded)
        return quote(value, safe="") if inside else value

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
    """``scheme://user:password@host/...`` -> ``scheme://host/...`` (credential parameters masked): an
    address to show or open."""
    userinfo = _userinfo(url) if _URL.match(url) else None
    return mask(url[: userinfo[0]] + url[userinfo[1] + 1 :] if userinfo else url)
