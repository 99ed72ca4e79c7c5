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

from dataclasses import dataclass
from typing import Any

from .lexer import (
    OP,
    PARAM,
    PUNCT,
    STRING,
    WORD,
    Token,
    call_arguments,
    folded_name,
    function_calls,
    is_word,
    names,
    split_statements,
    token_at,
    tokenize,
    words,
)

__all__ = [
    "Effect",
    "Facts",
    "effects_of",
    "facts_of",
    "tokenize",
]

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
    for statement in split_statements(list(tokenize(sql))):
        effects.extend(_statement_effects(statement))
    return tuple(effects) if effects else _NO_EFFECTS


_TRIGGER_WORDS = tuple(
    {w for w in _FIRST_WORDS_WITH_EFFECTS}
    | {"ADVISORY", "SET_CONFIG", "DBLINK_CONNECT", "SETSEED", "PG_NOTIFY", "INTO"}
)


def _statement_effects(tokens: list[Token]) -> list[Effect]:
    start = 0
    while token_at(tokens, start) is not None and tokens[start].text == "(":
        start += 1
    first = token_at(tokens, start)
    effects: list[Effect] = []
    if first is not None and first.kind == WORD and first.text in _FIRST_WORDS_WITH_EFFECTS:
        effects.extend(_command_effects(tokens[start:]))
    calls = function_calls(tokens)
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
    second, third = token_at(tokens, 1), token_at(tokens, 2)
    if word == "SET":
        return _set_effect(tokens)
    if word == "RESET":
        if is_word(second, "ALL"):
            return [Effect(RESET_ALL)]
        return [Effect(SETTING, _setting_name(tokens, 1))]
    if word == "LISTEN":
        return [Effect(LISTEN, folded_name(second))]
    if word == "UNLISTEN":
        return [
            Effect(
                UNLISTEN, "*" if second is not None and second.text == "*" else folded_name(second)
            )
        ]
    if word == "CREATE":
        return [Effect(TEMPORARY)] if _creates_temporary(tokens) else []
    if word == "PREPARE":
        if is_word(second, "TRANSACTION"):
            return [Effect(COMMIT)]
        return [Effect(PREPARED, folded_name(second))]
    if word == "DEALLOCATE":
        target = third if is_word(second, "PREPARE") else second
        return [Effect(DEALLOCATE, "*" if is_word(target, "ALL") else folded_name(target))]
    if word == "DECLARE":
        for i in range(len(tokens) - 1):
            if is_word(tokens[i], "WITH") and is_word(tokens[i + 1], "HOLD"):
                return [Effect(HELD_CURSOR, folded_name(second))]
        return []
    if word == "CLOSE":
        return [Effect(CLOSE_CURSOR, "*" if is_word(second, "ALL") else folded_name(second))]
    if word == "DISCARD":
        if is_word(second, "ALL"):
            return [Effect(DISCARD_ALL)]
        if is_word(second, "TEMP", "TEMPORARY"):
            return [Effect(DISCARD_TEMP)]
        return []
    if word == "LOAD":
        return [Effect(LOAD, second.text if second is not None else "")]
    if word in ("BEGIN", "START"):
        return [Effect(BEGIN)]
    if word in ("COMMIT", "END"):
        if is_word(second, "PREPARED"):
            return []
        chain = any(is_word(t, "CHAIN") for t in tokens) and not any(
            is_word(t, "NO") for t in tokens
        )
        return [Effect(COMMIT), Effect(BEGIN)] if chain else [Effect(COMMIT)]
    if word in ("ROLLBACK", "ABORT"):
        if is_word(second, "PREPARED"):
            return []
        rest = [t for t in tokens[1:] if not is_word(t, "WORK", "TRANSACTION")]
        if rest and is_word(rest[0], "TO"):
            target = rest[2] if is_word(token_at(rest, 1), "SAVEPOINT") else token_at(rest, 1)
            return [Effect(ROLLBACK_TO, folded_name(target))]
        return [Effect(ROLLBACK)]
    if word == "SAVEPOINT":
        return [Effect(SAVEPOINT, folded_name(second))]
    if word == "RELEASE":
        return [Effect(RELEASE, folded_name(third if is_word(second, "SAVEPOINT") else second))]
    if word == "NOTIFY":
        return [Effect(NOTIFY, folded_name(second))]
    return []


_SET_ALIASES = {"SCHEMA": "search_path", "NAMES": "client_encoding", "ROLE": "role"}


def _set_effect(tokens: list[Token]) -> list[Effect]:
    second = token_at(tokens, 1)
    if is_word(second, "LOCAL", "TRANSACTION", "CONSTRAINTS"):
        return []  # ends with the transaction
    index = 1
    if is_word(second, "SESSION"):
        third = token_at(tokens, 2)
        if is_word(third, "AUTHORIZATION"):
            return [Effect(SETTING, "session_authorization")]
        if is_word(third, "CHARACTERISTICS"):
            return [Effect(SETTING, "default_transaction_characteristics")]
        index = 2
    return [Effect(SETTING, _setting_name(tokens, index))]


def _setting_name(tokens: list[Token], index: int) -> str:
    token = token_at(tokens, index)
    if token is None:
        return ""
    if is_word(token, "TIME") and is_word(token_at(tokens, index + 1), "ZONE"):
        return "timezone"
    if is_word(token, "SESSION") and is_word(token_at(tokens, index + 1), "AUTHORIZATION"):
        return "session_authorization"
    if is_word(token, "XML") and is_word(token_at(tokens, index + 1), "OPTION"):
        return "xmloption"
    if token.kind == WORD and token.text in _SET_ALIASES:
        return _SET_ALIASES[token.text]
    name = folded_name(token)
    if token_at(tokens, index + 1) == Token(PUNCT, "."):
        name += "." + folded_name(
            token_at(tokens, index + 2)
        )  # a custom setting such as app.tenant
    return name


def _creates_temporary(tokens: list[Token]) -> bool:
    for i, token in enumerate(tokens[1:], start=1):
        if is_word(token, "TEMP", "TEMPORARY"):
            return True
        if is_word(token, "PG_TEMP") and token_at(tokens, i + 1) == Token(PUNCT, "."):
            return True
        if is_word(token, "AS") or token.text == "(":
            return False  # past the object's name
    return False


def _into_temporary(tokens: list[Token]) -> list[Effect]:
    """SELECT ... INTO TEMP t (and INTO pg_temp.t) creates a temporary table."""
    for i, token in enumerate(tokens):
        if is_word(token, "INTO"):
            target = token_at(tokens, i + 1)
            if is_word(target, "TEMP", "TEMPORARY"):
                return [Effect(TEMPORARY)]
            if is_word(target, "PG_TEMP") and token_at(tokens, i + 2) == Token(PUNCT, "."):
                return [Effect(TEMPORARY)]
    return []


_TRUE_WORDS = frozenset({"TRUE", "ON"})
_TRUE_STRINGS = frozenset({"t", "true", "on", "1", "y", "yes"})


def _set_config_effect(
    tokens: list[Token], index: int, calls: list[tuple[int, tuple[str | None, str]]]
) -> list[Effect]:
    """``set_config(name, value, is_local)``: a session setting unless is_local is true."""
    arguments = call_arguments(tokens, index + 1)
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
    if not is_word(token_at(tokens, 0), "SELECT"):
        return False
    if any(name != "set_config" for _, (_, name) in calls):
        return False
    return not any(
        is_word(t, "FROM", "WHERE", "INTO", "UNION", "EXCEPT", "INTERSECT") for t in tokens
    )


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


# --- Facts for the loss path ------------------------------------------------------------------


_READ_FIRST_WORDS = frozenset({"SELECT", "WITH", "VALUES", "TABLE", "SHOW", "EXPLAIN"})
# Words that make a read-looking statement write, lock, signal or keep something.
_WRITE_WORDS = words(
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
    statements = split_statements(tokens)
    functions = frozenset(name for _, name in function_calls(tokens))
    operators = frozenset(t.text for t in tokens if t.kind == OP)
    relations = frozenset(names(tokens))
    ends = any(_ends_transaction(statement) for statement in statements)
    read = len(statements) == 1 and _read_shaped(statements[0])
    return Facts(read, functions, operators, relations - functions, ends)


def _ends_transaction(tokens: list[Token]) -> bool:
    first, second = token_at(tokens, 0), token_at(tokens, 1)
    if is_word(first, *_ENDS_TRANSACTION):
        return True
    if is_word(first, "ROLLBACK"):
        rest = [t for t in tokens[1:] if not is_word(t, "WORK", "TRANSACTION")]
        return not (rest and is_word(rest[0], "TO"))
    return is_word(first, "PREPARE") and is_word(second, "TRANSACTION")


def _read_shaped(tokens: list[Token]) -> bool:
    start = 0
    while token_at(tokens, start) is not None and tokens[start].text == "(":
        start += 1
    first = token_at(tokens, start)
    if first is None or first.kind != WORD or first.text not in _READ_FIRST_WORDS:
        return False
    for i, token in enumerate(tokens):
        if token.kind != WORD:
            continue
        if token.text in _WRITE_WORDS:
            return False
        if token.text == "FOR" and is_word(token_at(tokens, i + 1), *_ROW_LOCKS):
            return False  # SELECT ... FOR UPDATE / SHARE locks rows
    return True


def render_effect_name(effect: Effect, params: Any) -> str:
    """The name an effect applies to, reading a placeholder's parameter where needed."""
    if effect.argument >= 0 and isinstance(params, (list, tuple)):
        try:
            return str(params[effect.argument]).lower()
        except IndexError:
            return ""
    return effect.name
