"""How a DSS service's command runs: its ``[services]`` template with the ticket's
placeholders, the service's environment with the job's ``DSS_*`` variables, its timeout and
working directory, and the ``itksnap-wt`` shim when the service asks for it. One builder for a
claimed ticket (:meth:`DssSource.command_spec`), the engine's preflight and the window's dry
run, so a dry run runs what a real ticket would.

The template is split into argv with shlex, never run through a shell; the placeholders are
replaced inside each word, so a value with spaces stays one word.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dss_console.core.command import CommandSpec, CommandStartError, JobPaths, fill_in
from dss_console.core.output import ProgressChannel
from dss_console.engine.settings import ServiceCommand
from dss_console.engine.settings_reader import PLACEHOLDERS

__all__ = [
    "PLACEHOLDERS",
    "SHIM_DIR",
    "check_template",
    "command_spec",
    "expand_command",
    "expand_word",
    "job_variables",
    "placeholder_values",
    "preflight_spec",
]

SHIM_DIR = "bin"  # in the engine dir: where the itksnap-wt shim goes
SHIM_PROGRAM = "itksnap-wt"


# -- the template -------------------------------------------------------------------------


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
    """One word with its placeholders replaced (``values``: :func:`placeholder_values`)."""
    return fill_in(word, values)


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


# -- the environment ----------------------------------------------------------------------


def job_variables(paths: JobPaths) -> dict[str, str]:
    """The ``DSS_*`` variables of a job: its ticket, its files, and its progress channel
    (the hook, the events file it appends to, the abort file)."""
    channel = ProgressChannel(paths.engine_dir)
    return {
        "DSS_TICKET_ID": str(paths.ticket_id),
        "DSS_SERVICE_NAME": paths.service_name,
        "DSS_SERVICE_HASH": paths.service_hash,
        "DSS_WORKDIR": str(paths.workdir),
        "DSS_INPUT_DIR": str(paths.input_dir),
        "DSS_INPUT_WORKSPACE": "" if paths.workspace is None else str(paths.workspace),
        "DSS_RESULT_WORKSPACE": str(paths.result),
        "DSS_EVENTS": str(channel.events_path),
        "DSS_HOOK": str(channel.hook_path),
        "DSS_ABORT_FILE": str(channel.abort_path),
    }


_DSS_REFERENCE = re.compile(r"\$\{(DSS_[A-Z_]+)\}|\$(DSS_[A-Z_]+)")


def _environment(command: ServiceCommand, paths: JobPaths) -> dict[str, str]:
    """The service's ``env`` + the job's DSS_* variables (which win over it)."""
    job_vars = job_variables(paths)
    # `${DSS_HOOK}` in a service's env value means the job's hook (ASHS_HOOK_SCRIPT needs it);
    # nothing else is expanded, there being no shell.
    env = {str(k): _DSS_REFERENCE.sub(lambda m: job_vars.get(m[1] or m[2], m[0]), str(v))
           for k, v in command.env.items()}
    env.update(job_vars)
    return env


@dataclass(frozen=True)
class _WriteShim:
    """Writes the ``itksnap-wt`` shim (the spec's setup: once the engine dir is ready)."""

    directory: Path

    def __call__(self) -> None:
        from dss_console.wt.shim import write_shim

        write_shim(self.directory)


# -- the specs ----------------------------------------------------------------------------


def command_spec(command: ServiceCommand, paths: JobPaths, *, nice: int = 0) -> CommandSpec:
    """How to run a service's command on a ticket. CommandStartError in words."""
    shim_dir = Path(paths.engine_dir) / SHIM_DIR
    return CommandSpec(
        argv=tuple(expand_command(command.command, paths)), display=command.command,
        env=_environment(command, paths),
        # After the service's env, so a PATH set there still finds the shim first.
        path_first=(str(shim_dir),) if command.itksnap_wt else (),
        cwd=Path(paths.workdir, command.cwd) if command.cwd else Path(paths.workdir),
        timeout=command.timeout, nice=nice, option_values=placeholder_values(paths),
        setup=_WriteShim(shim_dir) if command.itksnap_wt else None)


def preflight_spec(command: ServiceCommand) -> CommandSpec:
    """What the preflight checks before a claim: the program and the PATH it is found on (no
    program when it is only known per ticket: a placeholder in its name, or the shim). A
    template that cannot be expanded raises CommandStartError in words."""
    check_template(command.command)
    program = _split(command.command)[0]
    per_ticket = "{" in program or (command.itksnap_wt and program == SHIM_PROGRAM)
    return CommandSpec(argv=() if per_ticket else (program,), display=command.command,
                       env=dict(command.env))
