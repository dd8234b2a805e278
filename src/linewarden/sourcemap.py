"""Where a TOML key lives: line numbers for config errors.

`tomllib` reports line numbers only for syntax errors. To say "partners.toml:14: host
'*.co.uk' is a public suffix", we scan the text once and remember the line of every table
header and key. The scanner understands table headers, arrays of tables and `key = value`
lines; keys inside inline tables or multi-line values map to the line of their parent key,
which is where an operator looks anyway.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .fileerrors import ConfigError, ConfigErrors

__all__ = ["ConfigError", "ConfigErrors", "Loc", "SourceMap", "load_toml", "parse_toml",
           "scan_lines"]

Loc = tuple[str | int, ...]

_TABLE = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_NAME = r"""(?:"[^"]*"|'[^']*'|[A-Za-z0-9_\-]+)"""
_KEY = re.compile(rf"^\s*({_NAME}(?:\s*\.\s*{_NAME})*)\s*=")
_PART = re.compile(r"""\s*("[^"]*"|'[^']*'|[A-Za-z0-9_\-]+)\s*(?:\.|$)""")


def _split_key(text: str) -> list[str]:
    return [p.strip("\"'") for p in _PART.findall(text)]


@dataclass
class SourceMap:
    path: str
    lines: dict[Loc, int]

    def line_of(self, loc: Loc) -> int | None:
        """The line of `loc`, or of its nearest located ancestor."""
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return None

    def error(self, loc: Loc, message: str, fix: str = "") -> ConfigError:
        return ConfigError(self.path, self.line_of(loc), message, fix)


def scan_lines(path: str, text: str) -> SourceMap:
    lines: dict[Loc, int] = {}
    counts: dict[tuple[str, ...], int] = {}
    current: Loc = ()
    depth = 0  # open brackets/braces of a multi-line value: skip its lines
    in_string: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if in_string:
            if in_string in line:
                in_string = None
            continue
        if depth > 0:
            depth += line.count("[") + line.count("{") - line.count("]") - line.count("}")
            continue
        table = _TABLE.match(line)
        if table and "=" not in line.split("]")[0]:
            names = tuple(_split_key(table.group(2)))
            if table.group(1) == "[[":
                index = counts.get(names, 0)
                counts[names] = index + 1
                current = (*_resolve(names[:-1], counts), names[-1], index)
            else:
                current = _resolve(names, counts)
            lines.setdefault(current, number)
            continue
        key = _KEY.match(line)
        if key:
            loc = (*current, *_split_key(key.group(1)))
            lines.setdefault(loc, number)
            value = line[key.end():]
            for quote in ('"""', "'''"):
                if value.count(quote) == 1:
                    in_string = quote
            if not in_string:
                depth = value.count("[") + value.count("{") - value.count("]") - value.count("}")
                depth = max(depth, 0)
    return SourceMap(path, lines)


def _resolve(names: Sequence[str], counts: dict[tuple[str, ...], int]) -> Loc:
    """`[partners.headers]` after the 3rd `[[partners]]` belongs to partners[2]."""
    out: list[str | int] = []
    for i, name in enumerate(names):
        out.append(name)
        n = counts.get(tuple(names[: i + 1]))
        if n:
            out.append(n - 1)
    return tuple(out)


def load_toml(path: str | Path) -> tuple[dict[str, Any], SourceMap]:
    """Parse a TOML file; syntax errors become a ConfigError with the line."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(name, None, "file not found", "check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(name, None, f"cannot read file: {exc}", "it must be UTF-8 text") from None
    return parse_toml(name, text)


def parse_toml(name: str, text: str) -> tuple[dict[str, Any], SourceMap]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"at line (\d+)", message)
        line = int(match.group(1)) if match else None
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", message)
        raise ConfigError(name, line, f"invalid TOML: {message}", "fix the TOML syntax") from None
    return data, scan_lines(name, text)
