"""Serving an engine on its local channel: which operations a window may ask for, and what
the engine tells every attached window about itself.

The operations are the engine's own methods (claim, run, cancel, fail, upload, retry, auto
mode, settings, resume) plus the read-only queries a window needs (jobs, services, the calls
sent for a job, status). Nothing else can be asked.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from dss_console.engine.channel import ChannelPaths, EngineChannel, channel_paths
from dss_console.engine.engine import Engine, EngineError
from dss_console.engine.events import EngineStatus, Event, JobChanged, JobSnapshot
from dss_console.engine.gate import ApprovalRule
from dss_console.engine.settings import (
    ServiceCommand,
    load_settings,
    parse_settings,
    save_settings,
    settings_to_toml,
)
from dss_console.engine.views import described_services, job_limits, presented, service_figures
from dss_console.engine.wire import to_wire

STATUS_INTERVAL = 0.25  # how often the engine's status is compared with what windows know


def engine_status(engine: Engine) -> EngineStatus:
    """What a window shows about the engine besides its jobs."""
    return EngineStatus(auto=engine.auto, busy=tuple(sorted(engine.busy_job_ids())),
                        connection=engine.connection.state,
                        claims_in_flight=engine.claims_in_flight,
                        idle_poll_completed=engine.idle_poll_completed(),
                        waiting=engine.waiting_count())


class StatusPublisher:
    """Publishes `EngineStatus` on the engine's bus whenever it differs from the last one
    (checked a few times a second: cheaper than hooking every place that changes it)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._last: EngineStatus | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="engine-status", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(STATUS_INTERVAL):
            status = engine_status(self.engine)
            last = self._last
            if last is None or (status.auto, status.busy, status.connection,
                                status.claims_in_flight, status.idle_poll_completed,
                                status.waiting) != (
                    last.auto, last.busy, last.connection, last.claims_in_flight,
                    last.idle_poll_completed, last.waiting):
                self._last = status
                self.engine.events.publish(status)


def ready_counts(engine: Engine) -> dict[str, int]:
    hashes = [s.service_hash for s in engine.services()]
    found = engine.source.available(hashes) if hashes else {}
    return {h: int(found.get(h, 0)) for h in hashes}


def present_job(engine: Engine, job: JobSnapshot) -> JobSnapshot:
    """A job as a window receives it: its view, with the limits it runs under."""
    def command_for(name: str, service_hash: str) -> ServiceCommand | None:
        # The settings' own lookup (no server call): a journaled job's service may not be
        # listed yet after a restart.
        return engine.settings.plugins[engine.source.kind].command_for(name, service_hash)

    return presented(engine.source, job, job_limits(engine.executors, command_for, job))


def engine_handlers(engine: Engine, *, on_shutdown: Callable[[bool], None],
                    settings_source: Path,
                    keeps_settings_file: bool = True) -> dict[str, Callable[..., Any]]:
    """``keeps_settings_file``: this engine writes its rules to its settings file (a worker;
    a console's window saves its own settings on ``RulesEdited``)."""
    def update_settings(toml: str) -> None:
        settings = parse_settings(toml, settings_source)
        # Who the engine is and where it works stay as started: they name its journal,
        # its lock and this channel.
        settings.instance = engine.settings.instance
        settings.workroot = engine.settings.workroot
        engine.update_settings(settings)

    def shutdown(drain: bool = False, running: str | None = None) -> None:
        if running is not None:  # the operator's choice at quit: resume or fail
            engine.set_shutdown_choice(str(running))
        on_shutdown(bool(drain))

    def use_session(session_id: str) -> None:
        # A window logged in again (the old session expired): carry on with the new one.
        # Only over the private channel; never written anywhere by the engine.
        engine.source.use_session(str(session_id))
        engine.outbox.resume()
        engine.connection.set("online")
        engine.wake()

    def keep_rules() -> None:
        """The engine's rules into its settings file (in place: comments kept), so a
        restart and the window's Settings see them."""
        if keeps_settings_file and settings_source.exists():
            current = load_settings(settings_source)
            save_settings(replace(current, approval_rules=engine.approval_rules()),
                          settings_source)

    def add_rule(service: str, requester: str = "", gate: str = "run", until: str = "",
                 via: str = "window") -> ApprovalRule:
        made = engine.add_rule(ApprovalRule(service=str(service), requester=str(requester),
                                            gate=str(gate), until=str(until)), str(via))
        keep_rules()
        return made

    def revoke_rule(rule_id: str, via: str = "window") -> ApprovalRule:
        gone = engine.revoke_rule(str(rule_id), str(via))
        keep_rules()
        return gone

    def approve_job(job_id: int, via: str = "window", always: bool = False, until: str = "",
                    any_requester: bool = False) -> ApprovalRule | None:
        if not always:
            engine.approve_job(int(job_id), str(via))
            return None
        made = engine.approve_always(int(job_id), until=str(until or ""),
                                     any_requester=bool(any_requester), via=str(via))
        keep_rules()
        return made

    def present(job: JobSnapshot | None) -> JobSnapshot | None:
        return None if job is None else present_job(engine, job)

    return {
        "jobs": lambda limit=None: [present_job(engine, j) for j in engine.jobs(limit=limit)],
        "job": lambda job_id: present(engine.job(int(job_id))),
        # Each with how its command is contained, in its executor's words.
        "services": lambda: described_services(engine.services(), engine.executors),
        "refresh_services": lambda: described_services(engine.refresh_services(),
                                                       engine.executors),
        # Work waiting on the server per service, asked now (a window with Auto mode off
        # shows it too; the engine's polls ask only for what they may claim).
        "ready_counts": lambda: ready_counts(engine),
        # Each service's figures for the services pane (the server's, or this engine's own).
        "service_figures": lambda: service_figures(
            engine.source, [s.service_hash for s in engine.services()],
            lambda since: engine.jobs(finished_since=since), time.time()),
        "status": lambda: engine_status(engine),
        "stop_claiming": engine.stop_claiming,
        "use_session": use_session,
        "settings": lambda: settings_to_toml(engine.settings),
        "outbox_items": lambda job_id: engine.journal.outbox_items(int(job_id)),
        "claim_next": lambda service_hashes=None, run=False: present(engine.claim_next(
            service_hashes, run=bool(run))),
        "run_job": lambda job_id: engine.run_job(int(job_id)),
        "retry_job": lambda job_id: engine.retry_job(int(job_id)),
        "cancel_job": lambda job_id, message=None: engine.cancel_job(int(job_id), message),
        "fail_job": lambda job_id, message: engine.fail_job(int(job_id), str(message)),
        "upload_result": lambda job_id, workspace: engine.upload_result(int(job_id),
                                                                        str(workspace)),
        # The operator's gate (engine/decisions.py): ``via`` says who asked (the window, the
        # `approvals` command); what a waiting job is crosses only this private channel.
        "waiting_jobs": engine.waiting_jobs,
        "approval": lambda job_id: engine.approval(int(job_id)),
        "approve_job": approve_job,
        "reject_job": lambda job_id, message, via="window": engine.reject_job(
            int(job_id), str(message), str(via)),
        "release_job": lambda job_id, via="window": engine.release_job(int(job_id), str(via)),
        "approval_rules": engine.approval_rules,
        "add_rule": add_rule,
        "revoke_rule": revoke_rule,
        "set_auto": lambda enabled, service_hash=None: engine.set_auto(bool(enabled),
                                                                      service_hash),
        "resume_service": lambda service_hash: engine.resume_service(str(service_hash)),
        "update_settings": update_settings,
        "shutdown": shutdown,
    }


def error_kind(engine: Engine) -> Callable[[BaseException], str]:
    def kind(exc: BaseException) -> str:
        if isinstance(exc, EngineError):
            return "engine"
        return engine.source.classify(exc).value

    return kind


def presented_events(engine: Engine) -> Callable[[Callable[[Event], None]],
                                                   Callable[[], None]]:
    """The engine's bus as windows see it: each changed job with its view."""
    def subscribe(handler: Callable[[Event], None]) -> Callable[[], None]:
        def on_event(event: Event) -> None:
            if isinstance(event, JobChanged):
                event = replace(event, job=present_job(engine, event.job))
            handler(event)

        return engine.events.subscribe(on_event)

    return subscribe


def serve_engine(engine: Engine, data_dir: Path, *, provider: str,
                 on_shutdown: Callable[[bool], None], settings_source: Path,
                 role: str) -> EngineChannel:
    """Open the channel for this engine (the caller holds its instance lock). ``role``:
    "console" (an engine a window started and steers: it takes the window's settings and
    sessions) or "worker" (a headless worker's: a window only watches and asks)."""
    paths: ChannelPaths = channel_paths(data_dir, engine.source.key, engine.instance)
    channel = EngineChannel(
        paths, engine_handlers(engine, on_shutdown=on_shutdown,
                               settings_source=settings_source,
                               keeps_settings_file=role != "console"),
        presented_events(engine),
        info={"server": engine.source.key, "instance": engine.instance,
              "provider": provider, "data_dir": str(data_dir), "role": role,
              "settings_file": str(settings_source), "pid": os.getpid(),
              "presentation": to_wire(engine.source.presentation)},
        error_kind=error_kind(engine))
    publisher = StatusPublisher(engine)
    channel.on_close.append(publisher.stop)
    channel.start()
    publisher.start()
    return channel
