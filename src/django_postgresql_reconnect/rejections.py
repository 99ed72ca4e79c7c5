"""Read a failed connection attempt: did the server refuse it, and with which SQLSTATE?

When a connection attempt fails, libpq keeps only the text of the server's ErrorResponse:
``e.sqlstate`` (psycopg) and ``e.pgcode`` (psycopg2) are None. The server writes that text in
the language of its ``lc_messages``, so the SQLSTATE is recovered from the words of every
language PostgreSQL ships (``rejection_texts.py``, generated from PostgreSQL's own message
catalogs by ``tools/generate_rejection_texts.py``).

libpq prints a rejection as ``<prefix>: <SEVERITY>:  <message>``: the prefix is libpq's own and
is translated when libpq is built with NLS, the severity word ("FATAL", "ВАЖНО", "致命错误")
comes from the server, and the colon with two spaces after it is libpq's, in every language.
Multi-host or SSL-fallback attempts put one such line per attempt, in order; psycopg 3 repeats
its last attempt's message on the first line.

Plain Python (standard library only, no Django): rules about what to do with the answers live
in ``policy.py``. The tables are prepared once, on first use (a few milliseconds).
"""

from __future__ import annotations

import functools
import re
import socket
from typing import Literal

__all__ = [
    "encryption_failure",
    "host_lookup_failure",
    "is_server_rejection",
    "rejection_sqlstate",
    "rejection_sqlstates",
]

# A printf conversion as PostgreSQL's messages use them (%s, %d, %u, %zu, %lu, %m, %1$s).
_PLACEHOLDER = re.compile(
    r"%%|%(?:\d+\$)?[-+ #0]*(?:\d+|\*)?(?:\.\d+)?(?:hh|h|ll|l|L|q|j|z|t)?[diouxXeEfFgGcspm]"
)
# OpenSSL's reasons (never translated) for a handshake that the same settings fail again:
# certificate verify failed, tlsv1 alert unknown ca, sslv3 alert bad certificate,
# tlsv13 alert certificate required, unsupported protocol, wrong version number... Left out on
# purpose: "unexpected eof while reading" and "bad record mac", which a dying server causes.
_OPENSSL_MISMATCH = re.compile(
    r"certificate|unknown ca|handshake failure|protocol version|unsupported protocol"
    r"|wrong version number|no protocols available|no shared cipher|insufficient security"
    r"|access denied"
)


def rejection_sqlstate(message: str) -> str | None:
    """Return the SQLSTATE of the server's rejection in a connection failure's message.

    With several attempts in one message, the answer is the last one's (the final outcome).
    None when the message holds no server rejection (refused, timeout, reset, EOF, DNS, TLS:
    a client-side failure) or when the last rejection is one this table does not know.
    """
    sqlstates = rejection_sqlstates(message)
    return sqlstates[-1] if sqlstates else None


def rejection_sqlstates(message: str) -> list[str | None]:
    """Return one entry per rejection the server sent, in order: its SQLSTATE, or None if unknown.

    An empty list means that no server refused the attempt: the failure was the client's or
    the network's. Use it to weigh multi-host attempts (one transient rejection among
    permanent ones may be worth a retry).
    """
    return [_sqlstate_of(found["text"].rstrip()) for found in _severity_line().finditer(message)]


def is_server_rejection(message: str) -> bool:
    """Tell whether a server refused the attempt (as opposed to the client or the network).

    Decided by libpq's ``<SEVERITY>:  `` structure after its prefix, not by words, so it also
    holds for a rejection whose text is not in the table (a new message, a new language).
    """
    return _severity_line().search(message) is not None


def encryption_failure(message: str) -> str | None:
    """Name the TLS or GSSAPI-encryption requirement that failed the attempt, or return None.

    The answer is libpq's English message (with ``%s`` placeholders), or ``"SSL error: "`` and
    OpenSSL's reason, whatever language libpq wrote it in. Each is a mismatch of settings or
    certificates that fails the same way on every attempt ("server does not support SSL, but
    SSL was required", "SSL error: certificate verify failed"). A TLS session cut short
    ("SSL SYSCALL error", "unexpected eof while reading") is a network failure: None.
    """
    for line in message.splitlines():
        for parts, english in _encryption_table():
            start = _search(parts, line)
            if start < 0:
                continue
            if english != "SSL error: %s":
                return english
            reason = line[start + len(parts[0]) :].strip()
            if _OPENSSL_MISMATCH.search(reason):
                return "SSL error: " + reason
    return None


#: getaddrinfo() codes that say the name itself cannot be resolved, or that the request is
#: malformed: the same lookup fails again. Others (EAI_AGAIN: the resolver did not answer;
#: EAI_FAIL, EAI_MEMORY, EAI_SYSTEM) may pass. getattr: some are not defined everywhere.
_PERMANENT_LOOKUP_ERRORS = frozenset(
    code
    for code in (
        getattr(socket, name, None)
        for name in (
            "EAI_NONAME",
            "EAI_NODATA",
            "EAI_ADDRFAMILY",
            "EAI_SERVICE",
            "EAI_FAMILY",
            "EAI_SOCKTYPE",
            "EAI_BADFLAGS",
        )
    )
    if code is not None
)


def host_lookup_failure(host: str) -> Literal["permanent", "transient"] | None:
    """Resolve one host name as libpq would; say whether a failure is permanent or transient.

    libpq's "could not translate host name" (and psycopg 3's "failed to resolve host") carry
    the resolver's text in the client's language; the ``gaierror`` code does not. EAI_NONAME
    (no such name) is permanent, EAI_AGAIN (no answer from the resolver) transient. None when
    the name resolves, or is a Unix socket directory, an IP address or empty (no lookup).
    Blocks like libpq's own lookup: call it after a failure, not on every attempt. Split a
    libpq multi-host list (``"a,b"``) first. A name that vanishes for a while also reads as
    EAI_NONAME (a Kubernetes headless service with no ready pod): a name that resolved before
    may deserve retries all the same.
    """
    if not host or host.startswith(("/", "@")):
        return None
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        return "permanent" if error.errno in _PERMANENT_LOOKUP_ERRORS else "transient"
    except UnicodeError:
        return "permanent"  # not a valid host name at all (IDNA: an empty or too long label)
    except OSError:
        return "transient"
    return None


# --- The tables, prepared on first use ---------------------------------------------------------
#
# A template is matched by its literal parts (the text between placeholders), found in order:
# as exact as a regex of ``.*?`` wildcards, and a thousand of them are ready in milliseconds
# where one compiled alternation of them took a quarter of a second.

_Parts = tuple[str, ...]


def _parts(template: str) -> _Parts:
    """Split a printf template at its placeholders: ``'role "%s" x'`` -> ``('role "', '" x')``."""
    parts = [""]
    position = 0
    for placeholder in _PLACEHOLDER.finditer(template):
        parts[-1] += template[position : placeholder.start()]
        if placeholder.group() == "%%":
            parts[-1] += "%"
        else:
            parts.append("")
        position = placeholder.end()
    parts[-1] += template[position:]
    return tuple(parts)


def _fullmatch(parts: _Parts, text: str) -> bool:
    """Tell whether ``text`` is the template with any text in place of each placeholder."""
    first, last = parts[0], parts[-1]
    if len(parts) == 1:
        return text == first
    end = len(text) - len(last)
    if end < len(first) or not text.startswith(first) or not text.endswith(last):
        return False
    position = len(first)
    for part in parts[1:-1]:
        found = text.find(part, position, end)
        if found < 0:
            return False
        position = found + len(part)
    return True


def _search(parts: _Parts, line: str) -> int:
    """Return where the template's first part starts in ``line`` if all parts follow, else -1."""
    start = line.find(parts[0])
    if start < 0:
        return -1
    position = start + len(parts[0])
    for part in parts[1:]:
        found = line.find(part, position)
        if found < 0:
            return -1
        position = found + len(part)
    return start


def _texts(english: str, translations: dict[str, tuple[str, ...]]) -> dict[str, None]:
    """English first, then every translation, without repeats."""
    return dict.fromkeys([english, *(text for texts in translations.values() for text in texts)])


@functools.cache
def _server_table() -> tuple[dict[str, str], list[tuple[_Parts, str]]]:
    """The texts without placeholders by text, and the others as (parts, SQLSTATE)."""
    exact: dict[str, str] = {}
    templates: list[tuple[_Parts, str]] = []
    from .rejection_texts import SERVER_REJECTIONS  # a large table: loaded on first failure

    for english, (sqlstate, translations) in SERVER_REJECTIONS.items():
        for text in _texts(english, translations):
            parts = _parts(text)
            if len(parts) == 1:
                exact.setdefault(parts[0], sqlstate)
            else:
                templates.append((parts, sqlstate))
    return exact, templates


def _sqlstate_of(text: str) -> str | None:
    exact, templates = _server_table()
    if text in exact:
        return exact[text]
    for parts, sqlstate in templates:
        if _fullmatch(parts, text):
            return sqlstate
    return None


@functools.cache
def _severity_line() -> re.Pattern[str]:
    """Find ``<SEVERITY>:  <message>``: a known severity at the start of a line, or any word
    right after a colon (libpq's "... failed: ", or the fullwidth colon U+FF1A in Chinese).

    A known severity first: the Turkish one has a space ("ÖLÜMCÜL (FATAL)"). Requiring the
    colon before an unknown word keeps out libpq's DETAIL and HINT lines, which start a line,
    and a few translated client messages with two spaces after a colon (Korean, Hebrew).
    """
    from .rejection_texts import SEVERITIES

    words = sorted(SEVERITIES, key=len, reverse=True)
    known = "|".join(re.escape(word) for word in words)
    return re.compile(
        rf"(?:^(?:{known})|[:\uff1a][ \t]*(?:{known}|[^\s:\uff1a]+)):  (?P<text>[^\n]*)",
        re.MULTILINE,
    )


def _encryption_failures() -> dict[str, dict[str, tuple[str, ...]]]:
    from .rejection_texts import ENCRYPTION_FAILURES

    return ENCRYPTION_FAILURES


@functools.cache
def _encryption_table() -> list[tuple[_Parts, str]]:
    """Every text of libpq's encryption failures as (parts, English text)."""
    return [
        (_parts(text), english)
        for english, translations in _encryption_failures().items()
        for text in _texts(english, translations)
    ]
