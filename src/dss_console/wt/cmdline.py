"""Reading itksnap-wt's command line the way its CommandLineHelper does.

Commands start with ``-``; a string argument may not (``read_string`` refuses one, so a
forgotten argument is caught instead of swallowing the next command); numbers may be
negative. Optional trailing arguments are counted up to the next ``-`` word.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

__all__ = ["EXIT_ERROR", "EXIT_NOTHING_TO_CLAIM", "ArgReader", "WtError"]

# itksnap-wt returns -1 from main on any error (the shell sees 255) and exit(1) when a
# claim times out; scripts that tell the two apart keep working.
EXIT_ERROR = 255
EXIT_NOTHING_TO_CLAIM = 1


class WtError(Exception):
    """An error of one command: printed as one line naming the command, then exit."""

    def __init__(self, message: str, code: int = EXIT_ERROR):
        super().__init__(message)
        self.code = code


class ArgReader:
    """A cursor over the raw arguments, one command and its parameters at a time."""

    def __init__(self, argv: Sequence[str]):
        self.argv = [str(a) for a in argv]
        self.pos = 0
        self.command = ""

    def at_end(self) -> bool:
        return self.pos >= len(self.argv)

    def _next(self) -> str:
        if self.at_end():
            raise WtError(f"{self.command} is missing an argument (end of the command line)")
        arg = self.argv[self.pos]
        self.pos += 1
        return arg

    def read_command(self) -> str:
        arg = self._next()
        if not arg.startswith("-"):
            raise WtError(f"expected a command at position {self.pos}, instead got {arg!r}")
        self.command = arg
        return arg

    def read_string(self, what: str = "an argument") -> str:
        arg = self._next()
        if arg.startswith("-"):
            raise WtError(f"{self.command} expects {what}, instead got {arg!r} (arguments may "
                          "not start with '-')")
        return arg

    def read_int(self, what: str = "an integer") -> int:
        arg = self._next()
        try:
            return int(arg, 10)
        except ValueError:
            raise WtError(f"{self.command} expects {what}, instead got {arg!r}") from None

    def read_float(self, what: str = "a number") -> float:
        arg = self._next()
        try:
            value = float(arg)
        except ValueError:
            raise WtError(f"{self.command} expects {what}, instead got {arg!r}") from None
        if not math.isfinite(value):
            raise WtError(f"{self.command} expects a finite number, instead got {arg!r}")
        return value

    def read_existing_file(self) -> str:
        arg = self._next()
        if not os.path.exists(arg):
            raise WtError(f"file {arg!r} does not exist")
        return arg

    def read_output_file(self) -> str:
        return self._next()

    def optional_count(self) -> int:
        """How many arguments follow before the next command (CommandLineHelper's
        command_arg_count): decides whether an optional argument was given."""
        count = 0
        for arg in self.argv[self.pos:]:
            if arg.startswith("-"):
                break
            count += 1
        return count
