"""The contract every source and every executor keeps (issue 18; docs/plugin-plan.md §4
step 2): the same cases for each combination of kinds.COMBINATIONS, against the real DSS
server, the real vantage6-server 4.15.2, real child processes and a real SLURM cluster.

A case speaks only World's and Node's neutral verbs (kinds.py); where sources differ by
rule, the source's adapter says what to expect. Passing these is what "a new kind works"
means: a new source or executor is one more adapter in kinds.py, never a branch here.
"""

from __future__ import annotations

import pytest
from contract_program import ATTACHMENT, GO_SEEN, HALFWAY, LOCAL_MARKER
from contract_program import WAITING as WAITING_SAID
from kinds import FAILED, GONE, OURS, SUCCEEDED, Combination, World

from dss_console.core.presentation import cell_columns, presentation_problems

from v6_fixtures import SERVER_TEST_TIMEOUT
from waiting import wait_for

# The first vantage6 case may build the sandbox's venv (once per machine).
pytestmark = pytest.mark.timeout(SERVER_TEST_TIMEOUT)


def test_the_settings_accept_a_combination_or_refuse_it_in_words(
        combination: tuple[Combination, World]) -> None:
    """A combination the engine cannot run is refused when the settings are read, never
    run some other way (today: a vantage6 algorithm has no executor)."""
    wanted, world = combination
    world.service("success")
    refusal = world.settings_refusal()
    if wanted.refused is None:
        assert refusal is None
    else:
        assert refusal is not None and wanted.refused in refusal, refusal


def test_a_window_sees_the_work_in_its_sources_words(world: World) -> None:
    """What the engine sends a window: the source's presentation, and per job its own
    columns' values and which actions it would refuse, by the source's rules."""
    key = world.service("exit", "1")
    node = world.start()
    presentation = node.presentation()
    assert presentation_problems(presentation) == []
    assert {"run", "cancel", "fail", "retry"} <= {a.name for a in presentation.actions}
    work = world.submit(key)
    node.wait(work, "failed")
    wait_for(lambda: node.owed(work) == 0, what="the failure delivered")
    view = node.view(work)
    assert {c.id for c in cell_columns(presentation)} <= set(view.cells)
    assert {"run", "cancel", "fail"} <= set(view.unavailable)
    assert ("retry" not in view.unavailable) is world.source.retry_after_failure, view
    if not world.source.retry_after_failure:
        assert view.unavailable["retry"], "a closed run says why it cannot run again"
    assert view.log_file.startswith(node.workdir(work))


def test_claim_fetch_report_succeed(world: World) -> None:
    key = world.service("success")
    node = world.start()
    work = world.submit(key)
    node.wait(work, "succeeded")
    seen = world.wait_remote(work, SUCCEEDED)
    assert HALFWAY in seen.messages
    assert ATTACHMENT in seen.attachments
    assert seen.progress is not None and seen.progress >= 0.5
    assert world.result_delivered(work)
    assert node.history(work) == ["claimed", "downloading", "running", "uploading",
                                   "succeeded"]
    assert len(world.lives()) == 1


def test_a_failing_command_fails_the_work_with_fixed_words(world: World) -> None:
    key = world.service("exit", "1")
    node = world.start()
    work = world.submit(key)
    node.wait(work, "failed")
    says = world.source.words.exit_code.format(code=1)
    seen = world.wait_says(work, says)
    assert world.wait_remote(work, FAILED)
    # Nothing of this machine: not the command's output, not its work dir.
    assert LOCAL_MARKER not in seen.text and node.workdir(work) not in seen.text
    assert seen.attachments == ()


def test_a_command_without_a_result_fails_the_work(world: World) -> None:
    key = world.service("no-result")
    node = world.start()
    work = world.submit(key)
    node.wait(work, "failed")
    world.wait_says(work, world.source.words.no_result)
    world.wait_remote(work, FAILED)


@pytest.mark.parametrize("auto", [True, False], ids=["auto", "by-hand"])
def test_a_command_that_cannot_start_ends_by_rule(world: World, auto: bool) -> None:
    """The provider's configuration, not the requester's failure, where it can be told."""
    key = world.broken_service()
    node = world.start(auto=auto)
    work = world.submit(key)
    if not auto:
        assert node.run_next(key)
    expect = world.start_failure(auto=auto)
    if expect.paused:
        why = node.wait_paused(key)
        assert "cannot start" in why and "no-such-program" in why, why
    if expect.local is None:
        assert node.state(work) is None
    else:
        node.wait(work, expect.local)
    world.wait_remote(work, expect.remote)
    if expect.says is not None:
        world.wait_says(work, expect.says)
    assert world.lives() == []


def test_work_of_a_service_without_a_command_ends_as_the_source_rules(world: World) -> None:
    configured = world.service("success")
    bare = world.bare_service()
    node = world.start()
    work = world.submit(bare)
    world.meet_unconfigured(node, work)
    expect = world.source.unconfigured
    assert expect.local is not None
    node.wait(work, expect.local)
    world.wait_remote(work, expect.remote)
    if expect.says is not None:
        world.wait_says(work, expect.says)
    assert world.lives() == []
    # The configured service still runs.
    other = world.submit(configured)
    node.wait(other, "succeeded")


def test_an_operators_cancel_stops_the_command_and_tells_the_requester(world: World) -> None:
    key = world.service("wait")
    node = world.start()
    work = world.submit(key)
    node.wait(work, "running")
    pids = world.wait_lives(1)
    node.cancel(work, "wrong queue")
    node.wait(work, "cancelled")
    world.wait_stopped(pids)
    world.wait_says(work, world.source.words.cancelled.format(message="wrong queue"))
    world.wait_remote(work, FAILED)


def test_an_operators_failure_reaches_the_requester_in_its_words(world: World) -> None:
    key = world.service("wait")
    node = world.start()
    work = world.submit(key)
    node.wait(work, "running")
    pids = world.wait_lives(1)
    node.fail(work, "Image is a knee, not a brain")
    node.wait(work, "failed")
    world.wait_stopped(pids)
    world.wait_says(work, "Image is a knee, not a brain")
    world.wait_remote(work, FAILED)


def test_work_gone_while_running_stops_the_command(world: World) -> None:
    key = world.service("wait")
    node = world.start()
    work = world.submit(key)
    node.wait(work, "running")
    pids = world.wait_lives(1)
    world.wait_says(work, WAITING_SAID)  # the run is known to be ours on the server
    world.take_away(work)
    world.wait_stopped(pids, timeout=15)
    node.wait(work, "cancelled")
    assert node.owed(work) == 0
    assert world.seen(work).remote in (GONE,)


def test_what_the_command_says_during_an_outage_arrives_after_it(world: World) -> None:
    key = world.service("wait")
    node = world.start()
    work = world.submit(key)
    world.wait_says(work, WAITING_SAID)
    with world.outage():
        world.go()
        node.wait(work, "uploading", "succeeded")
        assert node.owed(work) > 0  # held in the outbox, not lost
    node.wait(work, "succeeded", timeout=90)
    seen = world.wait_remote(work, SUCCEEDED, timeout=60)
    assert GO_SEEN in seen.messages  # (v6 today: more than once; see the report)
    print("copies of the message sent during the outage:", seen.messages.count(GO_SEEN))
    assert world.result_delivered(work)


def test_a_stopped_worker_leaves_the_work_open_and_runs_it_once_at_the_next_start(
        world: World) -> None:
    key = world.service("wait")
    journal = world.tmp / "shared-journal.sqlite3"
    first = world.start(journal=journal)
    work = world.submit(key)
    first.wait(work, "running")
    (pid,) = world.wait_lives(1)
    first.stop(running="resume")  # SIGTERM's way with on_shutdown = resume / leave
    world.wait_stopped([pid])
    assert world.seen(work).remote == OURS  # still open for this provider
    second = world.start(journal=journal)
    lives = world.wait_lives(2)
    world.go()
    second.wait(work, "succeeded", timeout=60)
    world.wait_remote(work, SUCCEEDED)
    assert world.result_delivered(work)
    assert len(lives) == 2 and world.lives() == lives  # the stopped life and one rerun


def test_a_worker_stopped_with_fail_fails_its_work_in_fixed_words(world: World) -> None:
    key = world.service("wait")
    node = world.start()
    work = world.submit(key)
    node.wait(work, "running")
    pids = world.wait_lives(1)
    node.stop(running="fail")
    world.wait_stopped(pids)
    assert node.state(work) == "failed"
    world.wait_says(work, world.source.words.shutdown)
    world.wait_remote(work, FAILED)
