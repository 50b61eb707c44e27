"""Errors and exit codes shared by `cli.py` and the verb modules in `commands/`.

They live here rather than in `cli.py` so the verbs do not import the module that
imports them (the old cli.py <-> commands import circle).
"""

from __future__ import annotations

PROG = "dss-console"

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOTHING_TO_CLAIM = 3


class CliError(Exception):
    """An expected failure: printed as one line, exit code `code`."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code
