"""Serving an engine on its local channel: which operations a window may ask for, and what
the engine tells every attached window about itself.

The operations are the engine's own methods (claim, run, cancel, fail, upload, retry, auto
mode, settings, resume) plus the read-only queries a window needs (jobs, services, the calls
sent for a job, status). Nothing else can be asked.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dss_console.engine.channel import ChannelPaths, EngineChannel, channel_paths
from dss_console.engine.engine import Engine, EngineError
from dss_console.engine.settings import parse_settings, settings_to_toml


def engine_status(engine: Engine) -> dict[str, Any]:
    """What a window shows about the engine besides its jobs."""
    return {
        "auto": engine.auto,
        "busy": sorted(engine.busy_job_ids()),
        "connection": engine.connection.state,
        "claims_in_flight": engine.claims_in_flight,
        "last_ready": engine.last_ready,
        "concurrency": engine.settings.concurrency,
        "active": engine.active_count(),
        "owed": engine.outbox.owed(),
    }


def engine_handlers(engine: Engine, *, on_shutdown: Callable[[bool], None],
                    settings_source: Path) -> dict[str, Callable[..., Any]]:
    def update_settings(toml: str) -> None:
        settings = parse_settings(toml, settings_source)
        # Who the engine is and where it works stay as started: they name its journal,
        # its lock and this channel.
        settings.instance = engine.settings.instance
        settings.workroot = engine.settings.workroot
        engine.update_settings(settings)

    def shutdown(drain: bool = False) -> None:
        on_shutdown(bool(drain))

    return {
        "jobs": lambda limit=None: engine.jobs(limit=limit),
        "job": lambda job_id: engine.job(int(job_id)),
        "services": engine.services,
        "refresh_services": engine.refresh_services,
        "status": lambda: engine_status(engine),
        "settings": lambda: settings_to_toml(engine.settings),
        "outbox_items": lambda job_id: engine.journal.outbox_items(int(job_id)),
        "claim_next": lambda service_hashes=None, run=False: engine.claim_next(
            service_hashes, run=bool(run)),
        "run_job": lambda job_id: engine.run_job(int(job_id)),
        "retry_job": lambda job_id: engine.retry_job(int(job_id)),
        "cancel_job": lambda job_id, message=None: engine.cancel_job(int(job_id), message),
        "fail_job": lambda job_id, message: engine.fail_job(int(job_id), str(message)),
        "upload_result": lambda job_id, workspace: engine.upload_result(int(job_id),
                                                                        str(workspace)),
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
        return engine.source.classify(exc)

    return kind


def serve_engine(engine: Engine, data_dir: Path, *, provider: str,
                 on_shutdown: Callable[[bool], None], settings_source: Path,
                 kind: str) -> EngineChannel:
    """Open the channel for this engine (the caller holds its instance lock)."""
    paths: ChannelPaths = channel_paths(data_dir, engine.source.key, engine.instance)
    channel = EngineChannel(
        paths, engine_handlers(engine, on_shutdown=on_shutdown,
                               settings_source=settings_source),
        engine.events.subscribe,
        info={"server": engine.source.key, "instance": engine.instance,
              "provider": provider, "data_dir": str(data_dir), "kind": kind},
        error_kind=error_kind(engine))
    channel.start()
    return channel
