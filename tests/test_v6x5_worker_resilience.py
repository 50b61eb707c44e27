"""`dss-console worker --source v6` as a vantage6 **5.x** node when things get in its way
(issue 21): tokens that expire during a run, the auth server stopped and back, a central task
whose subtasks go through the node's proxy (plain and encrypted; none without the operator's
`subtasks = true`), and what the researcher can read back.

Real parts only: the worker subprocess, HQ 5.0.3 behind the session's Keycloak stand-in, the
official 5.0.3 UserClient as the researcher, unmodified algorithms (tests/v6x5_algorithm)
under the official wrapper.

Short tokens: Keycloak's access-token lifespan is a realm setting, and so is the stand-in's.
This module shortens it to ``LIFESPAN`` seconds while it runs and gives the session's realm
its lifespan back at the end (and the stand-in, if a test stopped it, answering again), so
the modules that share the sandbox see nothing of it. The official client re-takes a token
when HQ refuses one, which needs the stand-in: while it is stopped, HQ is read as the same
service account over plain HTTP with a token taken before the lifespan was shortened (HQ
checks tokens with the realm key it read at start, not by asking the stand-in).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from dss_console.sources.v6.client import V6UnreachableError
from dss_console.sources.v6x5.auth import ClientCredentials, node_client_id
from dss_console.sources.v6x5.sandbox import HqSandbox
from dss_console.sources.v6x5.standin import IdpStandin, Lifespans, Realm
from test_v6_worker import EXE, Worker
from test_v6x5_auth import _node_client
from test_v6x5_worker import DEMO_IMAGE, ENDED, NODE, _ended, _env, _runs

from v6_fixtures import SERVER_TEST_TIMEOUT
from v6x5_fixtures import HqResearcher, log_in_v6x5_home, v6x5_algorithm_root
from waiting import wait_for

pytestmark = pytest.mark.timeout(SERVER_TEST_TIMEOUT)

CENTRAL_IMAGE = "v6x5-central"
CLOSED_CENTRAL_IMAGE = "v6x5-central-closed"  # the same algorithm, not allowed to call out
# The realm's access-token lifespan while this module runs (seconds).
LIFESPAN = 4
# HQ 5.0.3 accepts a token up to 10 s after its `exp` (flask-jwt-extended's leeway there):
# a run longer than the lifespan plus that leeway can only end with a token taken after it
# started.
HQ_LEEWAY = 10
LONG_RUN = LIFESPAN + HQ_LEEWAY + 2
# A run that outlasts the node's last token when the stand-in stops as it starts (with time
# to spare for a loaded machine): its end call can only be made with a new token.
OUTAGE_RUN = 3 * LIFESPAN


# -- the module's node, researcher and worker ----------------------------------------------

@pytest.fixture(scope="module")
def home(v6x5_sandbox: HqSandbox, v6x5_python: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A node operator's machine: the 5.x node logged in, the demo and the central algorithm
    allowed (both run by the 3.13 Python of the official algorithm tools; the central one may
    make subtasks, so its runs get the node's proxy)."""
    path = tmp_path_factory.mktemp("v6x5-resilience-home")
    root = str(v6x5_algorithm_root())
    # The operator lets run logs carry the output's tail (redacted): what the algorithm and
    # the official wrapper print then reaches HQ, which is what the last test reads.
    table: dict[str, Any] = {"send_output_tail": True, "algorithms": {
        DEMO_IMAGE: {"python": str(v6x5_python), "package": "v6x5_demo",
                     "env": {"PYTHONPATH": root}},
        CENTRAL_IMAGE: {"python": str(v6x5_python), "package": "v6x5_central",
                        "subtasks": True, "env": {"PYTHONPATH": root}},
        CLOSED_CENTRAL_IMAGE: {"python": str(v6x5_python), "package": "v6x5_central",
                               "env": {"PYTHONPATH": root}}}}
    log_in_v6x5_home(path, table, v6x5_sandbox, NODE, _env(path))
    return path


@pytest.fixture(scope="module")
def researcher(v6x5_researchers: dict[str, HqResearcher]) -> HqResearcher:
    return v6x5_researchers["demo"]


class HqAsResearcher:
    """HQ as the researcher's service account sees it, over plain HTTP, with a token from
    the stand-in for its client (as the official client takes one), taken again when HQ
    answers 401 (the module may outlast the token's 300 s under load)."""

    def __init__(self, sandbox: HqSandbox) -> None:
        self._sandbox = sandbox
        self.api_url = sandbox.api_url
        self.http = requests.Session()
        self._take_token()

    def _take_token(self) -> None:
        sandbox = self._sandbox
        client_id, secret = sandbox.service_account
        reply = requests.post(
            f"{sandbox.auth_url}/realms/{sandbox.info['realm']}/protocol/openid-connect/token",
            data={"grant_type": "client_credentials", "client_id": client_id,
                  "client_secret": secret}, timeout=30)
        assert reply.status_code == 200, reply.text
        self.http.headers["Authorization"] = f"Bearer {reply.json()['access_token']}"

    def get(self, path: str, **params: Any) -> Any:
        reply = self.http.get(f"{self.api_url}/{path}", params=params, timeout=30)
        if reply.status_code == 401:  # the token's life is over: a new one, once
            self._take_token()
            reply = self.http.get(f"{self.api_url}/{path}", params=params, timeout=30)
        assert reply.status_code == 200, (path, reply.status_code, reply.text[:300])
        return reply.json()

    def status(self, task_id: int) -> str:
        (run,) = self.get("run", task_id=task_id)["data"]
        return str(run["status"])


@pytest.fixture(scope="module")
def hq_as_researcher(v6x5_sandbox: HqSandbox) -> Iterator[HqAsResearcher]:
    made = HqAsResearcher(v6x5_sandbox)
    yield made
    made.http.close()


class NodeTokens:
    """Counts the client-credentials tokens the stand-in issues to the node's client (an
    observer on the real token endpoint: it answers as before)."""

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self._count = 0
        self._lock = threading.Lock()

    def wrap(self, token: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        def counted(issuer: str, form: dict[str, str], authorization: str | None
                    ) -> dict[str, Any]:
            reply = token(issuer, form, authorization)
            if form.get("grant_type") == "client_credentials" \
                    and form.get("client_id") == self.client_id:
                with self._lock:
                    self._count += 1
            return reply
        return counted

    @property
    def count(self) -> int:
        with self._lock:
            return self._count


@pytest.fixture(scope="module")
def short_tokens(v6x5_sandbox: HqSandbox, hq_as_researcher: HqAsResearcher
                 ) -> Iterator[NodeTokens]:
    """The realm's access tokens live ``LIFESPAN`` s while the module runs (the plain-HTTP
    researcher's was taken before); the node's new tokens are counted."""
    idp = v6x5_sandbox.idp
    assert idp is not None
    realm, grants = idp.realm, idp.grants
    before = realm.lifespans
    tokens = NodeTokens(v6x5_sandbox.node(NODE).client_id)
    original = grants.token
    realm.lifespans = dataclasses.replace(before, access=LIFESPAN)
    grants.token = tokens.wrap(original)
    try:
        yield tokens
    finally:
        grants.token = original
        realm.lifespans = before
        _serve_again(v6x5_sandbox)


@pytest.fixture(scope="module")
def worker(home: Path, v6x5_sandbox: HqSandbox, short_tokens: NodeTokens) -> Iterator[Worker]:
    made = Worker(home, v6x5_sandbox.url, NODE, "--concurrency", "1")
    try:
        made.wait_line(r"worker .* on .*#node-\d+")
        made.wait_line(r"push events: connected", 30)
        yield made
    finally:
        code = made.stop()
        assert code == 0, made.output
        assert "Traceback" not in made.output, made.output


@pytest.fixture(scope="module")
def tasks_made() -> list[int]:
    """Every task this module created (the last test reads them all back)."""
    return []


# -- helpers -----------------------------------------------------------------------------

def _serve_again(sandbox: HqSandbox) -> None:
    """The stand-in serving again (same port, same realm) and answering."""
    idp = sandbox.idp
    assert idp is not None
    if not idp.running:
        idp.start()
    wait_for(lambda: _answers(idp.realm_url), 30, what="the stand-in to answer again")


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def _lines_since(worker: Worker, mark: int) -> list[str]:
    return list(worker.lines[mark:])


def _wait_line_since(worker: Worker, mark: int, pattern: str, timeout: float = 60.0) -> str:
    regex = re.compile(pattern)

    def found() -> str | None:
        return next((x for x in _lines_since(worker, mark) if regex.search(x)), None)

    try:
        return wait_for(found, timeout, what=f"a worker line matching {pattern!r}")
    except AssertionError:
        raise AssertionError(f"no line matching {pattern!r} within {timeout} s; output:\n"
                             f"{worker.output}") from None


# Words a worker prints when something went wrong (a run or a server call).
_TROUBLE = re.compile(r"Traceback|\berror\b|\bfailed\b|\bcrashed\b|logged.out|\bPAUSED\b",
                      re.IGNORECASE)


# -- a: tokens expire during a run -------------------------------------------------------

def test_a_run_longer_than_the_token_lifespan_completes_on_renewed_tokens(
        worker: Worker, researcher: HqResearcher, v6x5_sandbox: HqSandbox,
        short_tokens: NodeTokens, tasks_made: list[int]) -> None:
    mark, issued = len(worker.lines), short_tokens.count
    task_id = researcher.create_task(DEMO_IMAGE, "wait", [v6x5_sandbox.org_id("station")],
                                     seconds=LONG_RUN, value="long")
    tasks_made.append(task_id)
    run = _ended(researcher, task_id, timeout=LONG_RUN + 90)
    assert run["status"] == "completed", (run, worker.output)
    assert researcher.call("results", task_id=task_id) == [{"slept": LONG_RUN, "echo": "long"}]
    _wait_line_since(worker, mark, rf"run {run['id']} \(.*\): succeeded")
    # A token lives LIFESPAN s and is renewed with a quarter of it left: over the run the
    # node took one about every 3 s (lazily, at its polls), never one for the whole run.
    renewed = short_tokens.count - issued
    assert renewed >= LONG_RUN // LIFESPAN - 1, (renewed, worker.output)
    trouble = [x for x in _lines_since(worker, mark) if _TROUBLE.search(x)]
    assert not trouble, worker.output


# -- b: the auth server stopped, then back -------------------------------------------------

def test_a_stopped_auth_server_makes_the_worker_wait_in_words_then_resume(
        worker: Worker, researcher: HqResearcher, hq_as_researcher: HqAsResearcher,
        v6x5_sandbox: HqSandbox, tasks_made: list[int]) -> None:
    idp = v6x5_sandbox.idp
    assert idp is not None
    mark = len(worker.lines)
    task_id = researcher.create_task(DEMO_IMAGE, "wait", [v6x5_sandbox.org_id("station")],
                                     seconds=OUTAGE_RUN, value="through the outage")
    tasks_made.append(task_id)
    wait_for(lambda: hq_as_researcher.status(task_id) == "active", 60,
             what="the run to be active on HQ")
    (run,) = _runs(researcher, task_id)
    idp.stop()
    try:
        # Its token runs out within LIFESPAN s: the next call cannot get a new one.
        said = _wait_line_since(worker, mark, r"server connection: offline", LIFESPAN + 60)
        assert "authentication server" in said and "cannot connect" in said, said
        went_offline = worker.lines.index(said, mark)
        # The local process ends meanwhile; its end call waits for a token and the run
        # stays open on HQ, not failed: checked after a poll has failed since.
        uploading = _wait_line_since(worker, mark, rf"run {run['id']} \(.*\): uploading", 60)
        after = worker.lines.index(uploading, mark)
        assert after > went_offline, "the run ended before the token ran out"
        _wait_line_since(worker, after, r"polling for runs failed", 60)
        assert hq_as_researcher.status(task_id) == "active"
        outage = _lines_since(worker, mark)
    finally:
        _serve_again(v6x5_sandbox)
    ended = _ended(researcher, task_id, timeout=120)
    assert ended["status"] == "completed", (ended, worker.output)
    assert researcher.call("results", task_id=task_id) == [
        {"slept": OUTAGE_RUN, "echo": "through the outage"}]
    online = _wait_line_since(worker, went_offline, r"server connection: online", 30)
    _wait_line_since(worker, mark, rf"run {run['id']} \(.*\): succeeded", 30)
    # While the stand-in was down every complaint named it, in words; once a call went
    # through again, none.
    trouble = [x for x in outage if _TROUBLE.search(x)]
    assert trouble and all("the authentication server" in x and "Traceback" not in x
                           for x in trouble), outage
    since = worker.lines.index(online, went_offline)
    assert not [x for x in _lines_since(worker, since) if _TROUBLE.search(x)], worker.output


def test_a_token_with_life_left_serves_while_the_auth_server_is_down() -> None:
    """The renewal with a quarter of the life left fails while the stand-in is down: the
    current token serves until it expires (then the outage shows), a token is never served
    past its life, and the stand-in back gives a new one. (A stand-in of its own, the
    session's realm untouched: the token is all this is about.)"""
    realm = Realm.create("vantage6", admin_client="admin", admin_secret="admin-secret-123",
                         admin_username="root", admin_password="root-password-1",
                         lifespans=Lifespans(access=LIFESPAN))
    with IdpStandin(realm) as idp:
        _, secret = _node_client(realm, "station")
        credentials = ClientCredentials(idp.url, "vantage6", node_client_id("station"),
                                        secret)
        try:
            started = time.monotonic()
            first = credentials.token()
            idp.stop()
            served: list[float] = []

            def outage_shows() -> bool:
                try:
                    token = credentials.token()
                except V6UnreachableError:
                    return True
                assert token == first
                served.append(time.monotonic() - started)
                return False

            wait_for(outage_shows, LIFESPAN + 30, what="the token to run out")
            renew_at = LIFESPAN * 0.75
            assert served and served[-1] > renew_at + 0.1, (served, renew_at)
            assert served[-1] < LIFESPAN, served
            idp.start()  # the same port
            assert credentials.token() != first
        finally:
            credentials.close()


# -- c: a central task and its subtasks ----------------------------------------------------

@pytest.fixture(scope="module")
def central_task(worker: Worker, researcher: HqResearcher, v6x5_sandbox: HqSandbox,
                 tasks_made: list[int]) -> int:
    """A central task of the unmodified central algorithm, ended."""
    task_id = researcher.create_task(CENTRAL_IMAGE, "central_sum",
                                     [v6x5_sandbox.org_id("station")],
                                     action="central_compute", values=[1, 2, 3.5])
    tasks_made.append(task_id)
    _ended(researcher, task_id, timeout=120)
    return task_id


def test_a_central_task_makes_subtasks_through_the_node_proxy(
        worker: Worker, researcher: HqResearcher, central_task: int,
        tasks_made: list[int]) -> None:
    run = _ended(researcher, central_task)
    assert run["status"] == "completed", (run, worker.output)
    (result,) = researcher.call("results", task_id=central_task)
    assert {k: result[k] for k in ("sum", "count", "organizations")} == \
        {"sum": 6.5, "count": 3, "organizations": 1}, result
    subtask = int(result["subtask"])
    tasks_made.append(subtask)
    child = researcher.call("task", task_id=subtask)
    # The subtask is the central task's child, in its job, with the central run's image.
    assert child["parent"]["id"] == central_task, child
    assert child["job_id"] == researcher.call("task", task_id=central_task)["job_id"]
    assert (child["image"], child["method"], child["action"]) == \
        (CENTRAL_IMAGE, "partial_sum", "federated_compute"), child
    assert researcher.call("results", task_id=subtask) == [{"sum": 6.5, "count": 3}]
    (sub_run,) = _runs(researcher, subtask)
    assert sub_run["status"] == "completed"
    worker.wait_line(rf"run {sub_run['id']} \(.*\): succeeded")
    assert "Traceback" not in worker.output


def test_a_central_run_that_may_not_call_out_gets_no_container_token(
        worker: Worker, home: Path, researcher: HqResearcher, v6x5_sandbox: HqSandbox,
        tasks_made: list[int]) -> None:
    """An algorithm the operator did not allow subtasks (no ``subtasks = true``) gets no
    proxy (``PORT`` refuses) and so no container token either. It still runs (a central
    step that only adds up its input needs none) and stops in the tools' own words; the
    log the researcher reads says why first, with no local path."""
    task_id = researcher.create_task(CLOSED_CENTRAL_IMAGE, "central_sum",
                                     [v6x5_sandbox.org_id("station")],
                                     action="central_compute", values=[1])
    tasks_made.append(task_id)
    run = _ended(researcher, task_id, timeout=120)
    assert run["status"] == "crashed", (run, worker.output)
    assert "Token not found" in run["log"], run["log"]
    assert run["log"].startswith(
        "this node gives this algorithm no token to call the server with: it lets this "
        "algorithm create no subtasks (subtasks = true is not set for it on this node)"), \
        run["log"]
    assert str(home) not in run["log"]
    assert "blobstream" not in run["log"] and ":80" not in run["log"], run["log"]


def test_a_central_task_in_an_encrypted_collaboration_seals_its_subtasks(
        home: Path, v6x5_sandbox: HqSandbox, v6x5_python: Path,
        short_tokens: NodeTokens, hq_as_researcher: HqAsResearcher) -> None:
    """``demo-enc``'s node (its organization's private key stored at login): the proxy
    encrypts the subtask's arguments (5.x: ``organizations[i].arguments``) for the station,
    decrypts the subtask's result for the central algorithm, and the central result reaches
    the researcher encrypted for its organization."""
    sb, node = v6x5_sandbox, "station-demo-enc"
    done = subprocess.run(
        [str(EXE), "v6", "login", "--server", sb.url, "--auth-url", sb.auth_url,
         "--realm", sb.info["realm"], "--node", node, "--api-key-stdin",
         "--private-key", str(sb.key_file("station"))],
        input=sb.node(node).api_key + "\n", env=_env(home), capture_output=True, text=True,
        timeout=120)
    assert done.returncode == 0, done.stderr
    researcher = HqResearcher(v6x5_python, sb, "demo-enc",
                              session_name=f"resilience-demo-enc-{os.getpid()}")
    worker = Worker(home, sb.url, node, "--concurrency", "1")
    try:
        task_id = researcher.create_task(CENTRAL_IMAGE, "central_sum",
                                         [sb.org_id("station")], action="central_compute",
                                         values=[2, 4.5])
        run = _ended(researcher, task_id, timeout=120)
        assert run["status"] == "completed", (run, worker.output)
        (result,) = researcher.call("results", task_id=task_id)
        assert {k: result[k] for k in ("sum", "count", "organizations")} == \
            {"sum": 6.5, "count": 2, "organizations": 1}, result
        # What HQ keeps of the subtask is sealed: neither its arguments nor its result read
        # as the JSON the algorithms exchanged.
        (sub_run,) = _runs(researcher, int(result["subtask"]))
        assert sub_run["status"] == "completed"
        hq = hq_as_researcher
        (stored,) = hq.get("run", task_id=int(result["subtask"]))["data"]
        (kept,) = hq.get("result", task_id=int(result["subtask"]))["data"]
        for sealed in (stored["arguments"], kept["result"]):
            assert "$" in sealed and "values" not in _decoded(sealed) \
                and "sum" not in _decoded(sealed), stored
    finally:
        researcher.close()
        assert worker.stop() == 0, worker.output
    assert "Traceback" not in worker.output
    assert sb.node(node).api_key not in worker.output


# -- d: what the researcher can read carries nothing of this machine ---------------------

def _decoded(value: Any) -> Any:
    """Base64 fields (arguments, result) opened beside themselves, so their text is
    searched too."""
    if isinstance(value, dict):
        return {k: _decoded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decoded(v) for v in value]
    if isinstance(value, str) and len(value) >= 8:
        try:  # both: a word that happens to be base64 must still be searched as itself
            return value + "\n" + base64.b64decode(value, validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return value
    return value


def test_nothing_the_researcher_can_read_carries_a_local_path_or_environment(
        worker: Worker, researcher: HqResearcher, hq_as_researcher: HqAsResearcher,
        v6x5_sandbox: HqSandbox, home: Path, v6x5_python: Path, central_task: int,
        tasks_made: list[int]) -> None:
    sb, hq = v6x5_sandbox, hq_as_researcher
    task_ids = set(tasks_made)
    for task_id in list(task_ids):  # subtasks too, found as HQ lists them
        children = hq.get("task", parent_id=task_id)
        task_ids |= {int(t["id"]) for t in children["data"]}
    assert len(task_ids) >= 2, task_ids  # the central task and its subtask at least
    seen: list[Any] = []
    logs: list[str] = []
    for task_id in sorted(task_ids):
        seen.append(hq.get(f"task/{task_id}"))
        seen.append(researcher.call("task", task_id=task_id))
        runs = hq.get("run", task_id=task_id)["data"]
        assert runs and all(r["status"] in ENDED for r in runs), runs
        for run in runs:
            seen.append(hq.get(f"run/{run['id']}"))
            logs.append(str(run.get("log") or ""))
        seen.append(hq.get("result", task_id=task_id))
        seen.append(researcher.call("results", task_id=task_id))
    assert any(logs), "the runs' logs should have reached HQ"
    # The node as the researcher sees it (what its `node_info_update` told HQ, too).
    node = hq.get(f"node/{sb.node(NODE).id}")
    assert {"allowed_algorithms", "runner"} <= {c["key"] for c in node["config"]}, node
    seen.append(node)
    text = json.dumps(_decoded(seen))

    env = _env(home)
    secrets = [sb.node(NODE).api_key]
    local = [str(home), str(v6x5_python), sys.executable, str(v6x5_algorithm_root()),
             env["PATH"], env["XDG_DATA_HOME"], str(Path.home())]
    local += [p for p in env["PATH"].split(os.pathsep) if len(p) > 4]
    found = [needle for needle in secrets + local if needle and needle in text]
    assert not found, (found, text[:3000])
    # Any absolute path of this machine, however it was built.
    paths = re.findall(r"(?<![\w:/])/(?:tmp|root|home|usr|work|proc|etc|var|opt)/[^\s\"']*",
                       text)
    assert not paths, paths
    host = socket.gethostname()
    assert not re.search(rf"(?<![\w.-]){re.escape(host)}(?![\w.-])", text), host
    names = ["PATH=", "XDG_", "PYTHONPATH", "DSS_CONSOLE_", "VIRTUAL_ENV", "HOME=",
             "INPUT_FILE", "OUTPUT_FILE", "CONTAINER_TOKEN", "SESSION_FOLDER"]
    assert not [n for n in names if n in text], text[:3000]
    # The real answers were read: the algorithm's words are there, and the wrapper's line
    # naming its input file says where in the work dir, not where on this machine.
    assert "central_sum: 1 partial result(s)" in text
    assert "Reading function arguments from file <workdir>/" in text
