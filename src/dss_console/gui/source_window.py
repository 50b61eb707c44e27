"""What a source adds to the window (issue 18, "the window asks, it does not sniff").

The words, columns and actions of a source come from the engine (core.presentation); the parts
that are widgets, or that exist before any engine runs, come from here: a source's own
Settings tab, its ``--sandbox`` (with the self-test's steps) and its extra views. Each source
implements :class:`SourceWindow` in its own ``sources/NAME/window/`` folder (the only place
outside gui/ that may import Qt) and names it in :data:`dss_console.plugins.SOURCE_WINDOWS`; the
window reaches it through :func:`dss_console.plugins.source_window` and never by a source's
name. Headless code (the worker, the engine) never imports these modules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from PySide6.QtWidgets import QWidget

from dss_console.engine.events import JobSnapshot
from dss_console.engine.settings import Settings

if TYPE_CHECKING:
    from dss_console.gui.main_window import MainWindow

__all__ = ["SandboxOptions", "SourceSandbox", "SourceSettingsTab", "SourceView",
           "SourceViewWindow", "SourceWindow"]


@runtime_checkable
class SourceSettingsTab(Protocol):
    """A source's own tab in the Settings dialog: it edits a copy of that source's plug-in
    settings, and the dialog saves nothing until OK."""

    @property
    def title(self) -> str: ...  # the tab's label, with its mnemonic: "&vantage6 node"

    @property
    def area(self) -> str: ...  # how the dialog's problem list names it: "vantage6 node"

    def widget(self) -> QWidget: ...

    def on_changed(self, slot: Callable[[], None]) -> None:
        """Call ``slot`` whenever an edit may change :meth:`problems`."""
        ...

    def problems(self) -> list[str]: ...  # why OK would not save (empty: it would)

    def write(self, settings: Settings) -> Settings:
        """``settings`` with this source's plug-in settings as edited (a new object, the one
        given is not changed); ValueError says what is wrong."""
        ...

    def select(self, key: str) -> None:
        """Show one of the source's services (a vantage6 image) in the tab; one not listed
        yet gets a new row to fill in (the services pane's "Edit command…" jump)."""
        ...


@dataclass(frozen=True)
class SandboxOptions:
    """What `--sandbox` was asked for: how much demo work, at what pace (0: as fast as the
    demo command goes, for the self-test)."""

    work: int = 3
    pace: float = 0.3


class SourceSandbox(Protocol):
    """A local server of the source with demo work, this console logged in to it
    (`dss-console --sandbox NAME`), and the end-to-end self-test's steps on it."""

    async def start(self, window: MainWindow, options: SandboxOptions) -> None:
        """Start the server, point the window's settings and stores at throw-away ones
        under it, and log in; raises with the reason when it cannot."""
        ...

    async def self_test(self, window: MainWindow) -> None:
        """Claim, run and finish one demo job through the window's own buttons, checking
        the server saw it end well; raises gui.self_test.SelfTestFailed with the reason."""
        ...

    def stop(self) -> None:
        """Stop what :meth:`start` started (blocking; safe after a failed or no start)."""
        ...


class SourceViewWindow(Protocol):
    """A view a source adds beside its jobs (the vantage6 run audit): a window fed with the
    jobs the console already holds."""

    def widget(self) -> QWidget: ...

    def set_jobs(self, jobs: list[JobSnapshot]) -> None: ...  # every job, when opened

    def update_jobs(self, jobs: list[JobSnapshot]) -> None: ...  # jobs that changed


@dataclass(frozen=True)
class SourceView:
    """A button under the services that opens one of the source's views."""

    name: str  # the window's key for it: "audit"
    label: str  # "Run audit…"
    tip: str
    create: Callable[[QWidget], SourceViewWindow]  # made once per window, parented to it


@runtime_checkable
class SourceWindow(Protocol):
    """A source's parts of the window (see the module's docstring)."""

    def settings_tab(self, settings: Settings) -> SourceSettingsTab | None:
        """Its tab in the Settings dialog, editing a copy of ``settings``' plug-in part
        (None: the source has none)."""
        ...

    def sandbox(self) -> SourceSandbox | None:
        """A new sandbox for `--sandbox NAME` (None: the source offers none)."""
        ...

    def views(self) -> Sequence[SourceView]: ...
