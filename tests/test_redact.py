"""The redaction of a command's output tail (engine/redact.py): pure functions, no servers."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from dss_console.engine.redact import _GENERIC_ENV, Redactor, machine_hosts, tail_text


def redactor(**kwargs: object) -> Redactor:
    kwargs.setdefault("env", {})
    kwargs.setdefault("machine", False)
    return Redactor.build(**kwargs)  # type: ignore[arg-type]


def test_paths_become_placeholders_most_specific_first() -> None:
    r = redactor(paths={"<workdir>": "/w/root/srv/ticket_00000007", "<workroot>": "/w/root"},
                 home="/home/alice", machine=False)
    assert r.text("open /w/root/srv/ticket_00000007/input/a.nii.gz") == \
        "open <workdir>/input/a.nii.gz"
    assert r.text("root is /w/root.") == "root is <workroot>."
    # A longer name that merely starts the same is another path.
    assert r.text("/w/rooted/x and /w/root.bak") == "/w/rooted/x and /w/root.bak"


def test_home_traceback_host_env_and_user() -> None:
    env = {"SECRET_TOKEN": "s3cr3t-value-42", "SHLVL": "1", "LANG": "C.UTF-8"}
    r = Redactor.build(env=env, hosts=["node17.cluster.example"], home="/home/alice",
                       paths={})
    text = "\n".join([
        'Traceback (most recent call last):',
        '  File "/home/alice/.cache/dss/venv/lib/site.py", line 3, in <module>',
        "token=s3cr3t-value-42 level 1 C.UTF-8",
        "slurmstepd-node17.cluster.example: error: *** JOB 6 ON NODE17.cluster.example",
    ])
    out = r.text(text)
    assert '"<home>/.cache/dss/venv/lib/site.py"' in out
    assert "token=<env:SECRET_TOKEN> level 1 C.UTF-8" in out
    assert "slurmstepd-<host>: error: *** JOB 6 ON <host>" in out
    for host in machine_hosts():
        assert r.text(f"on {host}: done") == "on <host>: done"


def test_host_names_only_as_whole_names() -> None:
    r = redactor(hosts=["vm"])
    assert r.text("slurmstepd-vm: JOB ON vm CANCELLED; vmstat, kvm and vm2 stay") == \
        "slurmstepd-<host>: JOB ON <host> CANCELLED; vmstat, kvm and vm2 stay"


def test_a_value_holding_another_is_replaced_whole_and_placeholders_stay() -> None:
    r = redactor(env={"PATH_LIKE": "/home/alice/bin:/opt/x/bin", "WORD": "workdir"},
                 paths={"<home>": "/home/alice"})
    assert r.text("PATH=/home/alice/bin:/opt/x/bin") == "PATH=<env:PATH_LIKE>"
    # The placeholder "<home>" is not rewritten by a later value ("workdir" is one here).
    assert r.text("/home/alice/workdir") == "<home>/<env:WORD>"


def test_defaults_cover_the_process_env_and_this_machine(tmp_path: Path) -> None:
    r = Redactor.build()
    home = str(Path.home())
    assert home not in r.text(f"cd {home}/x")
    long_values = [v for v in os.environ.values() if len(v) >= 12 and "\n" not in v
                   and v.strip() not in _GENERIC_ENV]
    for value in long_values[:20]:
        assert value not in r.text(f"value: {value}")
    assert socket.gethostname() not in r.text(f"host {socket.gethostname()} here").split()


def test_nothing_to_redact_is_the_identity() -> None:
    assert Redactor.build(machine=False, env={}).text("a /b c") == "a /b c"


def test_tail_text_keeps_whole_lines(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    tail = tail_text(log, 30)
    assert tail.startswith("[… ") and tail.endswith("line 99\n")
    assert all(line.startswith(("line ", "[…")) for line in tail.splitlines())
    assert tail_text(tmp_path / "missing", 10) == ""
