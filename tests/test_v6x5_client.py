"""The 5.x node's client against the real HQ 5.0.3 behind the stand-in: its Keycloak token is
checked, renewed when due and after HQ refuses it (422 foreign signature, 401 expired), an
unknown client or wrong secret is "not logged in", and the socket connects with the token."""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

import pytest
import requests

from dss_console.core.interfaces import Connection, Failure, NewWork, SourceEvent, WorkGone
from dss_console.sources.v6 import crypto
from dss_console.sources.v6.client import (
    V6NotLoggedInError,
    V6RunFinishedError,
    V6ServerError,
    classify_v6_error,
    now_iso,
)
from dss_console.sources.v6.proxy import SubtaskProxy
from dss_console.sources.v6x5 import jws
from dss_console.sources.v6x5.auth import ClientCredentials, IdpRefusedError
from dss_console.sources.v6x5.client import HqNodeClient, HqRun
from dss_console.sources.v6x5.events import HqEvents
from dss_console.sources.v6x5.sandbox import HqSandbox

from v6_fixtures import SERVER_TEST_TIMEOUT
from waiting import wait_for

pytestmark = pytest.mark.timeout(SERVER_TEST_TIMEOUT)


def test_the_node_renews_its_token_and_survives_a_refused_one(v6x5_sandbox: HqSandbox) -> None:
    """HQ 5.0.3 answers a foreign-signed token 422 and an expired one 401: either way the
    client takes one new token and the call succeeds."""
    sb = v6x5_sandbox
    assert sb.idp is not None
    node = sb.node("station-demo")
    with HqNodeClient(sb.url, auth_url=sb.auth_url, node=node.name) as client:
        client.login(node.api_key)
        credentials = client.credentials
        assert credentials is not None
        first = credentials.token()
        assert credentials.token() == first  # not due: no new token
        claims = jws.unverified_claims(first)
        assert claims["vantage6_client_type"] == "node"
        assert claims["azp"] == node.client_id

        forged = jws.sign(claims, jws.new_key(), kid="foreign")
        expired = sb.idp.realm.mint(sb.idp.realm_url, node.client_id,
                                    issued_at=time.time() - 3600)["access_token"]
        for refused in (forged, expired):
            # What HQ would hold against the node: a token it does not take any more.
            credentials._access = refused  # the test plants the bad token
            assert client.get("/node/me")["id"] == node.id
            assert client.access_token not in (refused, None)

        # Due for renewal (less than a quarter of its lifetime left): a new one first.
        credentials._renew_after = time.monotonic() - 1
        before = client.access_token
        assert client.get("/node/me")["id"] == node.id
        assert client.access_token != before


def test_an_unknown_client_or_wrong_secret_is_not_logged_in(v6x5_sandbox: HqSandbox) -> None:
    sb = v6x5_sandbox
    node = sb.node("station-demo")
    for client_id, secret in ((node.client_id, "wrong"), ("nosuch-node-client", node.api_key)):
        credentials = ClientCredentials(sb.auth_url, "vantage6", client_id, secret)
        with pytest.raises(IdpRefusedError) as refused:
            credentials.renew()
        credentials.close()
        assert isinstance(refused.value, V6NotLoggedInError)
        assert secret not in str(refused.value) and client_id in str(refused.value)
    # A client that is no node (the researcher's service account): its token is refused here.
    account, secret = sb.service_account
    credentials = ClientCredentials(sb.auth_url, "vantage6", account, secret)
    with pytest.raises(Exception, match="is not a vantage6 node"):
        credentials.renew()
    credentials.close()


class _Researcher:
    """The seeded service account over REST (its client-credentials token)."""

    def __init__(self, sb: HqSandbox) -> None:
        client_id, secret = sb.service_account
        self.api = sb.api_url
        self.http = requests.Session()
        self.http.trust_env = False
        reply = self.http.post(f"{sb.auth_url}/realms/vantage6/protocol/openid-connect/token",
                               data={"grant_type": "client_credentials",
                                     "client_id": client_id, "client_secret": secret},
                               timeout=30)
        assert reply.status_code == 200, reply.text
        self.http.headers["Authorization"] = f"Bearer {reply.json()['access_token']}"

    def call(self, verb: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        reply = self.http.request(verb, self.api + path, json=body, timeout=30)
        assert reply.status_code < 300, reply.text
        return dict(reply.json())

    def task(self, sb: HqSandbox, session_id: int, arguments: dict[str, Any],
             action: str = "federated_compute") -> int:
        encoded = base64.b64encode(json.dumps(arguments).encode()).decode()
        return int(self.call("POST", "/task", {
            "name": "t", "image": "dss-demo", "method": "mean", "action": action,
            "collaboration_id": sb.node("station-demo").collaboration_id,
            "session_id": session_id, "databases": [],
            "organizations": [{"id": sb.org_id("station"), "arguments": encoded}]})["id"])


def test_a_5x_run_is_read_finished_once_and_a_killed_run_keeps_only_its_log(
        v6x5_sandbox: HqSandbox) -> None:
    sb = v6x5_sandbox
    node = sb.node("station-demo")
    researcher = _Researcher(sb)
    session = researcher.call("POST", "/session", {
        "name": f"s-{time.time_ns()}", "collaboration_id": node.collaboration_id,
        "scope": "own"})["id"]
    done_task = researcher.task(sb, session, {"column": "age"})
    killed_task = researcher.task(sb, session, {"column": "weight"})
    with HqNodeClient(sb.url, auth_url=sb.auth_url, node=node.name) as client:
        client.login(node.api_key)
        runs = {run.task_id: run for run in client.open_runs()}
        run = runs[done_task]
        assert isinstance(run, HqRun) and not run.finished
        assert (run.action, run.method, run.session_id) == ("federated_compute", "mean",
                                                            session)
        assert json.loads(base64.b64decode(run.input or "")) == {"column": "age"}
        assert not run.blob_storage_used
        client.patch_run(run.id, status="active", started_at=now_iso())
        client.patch_run(run.id, status="completed", started_at=now_iso(),
                         finished_at=now_iso(), result="cmVzdWx0", log="done")
        assert client.get_run(run.id).finished
        with pytest.raises(V6RunFinishedError):
            client.patch_run(run.id, status="failed", log="again")

        killed = runs[killed_task]
        client.patch_run(killed.id, status="active", started_at=now_iso())
        researcher.call("POST", "/kill/task", {"id": killed_task})
        assert client.get_run(killed.id).status == "killed by user"
        with pytest.raises(V6RunFinishedError):  # the node's usual end call: gone
            client.patch_run(killed.id, status="crashed", log="stopped", finished_at=now_iso())
        assert client.patch_run(killed.id, log="stopped by the researcher")
        assert client.get_run(killed.id).finished
        assert not {done_task, killed_task} & {r.task_id for r in client.open_runs()}


def test_the_subtask_proxy_encrypts_5x_arguments_for_each_organization(
        v6x5_sandbox: HqSandbox) -> None:
    """5.0.3's algorithm client sends a subtask's input as organizations[i].arguments: the
    proxy encrypts that field with the organization's public key from HQ."""
    sb = v6x5_sandbox
    node = sb.node("station-demo-enc")
    cryptor = crypto.RsaCryptor.from_pem(sb.key_file("station").read_bytes())
    with HqNodeClient(sb.url, auth_url=sb.auth_url, node=node.name) as client:
        client.login(node.api_key)
        proxy = SubtaskProxy(client, cryptor, input_field="arguments")
        body = {"organizations": [{"id": sb.org_id("station"),
                                   "arguments": crypto.b64encode(b'{"column": "age"}')}]}
        sent = proxy.encrypt_task_inputs(body)["organizations"][0]
    assert "input" not in sent and sent["arguments"].count("$") == 2
    assert cryptor.decrypt(sent["arguments"]) == b'{"column": "age"}'


def test_the_socket_connects_with_the_keycloak_token_and_hears_5x_events(
        v6x5_sandbox: HqSandbox) -> None:
    """socket.io at HQ's root, namespace /tasks, the token in the Authorization header; a new
    task arrives as 5.0.3's `new_task_update`, a researcher's kill as `kill_containers`."""
    sb = v6x5_sandbox
    node = sb.node("station-demo")
    seen: list[SourceEvent] = []
    lock = threading.Lock()

    def notify(event: SourceEvent) -> None:
        with lock:
            seen.append(event)

    def count(kind: type) -> int:
        with lock:
            return sum(isinstance(e, kind) for e in seen)

    researcher = _Researcher(sb)
    with HqNodeClient(sb.url, auth_url=sb.auth_url, node=node.name) as client:
        client.login(node.api_key)
        events = HqEvents(client, client.whoami(), notify)
        events.start()
        try:
            wait_for(lambda: events.connected, 60, what="the socket up")
            assert Connection(True) in seen
            woken = count(NewWork)
            session = researcher.call("POST", "/session", {
                "name": f"s-{time.time_ns()}", "collaboration_id": node.collaboration_id,
                "scope": "own"})["id"]
            task = researcher.task(sb, session, {"column": "age"})
            wait_for(lambda: count(NewWork) > woken, 30, what="new_task_update")
            run = next(r for r in client.open_runs() if r.task_id == task)
            researcher.call("POST", "/kill/task", {"id": task})
            gone = wait_for(lambda: next((e for e in list(seen) if isinstance(e, WorkGone)),
                                         None), 30, what="kill_containers")
            assert gone == WorkGone((run.id,))
        finally:
            events.close()


def test_only_a_central_run_gets_a_container_token(v6x5_sandbox: HqSandbox) -> None:
    """5.0.3 gives a container token to central_compute tasks only; another task's 401 is a
    refusal of this call, not a lost login (the node stays logged in)."""
    sb = v6x5_sandbox
    node = sb.node("station-demo")
    researcher = _Researcher(sb)
    session = researcher.call("POST", "/session", {
        "name": f"s-{time.time_ns()}", "collaboration_id": node.collaboration_id,
        "scope": "own"})["id"]
    central = researcher.task(sb, session, {}, action="central_compute")
    federated = researcher.task(sb, session, {})
    with HqNodeClient(sb.url, auth_url=sb.auth_url, node=node.name) as client:
        client.login(node.api_key)
        token = client.container_token(central, "dss-demo")
        claims = jws.unverified_claims(token)
        assert claims["sub"]["task_id"] == central and claims["sub"]["node_id"] == node.id
        with pytest.raises(V6ServerError) as refused:
            client.container_token(federated, "dss-demo")
        assert refused.value.status == 401 and "not a central compute task" in str(
            refused.value)
        assert classify_v6_error(refused.value) is Failure.REFUSED
        assert client.get("/node/me")["id"] == node.id
        for task in (central, federated):
            researcher.call("POST", "/kill/task", {"id": task})


def test_an_extraction_run_names_its_dataframe_and_the_node_reports_its_columns(
        v6x5_sandbox: HqSandbox) -> None:
    sb = v6x5_sandbox
    node = sb.node("station-demo")
    researcher = _Researcher(sb)
    session = researcher.call("POST", "/session", {
        "name": f"s-{time.time_ns()}", "collaboration_id": node.collaboration_id,
        "scope": "own"})["id"]
    frame = researcher.call("POST", f"/session/{session}/dataframe", {
        "label": "default", "name": "people",
        "task": {"image": "dss-demo", "method": "read",
                 "organizations": [{"id": sb.org_id("station"),
                                    "arguments": base64.b64encode(b"{}").decode()}]}})
    with HqNodeClient(sb.url, auth_url=sb.auth_url, node=node.name) as client:
        client.login(node.api_key)
        run = next(r for r in client.open_runs() if isinstance(r, HqRun)
                   and r.session_id == session)
        assert (run.action, run.method) == ("data_extraction", "read")
        assert run.dataframe == (frame["id"], "people", "default")
        client.post_columns(frame["id"], [("age", "int64"), ("name", "string")])
        client.post_columns(frame["id"], [("age", "int64"), ("name", "large_string")])
        seen = researcher.call("GET", f"/session/dataframe/{frame['id']}", {})["columns"]
        # A repeat (the outbox after a restart) replaces this node's columns.
        assert [(c["node_id"], c["name"], c["dtype"]) for c in seen] == [
            (node.id, "age", "int64"), (node.id, "name", "large_string")]
        client.patch_run(run.id, status="completed", started_at=now_iso(),
                         finished_at=now_iso(), result="", log="")


def test_a_deleted_dataframe_reaches_the_node_over_the_socket(v6x5_sandbox: HqSandbox) -> None:
    """A researcher deletes a session's dataframe: HQ 5.0.3 sends `delete_dataframe`, the
    node's handler gets the session and the name (the session store then removes it)."""
    sb = v6x5_sandbox
    node = sb.node("station-demo")
    researcher = _Researcher(sb)
    deleted: list[tuple[int, str]] = []
    session = researcher.call("POST", "/session", {
        "name": f"s-{time.time_ns()}", "collaboration_id": node.collaboration_id,
        "scope": "own"})["id"]
    frame = researcher.call("POST", f"/session/{session}/dataframe", {
        "label": "default", "name": "to_go",
        "task": {"image": "dss-demo", "method": "read",
                 "organizations": [{"id": sb.org_id("station"),
                                    "arguments": base64.b64encode(b"{}").decode()}]}})
    with HqNodeClient(sb.url, auth_url=sb.auth_url, node=node.name) as client:
        client.login(node.api_key)
        events = HqEvents(client, client.whoami(), lambda event: None,
                          delete_dataframe=lambda sid, name: deleted.append((sid, name)))
        events.start()
        try:
            wait_for(lambda: events.connected, 60, what="the socket up")
            reply = researcher.http.delete(f"{sb.api_url}/session/dataframe/{frame['id']}",
                                           timeout=30)
            assert reply.status_code == 200, reply.text
            wait_for(lambda: deleted, 30, what="delete_dataframe")
            assert deleted == [(session, "to_go")]
        finally:
            events.close()


def test_the_reconcile_lists_sessions_sorted_in_one_page_and_confirms_each_gone(
        v6x5_sandbox: HqSandbox) -> None:
    """HQ 5.0.3 pages `GET session` by OFFSET and sorts only with `sort=`: the node asks
    sorted, in pages larger than the default 10, and a session missing from the list goes
    here only when `GET session/<id>` answers 404."""
    sb = v6x5_sandbox
    node = sb.node("station-demo")
    researcher = _Researcher(sb)
    made = [researcher.call("POST", "/session", {
        "name": f"r-{time.time_ns()}-{i}", "collaboration_id": node.collaboration_id,
        "scope": "own"})["id"] for i in range(11)]
    with HqNodeClient(sb.url, auth_url=sb.auth_url, node=node.name) as client:
        client.login(node.api_key)
        assert set(made) <= client.session_ids(node.collaboration_id)
        assert not client.session_gone(made[0])
        researcher.call("DELETE", f"/session/{made[0]}", {})
        assert client.session_gone(made[0])
        assert made[0] not in client.session_ids(node.collaboration_id)
