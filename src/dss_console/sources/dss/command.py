"""How a DSS service's command runs: its ``[services]`` template with the service's
environment, timeout and working directory, and the ``itksnap-wt`` shim when the service asks
for it. One builder for a claimed ticket (:meth:`DssSource.command_spec`), the engine's
preflight and the window's dry run, so a dry run runs what a real ticket would.
"""

from __future__ import annotations

from dss_console.engine.runner import CommandSpec
from dss_console.engine.settings import ServiceCommand

__all__ = ["command_spec", "preflight_spec"]


def command_spec(command: ServiceCommand, *, nice: int = 0) -> CommandSpec:
    """How to run a service's command on a ticket (its placeholders are the runner's)."""
    return CommandSpec(template=command.command, timeout=command.timeout,
                       env=dict(command.env), cwd=command.cwd, nice=nice,
                       itksnap_wt=command.itksnap_wt)


def preflight_spec(command: ServiceCommand) -> CommandSpec:
    """What the preflight checks before a claim: the program and the PATH it is found on."""
    return CommandSpec(template=command.command, env=dict(command.env),
                       itksnap_wt=command.itksnap_wt)
