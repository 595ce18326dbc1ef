"""Credentials: where they come from, and keeping them out of everything bulkdl prints or writes.

- A header value may name environment variables: ``Authorization: "Bearer ${MIRROR_TOKEN}"``.
- ``user:password@`` in a URL becomes a Basic ``Authorization`` header and leaves the URL.
- ``~/.netrc`` (or the file ``$NETRC`` names) supplies a login for a host that has no credentials yet.

Every secret found is listed on the job so that messages can be scrubbed of it, and URLs are only ever shown
redacted: no password, and no value of a query parameter that looks like a token or a signature.
"""

from __future__ import annotations

import base64
import netrc
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from .paths import PLAIN_URL

CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SENSITIVE_QUERY = re.compile(r"token|key|sig|secret|passw|auth|credential|session", re.IGNORECASE)
HIDDEN = "***"

Netrc = Callable[[str], tuple[str, str] | None]  # host → (login, password)
Headers = tuple[tuple[str, str], ...]


class Resolved(NamedTuple):  # one per entry and never pickled: a tuple is made in half a frozen dataclass's time
    url: str  # what requests go to: no userinfo
    shown_url: str  # what people and files see
    headers: tuple[tuple[str, str], ...]
    secrets: tuple[str, ...]


def missing_variables(value: str) -> list[str]:
    return [name for name in ENV_REFERENCE.findall(value) if name not in os.environ]


class Resolver:
    """Credentials for every URL of a manifest; each header set is expanded once, netrc asked once per host.

    Entries that share headers and a host get the very same headers tuple back, so they can share Settings.
    """

    def __init__(self, lookup: Netrc) -> None:
        self._lookup = lookup
        self._logins: dict[str, tuple[str, str] | None] = {}
        self._expanded: dict[Headers, tuple[Headers, tuple[str, ...], bool]] = {}
        self._results: dict[tuple[Headers, tuple[str, str] | None], tuple[Headers, tuple[str, ...]]] = {}
        self._plain: dict[tuple[Headers, str], tuple[Headers, tuple[str, ...]]] = {}  # (headers, netloc) → result

    def resolve(self, url: str, headers: Headers) -> Resolved:
        """Expand environment references, move URL credentials into a header, consult netrc."""
        if PLAIN_URL.fullmatch(url):  # no userinfo to move, nothing to hide: the same answer for its whole host
            netloc = url.split("/", 3)[2]
            known = self._plain.get((headers, netloc))
            if known is None:
                known = self._plain[(headers, netloc)] = self._credentials(url, headers, netloc, None)
            return Resolved(url, url, *known)
        clean, shown, netloc, login = _split(url)
        return Resolved(clean, shown, *self._credentials(url, headers, netloc, login))

    def _credentials(
        self, url: str, headers: Headers, netloc: str, login: tuple[str, str] | None
    ) -> tuple[Headers, tuple[str, ...]]:
        """The headers and secrets of a request to ``url``, whose userinfo gave ``login`` (None: none)."""
        expanded, secrets, authorized = self._expand(headers)
        if login is None and not authorized:
            if netloc not in self._logins:  # asked once per host and port as written
                self._logins[netloc] = self._lookup(urlsplit(url).hostname or "")
            login = self._logins[netloc]
        if authorized:
            login = None
        result = self._results.get((headers, login))
        if result is None:
            result = self._results[(headers, login)] = _with_login(expanded, secrets, login)
        return result

    def _expand(self, headers: Headers) -> tuple[Headers, tuple[str, ...], bool]:
        if headers not in self._expanded:
            secrets = []
            expanded = []
            for name, value in headers:
                real = ENV_REFERENCE.sub(lambda m: os.environ.get(m.group(1), ""), value)
                if real != value or name.lower() in CREDENTIAL_HEADERS:
                    secrets.append(real)
                expanded.append((name, real))
            authorized = any(n.lower() == "authorization" for n, _ in expanded)
            self._expanded[headers] = (tuple(expanded), tuple(secrets), authorized)
        return self._expanded[headers]


def _split(url: str) -> tuple[str, str, str, tuple[str, str] | None]:
    """The URL to request, the URL to show, its netloc, and the login its userinfo gives (not a PLAIN_URL)."""
    parts = urlsplit(url)
    login = (unquote(parts.username), unquote(parts.password or "")) if parts.username is not None else None
    clean = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return clean, redact_url(url), parts.netloc, login


def _with_login(
    expanded: Headers, secrets: tuple[str, ...], login: tuple[str, str] | None
) -> tuple[Headers, tuple[str, ...]]:
    if login is None:
        return expanded, tuple(s for s in secrets if s)
    token = base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()
    more = (*secrets, login[1], token, f"Basic {token}")
    return (*expanded, ("Authorization", f"Basic {token}")), tuple(s for s in more if s)


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username}:{HIDDEN}@{netloc.rpartition('@')[2]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, HIDDEN if _SENSITIVE_QUERY.search(k) else v) for k, v in pairs], safe="*", quote_via=quote
        )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def scrub(text: str | None, secrets: tuple[str, ...]) -> str | None:
    """``text`` with every secret replaced by ***; the longest first, so no part of one survives."""
    if text is None:
        return None
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    return text


def netrc_lookup() -> Netrc:
    """A lookup in the user's netrc file, read once; raises ValueError when the file cannot be used."""
    named = os.environ.get("NETRC")
    path = Path(named) if named else Path.home() / ".netrc"
    if not path.exists():
        return lambda host: None
    try:
        # With no argument netrc reads ~/.netrc and refuses one that others can read; keep that check.
        parsed = netrc.netrc(named) if named else netrc.netrc()
    except (netrc.NetrcParseError, OSError) as exc:
        raise ValueError(f"{path}: {exc}") from None

    def lookup(host: str) -> tuple[str, str] | None:
        entry = parsed.authenticators(host)
        return (entry[0], entry[2] or "") if entry else None

    return lookup
