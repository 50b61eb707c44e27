"""The researcher of the vantage6 sandbox: posts demo tasks for the console to run.

The official ``vantage6-client`` (``UserClient``) in the sandbox's own venv, as one child
process driven over JSON lines on stdin/stdout; this module is Qt-free and blocking (the
window calls it off its thread). The child ends when its stdin closes, so it never outlives
the console, even one that is killed.

    researcher = DemoResearcher.for_sandbox(sandbox)   # the plain collaboration "demo"
    researcher.start()
    task_ids = researcher.post_demo_tasks(3)
    researcher.run_status(run_id)                       # "pending", ..., "completed"
    researcher.close()
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import threading
from pathlib import Path
from typing import IO, Any

from dss_console.sources.v6.sandbox import DEMO_IMAGE, V6Sandbox

DEMO_METHOD = "column_mean"  # the demo algorithm's partial function (resources/v6_demo)
DEMO_COLUMN = "age"          # a column of resources/v6_demo/demo.csv
FINISHED = frozenset({"completed", "crashed", "failed", "start failed",
                      "non-existing Docker image", "killed by user", "not allowed",
                      "unknown error"})

def agent_script(helpers: str, login: str, task_arguments: str, results: str) -> str:
    '''A researcher child's script (see DemoResearcher.agent), its parts that differ by
    server generation given: ``helpers`` defines ``reply(ok, value=None, error=None)``,
    writing one JSON line to ``out``; ``login`` (indented 4) makes the logged-in ``client``
    from ``cfg``; ``task_arguments`` (indented 16) the ``client.task.create`` arguments after
    organizations, name and image; ``results`` (indented 12) sets ``value`` for op
    ``results``.'''
    return (_AGENT_HEAD + helpers + _AGENT_LOGIN + login + _AGENT_LOOP + task_arguments
            + _AGENT_STATUS + results + _AGENT_END)


_AGENT_HEAD = r'''
import json, os, sys, time
out = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)                       # the client's prints must not corrupt the protocol
'''
_AGENT_LOGIN = r'''try:
    from vantage6.client import UserClient
    cfg = json.loads(sys.stdin.readline())   # secrets on stdin, never in the argv
'''
_AGENT_LOOP = r'''except Exception as exc:
    reply(False, error=f"{type(exc).__name__}: {exc}")
    sys.exit(1)
reply(True, "ready")
for line in sys.stdin:
    cmd = json.loads(line)
    op, args = cmd["op"], cmd.get("args", {})
    try:
        if op == "create_task":
            task = client.task.create(
                organizations=args["organizations"], name=args["name"], image=args["image"],
'''
_AGENT_STATUS = r'''            value = {"id": task["id"]}
        elif op in ("task_status", "run_status"):
            kind = op.split("_")[0]
            item = (client.task.get(args["task_id"]) if kind == "task"
                    else client.run.get(args["run_id"]))
            if not isinstance(item, dict) or "status" not in item:
                msg = item.get("msg") if isinstance(item, dict) else item
                raise LookupError(f"no such {kind} ({msg})")
            value = item["status"]
        elif op == "results":
'''
_AGENT_END = r'''        else:
            raise ValueError(f"unknown op {op}")
        reply(True, value)
    except Exception as exc:
        reply(False, error=f"{type(exc).__name__}: {exc}")
'''

_AGENT = agent_script(r'''def reply(ok, value=None, error=None):
    out.write(json.dumps({"ok": ok, "value": value, "error": error}) + "\n")
''', r'''    client = UserClient(cfg["host"], cfg["port"], cfg["api_path"], log_level="warn")
    client.authenticate(cfg["username"], cfg["password"])
    client.setup_encryption(cfg.get("key_file"))
    client.setup_collaboration(cfg["collaboration_id"])
''', r'''                description=args.get("description", ""),
                input_={"method": args["method"], "kwargs": args.get("kwargs", {})},
                databases=args.get("databases", [{"label": "default"}]))
''', r'''            results = client.result.from_task(args["task_id"])
            results = results.get("data", results) if isinstance(results, dict) else results
            # 4.15.2's UserClient hands back the decrypted JSON text, not the object.
            value = [json.loads(r["result"]) if isinstance(r.get("result"), str)
                     else r.get("result") for r in results]
''')


class DemoResearcherError(RuntimeError):
    """The researcher process failed; the message says why in words."""


class DemoResearcher:
    """The official UserClient, logged in as the sandbox's researcher in one collaboration."""

    # The child's script: reads its configuration (secrets included) as the first line of
    # its stdin, answers "ready", then one JSON line per call (a later server generation's
    # researcher brings its own).
    agent = _AGENT

    def __init__(self, python: Path, port: int, username: str, password: str,
                 collaboration_id: int, organizations: list[int], *,
                 key_file: Path | None = None, log_file: Path | None = None,
                 host: str = "http://127.0.0.1", api_path: str = "/api") -> None:
        self.python = python
        self.organizations = list(organizations)
        self.log_file = log_file
        self._config = {"host": host, "port": port, "api_path": api_path,
                        "username": username, "password": password,
                        "collaboration_id": collaboration_id,
                        "key_file": str(key_file) if key_file else None}
        self._proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str] = queue.Queue()
        self._lock = threading.Lock()
        self._log: IO[bytes] | None = None
        self.posted: list[int] = []

    @classmethod
    def for_sandbox(cls, sandbox: V6Sandbox, collaboration: str = "demo") -> DemoResearcher:
        """The researcher in ``collaboration``, posting to the data station's node."""
        seed = sandbox.info["seed"]
        collab = seed["collaborations"][collaboration]
        username, password = sandbox.researcher
        assert sandbox.python is not None and sandbox.server is not None
        return cls(sandbox.python, sandbox.server.port, username, password, collab["id"],
                   [sandbox.org_id("station")],
                   key_file=sandbox.key_file("research") if collab["encrypted"] else None,
                   log_file=sandbox.data_dir / "logs" / f"researcher-{collaboration}.log")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 90.0) -> DemoResearcher:
        """Start the child and log in; DemoResearcherError (with its log's tail) on failure."""
        if self._proc is not None:
            raise DemoResearcherError("the researcher is already started")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PYTHON", "V6_", "VANTAGE6_"))}
        env["PYTHONUNBUFFERED"] = "1"
        stderr: Any = subprocess.DEVNULL
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_file, "ab")  # noqa: SIM115 - owned until close()
            stderr = self._log
        try:
            self._proc = subprocess.Popen(
                [str(self.python), "-c", self.agent], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=stderr, text=True, bufsize=1, env=env,
                start_new_session=True)  # a Ctrl-C in the terminal is the console's to handle
        except OSError as exc:
            self.close()
            raise DemoResearcherError(f"cannot start the researcher ({self.python}): "
                                      f"{exc}") from None
        threading.Thread(target=self._read, args=(self._proc.stdout,), daemon=True,
                         name="v6-demo-researcher").start()
        try:
            with self._lock:
                self._send(self._config)
                self._answer("log in", timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _read(self, stream: IO[str]) -> None:
        with contextlib.suppress(OSError, ValueError), stream:
            for line in stream:
                self._lines.put(line)
        self._lines.put("")  # end of output: the child is gone

    def _send(self, message: dict[str, Any]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps(message) + "\n")
            self._proc.stdin.flush()
        except OSError as exc:
            raise DemoResearcherError(f"the researcher process is gone ({exc}){self._tail()}") \
                from None

    def _answer(self, what: str, timeout: float) -> Any:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise DemoResearcherError(f"the researcher did not answer ({what}) within "
                                      f"{timeout:.0f} s{self._tail()}") from None
        if not line:
            self._lines.put("")  # every later call sees the end, too
            code = self._proc.poll() if self._proc is not None else None
            raise DemoResearcherError(f"the researcher process ended (exit code {code}) "
                                      f"during {what}{self._tail()}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise DemoResearcherError(f"researcher, {what}: {reply.get('error')}")
        return reply.get("value")

    def _tail(self, max_bytes: int = 2000) -> str:
        if self.log_file is None:
            return ""
        try:
            with open(self.log_file, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - max_bytes))
                tail = fh.read().decode("utf-8", errors="replace").strip()
        except OSError:
            return ""
        return f"; its log ({self.log_file}) ends:\n{tail}" if tail else ""

    def call(self, op: str, timeout: float = 60.0, **args: Any) -> Any:
        with self._lock:
            if self._proc is None:
                raise DemoResearcherError("the researcher is not started")
            self._send({"op": op, "args": args})
            return self._answer(op.replace("_", " "), timeout)

    # -- what the sandbox needs -------------------------------------------------------

    def create_task(self, method: str = DEMO_METHOD, kwargs: dict[str, Any] | None = None, *,
                    name: str | None = None, image: str = DEMO_IMAGE) -> int:
        """A task for the data station's node; its id."""
        if kwargs is None:
            kwargs = {"column": DEMO_COLUMN} if method == DEMO_METHOD else {}
        task = self.call("create_task", image=image, method=method, kwargs=kwargs,
                         organizations=self.organizations, name=name or f"demo {method}",
                         description="posted by the dss-console sandbox")
        task_id = int(task["id"])
        self.posted.append(task_id)
        return task_id

    def post_demo_tasks(self, count: int) -> list[int]:
        """``count`` tasks of the demo algorithm (the mean of a column of the demo CSV)."""
        return [self.create_task(name=f"demo {DEMO_METHOD} {i + 1}/{count}")
                for i in range(count)]

    def task_status(self, task_id: int) -> str:
        return str(self.call("task_status", task_id=task_id))

    def run_status(self, run_id: int) -> str:
        return str(self.call("run_status", run_id=run_id))

    def results(self, task_id: int) -> list[Any]:
        return list(self.call("results", task_id=task_id))

    def close(self, grace: float = 5.0) -> None:
        """End the child (closing its stdin ends its loop); idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(OSError):
                if proc.stdin is not None:
                    proc.stdin.close()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> DemoResearcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
