"""`dss-console v6 ...`: this machine as a vantage6 4.x node (issue 11)."""

from __future__ import annotations

import argparse


def add_parser(verbs: argparse._SubParsersAction) -> None:
    verbs.add_parser("v6", help="run this machine as a vantage6 4.x node (not built yet)")
