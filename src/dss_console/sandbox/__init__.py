"""The embedded real DSS server: the ``dss-console sandbox`` command and the test harness.

Names are resolved lazily: the server child process imports this package on its way to
``dss_console.sandbox.serve`` and should not pay for (or depend on) the seeding, demo and
workspace code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dss_console.sandbox.sandbox import Sandbox
    from dss_console.sandbox.seed import SandboxAdmin
    from dss_console.sandbox.server import DssServerProcess, SandboxError

__all__ = ["DssServerProcess", "Sandbox", "SandboxAdmin", "SandboxError"]

_HOMES = {
    "DssServerProcess": "dss_console.sandbox.server",
    "Sandbox": "dss_console.sandbox.sandbox",
    "SandboxAdmin": "dss_console.sandbox.seed",
    "SandboxError": "dss_console.sandbox.server",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
