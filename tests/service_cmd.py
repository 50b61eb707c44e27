"""A service command for the engine tests: a real program, whose behaviour the test picks.

    python service_cmd.py MODE WORKSPACE RESULT [ARG...]

Modes:
  success          report through both channels, attach a file, write RESULT (the input
                   workspace re-saved), exit 0
  fail             @dss error "input rejected", exit 3
  no-result        exit 0 without writing RESULT
  sleep SECONDS    write a pid file (for the test to watch), spawn a sleeping grandchild,
                   then sleep
  slow-report N S  report progress/info N times, S seconds apart, then succeed
  flood            500k numbered lines, a 1 MiB line, binary bytes, then succeed
  wait-file PATH   report, then wait until PATH exists (the test's go signal), then succeed
  bad-result       write RESULT naming a layer file that is gone, exit 0 (export fails)
  chatter PATH     print a numbered line every 20 ms until PATH exists, then succeed
  leaky [sleep]    print what must never reach the end user (its work dir, $HOME, the host
                   name, $LEAK_TEST_SECRET, a traceback from a file under ~/.cache, a line
                   like slurmstepd's cancel message) between harmless lines, then fail with
                   an @dss error, exit 4; with "sleep": no fake slurmstepd line, no error,
                   sleep until stopped (a cluster cancel writes the real one)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def say(line: str) -> None:
    print(line, flush=True)


def hook(*args: str) -> None:
    subprocess.run([os.environ["DSS_HOOK"], *args], check=True)


def write_result(workspace: str, result: str) -> None:
    from dss_console.workspace import NewLayer, Workspace, write_workspace

    layers = Workspace.load(workspace).layers
    write_workspace(result, [NewLayer(path=layer.path, role=layer.role, nickname=layer.nickname,
                                      tags=layer.tags) for layer in layers])


def first_layer(workspace: str) -> str:
    from dss_console.workspace import Workspace

    return str(Workspace.load(workspace).layers[0].path)


def record_pids(workdir: Path) -> None:
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    (workdir / "pids.txt").write_text(f"{os.getpid()} {grandchild.pid}\n")


def main(argv: list[str]) -> int:
    mode, workspace, result, *rest = argv
    workdir = Path(os.environ["DSS_WORKDIR"])
    if mode == "success":
        say("@dss progress 0.25")
        say('@dss info "Affine registration done"')
        hook("progress", "0", "1", "0.5")
        (workdir / "qc.txt").write_text("QC ok\n")
        hook("attach", "QC report", "qc.txt", "text/plain")
        hook("info", "QC written")
        print("some stderr noise", file=sys.stderr, flush=True)
        write_result(workspace, result)
        say("@dss progress 0.9")
        return 0
    if mode == "bad-result":
        from dss_console.workspace import NewLayer, write_workspace

        layer = workdir / "vanished_layer.nii.gz"
        layer.write_bytes(Path(first_layer(workspace)).read_bytes())
        write_workspace(result, [NewLayer(path=layer)])
        layer.unlink()
        return 0
    if mode == "fail":
        say("working...")
        print("Traceback (most recent call last): boom", file=sys.stderr, flush=True)
        say('@dss error "input rejected: not a brain"')
        return 3
    if mode == "leaky":
        import socket
        import traceback

        home, host = os.environ["HOME"], socket.gethostname()
        say("harmless: segmentation step 3 of 5 done")
        say(f"work dir is {workdir}, inputs in {workspace}")
        say(f"home is {home}; running on {host} ({socket.getfqdn()})")
        say(f"token {os.environ['LEAK_TEST_SECRET']}")
        try:
            exec(compile("raise RuntimeError('model weights missing')",
                         f"{home}/.cache/seg/model.py", "exec"))
        except RuntimeError:
            traceback.print_exc()
        short = host.split(".")[0]
        if rest[:1] != ["sleep"]:
            print(f"slurmstepd-{short}: error: *** JOB 6 ON {short} CANCELLED AT "
                  "2026-12-07T04:00:00 ***", file=sys.stderr, flush=True)
        say("harmless: the last words")
        if rest[:1] == ["sleep"]:
            time.sleep(600)
        say('@dss error "segmentation failed: the input is not a brain"')
        return 4
    if mode == "no-result":
        say("done, but forgot the result")
        return 0
    if mode == "sleep":
        record_pids(workdir)
        say("@dss progress 0.1")
        time.sleep(float(rest[0]))
        return 0
    if mode == "slow-report":
        count, pause = int(rest[0]), float(rest[1])
        for i in range(1, count + 1):
            say(f"@dss progress {i / (count + 1):.3f}")
            say(f'@dss info "step {i} of {count}"')
            time.sleep(pause)
        write_result(workspace, result)
        return 0
    if mode == "flood":
        out = sys.stdout.buffer
        for i in range(500_000):
            out.write(b"line %d of the flood\n" % i)
        out.write(b"x" * (1024 * 1024) + b"\n")
        out.write(b"binary \x00\xff\xfe\x80 bytes\n")
        out.flush()
        write_result(workspace, result)
        return 0
    if mode == "chatter":
        go, n = Path(rest[0]), 0
        deadline = time.monotonic() + 120
        while not go.exists() and time.monotonic() < deadline:
            n += 1
            say(f"chatter line {n}")
            time.sleep(0.02)
        write_result(workspace, result)
        return 0
    if mode == "wait-file":
        say('@dss info "waiting for the go signal"')
        go = Path(rest[0])
        deadline = time.monotonic() + 120
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        write_result(workspace, result)
        return 0
    print(f"unknown mode {mode}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
