"""`dss-console v6 login` picks the plug-in by the server's version (issue 21, plan §2-3):
real processes against the real HQ 5.0.3 behind the stand-in and the real vantage6-server
4.15.2; the same command keeps working for 4.x; missing 5.x flags are refused in words;
secrets never appear in what the command prints. The 5.x node's client then logs in with the
stored key and HQ takes its token (`GET /hq/node/me`)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dss_console.credentials import V6CredentialStore
from dss_console.sources.v6.sandbox import V6Sandbox
from dss_console.sources.v6x5.client import HqNodeClient
from dss_console.sources.v6x5.sandbox import HqSandbox

from v6_fixtures import SERVER_TEST_TIMEOUT

pytestmark = pytest.mark.timeout(SERVER_TEST_TIMEOUT)

EXE = Path(sys.executable).with_name("dss-console")


def _cli(tmp_path: Path, *argv: str, stdin: str = "", timeout: float = 60
         ) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "cli"), DSS_CONSOLE_KEYRING="off")
    return subprocess.run([str(EXE), *argv], env=env, input=stdin, capture_output=True,
                          text=True, timeout=timeout)


def _store(tmp_path: Path) -> V6CredentialStore:
    return V6CredentialStore(tmp_path / "cli" / "dss-console", use_keyring=False)


def test_a_5x_server_is_detected_and_its_node_logs_in_through_keycloak(
        v6x5_sandbox: HqSandbox, tmp_path: Path) -> None:
    sb = v6x5_sandbox
    plain, enc = sb.node("station-demo"), sb.node("station-demo-enc")
    login = ("v6", "login", "--server", sb.url, "--api-key-stdin")

    # Today's 4.x command line: refused in words, naming what a 5.x node needs and why.
    bare = _cli(tmp_path, *login, stdin=plain.api_key + "\n")
    assert bare.returncode == 2, bare.stderr
    assert "is a vantage6 5.x server: give --auth-url URL and --node NAME" in bare.stderr
    assert "NAME-node-client" in bare.stderr
    no_node = _cli(tmp_path, *login, "--auth-url", sb.auth_url, stdin=plain.api_key + "\n")
    assert no_node.returncode == 2 and "give --node NAME." in no_node.stderr

    wrong_key = _cli(tmp_path, *login, "--auth-url", sb.auth_url, "--node", plain.name,
                     stdin="not-the-key\n")
    assert wrong_key.returncode == 1
    assert "refused this node's API key for client 'station-demo-node-client'" \
        in wrong_key.stderr
    wrong_realm = _cli(tmp_path, *login, "--auth-url", sb.auth_url, "--realm", "nosuch",
                       "--node", plain.name, stdin=plain.api_key + "\n")
    assert wrong_realm.returncode == 1 and "no such realm" in wrong_realm.stderr
    no_pem = _cli(tmp_path, *login, "--auth-url", sb.auth_url, "--node", enc.name,
                  stdin=enc.api_key + "\n")
    assert no_pem.returncode == 1 and "'demo-enc' is encrypted" in no_pem.stderr
    assert _store(tmp_path).v6_nodes() == []  # nothing refused was stored

    ok = _cli(tmp_path, *login, "--auth-url", sb.auth_url, "--node", plain.name,
              stdin=plain.api_key + "\n")
    assert ok.returncode == 0, ok.stderr
    assert f"logged in to {sb.api_url} (vantage6 5.x) as node 'station-demo' (id {plain.id})" \
        in ok.stdout
    assert f"authentication: {sb.auth_url} (realm vantage6)" in ok.stdout
    assert "collaboration: demo (id" in ok.stdout and "not encrypted" in ok.stdout
    ok_enc = _cli(tmp_path, "v6", "login", "--server", sb.api_url, "--auth-url",
                  sb.auth_url + "/realms/vantage6", "--realm", "vantage6", "--node", enc.name,
                  "--private-key", str(sb.key_file("station")), "--api-key-stdin",
                  stdin=enc.api_key + "\n")
    assert ok_enc.returncode == 0, ok_enc.stderr
    assert "'station-demo-enc'" in ok_enc.stdout and ", encrypted" in ok_enc.stdout
    assert "uploaded" not in ok_enc.stdout  # the sandbox uploaded the same public key

    # Stored as a 4.x node is, under HQ's API URL, with the auth server beside it.
    store = _store(tmp_path)
    stored = store.load_node(sb.api_url, plain.name)
    assert stored is not None and stored.api_key == plain.api_key
    assert (stored.auth_url, stored.realm) == (sb.auth_url, "vantage6")
    index = json.loads((tmp_path / "cli" / "dss-console" / "v6-nodes.json").read_text())
    assert plain.api_key not in json.dumps(index)
    secrets_file = tmp_path / "cli" / "dss-console" / "v6-secrets.json"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600

    everything = "".join(r.stdout + r.stderr for r in (
        bare, no_node, wrong_key, wrong_realm, no_pem, ok, ok_enc))
    for secret in (plain.api_key, enc.api_key, "PRIVATE KEY", "eyJ"):
        assert secret not in everything

    # The stored key logs the node's client in, and HQ takes its token.
    with HqNodeClient(stored.server, auth_url=stored.auth_url or "", realm=stored.realm or "",
                      node=stored.node) as client:
        client.login(stored.api_key)
        me = client.get("/node/me")
        assert (me["id"], me["name"]) == (plain.id, plain.name)
        who = client.whoami()
        assert (who.node_id, who.collaboration_name, who.encrypted) == (plain.id, "demo", False)
        assert all(run.task_id for run in client.open_runs())  # other tests' runs may be open
        assert client.blob_store_enabled() is False
        assert plain.api_key not in repr(client) and plain.api_key not in repr(
            client.credentials)

    # `worker --source v6` (the family) runs the stored 5.x node as the 5.x member: it logs
    # in through the auth server and works on HQ (test_v6x5_worker runs its tasks). Other
    # tests' runs are left alone (no image configured, none refused).
    (tmp_path / "leave.toml").write_text('[v6]\nunknown_images = "leave"\n')
    worker = _cli(tmp_path, "worker", "--source", "v6", "--node", plain.name, "--config",
                  str(tmp_path / "leave.toml"), "--exit-when-idle")
    assert f"/hq#node-{plain.id}" in worker.stdout + worker.stderr, worker.stderr
    assert "Traceback" not in worker.stdout + worker.stderr
    assert plain.api_key not in worker.stdout + worker.stderr

    # `v6 status` asks each stored node's own server generation; `v6 logout --server` finds
    # the 5.x node by the server's root URL, as for 4.x.
    status = _cli(tmp_path, "v6", "status")
    assert status.returncode == 0, status.stderr
    assert status.stdout.count("server: key accepted; ") == 2, status.stdout
    assert f"station-demo @ {sb.api_url}" in status.stdout
    out = _cli(tmp_path, "v6", "logout", "--server", sb.url, "--node", plain.name)
    assert out.returncode == 0, out.stderr
    assert _store(tmp_path).load_node(sb.api_url, plain.name) is None
    assert _store(tmp_path).load_node(sb.api_url, enc.name) is not None
    for result in (status, out):
        assert plain.api_key not in result.stdout + result.stderr


def test_a_4x_server_keeps_working_with_the_same_command(
        v6_sandbox: V6Sandbox, tmp_path: Path) -> None:
    plain = v6_sandbox.node("station-demo")
    url = v6_sandbox.url
    login = ("v6", "login", "--server", url, "--api-key-stdin")

    ok = _cli(tmp_path, *login, stdin=plain.api_key + "\n")
    assert ok.returncode == 0, ok.stderr
    assert f"logged in to {v6_sandbox.api_url} as node 'station-demo'" in ok.stdout
    assert "authentication:" not in ok.stdout
    stored = _store(tmp_path).load_node(v6_sandbox.api_url, plain.name)
    assert stored is not None and stored.auth_url is None and stored.realm is None
    named = _cli(tmp_path, *login, "--node", "station-demo", stdin=plain.api_key + "\n")
    assert named.returncode == 0, named.stderr

    keycloak = _cli(tmp_path, *login, "--auth-url", "https://auth.example.org",
                    stdin=plain.api_key + "\n")
    assert keycloak.returncode == 2
    assert "--auth-url and --realm are not used by a vantage6 4.x server" in keycloak.stderr
    other = _cli(tmp_path, *login, "--node", "station-demo-enc", stdin=plain.api_key + "\n")
    assert other.returncode == 2
    assert "this API key is node 'station-demo'" in other.stderr and "not 'station-demo-enc'" \
        in other.stderr
    bad = _cli(tmp_path, *login, stdin="11111111-2222-3333-4444-555555555555\n")
    assert bad.returncode == 1 and "did not accept this API key" in bad.stderr
    for result in (ok, named, keycloak, other, bad):
        assert plain.api_key not in result.stdout + result.stderr


def test_a_server_of_neither_version_or_none_at_all_is_said_in_words(
        v6x5_sandbox: HqSandbox, closed_port_url: str, tmp_path: Path) -> None:
    neither = _cli(tmp_path, "v6", "login", "--server", v6x5_sandbox.auth_url,
                   "--api-key-stdin", stdin="key\n")
    assert neither.returncode == 1
    assert ("answers neither /api/version (vantage6 4.x) nor /hq/version (vantage6 5.x)"
            in neither.stderr)
    down = _cli(tmp_path, "v6", "login", "--server", closed_port_url, "--api-key-stdin",
                stdin="key\n")
    assert down.returncode == 1 and f"cannot reach {closed_port_url}" in down.stderr


def test_sandbox_version_5_prints_login_lines_that_work(v6x5_python: Path,
                                                       tmp_path: Path) -> None:
    data = tmp_path / "box"
    proc = subprocess.Popen([str(EXE), "v6", "sandbox", "--version", "5", "--data", str(data)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:  # blocks only until the banner is printed
            lines.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        banner = "".join(lines)
        assert "not an identity provider" in banner
        info = json.loads((data / "sandbox.json").read_text())
        assert stat.S_IMODE((data / "sandbox.json").stat().st_mode) == 0o600
        assert f"running at {info['url']}" in banner
        login = next(ln.strip() for ln in lines if "v6 login" in ln and "--private-key" in ln)
        key, rest = login.split(" | ", 1)
        argv = shlex.split(rest)[1:]
        assert "--auth-url" in argv and "--node" in argv
        done = _cli(tmp_path, *argv, stdin=key.split()[1] + "\n")
        assert done.returncode == 0, done.stderr
        assert "as node 'station-demo-enc'" in done.stdout and ", encrypted" in done.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "vantage6 5.x sandbox stopped" in out


def test_the_family_defaults_leave_a_single_generation_source_alone() -> None:
    """A source without generations (DSS) declares no family members: the defaults say it
    is its own family, serves any server and names no major version; the vantage6 family
    lists 4.x then 5.x, both workers' sources."""
    from dss_console import plugins
    from dss_console.core.source_plugin import (
        plugin_family,
        plugin_server_major,
        plugin_serves,
    )

    dss = plugins.source_plugin("dss")
    assert (plugin_family(dss), plugin_server_major(dss)) == ("dss", None)
    assert plugin_serves(dss, "http://127.0.0.1:1", True) is True  # no probe at all
    members = [plugins.family_plugin(n) for n in plugins.SOURCE_FAMILIES["v6"]]
    assert [(plugin_family(m), plugin_server_major(m)) for m in members] == [
        ("v6", "4"), ("v6", "5")]
    assert "v6x5" in plugins.SOURCES and not plugins.LOGIN_ONLY_SOURCES


def test_the_5x_plug_in_loads_no_client_until_it_is_used() -> None:
    script = (
        "import sys\n"
        "from dss_console import plugins\n"
        "plugins.family_plugin('v6x5')\n"
        "heavy = [m for m in sys.modules if m.startswith(('dss_console.sources.v6x5.client',"
        " 'dss_console.sources.v6x5.auth', 'dss_console.sources.v6.client', 'requests',"
        " 'cryptography'))]\n"
        "assert not heavy, heavy\n"
        "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
