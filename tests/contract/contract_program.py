"""The contract suite's command: one real program for every source and every executor.

    python contract_program.py FORMAT MODE INPUT RESULT STATE

FORMAT says how a result is written (the source's adapter picks it): ``workspace`` copies
the input ITK-SNAP workspace and its layers next to RESULT (a DSS result workspace);
``json`` writes a small JSON document to RESULT (a vantage6 algorithm's output). STATE is
a directory of the test's own: every start appends its pid to STATE/lives (so a test sees
each life of the work, on any executor of this host), and ``wait`` waits for STATE/go.
Reports use the ``@dss`` stdout lines only, the one channel every source relays.

Modes:
  success    progress 0.5, a message, an attachment, a result, exit 0
  exit CODE  print what must stay on this machine (its work dir, a marker), exit CODE
  no-result  exit 0 without a result
  wait       a message, wait for STATE/go (120 s at most), a message, a result, exit 0
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

HALFWAY = "contract: halfway"
WAITING = "contract: waiting for the go signal"
GO_SEEN = "contract: the go signal came"
ATTACHMENT = "QC report"
LOCAL_MARKER = "CONTRACT-LOCAL-DETAIL"  # printed with the work dir; never for the requester
ANSWER = {"contract": "done"}


def say(line: str) -> None:
    print(line, flush=True)


def write_result(fmt: str, source: Path, result: Path) -> None:
    if fmt == "json":
        result.write_text(json.dumps(ANSWER))
        return
    # The workspace names its layers relative to itself: its files travel with it.
    for path in source.parent.iterdir():
        if path.is_file() and path != source:
            shutil.copyfile(path, result.parent / path.name)
    shutil.copyfile(source, result)


def main(argv: list[str]) -> int:
    fmt, mode, source, result, state, *rest = argv
    state_dir = Path(state)
    with open(state_dir / "lives", "a") as lives:
        lives.write(f"{os.getpid()}\n")
    if mode == "success":
        say("@dss progress 0.5")
        say(f'@dss info "{HALFWAY}"')
        Path("qc.txt").write_text("QC ok\n")
        say(f'@dss attach "{ATTACHMENT}" qc.txt text/plain')
        write_result(fmt, Path(source), Path(result))
        return 0
    if mode == "exit":
        for stream in (sys.stdout, sys.stderr):
            print(f"{LOCAL_MARKER} in {os.getcwd()}", file=stream, flush=True)
        return int(rest[0])
    if mode == "no-result":
        say("done, but no result written")
        return 0
    if mode == "wait":
        say(f'@dss info "{WAITING}"')
        go = state_dir / "go"
        deadline = time.monotonic() + 120
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        say(f'@dss info "{GO_SEEN}"')
        write_result(fmt, Path(source), Path(result))
        return 0
    print(f"unknown mode {mode}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
