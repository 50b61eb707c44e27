"""A job's command as its source built it, ready for an executor to run.

A source turns a service's settings and a job's paths into a :class:`CommandSpec`: the exact
argv (never run through a shell), what the command's environment adds to the base one, its
working directory, timeout and niceness. What a source's command language means (DSS's
``{ticket}`` placeholders, its ``DSS_*`` variables, the ``itksnap-wt`` shim) is the source's
business (sources/dss/command.py); executors run the spec as it is. This module also has the
checks every executor makes of a program before it runs it, and the base environment a
command inherits from the engine.
"""

from __future__ import annotations

import os
import shutil
import string
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dss_console.core.executor import StartError

__all__ = [
    "CommandSpec",
    "CommandStartError",
    "JobPaths",
    "check_program",
    "command_environment",
    "fill_in",
    "preflight",
]


@dataclass(frozen=True)
class JobPaths:
    """Where a job's files are on this machine."""

    ticket_id: int
    service_name: str
    service_hash: str
    workdir: Path  # the job's own directory, the command's default working directory
    input_dir: Path  # what was fetched from the source
    workspace: Path | None  # the input workspace (DSS); None: there is none
    result: Path  # the result the command must write (DSS)
    engine_dir: Path  # the engine's own files: progress channel, logs (core/output.py)


@dataclass(frozen=True)
class CommandSpec:
    """How to run a job's command: exactly this argv, with this environment, here."""

    # The program and its arguments, as exec gets them. A preflight spec
    # (Source.preflight_spec) leaves it empty when the program is only known per job.
    argv: Sequence[str]
    display: str = ""  # the command as the operator wrote it, for the window and logs
    env: Mapping[str, str] = field(default_factory=dict)  # set over the base environment
    # True: the base is the engine's own environment (see command_environment); False:
    # ``env`` is the whole environment (a source that builds every variable itself).
    inherit_env: bool = True
    # Directories put first on PATH once ``env`` is applied (so a PATH set in ``env`` still
    # finds them first).
    path_first: Sequence[str] = ()
    cwd: Path | None = None  # None: the job's work dir
    timeout: float | None = None  # seconds
    nice: int = 0  # added to the command's CPU niceness (its whole process group)
    # Values an executor fills into its own options' ``{name}`` fields (the ticket's id in a
    # cluster job's sbatch options).
    option_values: Mapping[str, str] = field(default_factory=dict)
    # A port on this machine's loopback the command must reach even in a sandbox without
    # network (a vantage6 algorithm's subtask proxy): the sandbox relays it, nothing else.
    loopback_port: int | None = None
    # What the command needs to see, read-only, besides its work dir and the system (its
    # interpreter's environment, a venv outside /usr): shown when it runs in a sandbox.
    runtime_paths: tuple[str, ...] = ()
    # The command writes among its inputs (a vantage6 run dir: input, output, token, tmp):
    # a sandbox shows the input dir read-write instead of read-only.
    writable_inputs: bool = False
    # Run by the executor once the job's engine dir is ready, before the command starts:
    # writes what the command needs there (a helper program on ``path_first``). OSError.
    setup: Callable[[], object] | None = None


class CommandStartError(StartError):
    """The command could not be started; the message says why in words."""


# -- the environment ----------------------------------------------------------------------


def command_environment(spec: CommandSpec,
                        base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The command's environment: ``base`` (default: ours) + the spec's ``env``, then its
    ``path_first`` directories first on PATH. A spec that does not inherit gets exactly its
    ``env`` (and ``path_first``)."""
    if spec.inherit_env:
        env = dict(os.environ if base is None else base)
        # Our own settings variables are no business of the command's (and a future one
        # might carry something private).
        for name in [n for n in env if n.startswith("DSS_CONSOLE_")]:
            del env[name]
        if base is None and getattr(sys, "frozen", False):
            _undo_bundle_library_path(env)
    else:
        env = {}
    env.update({str(k): str(v) for k, v in spec.env.items()})
    if spec.path_first:
        env["PATH"] = os.pathsep.join(p for p in (*spec.path_first, env.get("PATH", "")) if p)
    return env


def _undo_bundle_library_path(env: dict[str, str]) -> None:
    # A PyInstaller bundle points the loader at its own libraries and keeps the original in
    # *_ORIG; the command (bash, ITK tools...) must get the machine's, not ours.
    for name in ("LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH"):
        original = env.pop(name + "_ORIG", None)
        if original is not None:
            env[name] = original
        else:
            env.pop(name, None)


# -- options ------------------------------------------------------------------------------


def fill_in(word: str, values: Mapping[str, str]) -> str:
    """``word`` with each ``{name}`` replaced by ``values[name]``; ``{{`` and ``}}`` are
    literal braces. str.format's brace rules (so a settings check with string.Formatter
    agrees), but no attribute access, index or format spec. CommandStartError in words."""
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
            known = ", ".join("{" + p + "}" for p in values)
            raise CommandStartError(f"unknown placeholder {{{name}}} in {word!r} (known: "
                                    f"{known}; write {{{{ and }}}} for literal braces)")
        if spec or conversion:
            raise CommandStartError(f"placeholder {{{name}}} in {word!r} takes no format "
                                    "spec or conversion")
        out.append(values[name])
    return "".join(out)


# -- the program --------------------------------------------------------------------------


def _has_separator(program: str) -> bool:
    return os.sep in program or bool(os.altsep and os.altsep in program)


def preflight(spec: CommandSpec) -> str | None:
    """Why a command's program cannot start on any job (not on PATH, not executable), in
    words; None when it may start. Checked before claiming, so a broken configuration
    claims nothing. What depends on the job (the working directory, a program path relative
    to it) is found when the job starts."""
    if not spec.argv:
        return None
    program = spec.argv[0]
    if _has_separator(program):
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


def check_program(program: str, cwd: Path, env: Mapping[str, str]) -> None:
    """Refuse a program that cannot run, with words, before the OS says ENOENT."""
    if _has_separator(program):
        path = Path(cwd, program)  # relative to the child's cwd, like exec after chdir
        if not path.exists():
            raise CommandStartError(f"command not found: {program} (no such file)")
        if path.is_dir():
            raise CommandStartError(f"not executable: {program} is a directory")
        if not os.access(path, os.X_OK):
            raise CommandStartError(f"not executable: {program} (no execute permission; "
                                    "chmod +x it, or run it with bash/python in the command)")
        _check_format(path, program)
        return
    search = env.get("PATH", os.defpath)
    found = shutil.which(program, path=search)
    if found is None:
        hint = f"; for the file in {cwd}, write ./{program}" if Path(cwd, program).exists() \
            else ""
        raise CommandStartError(f"command not found: {program} (not on the command's PATH: "
                                f"{search}{hint})")
    _check_format(Path(found), program)


_ELF_MAGIC = b"\x7fELF"
_MACH_O_MAGICS = (b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe",
                  b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe")
_BINFMT_MISC = Path("/proc/sys/fs/binfmt_misc")


def _other_formats_run() -> bool:
    """Whether Linux has handlers for more formats than ELF and #! (binfmt_misc: qemu,
    wine, jar...): then an unknown first line is the kernel's to judge."""
    try:
        return any(entry.name not in ("register", "status") for entry in _BINFMT_MISC.iterdir())
    except OSError:
        return False


def _check_format(path: Path, program: str) -> None:
    """Refuse a file the system cannot run (what exec calls ENOEXEC), in words. Needed
    before the start: a command is exec'd by a shell (the local executor's start gate), and
    a shell runs a text file without #! as a shell script instead of refusing it. Linux and
    macOS; elsewhere exec judges."""
    if sys.platform.startswith("linux"):
        formats: tuple[bytes, ...] = (_ELF_MAGIC,)
    elif sys.platform == "darwin":
        formats = _MACH_O_MAGICS
    else:
        return
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError:  # executable but unreadable: exec judges
        return
    if head.startswith(b"#!"):
        return
    if head.startswith(_ELF_MAGIC):
        # The smallest (32-bit) header; its class, byte order and version as exec checks.
        if len(head) >= 52 and head[4] in (1, 2) and head[5] in (1, 2) and head[6] == 1:
            return
    elif head.startswith(formats) or (formats[0] == _ELF_MAGIC and _other_formats_run()):
        return
    raise CommandStartError(f"not executable: {program} is not a program this system can run "
                            "(a script needs a #! first line)")

