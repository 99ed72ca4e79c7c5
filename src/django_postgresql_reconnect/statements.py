"""What a statement is and does, read from its SQL text the way PostgreSQL would read it.

Plain Python with no Django import. A small lexer turns SQL into tokens, so that case,
comments, string literals, dollar quoting and quoted identifiers can never fool a rule:
``SELECT 'DELETE'`` is a read, ``/* tag */ set search_path ...`` is a session setting, and
``SELECT PG_ADVISORY_LOCK(1)`` takes a lock.

Two questions are asked of it:

- :func:`effects_of` (on every statement, so cached per SQL text): what the statement leaves
  in the session (settings, locks, LISTEN, temporary objects...) or does to the transaction
  (SAVEPOINT, COMMIT...). Almost every statement does nothing of the kind.
- :func:`facts_of` (only after a loss): is it a read, which functions and operators does it
  call, which relations does it name, does it end a transaction.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Effect",
    "Facts",
    "effects_of",
    "facts_of",
    "tokenize",
]

# --- Tokens -----------------------------------------------------------------------------------

WORD, QUOTED, STRING, NUMBER, PARAM, OP, PUNCT = (
    "word",
    "quoted",
    "string",
    "number",
    "param",
    "op",
    "punct",
)


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    text: str
    """Words are upper-cased, quoted identifiers unquoted, strings unquoted."""


_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_$\u0080-\U0010ffff]*")
_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_PARAM = re.compile(r"%\([^)]*\)s|%s|\$\d+")
_OP = re.compile(r"[-+*/<>=~!@#%^&|`?]+")
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_\u0080-\U0010ffff]*)?\$")
_STRING_PREFIX = re.compile(r"(?:[EeBbXxNn]|[Uu]&)'")


def tokenize(sql: str) -> Iterator[Token]:
    """Yield the tokens of ``sql``, skipping white space and comments."""
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c.isspace():
            i = _SPACE.match(sql, i).end()  # type: ignore[union-attr]
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("/*", i):
            i = _skip_block_comment(sql, i)
        elif c == "'" or (c in "EeBbXxNnUu" and _STRING_PREFIX.match(sql, i)):
            prefix = 0 if c == "'" else sql.index("'", i) - i
            i, text = _read_string(sql, i + prefix, backslashes=c in "Ee")
            yield Token(STRING, text)
        elif c == '"' or (c in "Uu" and sql.startswith('&"', i + 1)):
            start = i if c == '"' else i + 2
            i, text = _read_quoted(sql, start)
            yield Token(QUOTED, text)
        elif c == "$":
            param = _PARAM.match(sql, i)
            tag = _DOLLAR_TAG.match(sql, i)
            if tag:
                end = sql.find(tag.group(), tag.end())
                text = sql[tag.end() : n if end < 0 else end]
                i = n if end < 0 else end + len(tag.group())
                yield Token(STRING, text)
            elif param:
                i = param.end()
                yield Token(PARAM, param.group())
            else:
                i += 1
                yield Token(OP, "$")
        elif c == "%":
            param = _PARAM.match(sql, i)
            if param:
                i = param.end()
                yield Token(PARAM, param.group())
            elif sql.startswith("%%", i):
                i += 2
                yield Token(OP, "%")
            else:
                i += 1
                yield Token(OP, "%")
        elif c.isdigit() or (c == "." and i + 1 < n and sql[i + 1].isdigit()):
            match = _NUMBER.match(sql, i)
            i = match.end()  # type: ignore[union-attr]
            yield Token(NUMBER, match.group())  # type: ignore[union-attr]
        elif c in "(),;[].":
            i += 1
            yield Token(PUNCT, c)
        elif c == ":":
            if sql.startswith("::", i):
                i += 2
                yield Token(PUNCT, "::")
            else:
                i += 1
                yield Token(PUNCT, ":")
        else:
            word = _WORD.match(sql, i)
            if word:
                i = word.end()
                yield Token(WORD, word.group().upper())
                continue
            op = _OP.match(sql, i)
            if op:
                i = op.end()
                yield Token(OP, op.group())
            else:
                i += 1  # a character PostgreSQL would reject; it cannot hide anything


def _skip_block_comment(sql: str, i: int) -> int:
    depth, i = 1, i + 2
    while depth and i < len(sql):
        if sql.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif sql.startswith("*/", i):
            depth, i = depth - 1, i + 2
        else:
            i += 1
    return i


def _read_string(sql: str, i: int, *, backslashes: bool) -> tuple[int, str]:
    """Read a '...' literal starting at the quote; return the end and the unquoted text."""
    out, i, n = [], i + 1, len(sql)
    while i < n:
        c = sql[i]
        if c == "\\" and backslashes and i + 1 < n:
            out.append(sql[i + 1])
            i += 2
        elif c == "'":
            if sql.startswith("''", i):
                out.append("'")
                i += 2
            else:
                return i + 1, "".join(out)
        else:
            out.append(c)
            i += 1
    return n, "".join(out)


def _read_quoted(sql: str, i: int) -> tuple[int, str]:
    out, i, n = [], i + 1, len(sql)
    while i < n:
        if sql[i] == '"':
            if sql.startswith('""', i):
                out.append('"')
                i += 2
                continue
            return i + 1, "".join(out)
        out.append(sql[i])
        i += 1
    return n, "".join(out)


def _statements(tokens: Sequence[Token]) -> list[list[Token]]:
    """Split at top-level semicolons, dropping empty statements."""
    parts: list[list[Token]] = [[]]
    depth = 0
    for token in tokens:
        if token.kind == PUNCT:
            if token.text in "([":
                depth += 1
            elif token.text in ")]":
                depth = max(0, depth - 1)
            elif token.text == ";" and depth == 0:
                parts.append([])
                continue
        parts[-1].append(token)
    return [part for part in parts if part]


def _is(token: Token | None, *words: str) -> bool:
    return token is not None and token.kind == WORD and token.text in words


def _at(tokens: Sequence[Token], index: int) -> Token | None:
    return tokens[index] if 0 <= index < len(tokens) else None


def _name(token: Token | None) -> str:
    """An identifier as PostgreSQL folds it: unquoted names are lower case."""
    if token is None:
        return ""
    if token.kind == QUOTED:
        return token.text
    return token.text.lower()


# --- Session and transaction effects (every statement, cached) ----------------------------------


@dataclass(frozen=True, slots=True)
class Effect:
    """One thing a statement does to its session or transaction.

    ``kind`` is one of the names below; ``name`` is what it applies to (a setting, a channel,
    a savepoint...); ``argument`` is the index of a parameter holding that name when the SQL
    names it with a placeholder (``set_config(%s, ...)``), else -1.
    """

    kind: str
    name: str = ""
    argument: int = -1


# Restorable session settings: replayed, in order, on a new connection.
SETTING, RESET_ALL, LOAD = "setting", "reset all", "load"
# State a new connection cannot be given truthfully.
ADVISORY_LOCK, UNLOCK_ALL = "advisory lock", "unlock all advisory locks"
LISTEN, UNLISTEN = "listen", "unlisten"
TEMPORARY = "temporary object"
PREPARED, DEALLOCATE = "prepared statement", "deallocate"
HELD_CURSOR, CLOSE_CURSOR = "held cursor", "close cursor"
DBLINK = "dblink connection"
RANDOM_SEED = "random seed"
UNREADABLE = "unreadable statement"
SETTING_IN_LARGER_STATEMENT = "session setting inside a larger statement"
DISCARD_ALL, DISCARD_TEMP = "discard all", "discard temp"
# The transaction.
BEGIN, COMMIT, ROLLBACK = "begin", "commit", "rollback"
SAVEPOINT, RELEASE, ROLLBACK_TO = "savepoint", "release", "rollback to"
NOTIFY = "notify"

_ADVISORY_LOCKS = frozenset(
    {
        "pg_advisory_lock",
        "pg_advisory_lock_shared",
        "pg_try_advisory_lock",
        "pg_try_advisory_lock_shared",
    }
)
_FUNCTION_EFFECTS = {
    "pg_advisory_unlock_all": UNLOCK_ALL,
    "dblink_connect": DBLINK,
    "dblink_connect_u": DBLINK,
    "setseed": RANDOM_SEED,
    "pg_notify": NOTIFY,
}
_FIRST_WORDS_WITH_EFFECTS = frozenset(
    {
        "SET", "RESET", "LISTEN", "UNLISTEN", "CREATE", "PREPARE", "DEALLOCATE", "DECLARE",
        "CLOSE", "DISCARD", "LOAD", "BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT",
        "SAVEPOINT", "RELEASE", "NOTIFY",
    }
)  # fmt: skip

_NO_EFFECTS: tuple[Effect, ...] = ()
_effects_cache: dict[str, tuple[Effect, ...]] = {}
_CACHE_SIZE = 4096


def effects_of(sql: str) -> tuple[Effect, ...]:
    """What ``sql`` does to its session and transaction, in order; usually nothing.

    Cached per text: the ORM sends the same few hundred texts again and again.
    """
    try:
        return _effects_cache[sql]
    except KeyError:
        pass
    effects = _read_effects(sql)
    if len(_effects_cache) >= _CACHE_SIZE:
        _effects_cache.clear()
    _effects_cache[sql] = effects
    return effects


def _read_effects(sql: str) -> tuple[Effect, ...]:
    # Cheap exclusion first: the words that can have an effect, in any case.
    upper = sql.upper()
    if not any(word in upper for word in _TRIGGER_WORDS):
        return _NO_EFFECTS
    effects: list[Effect] = []
    for statement in _statements(list(tokenize(sql))):
        effects.extend(_statement_effects(statement))
    return tuple(effects) if effects else _NO_EFFECTS


_TRIGGER_WORDS = tuple(
    {w for w in _FIRST_WORDS_WITH_EFFECTS}
    | {"ADVISORY", "SET_CONFIG", "DBLINK_CONNECT", "SETSEED", "PG_NOTIFY", "INTO"}
)


def _statement_effects(tokens: list[Token]) -> list[Effect]:
    start = 0
    while _at(tokens, start) is not None and tokens[start].text == "(":
        start += 1
    first = _at(tokens, start)
    effects: list[Effect] = []
    if first is not None and first.kind == WORD and first.text in _FIRST_WORDS_WITH_EFFECTS:
        effects.extend(_command_effects(tokens[start:]))
    calls = _function_calls(tokens)
    for index, (_, name) in calls:
        if name in _ADVISORY_LOCKS:
            effects.append(Effect(ADVISORY_LOCK))
        elif name in _FUNCTION_EFFECTS:
            effects.append(Effect(_FUNCTION_EFFECTS[name]))
        elif name == "set_config":
            effects.extend(_set_config_effect(tokens, index, calls))
    effects.extend(_into_temporary(tokens))
    return effects


def _command_effects(tokens: list[Token]) -> list[Effect]:
    """Effects of utility commands, read from their first words."""
    word = tokens[0].text
    second, third = _at(tokens, 1), _at(tokens, 2)
    if word == "SET":
        return _set_effect(tokens)
    if word == "RESET":
        if _is(second, "ALL"):
            return [Effect(RESET_ALL)]
        return [Effect(SETTING, _setting_name(tokens, 1))]
    if word == "LISTEN":
        return [Effect(LISTEN, _name(second))]
    if word == "UNLISTEN":
        return [
            Effect(UNLISTEN, "*" if second is not None and second.text == "*" else _name(second))
        ]
    if word == "CREATE":
        return [Effect(TEMPORARY)] if _creates_temporary(tokens) else []
    if word == "PREPARE":
        if _is(second, "TRANSACTION"):
            return [Effect(COMMIT)]
        return [Effect(PREPARED, _name(second))]
    if word == "DEALLOCATE":
        target = third if _is(second, "PREPARE") else second
        return [Effect(DEALLOCATE, "*" if _is(target, "ALL") else _name(target))]
    if word == "DECLARE":
        for i in range(len(tokens) - 1):
            if _is(tokens[i], "WITH") and _is(tokens[i + 1], "HOLD"):
                return [Effect(HELD_CURSOR, _name(second))]
        return []
    if word == "CLOSE":
        return [Effect(CLOSE_CURSOR, "*" if _is(second, "ALL") else _name(second))]
    if word == "DISCARD":
        if _is(second, "ALL"):
            return [Effect(DISCARD_ALL)]
        if _is(second, "TEMP", "TEMPORARY"):
            return [Effect(DISCARD_TEMP)]
        return []
    if word == "LOAD":
        return [Effect(LOAD, second.text if second is not None else "")]
    if word in ("BEGIN", "START"):
        return [Effect(BEGIN)]
    if word in ("COMMIT", "END"):
        if _is(second, "PREPARED"):
            return []
        chain = any(_is(t, "CHAIN") for t in tokens) and not any(_is(t, "NO") for t in tokens)
        return [Effect(COMMIT), Effect(BEGIN)] if chain else [Effect(COMMIT)]
    if word in ("ROLLBACK", "ABORT"):
        if _is(second, "PREPARED"):
            return []
        words = [t for t in tokens[1:] if not _is(t, "WORK", "TRANSACTION")]
        if words and _is(words[0], "TO"):
            target = words[2] if _is(_at(words, 1), "SAVEPOINT") else _at(words, 1)
            return [Effect(ROLLBACK_TO, _name(target))]
        return [Effect(ROLLBACK)]
    if word == "SAVEPOINT":
        return [Effect(SAVEPOINT, _name(second))]
    if word == "RELEASE":
        return [Effect(RELEASE, _name(third if _is(second, "SAVEPOINT") else second))]
    if word == "NOTIFY":
        return [Effect(NOTIFY, _name(second))]
    return []


_SET_ALIASES = {"SCHEMA": "search_path", "NAMES": "client_encoding", "ROLE": "role"}


def _set_effect(tokens: list[Token]) -> list[Effect]:
    second = _at(tokens, 1)
    if _is(second, "LOCAL", "TRANSACTION", "CONSTRAINTS"):
        return []  # ends with the transaction
    index = 1
    if _is(second, "SESSION"):
        third = _at(tokens, 2)
        if _is(third, "AUTHORIZATION"):
            return [Effect(SETTING, "session_authorization")]
        if _is(third, "CHARACTERISTICS"):
            return [Effect(SETTING, "default_transaction_characteristics")]
        index = 2
    return [Effect(SETTING, _setting_name(tokens, index))]


def _setting_name(tokens: list[Token], index: int) -> str:
    token = _at(tokens, index)
    if token is None:
        return ""
    if _is(token, "TIME") and _is(_at(tokens, index + 1), "ZONE"):
        return "timezone"
    if _is(token, "SESSION") and _is(_at(tokens, index + 1), "AUTHORIZATION"):
        return "session_authorization"
    if _is(token, "XML") and _is(_at(tokens, index + 1), "OPTION"):
        return "xmloption"
    if token.kind == WORD and token.text in _SET_ALIASES:
        return _SET_ALIASES[token.text]
    name = _name(token)
    if _at(tokens, index + 1) == Token(PUNCT, "."):
        name += "." + _name(_at(tokens, index + 2))  # a custom setting such as app.tenant
    return name


def _creates_temporary(tokens: list[Token]) -> bool:
    for i, token in enumerate(tokens[1:], start=1):
        if _is(token, "TEMP", "TEMPORARY"):
            return True
        if _is(token, "PG_TEMP") and _at(tokens, i + 1) == Token(PUNCT, "."):
            return True
        if _is(token, "AS") or token.text == "(":
            return False  # past the object's name
    return False


def _into_temporary(tokens: list[Token]) -> list[Effect]:
    """SELECT ... INTO TEMP t (and INTO pg_temp.t) creates a temporary table."""
    for i, token in enumerate(tokens):
        if _is(token, "INTO"):
            target = _at(tokens, i + 1)
            if _is(target, "TEMP", "TEMPORARY"):
                return [Effect(TEMPORARY)]
            if _is(target, "PG_TEMP") and _at(tokens, i + 2) == Token(PUNCT, "."):
                return [Effect(TEMPORARY)]
    return []


_TRUE_WORDS = frozenset({"TRUE", "ON"})
_TRUE_STRINGS = frozenset({"t", "true", "on", "1", "y", "yes"})


def _set_config_effect(
    tokens: list[Token], index: int, calls: list[tuple[int, tuple[str | None, str]]]
) -> list[Effect]:
    """``set_config(name, value, is_local)``: a session setting unless is_local is true."""
    arguments = _call_arguments(tokens, index + 1)
    if len(arguments) == 3 and len(arguments[2]) == 1:
        flag = arguments[2][0]
        if (flag.kind == WORD and flag.text in _TRUE_WORDS) or (
            flag.kind == STRING and flag.text.lower() in _TRUE_STRINGS
        ):
            return []  # transaction-local: ends with the transaction
    if not _only_set_config(tokens, calls):
        return [Effect(SETTING_IN_LARGER_STATEMENT)]
    name, argument = "", -1
    if arguments and len(arguments[0]) == 1:
        first = arguments[0][0]
        if first.kind == STRING:
            name = first.text.lower()
        elif first.kind == PARAM:
            argument = _param_index(tokens, first)
    return [Effect(SETTING, name, argument)]


def _only_set_config(tokens: list[Token], calls: list[tuple[int, tuple[str | None, str]]]) -> bool:
    """A bare ``SELECT set_config(...)[, ...]``: replaying it replays nothing else."""
    if not _is(_at(tokens, 0), "SELECT"):
        return False
    if any(name != "set_config" for _, (_, name) in calls):
        return False
    return not any(_is(t, "FROM", "WHERE", "INTO", "UNION", "EXCEPT", "INTERSECT") for t in tokens)


def _param_index(tokens: list[Token], param: Token) -> int:
    """The position of a placeholder among the statement's parameters (%s or $n)."""
    if param.text.startswith("$"):
        return int(param.text[1:]) - 1
    if param.text.startswith("%("):
        return -1  # named: resolved by name, not position
    position = -1
    for token in tokens:
        if token.kind == PARAM:
            position += 1
            if token is param:
                return position
    return -1


def _call_arguments(tokens: list[Token], open_index: int) -> list[list[Token]]:
    """The top-level arguments of the call whose '(' is at ``open_index``."""
    arguments: list[list[Token]] = [[]]
    depth = 0
    for token in tokens[open_index:]:
        if token.kind == PUNCT and token.text in "([":
            depth += 1
            if depth == 1:
                continue
        elif token.kind == PUNCT and token.text in ")]":
            depth -= 1
            if depth == 0:
                break
        elif token.kind == PUNCT and token.text == "," and depth == 1:
            arguments.append([])
            continue
        arguments[-1].append(token)
    return [a for a in arguments if a] if any(arguments) else []


# --- Facts for the loss path ------------------------------------------------------------------


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words that may stand before "(" without being a function call: reserved words and the
# special syntax of expressions, clauses and type names.
_NOT_FUNCTIONS = _words(
    """
    ALL AND ANY ARRAY AS ASC ASYMMETRIC BETWEEN BY CASE CAST CHECK COLLATE COLLATION COLUMN
    CONSTRAINT CREATE CROSS DEFAULT DESC DISTINCT DO ELSE END ESCAPE EXCEPT EXISTS FALSE FETCH
    FILTER FOR FOREIGN FROM FULL GRANT GROUP GROUPING GROUPS HAVING ILIKE IN INNER INTERSECT
    INTO IS ISNULL JOIN KEY LATERAL LEFT LIKE LIMIT NATURAL NOT NOTNULL NULL OFFSET ON ONLY OR
    ORDER OUTER OVER OVERLAPS PARTITION PLACING PRIMARY RANGE REFERENCES RETURNING RIGHT ROW
    ROWS SELECT SIMILAR SOME SYMMETRIC TABLE THEN TO UESCAPE UNION UNIQUE USING VALUES VARIADIC
    WHEN WHERE WINDOW WITH WITHIN
    COALESCE NULLIF GREATEST LEAST EXTRACT OVERLAY POSITION SUBSTRING TRIM TREAT NORMALIZE
    XMLATTRIBUTES XMLCONCAT XMLELEMENT XMLEXISTS XMLFOREST XMLNAMESPACES XMLPARSE XMLPI XMLROOT
    XMLSERIALIZE XMLTABLE JSON JSON_ARRAY JSON_ARRAYAGG JSON_EXISTS JSON_OBJECT JSON_OBJECTAGG
    JSON_QUERY JSON_SCALAR JSON_SERIALIZE JSON_TABLE JSON_VALUE MERGE_ACTION
    CURRENT_DATE CURRENT_TIME CURRENT_TIMESTAMP LOCALTIME LOCALTIMESTAMP
    BIGINT BIT BOOLEAN CHAR CHARACTER DEC DECIMAL DOUBLE FLOAT INT INTEGER INTERVAL NATIONAL
    NCHAR NUMERIC PRECISION REAL SETOF SMALLINT TIME TIMESTAMP VARCHAR VARYING ZONE
    """
)
_READ_FIRST_WORDS = frozenset({"SELECT", "WITH", "VALUES", "TABLE", "SHOW", "EXPLAIN"})
# Words that make a read-looking statement write, lock, signal or keep something.
_WRITE_WORDS = _words(
    """
    INSERT UPDATE DELETE MERGE INTO COPY TRUNCATE CALL LOCK NOTIFY LISTEN PREPARE EXECUTE
    DECLARE GRANT REVOKE CREATE ALTER DROP VACUUM CLUSTER REINDEX REFRESH ANALYZE ANALYSE
    COMMENT SECURITY IMPORT DISCARD RESET COMMIT ROLLBACK SAVEPOINT RELEASE BEGIN
    """
)
_ROW_LOCKS = frozenset({"UPDATE", "SHARE", "NO", "KEY"})
_ENDS_TRANSACTION = frozenset({"COMMIT", "END", "ABORT"})


@dataclass(frozen=True)
class Facts:
    """What the loss path needs to know about a statement."""

    read_shaped: bool
    """A single SELECT / WITH / VALUES / TABLE / SHOW / EXPLAIN (without ANALYZE) with no
    data-modifying part, no INTO and no row lock: only its function calls may write."""
    functions: frozenset[tuple[str | None, str]]
    """(schema or None, name) of every function it calls by name."""
    operators: frozenset[str]
    relations: frozenset[tuple[str | None, str]]
    """Every other name it mentions: the views and tables among them are looked up."""
    ends_transaction: bool


def facts_of(sql: str) -> Facts:
    tokens = list(tokenize(sql))
    statements = _statements(tokens)
    functions = frozenset(name for _, name in _function_calls(tokens))
    operators = frozenset(t.text for t in tokens if t.kind == OP)
    relations = frozenset(_names(tokens))
    ends = any(_ends_transaction(statement) for statement in statements)
    read = len(statements) == 1 and _read_shaped(statements[0])
    return Facts(read, functions, operators, relations - functions, ends)


def _ends_transaction(tokens: list[Token]) -> bool:
    first, second = _at(tokens, 0), _at(tokens, 1)
    if _is(first, *_ENDS_TRANSACTION):
        return True
    if _is(first, "ROLLBACK"):
        rest = [t for t in tokens[1:] if not _is(t, "WORK", "TRANSACTION")]
        return not (rest and _is(rest[0], "TO"))
    return _is(first, "PREPARE") and _is(second, "TRANSACTION")


def _read_shaped(tokens: list[Token]) -> bool:
    start = 0
    while _at(tokens, start) is not None and tokens[start].text == "(":
        start += 1
    first = _at(tokens, start)
    if first is None or first.kind != WORD or first.text not in _READ_FIRST_WORDS:
        return False
    for i, token in enumerate(tokens):
        if token.kind != WORD:
            continue
        if token.text in _WRITE_WORDS:
            return False
        if token.text == "FOR" and _is(_at(tokens, i + 1), *_ROW_LOCKS):
            return False  # SELECT ... FOR UPDATE / SHARE locks rows
    return True


def _function_calls(tokens: Sequence[Token]) -> list[tuple[int, tuple[str | None, str]]]:
    """(index of the name, (schema, name)) of every ``name(`` that calls a function."""
    calls = []
    for i in range(len(tokens) - 1):
        token, after = tokens[i], tokens[i + 1]
        if after.kind != PUNCT or after.text != "(" or token.kind not in (WORD, QUOTED):
            continue
        before = _at(tokens, i - 1)
        if token.kind == WORD and token.text in _NOT_FUNCTIONS:
            continue
        if before is not None and (before.text == "::" or _is(before, "AS", "INTO")):
            continue  # a type with its modifier, an alias's column list, INSERT INTO t(...)
        if _column_list_of_cte(tokens, i + 1):
            continue
        schema = None
        if (
            before is not None
            and before.text == "."
            and i >= 2
            and tokens[i - 2].kind in (WORD, QUOTED)
        ):
            schema = _name(tokens[i - 2])
        calls.append((i, (schema, _name(token))))
    return calls


def _column_list_of_cte(tokens: Sequence[Token], open_index: int) -> bool:
    """``WITH name (a, b) AS (...)``: the parentheses after the name list columns."""
    depth = 0
    for j in range(open_index, len(tokens)):
        if tokens[j].kind == PUNCT and tokens[j].text == "(":
            depth += 1
        elif tokens[j].kind == PUNCT and tokens[j].text == ")":
            depth -= 1
            if depth == 0:
                if not _is(_at(tokens, j + 1), "AS"):
                    return False
                k = j + 2
                while _is(_at(tokens, k), "NOT", "MATERIALIZED"):
                    k += 1
                return _at(tokens, k) == Token(PUNCT, "(")
    return False


def _names(tokens: Sequence[Token]) -> Iterator[tuple[str | None, str]]:
    """Every identifier, schema-qualified where written so."""
    for i, token in enumerate(tokens):
        if token.kind == QUOTED or (token.kind == WORD and token.text not in _NOT_FUNCTIONS):
            if _at(tokens, i + 1) == Token(PUNCT, "."):
                continue  # a qualifier: yielded with the name it qualifies
            before = _at(tokens, i - 1)
            if before is not None and before.text == "." and i >= 2:
                yield (_name(tokens[i - 2]), _name(token))
            else:
                yield (None, _name(token))


def render_effect_name(effect: Effect, params: Any) -> str:
    """The name an effect applies to, reading a placeholder's parameter where needed."""
    if effect.argument >= 0 and isinstance(params, (list, tuple)):
        try:
            return str(params[effect.argument]).lower()
        except IndexError:
            return ""
    return effect.name
