"""The job hook, ``$DSS_HOOK``: how a command (or anything it starts, on this machine or
on a cluster node sharing the file system) reports to the engine without a pipe.

    "$DSS_HOOK" progress START END VALUE     (or: progress VALUE)
    "$DSS_HOOK" info|warning|error MESSAGE
    "$DSS_HOOK" attach DESCRIPTION FILE [MIME-TYPE]

This is the argument order of ASHS's hook script, so ``ASHS_HOOK_SCRIPT=$DSS_HOOK`` works.
Each call appends one JSON line to the file named by ``$DSS_EVENTS``; the engine tails it.
Like the ASHS hook, a call fails (exit 255) once the ticket is no longer being processed,
so a ``set -e`` script stops there.

This module runs once per hook call, possibly thousands of times per job: it imports only
the standard library modules it needs, and nothing of dss_console beyond this file.
"""

from __future__ import annotations

import os
import sys
import time

# typing and pathlib each cost about as much as this whole module; annotations only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: appends with O_APPEND only
    LOCKS = False
else:
    LOCKS = True

try:
    # The json package would pull in re (a third of this module's start-up); its C string
    # quoting is all a record needs.
    from _json import encode_basestring_ascii as _json_string
except ImportError:  # pragma: no cover - CPython always has _json
    from json import dumps as _json_string

__all__ = ["HOOK_SCRIPT_NAME", "USAGE", "hook_command", "hook_main", "write_hook_script"]

HOOK_SCRIPT_NAME = "hook"
EXIT_USAGE = 2
EXIT_FAILED = 1
EXIT_ABORT = 255  # what the ASHS hook returns when the ticket left `claimed`

USAGE = (
    "usage: $DSS_HOOK progress START END VALUE | progress VALUE\n"
    "       $DSS_HOOK info|warning|error MESSAGE\n"
    "       $DSS_HOOK attach DESCRIPTION FILE [MIME-TYPE]"
)


def _usage_problem(args: Sequence[str]) -> str | None:
    """What is wrong with a call, or None. Only the shape is checked here; the engine
    checks the rest (ranges, whether the file is inside the work dir)."""
    if not args:
        return "no verb given"
    verb, rest = args[0].lower(), args[1:]
    if verb == "progress":
        if len(rest) not in (1, 3):
            return "progress takes START END VALUE (or just VALUE)"
        for text in rest:
            try:
                number = float(text)
            except ValueError:
                return f"progress needs numbers, not {text!r}"
            if number != number or number in (float("inf"), float("-inf")):
                return f"progress needs finite numbers, not {text!r}"
        return None
    if verb in ("info", "warning", "error"):
        return None if rest else f"{verb} needs a message"
    if verb == "attach":
        return None if len(rest) in (2, 3) else "attach takes DESCRIPTION FILE [MIME-TYPE]"
    return f"unknown verb {args[0]!r}"


def _abort_reason(abort_file: str) -> str | None:
    try:
        with open(abort_file, encoding="utf-8", errors="replace") as handle:
            return handle.read(2000).strip() or "stopped"
    except FileNotFoundError:
        return None
    except OSError as exc:  # it exists but cannot be read: still a stop signal
        return f"stopped ({exc.strerror})"


def _append_line(path: str, data: bytes) -> None:
    # O_APPEND makes each write land at the end even with many writers; the lock also
    # covers file systems where O_APPEND is not atomic across hosts (NFS), and the whole
    # line goes in one write so readers never see half of it.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0))
    try:
        if LOCKS:
            fcntl.flock(fd, fcntl.LOCK_EX)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    finally:
        os.close(fd)  # also releases the lock


def hook_main(argv: Sequence[str]) -> int:
    """One hook call. 0: recorded; 2: misuse; 255: the ticket is no longer being processed;
    1: the call could not be recorded."""
    args = [str(arg) for arg in argv]
    problem = _usage_problem(args)
    if problem is not None:
        print(f"dss hook: {problem}\n{USAGE}", file=sys.stderr)
        return EXIT_USAGE
    abort_file = os.environ.get("DSS_ABORT_FILE")
    if abort_file:
        reason = _abort_reason(abort_file)
        if reason is not None:
            print(f"dss hook: the ticket is no longer being processed ({reason}) - aborting",
                  file=sys.stderr)
            return EXIT_ABORT
    events = os.environ.get("DSS_EVENTS")
    if not events:
        print("dss hook: DSS_EVENTS is not set; call the hook through the job's hook script "
              "($DSS_HOOK), which knows where the job's events file is", file=sys.stderr)
        return EXIT_USAGE
    try:
        cwd: str | None = os.getcwd()
    except OSError:  # the caller's directory was removed
        cwd = None
    # ASCII-only JSON: undecodable file names (surrogate escapes) stay representable.
    cwd_json = "null" if cwd is None else _json_string(cwd)
    args_json = ", ".join(_json_string(arg) for arg in args)
    line = (f'{{"t": {time.time()!r}, "pid": {os.getpid()}, "cwd": {cwd_json}, '
            f'"args": [{args_json}]}}\n').encode("ascii")
    try:
        _append_line(events, line)
    except FileNotFoundError:
        print(f"dss hook: the job's events file {events} does not exist (the job has ended, "
              "or this machine does not share the job's work dir)", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"dss hook: cannot write to {events}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def hook_command() -> list[str]:
    """The argv that runs ``hook_main``: this interpreter in isolated mode (a cluster node's
    PYTHONPATH or PYTHONHOME must not break it), or the frozen app's hidden ``_hook`` verb."""
    if getattr(sys, "frozen", False):
        return [sys.executable, "_hook"]
    python = sys.executable
    if not python:  # embedded interpreters may not know their executable
        import shutil

        python = shutil.which("python3") or "python3"
    return [python, "-I", "-m", "dss_console.engine.hook"]


def write_hook_script(job_dir: Path, events_path: Path, abort_path: Path) -> Path:
    """Write ``<job_dir>/hook``, the executable behind ``$DSS_HOOK``, and return its path.

    A POSIX sh script rather than a program so that both ``"$DSS_HOOK" ...`` and ASHS's
    ``bash $ASHS_HOOK_SCRIPT ...`` work. It carries the job's file locations as defaults,
    so it also works in a cluster job that did not inherit the command's environment.
    """
    import shlex
    from pathlib import Path

    job_dir = Path(job_dir)
    events = os.path.abspath(events_path)
    abort = os.path.abspath(abort_path)
    command = " ".join(shlex.quote(word) for word in hook_command())
    script = (
        "#!/bin/sh\n"
        "# dss-console job hook. Usage:\n"
        + "".join(f"#   {line.strip()}\n" for line in USAGE.replace("usage: ", "").splitlines())
        # Defaults only: the environment wins, so the same script serves a command whose
        # environment was propagated and one (a cluster job) whose environment was not.
        + f'if [ -z "${{DSS_EVENTS:-}}" ]; then DSS_EVENTS={shlex.quote(events)}; fi\n'
        f'if [ -z "${{DSS_ABORT_FILE:-}}" ]; then DSS_ABORT_FILE={shlex.quote(abort)}; fi\n'
        "export DSS_EVENTS DSS_ABORT_FILE\n"
        f'exec {command} "$@"\n'
    )
    path = job_dir / HOOK_SCRIPT_NAME
    partial = job_dir / f".{HOOK_SCRIPT_NAME}.{os.getpid()}.tmp"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
    try:
        os.write(fd, script.encode("utf-8", errors="surrogateescape"))
    finally:
        os.close(fd)
    if os.name == "posix":
        os.chmod(partial, 0o700)  # the umask may have taken bits away
    # Replaced in one step: a command of an earlier run may be executing the old one.
    os.replace(partial, path)
    return path


if __name__ == "__main__":
    raise SystemExit(hook_main(sys.argv[1:]))
