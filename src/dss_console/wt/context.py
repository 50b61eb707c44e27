"""State of one `dss-console wt` run: the current workspace, the picked layer, the output
prefix of the command being run, and (made on first use) the DSS client."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, TextIO

from .state import WtWorkspace

if TYPE_CHECKING:
    from dss_console.dss import DssClient

__all__ = ["RunContext"]


class RunContext:
    """What the commands share while the command line is processed left to right."""

    def __init__(self, out: TextIO | None = None, stdin: TextIO | None = None):
        self.out = out or sys.stdout
        self.stdin = stdin or sys.stdin
        self.ws = WtWorkspace()
        self.picked = ""  # registry key of the picked layer ("" = none)
        self.prefix = ""  # of the command being run
        self.index = 0  # 1-based position of the command being run
        self.prefix_disabled = False
        self.temp_prefix = ""
        self.temp_prefix_index = -1  # the command the temporary prefix applies to
        self._client: DssClient | None = None

    def begin(self, index: int) -> None:
        """Work out the prefix of command ``index``: `-p`'s for the next command only,
        else ``N> `` unless `-P` turned prefixes off."""
        self.index = index
        if index == self.temp_prefix_index:
            self.prefix = self.temp_prefix
        else:
            self.prefix = "" if self.prefix_disabled else f"{index}> "

    def emit(self, line: str) -> None:
        """A line of command output, prefixed."""
        self.out.write(f"{self.prefix}{line}\n")

    def emit_lines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.emit(line)

    def info(self, line: str) -> None:
        """An informational line (never prefixed, as in itksnap-wt)."""
        self.out.write(f"{line}\n")

    def raw(self, line: str) -> None:
        """A line already carrying whatever prefix it needs."""
        self.out.write(f"{line}\n")

    def flush(self) -> None:
        self.out.flush()

    # -- DSS ------------------------------------------------------------------------------
    def client(self) -> DssClient:
        if self._client is None:
            from .server import logged_in_client

            self._client = logged_in_client()
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
