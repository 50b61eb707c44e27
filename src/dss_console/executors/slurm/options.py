"""What a service's table says to the SLURM executor: ``sbatch_options``, read from the
settings file and checked as the settings dialog edits it."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from typing import Any

from dss_console.core.executor import OptionField, OptionValue
from dss_console.engine.settings_reader import (
    SettingsError,
    TableReader,
    type_name,
    validate_placeholders,
)

__all__ = ["HELP", "SBATCH_OPTIONS", "check_option", "option_note", "parse_options"]

HELP = (
    "Each ticket is submitted with <code>sbatch</code> and followed in the cluster's queue. "
    "The work root (General tab) must be on a file system the cluster's nodes share, and "
    "the command must exist on the nodes."
)
SBATCH_OPTIONS = OptionField(
    "sbatch_options", "s&batch options", "words",
    tip="Added to sbatch for each ticket, split into words as a shell would; placeholders "
        "such as {ticket} allowed",
    placeholder="e.g. --partition=gpu --gres=gpu:1 --time=06:00:00")

# sbatch options the engine sets itself for every ticket's job: one given again here would
# send the job's output where the console does not read it, or run it elsewhere.
_ENGINE_SBATCH_OPTIONS = ("--job-name", "--chdir", "--output", "--error", "--open-mode",
                          "--export", "--parsable", "--hold", "--wait", "-J", "-D", "-o", "-e")


def parse_options(reader: TableReader, table: Mapping[str, Any],
                  where: str) -> dict[str, OptionValue]:
    if "sbatch_options" not in table:
        return {}
    options = table["sbatch_options"]
    option_where = f"{where}.sbatch_options"
    if not isinstance(options, list):
        raise reader.error(option_where,
                           f"must be an array of strings, not {type_name(options)} "
                           '(e.g. ["--partition=gpu", "--time=06:00:00"])')
    sbatch_options: list[str] = []
    for index, option in enumerate(options):
        text = reader.string(option, f"{option_where}[{index}]")
        try:
            validate_placeholders(text)
        except SettingsError as exc:
            raise reader.error(f"{option_where}[{index}]", str(exc)) from None
        sbatch_options.append(text)
    # None given is the default: not kept, so the file reads back as the dialog saves it.
    return {"sbatch_options": sbatch_options} if sbatch_options else {}


def _words(value: OptionValue) -> list[str]:
    return [word for word in value if isinstance(word, str)] if isinstance(value, list) else []


def check_option(name: str, value: OptionValue) -> None:
    words = _words(value)
    if words and not words[0].startswith("-"):
        raise ValueError(f"{words[0]!r} is not an option: options start with - or --, "
                         "e.g. --partition=gpu")
    for word in words:
        validate_placeholders(word)  # a SettingsError: a ValueError in words


def option_note(name: str, value: OptionValue) -> str | None:
    """Options the engine already sets, or sbatch missing here (not an error: the worker
    may run on another machine)."""
    for word in _words(value):
        option = word.split("=", 1)[0]
        if option in _ENGINE_SBATCH_OPTIONS:
            return (f"{option} is set by dss-console for every ticket (the job's log, work "
                    "dir and name); giving it here breaks the live log")
    if shutil.which("sbatch") is None:
        return "sbatch is not on this computer's PATH (fine if the worker runs elsewhere)"
    return None
