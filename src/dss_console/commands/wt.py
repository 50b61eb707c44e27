"""`dss-console wt ARG...`: an `itksnap-wt`-compatible workspace and DSS tool (issue 10).

Takes itksnap-wt's own command line, not argparse's, so `cli.main` hands it the raw
arguments before parsing. The work is done in `dss_console.wt`."""

from __future__ import annotations

from collections.abc import Sequence

WT_HELP = "itksnap-wt compatible workspace and DSS tool (`wt --help`; `wt --shim DIR`)"


def wt_main(argv: Sequence[str]) -> int:
    from dss_console.wt.main import wt_main as run_wt

    return run_wt(argv)
