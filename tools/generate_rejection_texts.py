#!/usr/bin/env python3
"""Write src/django_postgresql_reconnect/rejection_texts.py from PostgreSQL's message catalogs.

libpq reports a failed connection attempt as text only, in the language of the server (for the
server's rejection) and of the client (for libpq's own messages). This script collects, for the
English messages listed below, every translation found in the gettext catalogs
(``postgres-<major>.mo`` for the server, ``libpq5-<major>.mo`` for libpq) under the locale
directories given, and writes them as a Python data module that ``rejections.py`` compiles.

Standard library only; the catalogs are read with :mod:`gettext`. The committed table was made
on Debian from the catalogs of PostgreSQL 13, 15, 17 and 18, which cover the wording of 14 (same
messages as 15) and 16 (same as 17) too::

    # 15 is Debian 12's own: apt-get install postgresql-15 (catalogs in /usr/share/locale).
    # 13, 17 and 18 come from Debian 11, 13 and unstable, unpacked without installing:
    apt-get download postgresql-13 postgresql-17 postgresql-18 \\
        libpq5=13.16-0+deb11u1 libpq5=17.12-0+deb13u1 libpq5=18.6-3
    for deb in *.deb; do dpkg-deb -x "$deb" unpacked; done
    python3 tools/generate_rejection_texts.py /usr/share/locale unpacked/usr/share/locale

(``apt-get download`` needs those suites in an APT sources list; a private one works:
``-o Dir::Etc::sourcelist=... -o Dir::State::Lists=...``.) The output is formatted with ruff
when ``.nox/lint/bin/ruff`` exists (``dev.py lint`` makes it), so that the lint accepts it
unchanged.
"""

from __future__ import annotations

import argparse
import gettext
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "src" / "django_postgresql_reconnect" / "rejection_texts.py"

#: What the server sends with FATAL while a connection starts, and its SQLSTATE. Only messages
#: the client receives are listed (auth.c logs some details, such as why a certificate failed,
#: and sends the client only "... authentication failed"). Where the wording changed, each
#: version's text is listed; the comment says where it came from.
SERVER_REJECTIONS: list[tuple[str, str]] = [
    # Authentication (auth.c, auth_failed): only password methods send 28P01.
    ("28P01", 'password authentication failed for user "%s"'),
    ("28000", 'authentication failed for user "%s": host rejected'),
    ("28000", 'authentication failed for user "%s": invalid authentication method'),
    ("28000", '"trust" authentication failed for user "%s"'),
    ("28000", 'Ident authentication failed for user "%s"'),
    ("28000", 'Peer authentication failed for user "%s"'),
    ("28000", 'GSSAPI authentication failed for user "%s"'),
    ("28000", 'SSPI authentication failed for user "%s"'),
    ("28000", 'PAM authentication failed for user "%s"'),
    ("28000", 'BSD authentication failed for user "%s"'),
    ("28000", 'LDAP authentication failed for user "%s"'),
    ("28000", 'certificate authentication failed for user "%s"'),
    ("28000", 'RADIUS authentication failed for user "%s"'),
    ("28000", 'OAuth bearer authentication failed for user "%s"'),  # 18
    ("28000", "connection requires a valid client certificate"),
    # pg_hba.conf (auth.c): the last %s is "SSL encryption", "GSS encryption" or "no encryption".
    ("28000", 'no pg_hba.conf entry for host "%s", user "%s", database "%s", %s'),
    ("28000", 'no pg_hba.conf entry for host "%s", user "%s", database "%s"'),
    ("28000", 'no pg_hba.conf entry for replication connection from host "%s", user "%s", %s'),
    ("28000", 'no pg_hba.conf entry for replication connection from host "%s", user "%s"'),
    ("28000", 'pg_hba.conf rejects connection for host "%s", user "%s", database "%s", %s'),
    ("28000", 'pg_hba.conf rejects connection for host "%s", user "%s", database "%s"'),
    ("28000", 'pg_hba.conf rejects replication connection for host "%s", user "%s", %s'),
    ("28000", 'pg_hba.conf rejects replication connection for host "%s", user "%s"'),
    # Roles (miscinit.c, InitializeSessionUserId) and the startup packet (postmaster).
    ("28000", 'role "%s" does not exist'),
    ("28000", 'role "%s" is not permitted to log in'),
    ("28000", "no PostgreSQL user name specified in startup packet"),
    ("0A000", "unsupported frontend protocol %u.%u: server supports %u.0 to %u.%u"),
    # Databases (postinit.c).
    ("3D000", 'database "%s" does not exist'),
    ("3D000", 'database "%s" has disappeared from pg_database'),
    ("55000", 'database "%s" is not currently accepting connections'),  # datallowconn false
    ("55000", 'cannot connect to invalid database "%s"'),  # an interrupted DROP DATABASE
    ("42501", 'permission denied for database "%s"'),  # CONNECT privilege
    # 42501 although it passes: PostgreSQL <= 14 during a smart shutdown held by a backup.
    ("42501", "must be superuser to connect during database shutdown"),
    ("42501", "must be superuser or replication role to start walsender"),  # <= 15
    ("42501", "permission denied to start WAL sender"),  # 16+
    # Too many connections (postinit.c, postmaster).
    ("53300", "sorry, too many clients already"),
    ("53300", 'too many connections for role "%s"'),
    ("53300", 'too many connections for database "%s"'),
    ("53300", "remaining connection slots are reserved for non-replication superuser connections"),
    ("53300", "remaining connection slots are reserved for roles with the %s attribute"),  # 16+
    (
        "53300",
        'remaining connection slots are reserved for roles with privileges of the "%s" role',
    ),  # 16+ (reserved_connections)
    ("53300", "number of requested standby connections exceeds max_wal_senders (currently %d)"),
    (
        "53300",
        'number of requested standby connections exceeds "max_wal_senders" (currently %d)',
    ),  # 17+
    # The server's state (postmaster, canAcceptConnections): "not yet" and "not accepting" are
    # 14+; 13 says "starting up" for both.
    ("57P03", "the database system is starting up"),
    ("57P03", "the database system is not yet accepting connections"),
    ("57P03", "the database system is not accepting connections"),
    ("57P03", "the database system is shutting down"),
    ("57P03", "the database system is in recovery mode"),
    # A session ended while it was starting (postgres.c). The last three come as WARNING from
    # quickdie() and rarely reach the failure message; they are here for completeness.
    ("57P01", "terminating connection due to administrator command"),
    ("57P01", "terminating connection due to unexpected postmaster exit"),
    ("57P01", "terminating connection due to immediate shutdown command"),
    ("57P01", "terminating connection because of unexpected SIGQUIT signal"),
    ("57P02", "terminating connection because of crash of another server process"),
    ("53200", "out of memory"),
    # Options sent in the startup packet (options='-c name=value'), applied after login.
    ("22023", 'invalid value for parameter "%s": "%s"'),
    ("42704", 'unrecognized configuration parameter "%s"'),
    ("42501", 'permission denied to set parameter "%s"'),
    ("55P02", 'parameter "%s" cannot be set after connection start'),
    ("55P02", 'parameter "%s" cannot be changed now'),
]

#: libpq's own messages for a TLS or GSSAPI-encryption requirement that cannot be met: the same
#: settings fail the same way on every attempt. Only the first line of each is kept (some go
#: on with a hint). rejections.py matches "SSL error: %s" only with the OpenSSL reasons that
#: name a certificate or protocol mismatch (not "unexpected eof while reading", say).
ENCRYPTION_FAILURES: list[str] = [
    "SSL error: %s",
    "server does not support SSL, but SSL was required",
    "SSL error: certificate verify failed: %s",  # 17+; older: "SSL error: certificate ..."
    'server certificate for "%s" does not match host name "%s"',
    'server certificate for "%s" (and %d other name) does not match host name "%s"',
    "SSL certificate's name entry is missing",
    "SSL certificate's address entry is missing",
    'root certificate file "%s" does not exist',
    'could not read root certificate file "%s": %s',
    "could not get home directory to locate root certificate file",
    "could not load system root certificate paths: %s",
    'could not open certificate file "%s": %s',
    'could not read certificate file "%s": %s',
    'certificate present, but not private key file "%s"',
    'certificate does not match private key file "%s": %s',
    'could not load private key file "%s": %s',
    'private key file "%s" has group or world access; permissions should be u=rw (0600) or less',
    (
        'private key file "%s" has group or world access; file must have permissions u=rw (0600)'
        " or less if owned by the current user, or permissions u=rw,g=r (0640) or less if owned"
        " by root"
    ),
    'private key file "%s" is not a regular file',
    "host name must be specified for a verified SSL connection",
    'weak sslmode "%s" may not be used with sslrootcert=system (use "verify-full")',
    "server did not request an SSL certificate",
    "server accepted connection without a valid SSL certificate",
    "channel binding required, but SSL not in use",
    "server doesn't support GSSAPI encryption, but it was required",
    (
        "GSSAPI encryption required but was impossible (possibly no credential cache,"
        " no server support, or using a local socket)"
    ),
    "GSSAPI encryption required but it is not supported over a local socket",
    "GSSAPI encryption required but no credential cache",
]

#: Severity words the server puts before its message; libpq prints "<severity>:  <message>".
SEVERITIES = ["FATAL", "PANIC", "ERROR"]

_CATALOG = re.compile(r"(?P<domain>postgres|libpq5)-(?P<major>\d+)\.mo$")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("roots", nargs="*", type=Path, default=[Path("/usr/share/locale")])
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)

    catalogs = find_catalogs(args.roots)
    if not catalogs["postgres"]:
        print("no postgres-<major>.mo catalogs found under the roots given", file=sys.stderr)
        return 1
    server = translations(catalogs["postgres"], [text for _, text in SERVER_REJECTIONS])
    client = translations(catalogs["libpq5"], ENCRYPTION_FAILURES)
    severities = translations(catalogs["postgres"], SEVERITIES)
    for english, found in {**server, **client}.items():
        if not found:
            print(f"note: no catalog translates {english!r}", file=sys.stderr)
    add_ascii_variants(server, severities)
    args.output.write_text(render(catalogs, server, client, severities), encoding="utf-8")
    ruff = ROOT / ".nox" / "lint" / "bin" / "ruff"
    if ruff.exists():
        subprocess.run([str(ruff), "format", "--quiet", str(args.output)], check=True)
    total = sum(len(texts) for found in server.values() for texts in found.values())
    print(f"wrote {args.output}: {len(server)} server messages, {total} translations")
    return 0


def add_ascii_variants(
    server: dict[str, dict[str, list[str]]], severities: dict[str, dict[str, list[str]]]
) -> None:
    """Add each translation as glibc writes it for a server whose LC_CTYPE is C.

    Before a database is chosen (authentication, role and database checks), the server's
    messages are in the codeset of the postmaster's own LC_CTYPE; in the C locale glibc's
    gettext transliterates them to ASCII ("VAZHNO:  pol`zovatel` ..." for Russian, "?" for what
    has no transliteration). iconv does the same conversion. Variants left with too few
    letters to tell them apart (Japanese, Chinese, Korean, Georgian, Greek become "????") or
    that would match another SQLSTATE's text are left out.
    """
    originals = [
        (english, language, text)
        for english, found in server.items()
        for language, texts in found.items()
        for text in texts
    ]
    converted = to_ascii([text for _, _, text in originals])
    if converted is None:
        print("note: no iconv: ASCII variants left out", file=sys.stderr)
        return
    codes = {normalize(text): code for code, text in SERVER_REJECTIONS}
    known = [(template_regex(english), codes[english]) for english in server]
    known += [(template_regex(text), codes[english]) for english, _, text in originals]
    candidates = []
    for (english, language, text), ascii_text in zip(originals, converted, strict=True):
        literal = PLACEHOLDER.sub("", ascii_text)
        letters = sum(char.isascii() and char.isalpha() for char in literal)
        if ascii_text != text and letters >= ASCII_LETTERS_NEEDED:
            candidates.append((english, language, ascii_text))
    accepted = []
    texts_and_codes = [(fill(text), code) for text, code in samples(server)]
    for english, language, ascii_text in candidates:
        code = codes[english]
        pattern = template_regex(ascii_text)
        mine = fill(ascii_text)
        rivals = [other for other, other_code in known if other_code != code]
        rival_samples = [sample for sample, other_code in texts_and_codes if other_code != code]
        if any(other.fullmatch(mine) for other in rivals) or any(
            pattern.fullmatch(sample) for sample in rival_samples
        ):
            print(f"note: ASCII variant {ascii_text!r} is ambiguous: left out", file=sys.stderr)
            continue
        accepted.append((english, language, ascii_text))
        known.append((pattern, code))
    for english, language, ascii_text in accepted:
        variants = server[english].setdefault(f"{language} (ASCII)", [])
        if ascii_text not in variants:
            variants.append(ascii_text)
    words = [word for found in severities.values() for texts in found.values() for word in texts]
    for word, ascii_word in zip(words, to_ascii(words) or [], strict=True):
        if ascii_word != word and any(char.isascii() and char.isalpha() for char in ascii_word):
            severities.setdefault(ascii_word, {})["ascii"] = [ascii_word]


#: Letters (outside placeholders) an ASCII variant needs to be told apart from the others.
ASCII_LETTERS_NEEDED = 6
PLACEHOLDER = re.compile(
    r"%%|%(?:\d+\$)?[-+ #0]*(?:\d+|\*)?(?:\.\d+)?(?:hh|h|ll|l|L|q|j|z|t)?[diouxXeEfFgGcspm]"
)


def to_ascii(texts: list[str]) -> list[str] | None:
    """Convert like glibc's gettext for the C locale: ASCII, transliterated, else "?"."""
    try:
        result = subprocess.run(
            ["iconv", "-f", "UTF-8", "-t", "ANSI_X3.4-1968//TRANSLIT"],
            input="\n".join(texts) + "\n",
            capture_output=True,
            text=True,
            env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"},
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return result.stdout.split("\n")[: len(texts)]


def template_regex(template: str) -> re.Pattern[str]:
    parts = PLACEHOLDER.split(template)
    return re.compile(".*?".join(re.escape(part) for part in parts), re.DOTALL)


def fill(template: str) -> str:
    return PLACEHOLDER.sub("x", template)


def samples(server: dict[str, dict[str, list[str]]]) -> list[tuple[str, str]]:
    """Every text of the table with its SQLSTATE."""
    codes = {normalize(text): code for code, text in SERVER_REJECTIONS}
    return [
        (text, codes[english])
        for english, found in server.items()
        for text in [english, *(text for texts in found.values() for text in texts)]
    ]


def find_catalogs(roots: list[Path]) -> dict[str, dict[tuple[str, str], Path]]:
    """Map each domain to {(major, language): catalog path}."""
    found: dict[str, dict[tuple[str, str], Path]] = {"postgres": {}, "libpq5": {}}
    for root in roots:
        for path in sorted(root.glob("*/LC_MESSAGES/*.mo")):
            match = _CATALOG.match(path.name)
            if match:
                language = path.parent.parent.name
                found[match["domain"]][(match["major"], language)] = path
    return found


def normalize(text: str) -> str:
    """The first line without its trailing newline (libpq <= 15 ends its messages with one)."""
    return text.split("\n", 1)[0].rstrip()


def translations(
    catalogs: dict[tuple[str, str], Path], wanted: list[str]
) -> dict[str, dict[str, list[str]]]:
    """Map each English text to {language: [its distinct translations]}."""
    result: dict[str, dict[str, list[str]]] = {}
    for text in wanted:
        result[normalize(text)] = defaultdict(list)
    for (_major, language), path in sorted(catalogs.items(), key=lambda item: item[0][1]):
        with path.open("rb") as file:
            catalog = gettext.GNUTranslations(file)._catalog  # type: ignore[attr-defined]
        for key, value in catalog.items():
            msgid = key[0] if isinstance(key, tuple) else key  # plural forms: (msgid, n)
            english = normalize(msgid)
            if english in result and value:
                text = normalize(value)
                if text and text != english and text not in result[english][language]:
                    result[english][language].append(text)
    return {english: dict(sorted(found.items())) for english, found in result.items()}


def render(
    catalogs: dict[str, dict[tuple[str, str], Path]],
    server: dict[str, dict[str, list[str]]],
    client: dict[str, dict[str, list[str]]],
    severities: dict[str, dict[str, list[str]]],
) -> str:
    codes = {normalize(text): code for code, text in SERVER_REJECTIONS}
    used = []
    for domain, found in catalogs.items():
        by_major: dict[str, list[str]] = defaultdict(list)
        for major, language in sorted(found):
            by_major[major].append(language)
        used += [
            f"    {domain}-{major}.mo: {' '.join(names)}" for major, names in by_major.items()
        ]
    words = sorted(
        {word for found in severities.values() for texts in found.values() for word in texts}
        | set(SEVERITIES)
    )
    lines = [
        '"""What PostgreSQL says when it refuses a connection, in every language it ships.',
        "",
        "Generated by tools/generate_rejection_texts.py from these gettext catalogs; do not",
        "edit by hand (change the script's lists and run it again)::",
        "",
        *used,
        "",
        "Texts keep their printf placeholders (%s, %d, %u), which rejections.py turns into",
        "wildcards, and only their first line (an old French catalog wraps some). A key such as",
        '"ru (ASCII)" holds the text as a server whose LC_CTYPE is C sends it: glibc',
        'transliterates it ("VAZHNO:  pol`zovatel` ...") or writes "?".',
        '"""',
        "",
        "# ruff: noqa: E501, RUF001",
        "",
        "#: The words the server may put before its message, as FATAL or PANIC or ERROR.",
        f"SEVERITIES: tuple[str, ...] = {tuple(words)!r}",
        "",
        "#: English text: (SQLSTATE, {language: translations}), as sent with FATAL at connect.",
        "SERVER_REJECTIONS: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {",
    ]
    for english, found in server.items():
        lines.append(f"    {english!r}: ({codes[english]!r}, {{")
        lines += [f"        {lang!r}: {tuple(texts)!r}," for lang, texts in found.items()]
        lines.append("    }),")
    lines += [
        "}",
        "",
        "#: English text: {language: translations}, for libpq's own TLS and GSSAPI-encryption",
        "#: failures that the same settings meet on every attempt.",
        "ENCRYPTION_FAILURES: dict[str, dict[str, tuple[str, ...]]] = {",
    ]
    for english, found in client.items():
        lines.append(f"    {english!r}: {{")
        lines += [f"        {lang!r}: {tuple(texts)!r}," for lang, texts in found.items()]
        lines.append("    },")
    lines.append("}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
