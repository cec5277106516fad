"""Where a string value sits in a TOML file, so `check` can say which line of the file a
script's error is on (tomllib keeps no positions).

Only `key = "..."` written at the start of a line is found (the way [[...nodes]] tables are
written); a value in an inline table is not, and its errors then name no file line.  A line
inside another key's multi-line string that reads like `key = "..."` is taken for one: callers
match values by their text, so it is mistaken only for a script of that very text.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass

MAX_VALUE_LINES = 5000     # a value longer than this is not looked for


@dataclass(frozen=True)
class StringValue:
    """One `key = <string>` of a file: its decoded text and the file line its text's first line
    is on (1-based); `lines_kept`: each line of the text is one line of the file (a multi-line
    string without escapes that add or join lines), so line N of it is file line first + N - 1."""

    value: str
    first: int
    lines_kept: bool

    def file_line(self, line: int) -> int:
        """The file line of the text's line `line` (1-based)."""
        if not self.lines_kept:
            return self.first
        return self.first + min(max(line, 1), self.value.count("\n") + 1) - 1


def string_values(text: str, key: str) -> list[StringValue]:
    """Every string assigned to `key` at the start of a line of `text`, in file order."""
    start = re.compile(rf"^[ \t]*(?:{re.escape(key)}|\"{re.escape(key)}\"|'{re.escape(key)}')[ \t]*=[ \t]*")
    lines = text.splitlines(keepends=True)
    found, index = [], 0
    while index < len(lines):
        match = start.match(lines[index])
        index += 1
        if match is None:
            continue
        raw, end = lines[index - 1][match.end():], index
        while True:   # the shortest run of lines that parses is the whole value
            try:
                value = tomllib.loads("v = " + raw).get("v")
            except tomllib.TOMLDecodeError:
                if end == len(lines) or end - index >= MAX_VALUE_LINES:
                    break
                raw += lines[end]
                end += 1
                continue
            if isinstance(value, str):
                found.append(_placed(value, raw, index))
                index = end       # a line inside the value is not a key
            break
    return found


def _placed(value: str, raw: str, line: int) -> StringValue:
    quote = raw[:3]
    if quote not in ('"""', "'''"):
        return StringValue(value, line, False)
    body = raw[3:]
    if body.startswith("\n") or body.startswith("\r\n"):   # TOML drops a newline right after the quotes
        body = body.split("\n", 1)[1]
        line += 1
    written = body[:body.rfind(quote)]
    joined = quote == '"""' and re.search(r"(?<!\\)(\\\\)*\\[ \t]*\r?\n", written) is not None
    return StringValue(value, line, not joined and written.count("\n") == value.count("\n"))
