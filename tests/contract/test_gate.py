"""The operator's gate (issue 20; docs/gate-plan.md §8 steps 4 and 5), the same cases for
every source × executor: a job held before its command runs and before its result leaves,
approved, rejected (the requester reads the operator's words), released; a rule approving
by itself; a decision not made in time; a worker restarted while a decision waits. Real
servers, real commands; sources differ only through their adapter (kinds.py)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from contract_program import ATTACHMENT, HALFWAY
from kinds import FAILED, OURS, SUCCEEDED, Work, World

from v6_fixtures import SERVER_TEST_TIMEOUT
from waiting import wait_for

pytestmark = pytest.mark.timeout(SERVER_TEST_TIMEOUT)


def test_a_gated_job_waits_with_its_inputs_and_runs_when_approved(world: World) -> None:
    key = world.service("success", approve="run")
    node = world.start()
    work = world.submit(key)
    node.wait(work, "awaiting_approval")
    world.wait_says(work, node.words().awaiting_approval)
    assert world.seen(work).remote == OURS
    assert world.lives() == []  # nothing ran
    view = node.view(work)
    assert "approve" not in view.unavailable and "reject" not in view.unavailable
    assert "release" in view.unavailable and "run" in view.unavailable
    assert node.engine.waiting_count() == 1
    label, _ = world.source.gate_fact
    assert any(f.label == label for f in node.approval(work).facts)
    node.approve(work)
    node.wait(work, "succeeded")
    world.wait_remote(work, SUCCEEDED)
    assert world.result_delivered(work)
    assert len(world.lives()) == 1
    assert "awaiting_approval" in node.history(work)
    decided = node.decision(work)["run"]
    assert decided["verdict"] == "approve" and decided["via"] == "window" and decided["user"]
    assert node.engine.waiting_count() == 0
    kinds = [(r["kind"], r["data"].get("gate")) for r in node.ledger_records(work)
             if r["kind"] in ("awaiting", "decision")]
    assert kinds == [("awaiting", "run"), ("decision", "run")], kinds


def test_a_rejection_reaches_the_requester_in_the_operators_words(world: World) -> None:
    key = world.service("success", approve="run")
    node = world.start()
    work = world.submit(key)
    node.wait(work, "awaiting_approval")
    with pytest.raises(Exception, match="message"):
        node.reject(work, "  ")
    node.reject(work, "Image is a knee, not a brain")
    node.wait(work, "failed")
    world.wait_says(work, "Image is a knee, not a brain")
    world.wait_remote(work, FAILED)
    assert world.lives() == []
    assert node.decision(work)["run"]["verdict"] == "reject"


def test_a_rule_approves_by_itself_and_the_journal_names_it(world: World) -> None:
    key = world.service("success", approve="run")
    world.top["approval_rules"] = [{"service": key, "id": "contract-rule"}]
    node = world.start()
    work = world.submit(key)
    node.wait(work, "succeeded")
    assert "awaiting_approval" not in node.history(work)
    decided = node.decision(work)["run"]
    assert decided["via"] == "rule" and decided["rule"] == "contract-rule"
    (record,) = [r for r in node.ledger_records(work) if r["kind"] == "decision"]
    assert record["by"]["via"] == "rule" and record["by"]["rule"] == "contract-rule"


def test_a_held_result_leaves_only_when_released(world: World) -> None:
    key = world.service("success", approve="release")
    node = world.start()
    work = world.submit(key)
    node.wait(work, "awaiting_release")
    world.wait_says(work, node.words().awaiting_release)
    seen = world.seen(work)
    # Nothing of the run left: not its message, not its attachment, not its result.
    assert seen.remote == OURS
    assert HALFWAY not in seen.messages and ATTACHMENT not in seen.attachments
    assert not world.result_delivered(work)
    assert node.owed(work) == 0
    preview = node.approval(work).preview
    assert preview is not None and any(f.role == "result" and f.size > 0
                                       for f in preview.files)
    assert any(HALFWAY in m for m in preview.messages)
    view = node.view(work)
    assert "release" not in view.unavailable and "approve" in view.unavailable
    node.release(work)
    node.wait(work, "succeeded")
    seen = world.wait_remote(work, SUCCEEDED)
    assert HALFWAY in seen.messages
    assert world.result_delivered(work)
    assert node.decision(work)["release"]["verdict"] == "release"


def test_a_result_rejected_at_release_stays_here_and_fails_the_work(world: World) -> None:
    key = world.service("success", approve="release")
    node = world.start()
    work = world.submit(key)
    node.wait(work, "awaiting_release")
    node.reject(work, "The segmentation leaks into the skull")
    node.wait(work, "failed")
    seen = world.wait_says(work, "The segmentation leaks into the skull")
    world.wait_remote(work, FAILED)
    assert HALFWAY not in seen.messages
    assert not world.result_delivered(work)
    kept = [p for p in Path(node.workdir(work)).rglob("*") if p.is_file()]
    assert kept, "the result stays in the work dir"


def test_a_decision_not_made_in_time_fails_the_work(world: World) -> None:
    key = world.service("success", approve="both")
    world.top["approval_timeout"] = "1s"
    node = world.start()
    work = world.submit(key)
    node.wait(work, "failed", timeout=30)
    world.wait_says(work, node.words().decision_timed_out)
    world.wait_remote(work, FAILED)
    assert world.lives() == []
    assert node.decision(work)["run"]["via"] == "timeout"


def test_a_worker_stopped_while_a_decision_waits_still_waits_after_restart(
        world: World) -> None:
    key = world.service("success", approve="both")
    journal = world.tmp / "shared-journal.sqlite3"
    first = world.start(journal=journal)
    work = world.submit(key)
    first.wait(work, "awaiting_approval")
    first.stop()
    second = world.start(journal=journal)
    assert second.state(work) == "awaiting_approval"
    assert second.engine.waiting_count() == 1
    assert world.lives() == [] and world.seen(work).remote == OURS
    second.approve(work)
    second.wait(work, "awaiting_release")
    second.stop()
    third = world.start(journal=journal)
    assert third.state(work) == "awaiting_release"
    assert not world.result_delivered(work) and third.owed(work) == 0
    third.release(work)
    third.wait(work, "succeeded")
    world.wait_remote(work, SUCCEEDED)
    assert len(world.lives()) == 1


def test_a_gated_service_claims_no_more_than_the_approval_queue(world: World) -> None:
    key = world.service("success", approve="run")
    world.top["approval_queue"] = 1
    node = world.start()
    first, second = world.submit(key), world.submit(key)
    wait_for(lambda: node.engine.waiting_count() == 1, 30, what="one job waiting")
    # A poll that began after the waiting job's thread ended found nothing it may claim.
    wait_for(node.engine.idle_poll_completed, 30, what="a poll claiming nothing")
    assert node.engine.claims_made == 1
    waiting = first if node.state(first) else second
    other = second if waiting is first else first
    assert node.state(other) is None
    node.approve(waiting)
    node.wait(other, "awaiting_approval")


def test_the_facts_show_the_requester_and_argument_values_locally(world: World) -> None:
    canary = "CANARY-7f3a-not-for-the-journal"
    key = world.service("success", approve="run")
    node = world.start()
    # What a worker prints, a window receives: the engine's events.
    events: list[object] = []
    node.engine.events.subscribe(events.append)
    work = world.submit(key, note=canary)
    node.wait(work, "awaiting_approval")
    facts = node.approval(work).facts
    label, _ = world.source.gate_fact
    assert [f for f in facts if f.label == label]
    if world.source.shows_note:  # the requester's argument, shown to this operator only
        (fact,) = [f for f in facts if canary in f.value]
        assert fact.local_only and "note" in fact.label
    node.approve(work)
    node.wait(work, "succeeded")
    # The value is shown, never kept: not in the journal (its ledger queue too), the
    # ledger's records, the server.
    for path in node.journal.parent.glob(node.journal.name + "*"):  # with its WAL
        assert canary.encode() not in path.read_bytes(), path
    assert canary not in json.dumps(node.ledger_records(work))
    assert canary not in world.seen(work).text
    assert events and not [e for e in events if canary in repr(e)]


def test_an_operator_upload_is_its_release(world: World) -> None:
    """A result the operator hands over leaves at once: the operator's release, recorded so
    (where the source takes an operator's result at all)."""
    key = world.service("success", approve="release")
    node = world.start()
    work = world.submit(key)
    node.wait(work, "awaiting_release")
    picked = world.tmp / "picked"
    picked.mkdir()
    if not node.engine.source.rules.operator_result:
        (picked / "mine").write_text("{}")
        with pytest.raises(Exception, match=node.words().no_operator_result[:20]):
            node.upload(work, picked / "mine")
        assert node.state(work) == "awaiting_release"
        return
    source = Path(node.workdir(work))
    result = next(p for p in source.iterdir() if p.name.startswith("result"))
    for path in result.parent.iterdir():  # the result and the layers beside it
        if path.is_file():
            (picked / path.name).write_bytes(path.read_bytes())
    node.upload(work, picked / result.name)
    node.wait(work, "succeeded")
    world.wait_remote(work, SUCCEEDED)
    assert world.result_delivered(work)
    decided = node.decision(work)["release"]
    assert decided["verdict"] == "release" and decided["via"] == "window"


def test_the_operators_run_is_its_approval(world: World) -> None:
    """Claimed by hand, then Run: the operator decided; no second click at the gate."""
    key = world.service("success", approve="run")
    node = world.start(auto=False)
    work = world.submit(key)
    assert node.claim(key)
    wait_for(lambda: node.inputs_ready(work) and node.engine.busy_job_ids() == set(), 30,
             what="the inputs fetched")
    assert node.state(work) == "claimed"
    node.run(work)
    node.wait(work, "succeeded")
    assert "awaiting_approval" not in node.history(work)
    decided = node.decision(work)["run"]
    assert decided["verdict"] == "approve" and decided["via"] == "window"


def test_work_taken_away_while_it_waits_is_not_run(world: World) -> None:
    """Deleted or killed by its requester while it waits for approval: it ends cancelled
    (on a push, or when someone decides), and its command never runs."""
    key = world.service("success", approve="run")
    node = world.start()
    work = world.submit(key)
    node.wait(work, "awaiting_approval")
    world.take_away(work)
    wait_for(lambda: world.seen(work).remote != OURS, 30, what="the work gone on the server")
    if node.state(work) == "awaiting_approval":
        with contextlib.suppress(Exception):  # a push may end it meanwhile
            node.approve(work)
    node.wait(work, "cancelled")
    assert world.lives() == []
    assert node.engine.waiting_count() == 0


def test_jobs_waiting_for_a_decision_hold_no_thread(world: World) -> None:
    """Waiting costs the engine nothing of its own: no job thread, no slot, while three
    jobs wait; a decision starts one again."""
    key = world.service("success", approve="run")
    world.top["approval_queue"] = 3
    node = world.start()
    works = [world.submit(key) for _ in range(3)]
    wait_for(lambda: node.engine.waiting_count() == 3, 60, what="three jobs waiting")
    # No live execution (a job's thread) for any of them, and no slot taken.
    wait_for(lambda: not node.engine.busy_job_ids(), 10, what="their threads returned")
    assert node.engine.active_count() == 0
    node.approve(works[0])
    node.wait(works[0], "succeeded")
    assert node.engine.waiting_count() == 2


def test_a_timeout_that_read_a_job_before_its_approval_leaves_it_alone(world: World) -> None:
    """The timeout reads the waiting jobs once, then fails them one by one: a job approved
    (and finished) in between is no longer waiting, and must not be failed after it
    succeeded."""
    import time

    from dss_console.engine.events import JobChanged

    key = world.service("success", approve="run")
    world.top["approval_timeout"] = "1h"  # the scheduler's own timeout never fires here
    node = world.start()
    first, second = world.submit(key), world.submit(key)
    node.wait(first, "awaiting_approval")
    node.wait(second, "awaiting_approval")
    ids = {node._job(first).job_id: second, node._job(second).job_id: first}
    approved: list[Work] = []

    def approve_the_other(event: object) -> None:
        # The operator approves the other job while the timeout is failing this one.
        if isinstance(event, JobChanged) and event.job.job_id in ids and not approved \
                and event.job.state.value == "failed":
            other = ids[event.job.job_id]
            approved.append(other)
            node.approve(other)
            node.wait(other, "succeeded")
            wait_for(lambda: node.engine._execution(node._job(other).job_id) is None, 30,
                     what="the approved job's execution to end")

    unsubscribe = node.engine.events.subscribe(approve_the_other)
    try:
        node.engine.expire_decisions(now=time.time() + 7200)
    finally:
        unsubscribe()
    assert approved, "the timeout failed neither job"
    assert node.state(approved[0]) == "succeeded", node.history(approved[0])
    world.wait_remote(approved[0], SUCCEEDED)
    assert node.decision(approved[0])["run"]["verdict"] == "approve"


def test_a_release_rule_made_while_the_command_runs_sends_what_it_held(world: World) -> None:
    """Messages a release-gated command reported were held; a rule releasing its result,
    added before the command ended, releases them with the result (not drops them)."""
    from contract_program import GO_SEEN
    from contract_program import WAITING as COMMAND_WAITING

    from dss_console.engine.gate import ApprovalRule

    key = world.service("wait", approve="release")
    node = world.start()
    work = world.submit(key)
    node.wait(work, "running")
    wait_for(lambda: any(COMMAND_WAITING in str(i.payload.get("message"))
                         for i in node.engine.journal.held_items(node._job(work).job_id)),
             30, what="the command's message held")
    node.engine.add_rule(ApprovalRule(service=node._job(work).service_hash, gate="release"))
    (world.state / "go").write_text("go")
    node.wait(work, "succeeded")
    seen = world.wait_remote(work, SUCCEEDED)
    assert node.decision(work)["release"]["via"] == "rule"
    assert COMMAND_WAITING in " ".join(seen.messages), seen.messages
    assert GO_SEEN in " ".join(seen.messages), seen.messages


def test_an_approval_journaled_just_before_a_crash_runs_after_restart(world: World) -> None:
    """The approve commits its decision, then its execution starts the command: a crash in
    between leaves the approval journaled and the job not yet running. The next start
    runs it (nobody approves twice), and it is not a decision waiting (nor timing out)."""
    import time

    from dss_console.engine.gate import Decision, Gate, local_user, with_decision
    from dss_console.engine.journal import Journal

    key = world.service("success", approve="run")
    world.top["approval_timeout"] = "1h"
    journal = world.tmp / "shared-journal.sqlite3"
    first = world.start(journal=journal)
    work = world.submit(key)
    first.wait(work, "awaiting_approval")
    first.stop()
    # What approve_job commits before it launches the execution (the crash comes next).
    stopped = Journal(journal)
    try:
        snap = stopped.latest_job_for_ticket(first.engine.source.key, work.id)
        decision = Decision(Gate.RUN, "approve", "window", user=local_user(), at=time.time())
        stopped.update_job(snap.job_id, waiting_since=None,
                           decision=with_decision(snap.decision, decision))
    finally:
        stopped.close()
    second = world.start(journal=journal)
    second.wait(work, "succeeded")
    world.wait_remote(work, SUCCEEDED)
    assert len(world.lives()) == 1
    assert second.engine.waiting_count() == 0
    assert second.engine.next_decision_deadline() is None
