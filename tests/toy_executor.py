"""An executor that only declares options: registered in plugins.EXECUTORS by a test, it
proves that the settings file and the settings dialog learn an executor's keys from its
declaration, with nothing in the core or the window naming it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dss_console.core.command import CommandSpec
from dss_console.core.executor import (
    Executor,
    ExecutorDetails,
    JobRef,
    OptionField,
    OptionValue,
    Recovery,
    RunCallbacks,
    RunHandle,
    RunRequest,
    StartError,
)
from dss_console.engine.settings_reader import TableReader

TARGET = "toy_executor:ToyExecutor"


class ToyExecutor(Executor):
    name = "toy"
    title = "Toy runner (declares options only)"
    help = "The toy's <b>help</b>."
    dry_run_note = "not on the toy"
    option_fields = (OptionField("toy_flags", "&Toy flags", "words", tip="The toy's flags",
                                 placeholder="e.g. +fast"),)

    @classmethod
    def parse_options(cls, reader: TableReader, table: Mapping[str, Any],
                      where: str) -> dict[str, OptionValue]:
        if "toy_flags" not in table:
            return {}
        value = table["toy_flags"]
        if not isinstance(value, list):
            raise reader.error(f"{where}.toy_flags", "must be an array of flags")
        return {"toy_flags": [reader.string(flag, f"{where}.toy_flags") for flag in value]}

    @classmethod
    def check_option(cls, name: str, value: OptionValue) -> None:
        flags = value if isinstance(value, list) else []
        for flag in flags:
            if not flag.startswith("+"):
                raise ValueError(f"{flag!r} is not a toy flag (they start with +)")

    @classmethod
    def option_note(cls, name: str, value: OptionValue) -> str | None:
        return "no flags: the toy idles" if not value else None

    def preflight(self, spec: CommandSpec, workroot: Path) -> str | None:
        return "the toy runs nothing"

    def start(self, request: RunRequest, callbacks: RunCallbacks) -> RunHandle:
        raise StartError("the toy runs nothing")

    def recover(self, details: ExecutorDetails, job: JobRef, grace: float) -> Recovery:
        return Recovery()
