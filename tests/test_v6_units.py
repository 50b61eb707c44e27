"""v6 pieces without the server: [v6] settings, the child environment (checked against the
official wrapper's decoder), the REST client's error handling against a misbehaving server,
log tails and input summaries."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest

from dss_console.sources.v6.client import (
    V6BadReplyError,
    V6NodeClient,
    V6NotFoundError,
    V6NotLoggedInError,
    V6ServerError,
    V6UnreachableError,
    classify_v6_error,
    normalise_server_url,
)
from dss_console.sources.v6.environment import (
    RunFiles,
    decode_env_value,
    encode_env_value,
    run_environment,
)
from dss_console.sources.v6.proxy import RefusingPort
from dss_console.sources.v6.settings import V6SettingsError, parse_size, parse_v6_settings
from dss_console.sources.v6.source import input_summary, tail_text
from settings_helpers import settings_with, v6_of

from hostile_server import HostileServer, Reply
from v6_fixtures import SERVER_TEST_TIMEOUT, run_official

pytestmark = pytest.mark.timeout(SERVER_TEST_TIMEOUT)

API_KEY = "6f1c1d52-3a4e-4b8e-9f0a-2d7c5b1e9a33"

# -- settings ----------------------------------------------------------------------------

FULL = {
    "share_logs": True,  # the old name of send_output_tail still loads
    "log_limit": "64k",
    "unknown_images": "leave",
    "on_shutdown": "fail",
    "algorithm_env": {"SITE": "a"},
    "algorithms": {
        "harbor2.vantage6.ai/demo/average": {
            "python": "/opt/avg/bin/python", "package": "v6_average", "subtasks": True,
            "timeout": "6h", "max_jobs": 1, "nice": 5, "env": {"PYTHONPATH": "/opt/avg/src"}},
        "img/cmd:2": {"command": "apptainer exec /opt/x.sif python -m x {input} {output}"},
    },
    "databases": {"default": {"uri": "/data/c.csv", "type": "csv",
                              "env": {"password": "pw"}}},
}


def test_settings_full_table() -> None:
    s = parse_v6_settings(FULL)
    assert (s.send_output_tail, s.log_limit, s.unknown_images, s.on_shutdown) == (
        True, 64 * 1024, "leave", "fail")
    assert parse_v6_settings({}).send_output_tail is False
    avg = s.algorithm_for("harbor2.vantage6.ai/demo/average")
    assert avg is not None and avg.timeout == 6 * 3600 and avg.subtasks
    assert avg.plain_env() == {"PYTHONPATH": "/opt/avg/src", "PKG_NAME": "v6_average"}
    assert avg.argv_template()[:2] == ["/opt/avg/bin/python", "-c"]
    assert s.algorithm_for("harbor2.vantage6.ai/demo/average:latest") is None  # exact only
    assert s.databases["default"].env == {"password": "pw"}
    assert parse_v6_settings({}).unknown_images == "refuse"


@pytest.mark.parametrize(("table", "message"), [
    ({"algoritms": {}}, "v6: unknown key 'algoritms' (did you mean 'algorithms'?)"),
    ({"algorithms": {"x": {"python": "/p"}}}, 'v6.algorithms.x: missing \'package\''),
    ({"algorithms": {"x": {}}}, "v6.algorithms.x: missing how to run it"),
    ({"algorithms": {"x": {"command": "a", "python": "/p", "package": "p"}}},
     "not both"),
    ({"algorithms": {"x": {"command": "run {inptu}"}}},
     "v6.algorithms.x.command: unknown placeholder {inptu}; did you mean {input}?"),
    ({"algorithms": {"x": {"command": "a", "timeout": "soon"}}},
     "v6.algorithms.x.timeout: 'soon' is not a duration"),
    ({"algorithms": {"x": {"command": "a", "max_jobs": 0}}},
     "v6.algorithms.x.max_jobs: must be at least 1, not 0"),
    ({"algorithms": {"a/b:1": {"command": "a", "env": {"N": 1}}}},
     'v6.algorithms."a/b:1".env.N: must be a string, not an integer'),
    ({"databases": {"default": {"uri": "/x", "type": "xlsx"}}},
     'v6.databases.default.type: must be "csv" | "excel"'),
    ({"databases": {"1st": {"uri": "/x", "type": "csv"}}}, "must start with a letter"),
    ({"log_limit": "lots"}, "v6.log_limit: 'lots' is not a size"),
    ({"unknown_images": "run"}, 'v6.unknown_images: must be "refuse" | "leave"'),
    ({"algorithms": {"x": {"python": "/p", "package": "not a package"}}},
     "is not a Python package name"),
])
def test_settings_errors_name_the_key(table: dict, message: str) -> None:
    with pytest.raises(V6SettingsError) as info:
        parse_v6_settings(table)
    assert message in str(info.value)


def test_v6_table_in_the_settings_file_round_trips(tmp_path: Path) -> None:
    """The console's Settings dialog saves the whole file: a [v6] table must survive it, and
    a bad one is refused naming the file and the dotted key."""
    from dss_console.engine.settings import (
        SettingsError,
        load_settings,
        save_settings,
        settings_to_toml,
    )

    path = tmp_path / "settings.toml"
    path.write_text("provider = \"lab\"\n" + _toml_of(FULL))
    settings = load_settings(path)
    assert v6_of(settings) == parse_v6_settings(FULL)
    save_settings(settings, path)
    again = load_settings(path)
    assert v6_of(again) == v6_of(settings) and again.provider == "lab"
    assert "[v6]" not in settings_to_toml(load_settings(tmp_path / "missing.toml"))
    path.write_text("[v6]\non_shutdown = \"later\"\n")
    with pytest.raises(SettingsError) as info:
        load_settings(path)
    assert str(info.value).startswith(f"{path}: v6.on_shutdown: must be")


def _toml_of(v6: dict) -> str:
    from dss_console.engine.settings import settings_to_toml

    return settings_to_toml(settings_with(v6=parse_v6_settings(v6)))


def test_parse_size() -> None:
    assert [parse_size(v) for v in (0, 10, "10", "256k", "1M", "2g", "3kb")] == [
        0, 10, 10, 256 * 1024, 1024**2, 2 * 1024**3, 3 * 1024]
    for bad in (-1, True, "1.5k", "k"):
        with pytest.raises(ValueError):
            parse_size(bad)


# -- environment -------------------------------------------------------------------------


def _env(tmp_path: Path, **kwargs: object) -> dict[str, str]:
    settings = parse_v6_settings(FULL)
    files = RunFiles(tmp_path / "input", tmp_path / "output", tmp_path / "token",
                     tmp_path / "tmp")
    alg = settings.algorithms["harbor2.vantage6.ai/demo/average"]
    defaults: dict = {
        "proxy_port": 4321,
        "requested_databases": [{"label": "default",
                                 "parameters": json.dumps({"query": "SELECT 1",
                                                           "preprocessing": [{"f": 1}]})}],
        "databases": settings.databases, "algorithm_env": settings.algorithm_env,
        "plain_env": alg.plain_env(),
        "base_env": {"PATH": "/usr/bin", "HOME": "/root", "LC_ALL": "C.UTF-8",
                     "AWS_SECRET_ACCESS_KEY": "x", "DSS_CONSOLE_CONFIG": "/etc/x",
                     "PYTHONPATH": "/evil"}}
    defaults.update(kwargs)
    return run_environment(files, **defaults)


def test_environment_contract(tmp_path: Path) -> None:
    env = _env(tmp_path)
    decoded = {k: decode_env_value(v) for k, v in env.items()
               if k not in ("PATH", "HOME", "LC_ALL", "PKG_NAME", "PYTHONPATH")}
    assert decoded == {
        "INPUT_FILE": str(tmp_path / "input"), "OUTPUT_FILE": str(tmp_path / "output"),
        "TOKEN_FILE": str(tmp_path / "token"), "TEMPORARY_FOLDER": str(tmp_path / "tmp"),
        "HOST": "http://127.0.0.1", "PORT": "4321", "API_PATH": "",
        "USER_REQUESTED_DATABASE_LABELS": "default",
        "DEFAULT_QUERY": "SELECT 1", "DEFAULT_PREPROCESSING": '[{"f": 1}]',
        "DEFAULT_DATABASE_URI": "/data/c.csv", "DEFAULT_DATABASE_TYPE": "csv",
        "DEFAULT_DB_PARAM_PASSWORD": "pw", "DB_LABELS": "default", "SITE": "a"}
    # The worker's own environment never leaks in; the algorithm's plain env wins.
    assert "AWS_SECRET_ACCESS_KEY" not in env and "DSS_CONSOLE_CONFIG" not in env
    assert env["PYTHONPATH"] == "/opt/avg/src" and env["PKG_NAME"] == "v6_average"
    assert (env["PATH"], env["LC_ALL"]) == ("/usr/bin", "C.UTF-8")
    assert encode_env_value("abc") == "MFRGG!!!"  # the node's own docstring example



def test_a_run_that_may_not_call_out_gets_a_port_that_refuses() -> None:
    """PORT 0 would be read as port 80 by the algorithm's HTTP client, and its token sent to
    whatever listens there: the port a run without subtasks gets refuses, and is held."""
    refusing = RefusingPort()
    try:
        assert refusing.port != 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", refusing.port), timeout=5)
        with socket.socket() as squatter, pytest.raises(OSError):
            squatter.bind(("127.0.0.1", refusing.port))
    finally:
        refusing.close()


def test_official_wrapper_decodes_our_environment(v6_python: Path, tmp_path: Path) -> None:
    env = _env(tmp_path)
    code = ("import json, os, sys\n"
            "from vantage6.algorithm.tools.util import get_env_var\n"
            "print(json.dumps({k: get_env_var(k) for k in json.loads(sys.stdin.read())}))\n")
    names = [k for k in env if k not in ("PATH", "HOME", "LC_ALL")]
    out = subprocess.run([str(v6_python), "-c", code], input=json.dumps(names), env=env,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    official = json.loads(out)
    ours = {k: (decode_env_value(env[k]) if k not in ("PKG_NAME", "PYTHONPATH") else env[k])
            for k in names}
    assert official == ours


# -- the REST client against a misbehaving server -----------------------------------------


@pytest.fixture
def hostile() -> HostileServer:
    with HostileServer() as server:
        server.routes["POST /api/token/node"] = Reply(
            200, json.dumps({"access_token": "tok-SECRET", "refresh_token": "ref-SECRET",
                             "node_url": "/api/node/7"}).encode(),
            {"Content-Type": "application/json"})
        yield server


def _logged_in(server: HostileServer) -> V6NodeClient:
    client = V6NodeClient(server.url)
    client.login(API_KEY)
    assert client.node_id == 7
    return client


@pytest.mark.parametrize(("reply", "error", "kind"), [
    (Reply(200, b"<html><body>Welcome to nginx</body></html>",
           {"Content-Type": "text/html"}), V6BadReplyError, "transient"),
    (Reply(200, b'{"id": 1, "stat', {"Content-Type": "application/json"}),
     V6BadReplyError, "transient"),
    (Reply(502, b"<html>Bad Gateway</html>", {"Content-Type": "text/html"}),
     V6ServerError, "transient"),
    (Reply(404, b'{"msg": "Run id=5 not found!"}', {"Content-Type": "application/json"}),
     V6NotFoundError, "gone"),
    (Reply(400, b'{"msg": "Request body is incorrect"}', {"Content-Type": "application/json"}),
     V6ServerError, "refused"),
    (Reply(200, b"[1, 2]", {"Content-Type": "application/json"}), V6BadReplyError,
     "transient"),
])
def test_client_errors_are_classified(hostile: HostileServer, reply: Reply,
                                      error: type, kind: str) -> None:
    hostile.routes["GET /api/run/5"] = reply
    with _logged_in(hostile) as client, pytest.raises(error) as info:
        client.get_run(5)
    assert classify_v6_error(info.value) == kind
    assert "SECRET" not in str(info.value) and API_KEY not in str(info.value)


def test_expired_token_is_refreshed_once_then_logged_out(hostile: HostileServer) -> None:
    calls = []

    def run_reply() -> Reply:
        calls.append(1)
        return Reply(401, b'{"msg": "Token has expired"}', {"Content-Type": "application/json"})

    hostile.routes["GET /api/run/5"] = run_reply
    hostile.routes["POST /api/token/refresh"] = Reply(401, b'{"msg": "expired"}',
                                                      {"Content-Type": "application/json"})
    with _logged_in(hostile) as client:
        hostile.routes["POST /api/token/node"] = Reply(
            401, b'{"msg": "Api key is not recognized!"}', {"Content-Type": "application/json"})
        with pytest.raises(V6NotLoggedInError) as info:
            client.get_run(5)
    assert classify_v6_error(info.value) == "logged_out"
    assert len(calls) == 1 and "SECRET" not in str(info.value)
    # The refresh went with the refresh token, the retry never happened without one.
    refresh = [h for m, p, h in hostile.requests if p == "/api/token/refresh"]
    assert refresh and refresh[0]["Authorization"] == "Bearer ref-SECRET"


def test_unreachable_and_url_forms(closed_port_url: str) -> None:
    client = V6NodeClient(closed_port_url)
    with pytest.raises(V6UnreachableError) as info:
        client.login(API_KEY)
    assert classify_v6_error(info.value) == "transient" and API_KEY not in str(info.value)
    assert normalise_server_url("https://v6.example.org/") == "https://v6.example.org/api"
    assert normalise_server_url("https://v6.example.org/api") == "https://v6.example.org/api"
    with pytest.raises(ValueError):
        normalise_server_url("v6.example.org")


def test_tls_verification_is_on_by_default() -> None:
    assert V6NodeClient("https://v6.example.org")._http.verify is True


# -- tails and summaries ----------------------------------------------------------------


def test_tail_text_cuts_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    path.write_text("".join(f"line {i}\n" for i in range(1000)))
    text = tail_text(path, 100)
    assert text.startswith("[… ") and "lines cut]" in text
    assert text.endswith("line 999\n") and len(text.encode()) < 140
    cut = int(text.split()[1])
    assert cut + len(text.splitlines()) - 1 == 1000
    path.write_text("short\n")
    assert tail_text(path, 100) == "short\n"
    assert tail_text(tmp_path / "missing", 100) == ""


def test_input_summary_never_holds_values() -> None:
    data = json.dumps({"method": "m", "args": [1, 2], "kwargs": {"column": "secret-col"}})
    summary = input_summary(data.encode())
    assert summary == {"method": "m", "kwargs": ["column"], "args": 2, "bytes": len(data)}
    assert "secret-col" not in json.dumps(summary)
    assert input_summary(b"\xff")["format"] == "not JSON"



# -- the sandbox venv --------------------------------------------------------------------


def test_venv_failure_leaves_no_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dss_console.sources.v6 import venv

    target = tmp_path / "v6-venv"
    monkeypatch.setenv(venv.ENV_OVERRIDE, str(target))
    monkeypatch.setattr(venv, "_base_python", lambda: str(tmp_path / "no-such-python"))
    with pytest.raises(venv.V6SandboxError, match="cannot create a Python venv"):
        venv.ensure_venv()
    assert not venv.venv_ready(target) and not target.exists()


def test_the_enum_fix_is_needed_here_and_works(v6_python: Path) -> None:
    """Python 3.11+ formats str-mixin enums by name; vantage6 4.15.2 needs the value."""
    from dss_console.sources.v6.sandbox import server_script

    code = ("import runpy, sys\n"
            "from vantage6.server.model.rule import Operation, Scope\n"
            "before = f'{Operation.CREATE}_{Scope.GLOBAL}'\n"
            f"mod = runpy.run_path({str(server_script())!r})\n"
            "fixed = mod['apply_enum_fix']()\n"
            "mod['assert_enum_fix']()\n"
            "print(sys.version_info[:2] >= (3, 11), before, fixed)\n")
    newer, before, fixed = run_official(v6_python, code).split()
    assert before == ("Operation.CREATE_Scope.GLOBAL" if newer == "True" else "c_glo")
    assert int(fixed) >= 2


def test_venv_wait_for_another_build_is_said(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A second `v6 sandbox` while another process builds the environment says why it waits
    (it was silent for ~50 s)."""
    import fcntl
    import threading

    from dss_console.sources.v6 import venv

    from waiting import wait_for

    target = tmp_path / "v6-venv"
    monkeypatch.setenv(venv.ENV_OVERRIDE, str(target))
    lines: list[str] = []
    result: list[Path] = []
    with open(target.with_name(target.name + ".lock"), "a+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # "another process" building
        waiter = threading.Thread(target=lambda: result.append(venv.ensure_venv(lines.append)),
                                  daemon=True)
        waiter.start()
        wait_for(lambda: lines, 30, what="a line while waiting")
        assert lines == ["waiting for another process building the vantage6 server "
                         "environment…"]
        # The other build finishes: marker and Python in place.
        python = venv.venv_python(target)
        python.parent.mkdir(parents=True)
        python.write_text("")
        (target / venv.MARKER).write_text("done\n")
        fcntl.flock(held.fileno(), fcntl.LOCK_UN)
    waiter.join(30)
    assert result == [python]
    assert len(lines) == 1  # no build of its own
