"""`dss-console wt ARG...`: an `itksnap-wt`-compatible workspace and DSS tool (issue 10).

Takes itksnap-wt's own command line, not argparse's, so `cli.main` hands it the raw
arguments before parsing."""

from __future__ import annotations

import sys
from collections.abc import Sequence

WT_HELP = "itksnap-wt compatible workspace and DSS tool (not built yet)"


def wt_main(argv: Sequence[str]) -> int:
    print("dss-console wt: not built yet", file=sys.stderr)
    return 1
