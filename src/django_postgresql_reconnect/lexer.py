"""SQL read the way PostgreSQL reads it: tokens, statements, names and function calls.

Plain Python. Comments, string literals (with E'' escapes), dollar quoting, quoted identifiers
and case are handled as the server does, so that no spelling can hide a word from the rules
in ``statements.py`` or fake one: ``SELECT 'DELETE'`` has no DELETE in it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

__all__ = [
    "Token",
    "call_arguments",
    "folded_name",
    "function_calls",
    "is_word",
    "names",
    "split_statements",
    "token_at",
    "tokenize",
    "words",
]

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
# A letter or underscore (any script), then letters, digits, underscores or dollars: \w is
# Unicode-aware, and far cheaper to compile than explicit code point ranges.
_WORD = re.compile(r"[^\W\d][\w$]*")
_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_PARAM = re.compile(r"%\([^)]*\)s|%s|\$\d+")
_OP = re.compile(r"[-+*/<>=~!@#%^&|`?]+")
_DOLLAR_TAG = re.compile(r"\$(?:[^\W\d]\w*)?\$")
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


def split_statements(tokens: Sequence[Token]) -> list[list[Token]]:
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


def is_word(token: Token | None, *words: str) -> bool:
    return token is not None and token.kind == WORD and token.text in words


def token_at(tokens: Sequence[Token], index: int) -> Token | None:
    return tokens[index] if 0 <= index < len(tokens) else None


def folded_name(token: Token | None) -> str:
    """An identifier as PostgreSQL folds it: unquoted names are lower case."""
    if token is None:
        return ""
    if token.kind == QUOTED:
        return token.text
    return token.text.lower()


def words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words that may stand before "(" without being a function call: reserved words and the
# special syntax of expressions, clauses and type names.
_NOT_FUNCTIONS = words(
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


def function_calls(tokens: Sequence[Token]) -> list[tuple[int, tuple[str | None, str]]]:
    """(index of the name, (schema, name)) of every ``name(`` that calls a function."""
    calls = []
    for i in range(len(tokens) - 1):
        token, after = tokens[i], tokens[i + 1]
        if after.kind != PUNCT or after.text != "(" or token.kind not in (WORD, QUOTED):
            continue
        before = token_at(tokens, i - 1)
        if token.kind == WORD and token.text in _NOT_FUNCTIONS:
            continue
        if before is not None and (before.text == "::" or is_word(before, "AS", "INTO")):
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
            schema = folded_name(tokens[i - 2])
        calls.append((i, (schema, folded_name(token))))
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
                if not is_word(token_at(tokens, j + 1), "AS"):
                    return False
                k = j + 2
                while is_word(token_at(tokens, k), "NOT", "MATERIALIZED"):
                    k += 1
                return token_at(tokens, k) == Token(PUNCT, "(")
    return False


def names(tokens: Sequence[Token]) -> Iterator[tuple[str | None, str]]:
    """Every identifier, schema-qualified where written so."""
    for i, token in enumerate(tokens):
        if token.kind == QUOTED or (token.kind == WORD and token.text not in _NOT_FUNCTIONS):
            if token_at(tokens, i + 1) == Token(PUNCT, "."):
                continue  # a qualifier: yielded with the name it qualifies
            before = token_at(tokens, i - 1)
            if before is not None and before.text == "." and i >= 2:
                yield (folded_name(tokens[i - 2]), folded_name(token))
            else:
                yield (None, folded_name(token))


def call_arguments(tokens: list[Token], open_index: int) -> list[list[Token]]:
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
