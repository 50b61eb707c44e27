"""The sandbox's demo service: a real, small segmentation a provider can run and watch.

It reads the image tagged ``T1-MRI`` from a ticket's workspace, thresholds it with Otsu's
method and writes a result workspace with the image and the segmentation, reporting
progress, messages and a QC attachment the way real service scripts (ASHS) do: ``@dss``
lines on stdout and calls of ``$DSS_HOOK``. Pure Python on top of dss_console.workspace.

Run it with ``python -m dss_console.resources.demo_service WORKSPACE RESULT [--pace S]``;
:func:`demo_service_command` gives the command template the sandbox and worker configure.
"""

from __future__ import annotations

import shlex
import sys

__all__ = ["demo_service_command", "demo_service_launcher"]


def demo_service_launcher() -> list[str]:
    """The argv prefix that starts the demo service with this installation's Python."""
    # A frozen bundle (PyInstaller) has no usable "python -m"; its executable carries a
    # hidden CLI verb that runs the same code.
    if getattr(sys, "frozen", False):
        return [sys.executable, "_demo-service"]
    return [sys.executable, "-m", "dss_console.resources.demo_service"]


def demo_service_command(pace: float = 0.0) -> str:
    """The command template for the demo service (placeholders {workspace} and {result}).

    ``pace`` seconds of sleep between steps let a person watch the progress.
    """
    # Braces in the interpreter's path would read as placeholders: double them.
    launcher = shlex.join(demo_service_launcher()).replace("{", "{{").replace("}", "}}")
    command = launcher + " {workspace} {result}"
    if pace:
        command += f" --pace {pace:g}"
    return command
