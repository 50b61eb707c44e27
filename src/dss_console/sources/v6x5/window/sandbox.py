"""`dss-console --sandbox v6x5`: not in the window yet (plan step 7 brings the window's 5.x
login, which the sandbox needs to log its console in as the 5.x node). Until then it says so
in words and where the 5.x sandbox runs today."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dss_console.gui.source_window import SandboxOptions

if TYPE_CHECKING:
    from dss_console.gui.main_window import MainWindow

__all__ = ["NOT_YET", "V6x5WindowSandbox"]

NOT_YET = ("the window's vantage6 5.x sandbox is not built yet: run `dss-console v6 sandbox "
           "--version 5` (HQ 5.0.3 behind the identity stand-in), log the node in with the "
           "`dss-console v6 login` line it prints, and run `dss-console worker --source v6`")


class V6x5WindowSandbox:
    """A gui.source_window.SourceSandbox that refuses to start, in words."""

    async def start(self, window: MainWindow, options: SandboxOptions) -> None:
        raise RuntimeError(NOT_YET)

    async def self_test(self, window: MainWindow) -> None:
        raise RuntimeError(NOT_YET)

    def stop(self) -> None:
        return None  # nothing was started
