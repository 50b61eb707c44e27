"""`dss-console wt ARG...`: itksnap-wt's command line, processed left to right.

Each command's output lines carry the prefix ``N> `` (N = the command's 1-based position);
``-P`` turns prefixes off, ``-p PREFIX`` sets one for the next command only. On the first
error: one line on stderr naming the command and its position, exit 255 (itksnap-wt's -1);
``-dssp-services-claim`` with nothing to claim exits 1, as itksnap-wt does.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from dss_console.dss import DssError

from .cmdline import EXIT_ERROR, ArgReader, WtError
from .context import RunContext
from .dss_commands import DSS_COMMANDS
from .ws_commands import WORKSPACE_COMMANDS

__all__ = ["COMMANDS", "USAGE", "run", "wt_main"]

COMMANDS = {**WORKSPACE_COMMANDS, **DSS_COMMANDS}

USAGE = """\
dss-console wt : an itksnap-wt compatible workspace and DSS tool
Usage:
  dss-console wt [commands]        (as itksnap-wt [commands])
  dss-console wt --shim DIR        write DIR/itksnap-wt, which runs dss-console wt
Supported commands (itksnap-wt's names and short forms):
  I/O:     -i -o -a -p -P -dump -registry-get -registry-set
  Layers:  -layers-add-anat|-laa -layers-add-seg|-las -layers-set-main|-lsm
           -layers-set-seg|-lss -layers-list|-ll -layers-list-files|-llf
           -layers-pick|-lp -layers-pick-by-tag|-lpt
  Props:   -props-get-filename|-pgf -props-get-transform|-pgt -props-set-transform|-pst
           -props-set-nickname|-psn -props-set-colormap -props-set-alpha -props-set-sticky
           -props-set-contrast LINEAR -props-registry-get|-prg -props-registry-set|-prs
  Tags:    -tags-add|-ta -tags-add-excl|-tax -tags-del|-td
  Labels:  -labels-set FILE -labels-clear -labels-add FILE [OFFSET] [PATTERN]
  DSS:     every -dss-*, -dssp-* and -dssa-* command
Layer ids: ###, M|main, S|seg, O|overlay:N, A|anat:N (N may be -1 for the last)
Environment: ITKSNAP_WT_DSS_SERVER overrides the server (default: the one last logged in to)
See docs/wt.md for what differs from itksnap-wt."""


def run(argv: Sequence[str], out: TextIO | None = None, err: TextIO | None = None,
        stdin: TextIO | None = None) -> int:
    """Process one command line; returns the exit code."""
    err = err or sys.stderr
    ctx = RunContext(out=out, stdin=stdin)
    args = ArgReader(argv)
    index = 1
    command = ""
    try:
        while not args.at_end():
            ctx.begin(index)
            command = ""
            command = args.read_command()
            handler = COMMANDS.get(command)
            if handler is None:
                raise WtError(f"not supported by dss-console wt: {command}")
            handler(ctx, args)
            index += 1
        return 0
    except WtError as exc:
        code = exc.code
        message = str(exc)
    except DssError as exc:
        code, message = EXIT_ERROR, str(exc)
    except OSError as exc:
        code = EXIT_ERROR
        message = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    finally:
        ctx.flush()
        ctx.close()
    where = f"{command} (command {index})" if command else f"command {index}"
    # One line, whatever the message holds: scripts read the first line of stderr.
    one_line = " ".join(message.split())
    err.write(f"dss-console wt: {where}: {one_line}\n")
    err.flush()
    return code


def wt_main(argv: Sequence[str]) -> int:
    """Entry point of `dss-console wt ARG...` (raw arguments, not argparse's)."""
    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help", "-help"):
        print(USAGE)
        return 0 if argv else EXIT_ERROR
    if argv[0] == "--shim":
        if len(argv) != 2:
            print("usage: dss-console wt --shim DIR", file=sys.stderr)
            return 2
        from .shim import write_shim

        try:
            path = write_shim(Path(argv[1]))
        except OSError as exc:
            print(f"dss-console wt: --shim: cannot write {argv[1]}: {exc.strerror or exc}",
                  file=sys.stderr)
            return 1
        print(path)
        return 0
    try:
        return run(argv)
    except KeyboardInterrupt:
        return 130
