"""Reading a refused connection attempt: the same SQLSTATE whatever language the server speaks.

The first half reads texts as libpq prints them; the second provokes the real refusals on
Debian's PostgreSQL 15 speaking German and Russian (and Russian with LC_CTYPE=C, which makes
glibc transliterate to ASCII), with the driver of this test pass: wrong password, unknown
role and database, pg_hba.conf, CONNECT revoked, connections not allowed, connection limits,
full slots, a smart shutdown, and standbys starting up, not yet consistent and without hot
standby. Those servers need postgresql-15 (/usr/lib/postgresql/15/bin, its translations, and
the locales package it depends on, whose sources localedef compiles): ``.ci/run`` installs
it; elsewhere they are skipped with the reason, unless DPR_REQUIRE_ROOT_TESTS=1 (CI) makes
that a failure.
"""

# ruff: noqa: RUF001 (texts in the languages of PostgreSQL's translations)

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from django_postgresql_reconnect import rejections
from django_postgresql_reconnect.rejection_texts import ENCRYPTION_FAILURES, SERVER_REJECTIONS
from django_postgresql_reconnect.rejections import (
    encryption_failure,
    host_lookup_failure,
    is_server_rejection,
    rejection_sqlstate,
    rejection_sqlstates,
)
from django_postgresql_reconnect.testing import PostgresServer
from django_postgresql_reconnect.testing.pytest_plugin import REQUIRE_ROOT_ENV
from tests.lab._client import OperationalError, connect

PREFIX = 'connection to server at "db.example", port 5432 failed: '

# --- Texts as libpq prints them -----------------------------------------------------------------

#: (language, what follows libpq's prefix, SQLSTATE): copied from real servers' messages.
REFUSALS = [
    ("en", 'FATAL:  password authentication failed for user "app"', "28P01"),
    ("en", 'FATAL:  database "shop" does not exist', "3D000"),
    (
        "en",
        'FATAL:  no pg_hba.conf entry for host "10.1.2.3", user "app", database "shop", '
        "no encryption",
        "28000",
    ),
    ("en", 'FATAL:  role "app" does not exist', "28000"),
    ("en", 'FATAL:  permission denied for database "shop"', "42501"),
    ("en", 'FATAL:  database "template0" is not currently accepting connections', "55000"),
    ("en", "FATAL:  sorry, too many clients already", "53300"),
    (
        "en",
        "FATAL:  remaining connection slots are reserved for non-replication superuser "
        "connections",
        "53300",
    ),
    (
        "en",
        "FATAL:  remaining connection slots are reserved for roles with the SUPERUSER attribute",
        "53300",
    ),
    (
        "en",
        "FATAL:  remaining connection slots are reserved for roles with privileges of the "
        '"pg_use_reserved_connections" role',
        "53300",
    ),
    ("en", 'FATAL:  too many connections for role "app"', "53300"),
    ("en", 'FATAL:  too many connections for database "shop"', "53300"),
    ("en", "FATAL:  the database system is starting up", "57P03"),
    ("en", "FATAL:  the database system is shutting down", "57P03"),
    ("en", "FATAL:  the database system is in recovery mode", "57P03"),
    (
        "en",
        "FATAL:  the database system is not yet accepting connections\n"
        "DETAIL:  Consistent recovery state has not been yet reached.",
        "57P03",
    ),
    (
        "en",
        "FATAL:  the database system is not accepting connections\n"
        "DETAIL:  Hot standby mode is disabled.",
        "57P03",
    ),
    ("en", "FATAL:  terminating connection due to administrator command", "57P01"),
    (
        "en",
        "FATAL:  out of memory\nDETAIL:  Failed on request of size 8192 in memory context "
        '"TopMemoryContext".',
        "53200",
    ),
    ("en", 'FATAL:  unrecognized configuration parameter "statment_timeout"', "42704"),
    ("de", "FATAL:  Passwort-Authentifizierung für Benutzer »app« fehlgeschlagen", "28P01"),
    ("de", "FATAL:  Datenbank »shop« existiert nicht", "3D000"),
    ("de", "FATAL:  keine Berechtigung für Datenbank »shop«", "42501"),
    ("de", "FATAL:  Datenbank »shop« akzeptiert gegenwärtig keine Verbindungen", "55000"),
    ("de", "FATAL:  tut mir leid, schon zu viele Verbindungen", "53300"),
    (
        "de",
        "FATAL:  die verbleibenden Verbindungen sind für Rollen mit dem SUPERUSER-Attribut "
        "reserviert",
        "53300",
    ),
    ("de", "FATAL:  zu viele Verbindungen von Rolle »app«", "53300"),
    ("de", "FATAL:  das Datenbanksystem startet", "57P03"),
    ("de", "FATAL:  das Datenbanksystem fährt herunter", "57P03"),
    ("de", "FATAL:  das Datenbanksystem nimmt noch keine Verbindungen an", "57P03"),
    ("ru", 'ВАЖНО:  пользователь "app" не прошёл проверку подлинности (по паролю)', "28P01"),
    ("ru", 'ВАЖНО:  база данных "shop" не существует', "3D000"),
    (
        "ru",
        'ВАЖНО:  в pg_hba.conf нет записи для компьютера "10.1.2.3", пользователя "app", '
        'базы "shop", без шифрования',
        "28000",
    ),
    ("ru", 'ВАЖНО:  доступ к базе "shop" запрещён', "42501"),
    ("ru", "ВАЖНО:  извините, уже слишком много клиентов", "53300"),
    ("ru", 'ВАЖНО:  слишком много подключений для роли "app"', "53300"),
    ("ru", "ВАЖНО:  система баз данных останавливается", "57P03"),
    ("ru", "ВАЖНО:  система БД не принимает подключения", "57P03"),
    ("ru", "ВАЖНО:  закрытие подключения по команде администратора", "57P01"),
    ("ru", "ВАЖНО:  нехватка памяти", "53200"),
    (
        "fr",
        "FATAL:  authentification par mot de passe échouée pour l'utilisateur  « app »",
        "28P01",
    ),
    ("fr", "FATAL:  la base de données « shop » n'existe pas", "3D000"),
    ("fr", "FATAL:  désolé, trop de clients sont déjà connectés", "53300"),
    ("fr", "FATAL:  le système de base de données s'arrête", "57P03"),
    # PostgreSQL 13's French catalog wraps this one: the newline is in the server's text.
    (
        "fr",
        "FATAL:  aucune entrée dans pg_hba.conf pour l'hôte « 10.1.2.3 », utilisateur « app »,\n"
        "base de données « shop », pas de chiffrement",
        "28000",
    ),
    ("ja", 'FATAL:  ユーザー"app"のパスワード認証に失敗しました', "28P01"),
    ("ja", 'FATAL:  データベース"shop"は存在しません', "3D000"),
    ("ja", "FATAL:  現在クライアント数が多すぎます", "53300"),
    ("ja", "FATAL:  データベースシステムは起動処理中です", "57P03"),
    ("ja", "FATAL:  データベースシステムはリカバリモードです", "57P03"),
    ("zh_CN", "致命错误:  数据库系统启动中", "57P03"),
    ("zh_CN", '致命错误:  用户 "app" Password 认证失败', "28P01"),
    ("tr", "ÖLÜMCÜL (FATAL):  veritabanı kapatılıyor", "57P03"),
    ("ko", '치명적오류:  "shop" 데이터베이스 없음', "3D000"),
    ("ko", "치명적오류:  최대 동시 접속자 수를 초과했습니다.", "53300"),
    ("uk", "ФАТАЛЬНО:  система бази даних запускається", "57P03"),
    # A server whose LC_CTYPE is C: glibc transliterates what it can, "?" for the rest.
    (
        "ru, C",
        'VAZHNO:  pol`zovatel` "app" ne proshyol proverku podlinnosti (po parolyu)',
        "28P01",
    ),
    ("ru, C", "VAZHNO:  izvinite, uzhe slishkom mnogo klientov", "53300"),
    ("de, C", "FATAL:  Passwort-Authentifizierung f?r Benutzer >>app<< fehlgeschlagen", "28P01"),
]


@pytest.mark.parametrize(("language", "refusal", "sqlstate"), REFUSALS)
def test_refusal_gives_its_sqlstate_in_any_language(language, refusal, sqlstate):
    message = PREFIX + refusal + "\n"

    assert rejection_sqlstate(message) == sqlstate
    assert is_server_rejection(message)


def test_refusal_behind_translated_libpq_prefixes_and_psycopgs_own():
    """libpq built with NLS translates its prefix; the server's part is found all the same."""
    refusal = "FATAL:  das Datenbanksystem startet"
    prefixes = [
        "Verbindung zum Server auf »db«, Port 5432 fehlgeschlagen: ",
        'подключиться к серверу "db", порту 5432 не удалось: ',
        '连接到"db"上的服务器，端口5432失败：',  # libpq's colon is fullwidth here
        "connection failed: ",  # psycopg 3 with libpq <= 13, which has no prefix
        "",  # psycopg2 with libpq <= 13
    ]

    assert [rejection_sqlstate(prefix + refusal) for prefix in prefixes] == ["57P03"] * 5


#: Failures of the client or the network, as libpq, psycopg and glibc write them.
NOT_REFUSALS = [
    PREFIX + "Connection refused\n\tIs the server running on that host and accepting TCP/IP "
    "connections?\n",
    PREFIX + "Verbindungsaufbau abgelehnt\n\tIs the server running on that host and accepting "
    "TCP/IP connections?\n",
    PREFIX + "timeout expired\n",
    "connection timeout expired",  # psycopg 3's own
    PREFIX + "server closed the connection unexpectedly\n\tThis probably means the server "
    "terminated abnormally\n\tbefore or while processing the request.\n",
    PREFIX + "SSL SYSCALL error: EOF detected\n",
    PREFIX + "Connection reset by peer\n",
    PREFIX + "No route to host\n\tIs the server running on that host and accepting TCP/IP "
    "connections?\n",
    'could not translate host name "db.example" to address: Name or service not known\n',
    "failed to resolve host 'db.example': [Errno -3] Temporary failure in name resolution",
    # The postmaster could not fork: sent without severity (old protocol), so not a refusal.
    PREFIX + "could not fork new process for connection: Resource temporarily unavailable\n",
    # Translated libpq messages with two spaces after a colon (Korean, Hebrew).
    PREFIX + '서버와의 동기화가 끊김:  "x" 형태 길이 5 메시지 받음\n',
    PREFIX + "נכשל setsockopt(TCP_KEEPIDLE):  Invalid argument\n",
]


@pytest.mark.parametrize("message", NOT_REFUSALS)
def test_network_and_client_failures_are_no_server_rejection(message):
    assert rejection_sqlstate(message) is None
    assert rejection_sqlstates(message) == []
    assert not is_server_rejection(message)


def test_an_unknown_refusal_is_still_a_server_rejection():
    message = PREFIX + "FATAL:  a message from a future release\nDETAIL:  And its detail.\n"

    assert is_server_rejection(message)
    assert rejection_sqlstates(message) == [None]


def test_several_attempts_give_one_sqlstate_each_and_the_last_wins():
    """libpq tries each host in turn (psycopg2): one line per attempt, in order."""
    message = (
        'connection to server at "a", port 5432 failed: Connection refused\n'
        "\tIs the server running on that host and accepting TCP/IP connections?\n"
        'connection to server at "b", port 5432 failed: FATAL:  sorry, too many clients already\n'
        'connection to server at "c", port 5432 failed: FATAL:  password authentication failed '
        'for user "app"\n'
    )

    assert rejection_sqlstates(message) == ["53300", "28P01"]
    assert rejection_sqlstate(message) == "28P01"


def test_psycopg3_repeats_its_last_attempt_first():
    message = (
        'connection failed: connection to server at "::1", port 5432 failed: FATAL:  the '
        "database system is shutting down\n"
        "Multiple connection attempts failed. All failures were:\n"
        "- host: 'db', port: '5432', hostaddr: '127.0.0.1': connection failed: connection to "
        'server at "127.0.0.1", port 5432 failed: Connection refused\n'
        "\tIs the server running on that host and accepting TCP/IP connections?\n"
        "- host: 'db', port: '5432', hostaddr: '::1': connection failed: connection to server "
        'at "::1", port 5432 failed: FATAL:  the database system is shutting down'
    )

    assert rejection_sqlstates(message) == ["57P03", "57P03"]
    assert rejection_sqlstate(message) == "57P03"


def _filled(template: str, value: str = "x1") -> str:
    return rejections._PLACEHOLDER.sub(lambda found: "%" if found[0] == "%%" else value, template)


def test_every_text_of_the_table_reads_back_as_its_own_sqlstate():
    """No text of one SQLSTATE may also match another's (placeholders filled in)."""
    wrong = [
        (sqlstate, text, rejection_sqlstate(PREFIX + "FATAL:  " + _filled(text)))
        for english, (sqlstate, translations) in SERVER_REJECTIONS.items()
        for text in [english, *(t for texts in translations.values() for t in texts)]
        if rejection_sqlstate(PREFIX + "FATAL:  " + _filled(text)) != sqlstate
    ]

    assert wrong == []


def test_every_encryption_failure_of_the_table_is_recognized():
    unrecognized = []
    for english, translations in ENCRYPTION_FAILURES.items():
        reason = "certificate verify failed" if english == "SSL error: %s" else "x1"
        for text in [english, *(t for texts in translations.values() for t in texts)]:
            found = encryption_failure(PREFIX + _filled(text, reason) + "\n")
            # Two English texts may share a translation (Greek): either answer is right.
            if found is None or not (
                found.startswith("SSL error: ") or text in _texts_of(found) or text == english
            ):
                unrecognized.append((english, text, found))

    assert unrecognized == []


def _texts_of(english: str) -> list[str]:
    return [english, *(t for texts in ENCRYPTION_FAILURES[english].values() for t in texts)]


@pytest.mark.parametrize(
    ("failure", "named"),
    [
        (
            "server does not support SSL, but SSL was required",
            "server does not support SSL, but SSL was required",
        ),
        (
            "Server unterstützt kein SSL, aber SSL wurde verlangt",
            "server does not support SSL, but SSL was required",
        ),
        ("SSL error: certificate verify failed", "SSL error: certificate verify failed"),
        ("SSL-Fehler: tlsv1 alert unknown ca", "SSL error: tlsv1 alert unknown ca"),
        ("SSL error: unsupported protocol", "SSL error: unsupported protocol"),
        (
            'server certificate for "db.internal" does not match host name "db.example"',
            'server certificate for "%s" does not match host name "%s"',
        ),
        (
            'root certificate file "/home/app/.postgresql/root.crt" does not exist\n'
            "Either provide the file, use the system's trusted roots with sslrootcert=system, "
            "or change sslmode to disable server certificate verification.",
            'root certificate file "%s" does not exist',
        ),
    ],
)
def test_encryption_requirements_that_fail_again_are_named_in_english(failure, named):
    assert encryption_failure(PREFIX + failure + "\n") == named
    assert not is_server_rejection(PREFIX + failure + "\n")


@pytest.mark.parametrize(
    "failure",
    [
        "SSL error: unexpected eof while reading",
        "SSL error: decryption failed or bad record mac",
        "SSL SYSCALL error: Connection reset by peer",
        "SSL connection has been closed unexpectedly",
        "Connection refused",
    ],
)
def test_a_tls_session_cut_short_is_no_encryption_failure(failure):
    assert encryption_failure(PREFIX + failure + "\n") is None


# --- Host names ---------------------------------------------------------------------------------


def test_a_name_that_does_not_exist_is_a_permanent_lookup_failure():
    assert host_lookup_failure("no-such-host.invalid") == "permanent"


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "::1", "/var/run/postgresql", ""])
def test_names_that_resolve_or_need_no_lookup_are_no_failure(host):
    assert host_lookup_failure(host) is None


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (socket.EAI_NONAME, "permanent"),
        (socket.EAI_AGAIN, "transient"),
        (socket.EAI_FAIL, "transient"),
        (socket.EAI_SERVICE, "permanent"),
    ],
)
def test_the_resolvers_code_decides_whatever_its_language(monkeypatch, code, expected):
    def lookup(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(code, "Temporärer Fehler bei der Namensauflösung")

    monkeypatch.setattr(socket, "getaddrinfo", lookup)

    assert host_lookup_failure("db.example") == expected


# --- Real refusals ------------------------------------------------------------------------------


def _connect_params(server: PostgresServer, **params: str) -> dict[str, str]:
    return {
        "host": server.host,
        "port": str(server.port),
        "user": "postgres",
        "dbname": "postgres",
        "password": server.password or "",
        "sslmode": "disable",
        "gssencmode": "disable",
        **params,
    }


def refusal(server: PostgresServer, **params: str) -> str:
    """Attempt a connection that the server must refuse; return the driver's message."""
    try:
        connection = connect("", **_connect_params(server, **params))
    except OperationalError as error:
        return str(error)
    connection.close()
    raise AssertionError(f"the server accepted a connection with {params}")


def test_real_refusals_of_this_suites_postgresql(server):
    """The suite's own server (the embedded PostgreSQL 18), in English."""
    assert rejection_sqlstate(refusal(server, password="wrong")) == "28P01"
    assert rejection_sqlstate(refusal(server, dbname="no_such_database")) == "3D000"
    assert rejection_sqlstate(refusal(server, options="-c statment_timeout=1")) == "42704"


def test_real_client_failures_of_this_suites_postgresql(server):
    required = refusal(server, sslmode="require")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    refused = refusal(server, port=str(port))

    assert encryption_failure(required) == "server does not support SSL, but SSL was required"
    assert not is_server_rejection(required)
    assert rejection_sqlstate(refused) is None
    assert not is_server_rejection(refused)


BINDIR = Path(os.environ.get("DPR_PG15_BINDIR", "/usr/lib/postgresql/15/bin"))
PACKAGES = "postgresql-15 and locales (apt-get install -y)"
PASSWORD = "s3cret-pw"
#: name: (locale, the postmaster's LC_CTYPE, the severity words its refusals may start with).
#: Under LC_CTYPE=C, texts sent before the database is chosen come transliterated (VAZHNO).
LANGUAGES = {
    "de": ("de_DE", "de_DE.UTF-8", ("FATAL",)),
    "ru": ("ru_RU", "ru_RU.UTF-8", ("ВАЖНО",)),
    "ru-C": ("ru_RU", "C", ("VAZHNO", "ВАЖНО")),
}
HBA = """\
local all all trust
local replication all trust
host all postgres 127.0.0.1/32 scram-sha-256
host all banned 127.0.0.1/32 reject
host all ghost,sleeper,capped,member 127.0.0.1/32 trust
"""
SETUP = [
    "CREATE ROLE sleeper NOLOGIN",
    "CREATE ROLE capped LOGIN CONNECTION LIMIT 0",
    "CREATE ROLE member LOGIN",
    "CREATE ROLE banned LOGIN",
    "CREATE ROLE stranger LOGIN",
    "CREATE DATABASE locked",
    "REVOKE CONNECT ON DATABASE locked FROM PUBLIC",
    "CREATE DATABASE frozen ALLOW_CONNECTIONS false",
    "CREATE DATABASE crowded CONNECTION LIMIT 0",
]
#: Six slots, two of them for superusers: the slot scenario fills them with a few sessions.
SLOTS = {"max_connections": "6", "superuser_reserved_connections": "2"}


def _missing() -> str | None:
    """Say what these scenarios lack, or None when everything is there."""
    if not (BINDIR / "postgres").exists():
        return f"no PostgreSQL server binaries in {BINDIR}"
    if not Path("/usr/share/locale/de/LC_MESSAGES/postgres-15.mo").exists():
        return "no German translations of PostgreSQL 15 (postgres-15.mo)"
    if shutil.which("localedef") is None:
        return "no localedef"
    if not Path("/usr/share/i18n/locales/de_DE").exists():
        return "no locale sources in /usr/share/i18n/locales"
    return None


@pytest.fixture(scope="session")
def locale_dir() -> Iterator[Path]:
    """de_DE.UTF-8 and ru_RU.UTF-8 built into a private directory (the system has only C)."""
    reason = _missing()
    if reason is not None:
        message = f"localized servers need {PACKAGES}: {reason}"
        if os.environ.get(REQUIRE_ROOT_ENV) == "1":
            pytest.fail(f"{message} ({REQUIRE_ROOT_ENV}=1 forbids skipping them)", pytrace=False)
        pytest.skip(message)
    directory = Path(tempfile.mkdtemp(prefix="dpr-locales-", dir="/tmp"))
    directory.chmod(0o755)  # the server's account must read it
    try:
        for locale, *_ in LANGUAGES.values():
            target = directory / f"{locale}.UTF-8"
            if not target.exists():
                subprocess.run(
                    ["localedef", "-i", locale, "-f", "UTF-8", str(target)],
                    capture_output=True,
                    check=True,
                )
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class Localized:
    """A PostgreSQL 15 that speaks one language, with the roles and databases to refuse."""

    def __init__(self, name: str, locale_dir: Path) -> None:
        locale, ctype, self.severities = LANGUAGES[name]
        # LANGUAGE and LC_ALL from the caller's environment would override the choice.
        env = {"LOCPATH": str(locale_dir), "LC_CTYPE": ctype, "LC_ALL": "", "LANGUAGE": ""}
        settings = {"lc_messages": f"{locale}.UTF-8", **SLOTS}
        self.env, self.settings = env, settings
        self.server = PostgresServer(
            bindir=BINDIR, auth="password", password=PASSWORD, settings=settings, env=env
        )

    def start(self) -> None:
        self.server.start()
        (self.server.data_dir / "pg_hba.conf").write_text(HBA)
        self.server.restart()  # the new pg_hba.conf is in force before any attempt
        for statement in SETUP:
            self.server.execute(statement)

    def refusal(self, **params: str) -> str:
        message = refusal(self.server, **params)
        assert any(f"{word}:  " in message for word in self.severities), message
        return message

    def standby(self, *, wal: str, hot_standby: bool) -> PostgresServer:
        """Start a standby of this server with all, part or none of the WAL its backup needs.

        Without WAL it never reads its first record (starting up); with the WAL up to the
        backup's end it becomes consistent; with the first segment only, it replays that and
        waits for the end of the backup, never consistent.
        """
        standby = PostgresServer(bindir=BINDIR, settings=self.settings, env=self.env)
        if wal == "part":
            self._backup_without_its_end(standby.data_dir)
        else:
            command = [
                str(BINDIR / "pg_basebackup"),
                *("-h", str(self.server.socket_dir), "-p", str(self.server.port)),
                *("-U", "postgres", "-D", str(standby.data_dir), "-c", "fast"),
                *("-X", "stream" if wal == "all" else "none"),
            ]
            result = standby._run_as_service(command, timeout=60)
            assert result.returncode == 0, result.stderr
        (standby.data_dir / "standby.signal").touch()
        with (standby.data_dir / "postgresql.auto.conf").open("a") as conf:
            conf.write(f"hot_standby = {'on' if hot_standby else 'off'}\n")
        # pg_ctl's wait would last until its timeout: a standby stuck in startup is never ready.
        standby._pg_ctl("start", "-W", "-l", str(standby.logfile), "-o", f"-p {standby.port}")
        return standby

    def _backup_without_its_end(self, target: Path) -> None:
        """Copy the cluster during a backup whose end record lands in a WAL segment left out."""
        source = self.server.data_dir
        session = connect(
            "",
            host=str(self.server.socket_dir),
            port=str(self.server.port),
            user="postgres",
            dbname="postgres",
        )
        try:
            with session.cursor() as cursor:
                cursor.execute("SELECT pg_walfile_name(pg_backup_start('partial', true))")
                (segment,) = cursor.fetchone()
                shutil.copytree(
                    source,
                    target,
                    ignore=lambda directory, names: [
                        name
                        for name in names
                        if name in ("postmaster.pid", "postmaster.opts")
                        or (directory == str(source / "pg_wal") and name != "archive_status")
                    ],
                )
                cursor.execute("SELECT pg_switch_wal()")  # the end goes to the next segment
                cursor.execute("SELECT labelfile FROM pg_backup_stop(false)")
                (label,) = cursor.fetchone()
        finally:
            session.close()
        (target / "backup_label").write_text(label)
        shutil.copy2(source / "pg_wal" / segment, target / "pg_wal" / segment)
        owner = source.stat()
        for directory, _, names in os.walk(target):
            os.chown(directory, owner.st_uid, owner.st_gid)
            for name in names:
                os.chown(os.path.join(directory, name), owner.st_uid, owner.st_gid)

    def close(self) -> None:
        self.server.close()


@pytest.fixture(scope="module", params=list(LANGUAGES))
def localized(request: pytest.FixtureRequest, locale_dir: Path) -> Iterator[Localized]:
    """One server per language, shared by the scenarios (pytest groups them by language)."""
    server = Localized(request.param, locale_dir)
    try:
        server.start()
        yield server
    finally:
        server.close()


#: scenario: (connection parameters, SQLSTATE, English words the refusal must not hold).
SCENARIOS = {
    "wrong_password": ({"password": "wrong"}, "28P01", "password authentication failed"),
    "unknown_database": ({"dbname": "no_such_database"}, "3D000", "does not exist"),
    "unknown_role": ({"user": "ghost"}, "28000", "does not exist"),
    "role_without_login": ({"user": "sleeper"}, "28000", "not permitted to log in"),
    "no_pg_hba_entry": ({"user": "stranger"}, "28000", "no pg_hba.conf entry"),
    "pg_hba_reject": ({"user": "banned"}, "28000", "rejects connection"),
    "connect_revoked": ({"user": "member", "dbname": "locked"}, "42501", "permission denied"),
    "connections_not_allowed": (
        {"user": "member", "dbname": "frozen"},
        "55000",
        "not currently accepting",
    ),
    "role_connection_limit": ({"user": "capped"}, "53300", "too many connections"),
    "database_connection_limit": (
        {"user": "member", "dbname": "crowded"},
        "53300",
        "too many connections",
    ),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_real_refusal_reads_the_same_in_every_language(localized, scenario):
    params, sqlstate, english = SCENARIOS[scenario]

    message = localized.refusal(**params)

    assert english not in message
    assert rejection_sqlstate(message) == sqlstate, message


def _connect_when_free(server: PostgresServer, **params: str) -> Any:
    """Connect, waiting for the backends of earlier attempts to exit and free their slots."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return connect("", **_connect_params(server, **params))
        except OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_real_refusals_when_the_slots_are_taken(localized):
    server = localized.server
    held = []
    try:
        # Four ordinary sessions leave the two slots reserved for superusers.
        held += [_connect_when_free(server, user="member") for _ in range(4)]
        reserved = localized.refusal(user="member")
        held += [_connect_when_free(server) for _ in range(2)]
        full = localized.refusal()
    finally:
        for connection in held:
            connection.close()

    assert "remaining connection slots" not in reserved
    assert "too many clients" not in full
    assert rejection_sqlstate(reserved) == rejection_sqlstate(full) == "53300"
    assert reserved != full


def test_real_refusal_during_a_smart_shutdown(localized):
    """A smart shutdown waits for the open session and turns every new one away."""
    server = localized.server
    holder = connect("", **_connect_params(server, user="member"))
    pid = server.pid
    assert pid is not None
    try:
        os.kill(pid, signal.SIGTERM)  # what pg_ctl stop -m smart sends
        message = _first_refusal(server, user="member")
    finally:
        holder.close()
        deadline = time.monotonic() + 30
        while server.is_running and time.monotonic() < deadline:
            time.sleep(0.02)
        server.start()

    assert "shutting down" not in message
    assert rejection_sqlstate(message) == "57P03", message


def _first_refusal(server: PostgresServer, saying: list[str] | None = None, **params: str) -> str:
    """Connect until the server refuses (it takes a moment to act on a signal or to start).

    With ``saying``, wait for a refusal that holds one of these texts: a standby says
    "starting up" for a moment before it says what it will keep saying.
    """
    deadline = time.monotonic() + 10
    while True:
        try:
            connection = connect("", **_connect_params(server, **params))
        except OperationalError as error:
            message = str(error)
            if time.monotonic() > deadline or (
                is_server_rejection(message)
                and (saying is None or any(f":  {text}" in message for text in saying))
            ):
                return message
        else:
            connection.close()
            assert time.monotonic() < deadline, "the server kept accepting connections"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("wal", "hot_standby", "state"),
    [
        ("none", True, "the database system is starting up"),  # before its first record
        ("part", True, "the database system is not yet accepting connections"),  # replaying
        ("all", False, "the database system is not accepting connections"),  # no hot standby
    ],
)
def test_real_refusal_of_a_standby(localized, wal, hot_standby, state):
    _, translations = SERVER_REJECTIONS[state]
    texts = [text for texts in translations.values() for text in texts]
    standby = localized.standby(wal=wal, hot_standby=hot_standby)
    try:
        message = _first_refusal(standby, saying=texts)
    finally:
        standby.close()

    assert any(f":  {text}" in message for text in texts), f"not {state!r}: {message}"
    assert any(f"{word}:  " in message for word in localized.severities), message
    assert rejection_sqlstate(message) == "57P03", message
