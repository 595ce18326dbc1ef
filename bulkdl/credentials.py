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
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SENSITIVE_QUERY = re.compile(r"token|key|sig|secret|passw|auth|credential|session", re.IGNORECASE)
HIDDEN = "***"

Netrc = Callable[[str], tuple[str, str] | None]  # host → (login, password)


@dataclass(frozen=True, slots=True)
class Resolved:
    url: str  # what requests go to: no userinfo
    shown_url: str  # what people and files see
    headers: tuple[tuple[str, str], ...]
    secrets: tuple[str, ...]


def missing_variables(value: str) -> list[str]:
    return [name for name in ENV_REFERENCE.findall(value) if name not in os.environ]


def resolve(url: str, headers: tuple[tuple[str, str], ...], lookup: Netrc) -> Resolved:
    """Expand environment references, move URL credentials into a header, consult netrc."""
    secrets: list[str] = []
    expanded = []
    for name, value in headers:
        real = ENV_REFERENCE.sub(lambda m: os.environ.get(m.group(1), ""), value)
        if real != value or name.lower() in CREDENTIAL_HEADERS:
            secrets.append(real)
        expanded.append((name, real))
    parts = urlsplit(url)
    login = (unquote(parts.username or ""), unquote(parts.password or "")) if parts.username is not None else None
    clean = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    if login is None and not any(n.lower() == "authorization" for n, _ in expanded):
        login = lookup(parts.hostname or "")
    if login is not None and not any(n.lower() == "authorization" for n, _ in expanded):
        token = base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()
        expanded.append(("Authorization", f"Basic {token}"))
        secrets += [login[1], token, f"Basic {token}"]
    return Resolved(clean, redact_url(url), tuple(expanded), tuple(s for s in secrets if s))


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
