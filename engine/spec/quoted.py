"""dbt's quoted prints: `'{{ var("start_date") }}'`, a value printed as the whole of a SQL
string literal, made into that literal through `sql_literal` before the template renders
(`{{ (var("start_date")) | string | sql_literal }}`): the same string, its quotes doubled, so a
value holding `'` cannot end the literal and change the statement.

Only where the quote opens a plain SQL string: not inside a comment (a newline in the value
would end it), a quoted identifier, another string, a dollar-quoted string, an escape or other
prefixed string (`E'...'`, where a backslash escapes), a Jinja tag, comment or `{% raw %}`
block. Anywhere else the print stays as written, and validation refuses a text parameter
printed raw there. The text keeps its lines.
"""

from __future__ import annotations

import re

__all__ = ["literal_prints"]

_PRINT = re.compile(r"'\{\{-?[ \t]*((?:(?!\}\}|sql_literal|sql_identifier)[^\n])+?)[ \t]*-?\}\}'")
_RAW = re.compile(r"\{%-?\s*raw\s*-?%\}.*?\{%-?\s*endraw\s*-?%\}", re.DOTALL)
_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_SKIPS = (("{#", "#}"), ("{{", "}}"), ("{%", "%}"), ("--", "\n"), ("/*", "*/"))
"""What is copied as it is, from its start to its end: Jinja's comments, prints and tags
(their quotes are Jinja's), SQL comments."""


def literal_prints(sql: str) -> str:
    if "'{{" not in sql:
        return sql
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        raw = _RAW.match(sql, i) if sql.startswith("{%", i) else None
        if raw:
            out.append(raw[0])
            i = raw.end()
            continue
        skip = next(((a, b) for a, b in _SKIPS if sql.startswith(a, i)), None)
        if skip is not None:
            end = sql.find(skip[1], i + len(skip[0]))
            end = n if end < 0 else end + (0 if skip[1] == "\n" else len(skip[1]))
            out.append(sql[i:end])
            i = end
            continue
        char = sql[i]
        if char == "$" and (tag := _DOLLAR.match(sql, i)):
            end = sql.find(tag[0], tag.end())
            end = n if end < 0 else end + len(tag[0])
            out.append(sql[i:end])
            i = end
            continue
        if char in "'\"":
            prefixed = i > 0 and (sql[i - 1].isalnum() or sql[i - 1] == "_")
            found = _PRINT.match(sql, i) if char == "'" and not prefixed else None
            if found:
                out.append(f"{{{{ ({found[1]}) | string | sql_literal }}}}")
                i = found.end()
                continue
            end = _closing(sql, i, char)
            out.append(sql[i:end])
            i = end
            continue
        out.append(char)
        i += 1
    return "".join(out)


def _closing(sql: str, start: int, quote: str) -> int:
    """The end of the quoted text opened at `start` (a doubled quote inside it is one quote;
    a Jinja print inside it is skipped whole, its own quotes included)."""
    i, n = start + 1, len(sql)
    while i < n:
        if sql.startswith("{{", i):
            end = sql.find("}}", i + 2)
            i = n if end < 0 else end + 2
        elif sql[i] == quote:
            if sql.startswith(quote * 2, i):
                i += 2
            else:
                return i + 1
        else:
            i += 1
    return n
