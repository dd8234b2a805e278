"""A problem in a config or policy file: where (file:line) and the fix.

Plain exceptions with no reader attached, so the pure policy model can raise them too;
`sourcemap.py` finds the lines, `config.py` and `policy/load.py` fill them in.
"""

from __future__ import annotations

from collections.abc import Sequence


class ConfigError(Exception):
    """A problem in a config or policy file, located and with a suggested fix."""

    def __init__(self, path: str, line: int | None, message: str, fix: str = "") -> None:
        self.path, self.line, self.message, self.fix = path, line, message, fix
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.message}" + (f" (fix: {self.fix})" if self.fix else "")


class ConfigErrors(Exception):
    """Several problems found in one pass, so the operator fixes them all at once."""

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))
