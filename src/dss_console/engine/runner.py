"""A service's command: its template, placeholders and environment, and the checks made
before a job of it is claimed or started.

The command is a template split into argv with shlex, never run through a shell; the
placeholders are replaced inside each word. Running it is an executor's business
(executors/local, executors/slurm); what it reports goes through core/output.py.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import string
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dss_console.core.executor import StartError
from dss_console.core.output import SHIM_DIR

__all__ = [
    "PLACEHOLDERS",
    "CommandSpec",
    "CommandStartError",
    "JobPaths",
    "check_program",
    "check_template",
    "command_environment",
    "expand_command",
    "expand_word",
    "placeholder_values",
    "preflight",
]


PLACEHOLDERS = ("ticket", "service", "service_hash", "workdir", "inputs", "workspace", "result")

SHIM_DIR_PROGRAM = "itksnap-wt"


# -- public types -----------------------------------------------------------------------


@dataclass(frozen=True)
class CommandSpec:
    """How to run a service's command."""

    template: str  # e.g. "bash /opt/ashs/service_ashs.sh {ticket} {workdir} {workspace} {result}"
    timeout: float | None = None  # seconds
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None  # default: the work dir; relative: inside the work dir
    nice: int = 0  # added to the command's CPU niceness (its whole process group)
    itksnap_wt: bool = False  # an `itksnap-wt` (dss-console wt) first on the command's PATH
    # A source that builds the command itself (vantage6): run exactly this argv with exactly
    # this environment — no template, no os.environ, no DSS_* variables (the official v6
    # wrapper base32-decodes every variable it sees). `template` is then only for display.
    argv: Sequence[str] | None = None
    exact_env: Mapping[str, str] | None = None


@dataclass(frozen=True)
class JobPaths:
    ticket_id: int
    service_name: str
    service_hash: str
    workdir: Path  # {workdir}
    input_dir: Path  # {inputs}
    workspace: Path | None  # {workspace}: the input .itksnap; None expands to ""
    result: Path  # {result}: the result .itksnap the command must write
    engine_dir: Path  # the engine's own files: events, hook script, abort file, logs


class CommandStartError(StartError):
    """The command could not be started; the message says why in words."""


# -- templates and environment ----------------------------------------------------------


def placeholder_values(paths: JobPaths) -> dict[str, str]:
    return {
        "ticket": str(paths.ticket_id),
        "service": paths.service_name,
        "service_hash": paths.service_hash,
        "workdir": str(paths.workdir),
        "inputs": str(paths.input_dir),
        "workspace": "" if paths.workspace is None else str(paths.workspace),
        "result": str(paths.result),
    }


def _split(template: str) -> list[str]:
    try:
        words = shlex.split(template, posix=True)
    except ValueError as exc:
        raise CommandStartError(f"cannot split the command into words: {exc} "
                                f"(check the quotes in {template!r})") from None
    if not words:
        raise CommandStartError("empty command")
    return words


def expand_word(word: str, values: Mapping[str, str]) -> str:
    # str.format's brace rules, so the settings check (string.Formatter) and the runner
    # agree on what is a placeholder; but no attribute access, index or format spec.
    try:
        parts = list(string.Formatter().parse(word))
    except ValueError as exc:
        raise CommandStartError(f"bad braces in {word!r} ({exc}); write {{{{ and }}}} for "
                                "literal braces") from None
    out = []
    for literal, name, spec, conversion in parts:
        out.append(literal)
        if name is None:
            continue
        if name not in values:
            known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            raise CommandStartError(f"unknown placeholder {{{name}}} in {word!r} (known: "
                                    f"{known}; write {{{{ and }}}} for literal braces)")
        if spec or conversion:
            raise CommandStartError(f"placeholder {{{name}}} in {word!r} takes no format "
                                    "spec or conversion")
        out.append(values[name])
    return "".join(out)


def expand_command(template: str, paths: JobPaths) -> list[str]:
    """The argv of a command template: split into words first, then placeholders are
    replaced inside each word, so a value with spaces stays one word."""
    values = placeholder_values(paths)
    argv = [expand_word(word, values) for word in _split(template)]
    if not argv[0]:
        raise CommandStartError("empty command (the program name expands to nothing)")
    return argv


def check_template(template: str) -> None:
    """Raise CommandStartError if a template cannot be expanded (for settings dialogs)."""
    dummy = dict.fromkeys(PLACEHOLDERS, "x")
    for word in _split(template):
        expand_word(word, dummy)


def preflight(spec: CommandSpec) -> str | None:
    """Why a command cannot start on any ticket (a bad template, a program that is not on
    PATH or not executable), in words; None when it may start. Checked before claiming, so
    a broken configuration claims nothing. What depends on the ticket (the working
    directory, a program path relative to it) is found when the job starts."""
    try:
        check_template(spec.template)
        program = _split(spec.template)[0]
    except CommandStartError as exc:
        return str(exc)
    if "{" in program or (spec.itksnap_wt and program == SHIM_DIR_PROGRAM):
        return None
    if os.sep in program or (os.altsep and os.altsep in program):
        if not os.path.isabs(program):
            return None
        try:
            check_program(program, Path("/"), {})
        except CommandStartError as exc:
            return str(exc)
        return None
    search = str(spec.env.get("PATH", os.environ.get("PATH", os.defpath)))
    if shutil.which(program, path=search) is None:
        return f"command not found: {program} (not on the command's PATH)"
    return None


_ENGINE_VARIABLES = (
    "DSS_TICKET_ID", "DSS_SERVICE_NAME", "DSS_SERVICE_HASH", "DSS_WORKDIR", "DSS_INPUT_DIR",
    "DSS_INPUT_WORKSPACE", "DSS_RESULT_WORKSPACE", "DSS_EVENTS", "DSS_HOOK", "DSS_ABORT_FILE",
)


def command_environment(paths: JobPaths, spec: CommandSpec, hook_path: Path,
                        events_path: Path, abort_path: Path,
                        base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The command's environment: ``base`` (default: ours) + the service's ``env`` + the
    job's DSS_* variables (which win over both)."""
    env = dict(os.environ if base is None else base)
    # Our own settings variables are no business of the command's (and a future one might
    # carry something private).
    for name in [n for n in env if n.startswith("DSS_CONSOLE_")]:
        del env[name]
    if base is None and getattr(sys, "frozen", False):
        _undo_bundle_library_path(env)
    job_vars = {
        "DSS_TICKET_ID": str(paths.ticket_id),
        "DSS_SERVICE_NAME": paths.service_name,
        "DSS_SERVICE_HASH": paths.service_hash,
        "DSS_WORKDIR": str(paths.workdir),
        "DSS_INPUT_DIR": str(paths.input_dir),
        "DSS_INPUT_WORKSPACE": "" if paths.workspace is None else str(paths.workspace),
        "DSS_RESULT_WORKSPACE": str(paths.result),
        "DSS_EVENTS": str(events_path),
        "DSS_HOOK": str(hook_path),
        "DSS_ABORT_FILE": str(abort_path),
    }
    # `${DSS_HOOK}` in a service's env value means the job's hook (ASHS_HOOK_SCRIPT needs it);
    # nothing else is expanded, there being no shell.
    env.update({str(k): _DSS_REFERENCE.sub(lambda m: job_vars.get(m[1] or m[2], m[0]), str(v))
                for k, v in spec.env.items()})
    env.update(job_vars)
    if spec.itksnap_wt:
        # After the service's env, so a PATH set there still finds the shim first.
        shim_dir = str(hook_path.parent / SHIM_DIR)
        env["PATH"] = os.pathsep.join(p for p in (shim_dir, env.get("PATH", "")) if p)
    return env


_DSS_REFERENCE = re.compile(r"\$\{(DSS_[A-Z_]+)\}|\$(DSS_[A-Z_]+)")


def _undo_bundle_library_path(env: dict[str, str]) -> None:
    # A PyInstaller bundle points the loader at its own libraries and keeps the original in
    # *_ORIG; the command (bash, ITK tools...) must get the machine's, not ours.
    for name in ("LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH"):
        original = env.pop(name + "_ORIG", None)
        if original is not None:
            env[name] = original
        else:
            env.pop(name, None)


# -- the program --------------------------------------------------------------------------


def check_program(program: str, cwd: Path, env: Mapping[str, str]) -> None:
    """Refuse a program that cannot run, with words, before the OS says ENOENT."""
    if os.sep in program or (os.altsep and os.altsep in program):
        path = Path(cwd, program)  # relative to the child's cwd, like exec after chdir
        if not path.exists():
            raise CommandStartError(f"command not found: {program} (no such file)")
        if path.is_dir():
            raise CommandStartError(f"not executable: {program} is a directory")
        if not os.access(path, os.X_OK):
            raise CommandStartError(f"not executable: {program} (no execute permission; "
                                    "chmod +x it, or run it with bash/python in the command)")
        return
    search = env.get("PATH", os.defpath)
    if shutil.which(program, path=search) is None:
        hint = f"; for the file in {cwd}, write ./{program}" if Path(cwd, program).exists() \
            else ""
        raise CommandStartError(f"command not found: {program} (not on the command's PATH: "
                                f"{search}{hint})")
