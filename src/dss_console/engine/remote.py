"""A window's handle on an engine running in another process, over the local channel.

`RemoteEngine` offers the engine's operations as blocking calls (call them off the GUI
thread, as with a local engine) and republishes the engine's events on its own `events` bus,
so views subscribe the same way whichever process the engine lives in. When the engine goes
away (it stopped, or crashed) every waiting call fails with `EngineGoneError` and the
`on_lost` callbacks run once.

Qt-free.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from dss_console.core.presentation import ApprovalView, ServiceFigures
from dss_console.engine import wire
from dss_console.engine.channel import MAX_LINE, ChannelPaths, channel_paths
from dss_console.engine.engine import EngineError, ServiceView
from dss_console.engine.events import EngineStatus, Event, EventBus, JobSnapshot
from dss_console.engine.gate import ApprovalRule
from dss_console.engine.journal import OutboxItem

CALL_TIMEOUT = 120.0  # claims and uploads wait on the network inside the engine
GATE_PROTOCOL = 3  # the channel version that brought the operator's gate (channel.py)


class EngineGoneError(Exception):
    """The engine process is not there (any more)."""


class EngineCallError(Exception):
    """The engine refused or failed an operation; `kind` says how (transient, logged_out,
    gone, refused, protocol, ...)."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


def find_engine(data_dir: Path, server: str, instance: str) -> ChannelPaths | None:
    """The channel of the engine serving this triple, if one is listening."""
    paths = channel_paths(data_dir, server, instance)
    if not paths.socket.exists() or not paths.token.exists():
        return None
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(2.0)
        probe.connect(str(paths.socket))
    except OSError:
        return None  # a socket file left by an engine that died
    finally:
        probe.close()
    return paths


class RemoteEngine:
    def __init__(self, paths: ChannelPaths, *, timeout: float = 10.0):
        self.paths = paths
        self.events = EventBus()
        self._ids = itertools.count(1)
        self._pending: dict[int, Future[Any]] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._lost_callbacks: list[Callable[[str], None]] = []
        self._lost: str | None = None
        self._lost_event = threading.Event()
        try:
            token = paths.token.read_text().strip()
        except OSError as exc:
            raise EngineGoneError(f"cannot read the engine's token: {exc.strerror or exc}") \
                from None
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.settimeout(timeout)
            self._sock.connect(str(paths.socket))
        except OSError as exc:
            self._sock.close()
            raise EngineGoneError(f"the engine does not answer ({exc.strerror or exc})") \
                from None
        self._stream = self._sock.makefile("rb")
        self._send({"id": 0, "op": "hello", "token": token})
        try:
            reply = wire.loads(self._stream.readline(MAX_LINE) or b"{}")
        except (OSError, wire.WireError) as exc:
            self._sock.close()
            raise EngineGoneError(f"the engine did not greet: {exc}") from None
        if not reply.get("ok"):
            self._sock.close()
            raise EngineGoneError(str(reply.get("error") or "the engine refused this window"))
        self._sock.settimeout(None)
        self.info: dict[str, Any] = reply.get("result") or {}
        self._services: list[ServiceView] = []
        self.events.subscribe(self._keep_status)
        self._reader = threading.Thread(target=self._read, name="engine-channel", daemon=True)
        self._reader.start()
        self._status: EngineStatus = self.call("status")

    def _keep_status(self, event: Event) -> None:
        if isinstance(event, EngineStatus):
            self._status = event

    # -- plumbing ---------------------------------------------------------------------------
    def on_lost(self, callback: Callable[[str], None]) -> None:
        """`callback(reason)` runs once, on the channel's thread, when the engine goes."""
        with self._lock:
            lost = self._lost
            if lost is None:
                self._lost_callbacks.append(callback)
        if lost is not None:
            callback(lost)

    @property
    def lost(self) -> str | None:
        return self._lost

    def wait_lost(self, timeout: float | None = None) -> bool:
        """Block until the engine has gone (True) or `timeout` passed (False)."""
        return self._lost_event.wait(timeout)

    def _send(self, message: dict[str, Any]) -> None:
        data = wire.dumps(message)
        with self._send_lock:
            self._sock.sendall(data)

    def call(self, op: str, timeout: float = CALL_TIMEOUT, **args: Any) -> Any:
        if self._lost is not None:
            raise EngineGoneError(self._lost)
        request_id = next(self._ids)
        future: Future[Any] = Future()
        with self._lock:
            self._pending[request_id] = future
        try:
            self._send({"id": request_id, "op": op, "args": args})
        except OSError as exc:
            self._gone(f"the engine connection broke ({exc.strerror or exc})")
        try:
            return future.result(timeout)
        except FutureTimeout:
            raise EngineGoneError(f"the engine did not answer {op} within {timeout:.0f} s") \
                from None
        finally:
            with self._lock:
                self._pending.pop(request_id, None)

    def _read(self) -> None:
        reason = "the engine stopped"
        try:
            for line in self._stream:
                try:
                    message = wire.loads(line)
                except wire.WireError:
                    continue
                if "event" in message:
                    self.events.publish(message["event"])
                    continue
                call_id = message.get("id")
                with self._lock:
                    future = self._pending.get(call_id) if isinstance(call_id, int) else None
                if future is None or future.done():
                    continue
                if message.get("ok"):
                    future.set_result(message.get("result"))
                elif message.get("kind") == "engine":
                    future.set_exception(EngineError(str(message.get("error"))))
                else:
                    future.set_exception(EngineCallError(str(message.get("error")),
                                                         str(message.get("kind"))))
        except (OSError, ValueError):
            reason = "the connection to the engine broke"
        self._gone(reason)

    def _gone(self, reason: str) -> None:
        with self._lock:
            if self._lost is not None:
                return
            self._lost = reason
            self._lost_event.set()
            pending = list(self._pending.values())
            callbacks = list(self._lost_callbacks)
        for future in pending:
            if not future.done():
                future.set_exception(EngineGoneError(reason))
        for callback in callbacks:
            callback(reason)

    @property
    def steered_by_console(self) -> bool:
        """Whether a window started this engine and steers it (takes the window's settings and
        sessions), rather than a headless worker a window only watches. An engine of
        protocol version 1 named its role "kind"."""
        return self.info.get("role", self.info.get("kind")) == "console"

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._reader.join(timeout=5)

    # -- the engine's operations ------------------------------------------------------------
    def jobs(self, limit: int | None = None) -> list[JobSnapshot]:
        return self.call("jobs", limit=limit)

    def job(self, job_id: int) -> JobSnapshot:
        return self.call("job", job_id=job_id)

    def services(self) -> list[ServiceView]:
        self._services = self.call("services")
        return list(self._services)

    def refresh_services(self) -> list[ServiceView]:
        self._services = self.call("refresh_services")
        return list(self._services)

    def ready_counts(self) -> dict[str, int]:
        """Work waiting on the server per service (asked by the engine now)."""
        return dict(self.call("ready_counts"))

    def service_figures(self) -> dict[str, ServiceFigures]:
        return dict(self.call("service_figures"))

    def status(self, timeout: float = CALL_TIMEOUT) -> EngineStatus:
        self._status = self.call("status", timeout=timeout)
        return self._status

    # What a window reads often, from the engine's last status (no round trip).
    @property
    def auto(self) -> bool:
        return self._status.auto

    def busy_job_ids(self) -> set[int]:
        return set(self._status.busy)

    def idle_poll_completed(self) -> bool:
        return self._status.idle_poll_completed

    def waiting_count(self) -> int:
        """Jobs waiting for a person's decision (approval or release)."""
        return self._status.waiting

    @property
    def connection_state(self) -> str:
        return self._status.connection

    def known_services(self) -> list[ServiceView]:
        """The services as last listed (no round trip)."""
        return list(self._services)

    def settings_toml(self) -> str:
        return self.call("settings")

    def outbox_items(self, job_id: int) -> list[OutboxItem]:
        return self.call("outbox_items", job_id=job_id)

    def claim_next(self, service_hashes: Sequence[str] | None = None, *,
                   run: bool = False) -> JobSnapshot | None:
        return self.call("claim_next", service_hashes=list(service_hashes or []) or None,
                         run=run)

    def run_job(self, job_id: int) -> None:
        self.call("run_job", job_id=job_id)

    def retry_job(self, job_id: int) -> None:
        self.call("retry_job", job_id=job_id)

    def cancel_job(self, job_id: int, message: str | None = None) -> None:
        self.call("cancel_job", job_id=job_id, message=message)

    def fail_job(self, job_id: int, message: str) -> None:
        self.call("fail_job", job_id=job_id, message=message)

    def upload_result(self, job_id: int, workspace: str | Path) -> None:
        self.call("upload_result", job_id=job_id, workspace=str(workspace))

    # -- the operator's gate (engine/decisions.py) -------------------------------------------
    @property
    def protocol(self) -> int:
        """The engine's channel protocol version (1 when its hello did not say)."""
        version = self.info.get("version")
        return version if isinstance(version, int) else 1

    def _gate_call(self, op: str, **args: Any) -> Any:
        if self.protocol < GATE_PROTOCOL:
            raise EngineError(f"this worker is older (channel protocol {self.protocol}) and has "
                              "no approvals: restart it with this version of dss-console")
        return self.call(op, **args)

    def waiting_jobs(self) -> list[ApprovalView]:
        """Every job waiting for a decision, oldest first (no facts or preview)."""
        return list(self._gate_call("waiting_jobs"))

    def approval(self, job_id: int) -> ApprovalView:
        """What a waiting job is: facts before its run, the preview of a held result. Its
        local-only values are for this machine's operator: never log or export them."""
        found: ApprovalView = self._gate_call("approval", job_id=job_id)
        return found

    def approve_job(self, job_id: int, via: str = "window", *, always: bool = False,
                    until: str = "", any_requester: bool = False) -> ApprovalRule | None:
        """Run a waiting job; ``always``: and add a rule approving its requester (or
        ``any_requester``) for its service from now on (until the day ``until``)."""
        if not always:
            self._gate_call("approve_job", job_id=job_id, via=via)
            return None
        made: ApprovalRule | None = self._gate_call(
            "approve_job", job_id=job_id, via=via, always=True, until=until,
            any_requester=any_requester)
        return made

    def reject_job(self, job_id: int, message: str, via: str = "window") -> None:
        self._gate_call("reject_job", job_id=job_id, message=message, via=via)

    def release_job(self, job_id: int, via: str = "window") -> None:
        self._gate_call("release_job", job_id=job_id, via=via)

    def approval_rules(self) -> list[ApprovalRule]:
        return list(self._gate_call("approval_rules"))

    def add_rule(self, service: str, requester: str = "", gate: str = "run", until: str = "",
                 via: str = "window") -> ApprovalRule:
        """"Always approve": kept in the engine's settings file; its ledger names who."""
        made: ApprovalRule = self._gate_call("add_rule", service=service, requester=requester,
                                             gate=gate, until=until, via=via)
        return made

    def revoke_rule(self, rule_id: str, via: str = "window") -> ApprovalRule:
        gone: ApprovalRule = self._gate_call("revoke_rule", rule_id=rule_id, via=via)
        return gone

    def set_auto(self, enabled: bool, service_hash: str | None = None) -> None:
        self.call("set_auto", enabled=enabled, service_hash=service_hash)
        if service_hash is None:
            self.status()  # so `auto` says so at once, not at the next status event

    def resume_service(self, service_hash: str) -> None:
        self.call("resume_service", service_hash=service_hash)

    def update_settings(self, toml: str) -> None:
        self.call("update_settings", toml=toml)

    def stop_claiming(self) -> None:
        self.call("stop_claiming")

    def use_session(self, session_id: str) -> None:
        """Hand the engine the new session after a login (the old one expired)."""
        self.call("use_session", session_id=session_id)

    def watch(self, job_ids: Sequence[int]) -> None:
        """Live output of these jobs (only); the rest stays on disk."""
        self.call("watch", job_ids=list(job_ids))

    def shutdown(self, *, drain: bool = False, running: str | None = None) -> None:
        """Ask the engine process to stop (finishing running jobs first with `drain`;
        `running`: "resume" or "fail" the jobs it stops, else as its settings say)."""
        if running is None:
            self.call("shutdown", drain=drain)
        else:
            self.call("shutdown", drain=drain, running=running)
