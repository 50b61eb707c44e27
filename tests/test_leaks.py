"""What the end user can fetch from the real DSS server after a failing command: only the
command's own @dss words and ours, never the provider's local detail (issue 17, Major 1).

The attachment links work without a login, so everything is read back as a stranger
would: the ticket's log as its owner sees it, then every attachment with a plain GET."""

from __future__ import annotations

import json
import re
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests

from dss_console.core.interfaces import OutcomeKind
from dss_console.engine.calls import finish_call
from dss_console.engine.redact import TAIL_DESCRIPTION
from dss_console.engine.settings import ServiceCommand
from dss_console.engine.states import JobState
from dss_console.sandbox import Sandbox

from test_engine import TAGS, Harness, command, harness_for
from waiting import wait_for

ERROR = "segmentation failed: the input is not a brain"


@pytest.fixture
def service(sandbox: Sandbox) -> str:
    return sandbox.register_service(f"LeakTest-{uuid.uuid4().hex[:8]}", "1.0.0", TAGS)


@pytest.fixture
def harness(sandbox: Sandbox, tmp_path: Path, service: str,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    # A home of the test's own: the command prints it and a traceback from under it.
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    yield from harness_for(sandbox, tmp_path, service)


def everything_the_user_can_fetch(sandbox: Sandbox, ticket: int) -> tuple[dict, list[str]]:
    """The ticket's detail (status, log, attachment links) and every attachment's body,
    fetched without a cookie."""
    detail = sandbox.admin.ticket_detail(ticket)
    bodies = []
    for entry in detail["log"]:
        for attachment in entry["attachments"]:
            response = requests.get(urljoin(sandbox.url, attachment["url"]), timeout=30)
            assert response.status_code == 200, response.text  # no login needed: public
            bodies.append(response.text)
    return detail, bodies


def local_detail(harness: Harness, workdir: str, secret: str) -> list[str]:
    home = str(Path.home())
    return [workdir, home, str(harness.tmp), secret, "pytest-of-"]


def host_names() -> list[str]:
    names = {socket.gethostname(), socket.getfqdn()}
    return sorted({n for n in names | {n.split(".")[0] for n in names} if n != "localhost"})


def assert_nothing_local(text: str, forbidden: list[str]) -> None:
    for value in forbidden:
        assert value not in text, f"{value!r} reached the user:\n{text}"
    for host in host_names():
        found = re.search(rf"(?<![A-Za-z0-9]){re.escape(host)}(?![A-Za-z0-9])", text,
                          re.IGNORECASE)
        assert found is None, f"host name {host!r} reached the user:\n{text}"


@pytest.mark.parametrize("share", [False, True], ids=["tail-off", "tail-on"])
def test_a_failing_command_tells_the_user_only_its_own_words(harness: Harness,
                                                             share: bool) -> None:
    secret = f"pA55-w0rd-{uuid.uuid4().hex[:10]}"
    ticket = harness.ticket()
    extra = {harness.service: ServiceCommand(
        key=harness.service, command=command("leaky"), env={"LEAK_TEST_SECRET": secret},
        send_output_tail=True if share else None)}  # off: the default
    engine = harness.engine(auto=True, extra=extra)
    job_id = harness.wait_job(engine, ticket, JobState.FAILED)
    harness.wait_server(ticket, "failed")
    wait_for(lambda: engine.job(job_id).owed == 0, 30, what="every call to be delivered")
    job = engine.job(job_id)
    assert job.exit_code == 4 and job.reason == ERROR
    # The command did print all of it (here, on the provider's machine).
    output = (Path(job.workdir) / ".dss" / "output.log").read_text()
    forbidden = local_detail(harness, job.workdir, secret)
    for value in [*forbidden[:4], "Traceback", "slurmstepd-", "harmless: the last words"]:
        assert value in output

    detail, bodies = everything_the_user_can_fetch(harness.sandbox, ticket)
    messages = [(e["category"], e["message"]) for e in detail["log"]]
    # The command's own error, once (it used to be sent again as the failure's reason).
    assert messages.count(("error", ERROR)) == 1, messages
    assert_nothing_local(json.dumps(detail) + "\n".join(bodies), forbidden)
    descriptions = [a["description"] for e in detail["log"] for a in e["attachments"]]
    if not share:
        assert descriptions == [] and bodies == []
        assert "Traceback" not in json.dumps(detail) and "harmless" not in json.dumps(detail)
        return
    assert descriptions == [TAIL_DESCRIPTION]
    (tail,) = bodies
    assert "harmless: segmentation step 3 of 5 done" in tail
    assert "harmless: the last words" in tail
    assert "work dir is <workdir>, inputs in <workdir>/input/" in tail
    assert '"<home>/.cache/seg/model.py"' in tail and "model weights missing" in tail
    assert "slurmstepd-<host>: error: *** JOB 6 ON <host> CANCELLED" in tail
    assert "token <env:LEAK_TEST_SECRET>" in tail


def test_a_refused_upload_tells_the_user_no_local_path(harness: Harness) -> None:
    """An upload the client refuses (its file is gone) fails the ticket with the error's
    text: the user reads it with the work root replaced, the journal keeps it whole."""
    from dss_console.engine.journal import Journal
    from dss_console.engine.workdirs import ticket_workdir
    from dss_console.sources.dss.source import DssSource

    ticket = harness.ticket()
    client = harness.client()
    claimed = client.services.claim([harness.service], harness.sandbox.provider, "node-a")
    assert claimed is not None and claimed.ticket_id == ticket
    key = DssSource(client).key
    workdir = ticket_workdir(harness.tmp / "work", key, ticket, DssSource.words.job)
    missing = workdir / ".dss" / "export" / "layer_000_gone.nii.gz"
    # A worker that stopped while uploading a result whose file is gone meanwhile.
    end, payload = finish_call(OutcomeKind.COMPLETED, status="success", final=True)
    journal = Journal(harness.tmp / "journal-node-a.sqlite3")
    job_id = journal.create_job(source=key, ticket_id=ticket, service_hash=harness.service,
                                service_name="LeakTest", instance="node-a", workdir=str(workdir))
    journal.transition(job_id, JobState.UPLOADING, check=False, calls=[
        ("upload", {"path": str(missing), "name": missing.name, "final": True,
                    "ticket": ticket}),
        (end, {**payload, "ticket": ticket})])
    journal.close()
    engine = harness.engine()
    harness.wait_job(engine, ticket, JobState.FAILED)
    harness.wait_server(ticket, "failed")
    assert str(missing) in (engine.job(job_id).reason or "")  # the provider's own record
    detail, bodies = everything_the_user_can_fetch(harness.sandbox, ticket)
    assert bodies == []
    errors = [e["message"] for e in detail["log"] if e["category"] == "error"]
    assert len(errors) == 1 and errors[0].startswith("the result could not be uploaded (")
    assert "<workroot>/" in errors[0], errors
    assert_nothing_local(json.dumps(detail), [str(harness.tmp), "pytest-of-"])
