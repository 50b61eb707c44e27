"""Containing a local command: a bubblewrap sandbox (what it may see) and limits for its
whole process tree (what it may use), built from the settings' words. No Qt, no engine:
the executors call it (docs/isolation-plan.md)."""

from dss_console.isolation.limits import Limits, Support, probe_limits
from dss_console.isolation.policy import (
    ISOLATION_MODES,
    POLICY_KEYS,
    Policy,
    PolicyError,
    format_size,
    parse_size,
    policy_from_table,
    sbatch_limit_options,
)
from dss_console.isolation.relay import SocketForwarder, relay_argv
from dss_console.isolation.sandbox import Bind, probe, runtime_binds, wrap

__all__ = ["ISOLATION_MODES", "POLICY_KEYS", "Bind", "Limits", "Policy", "PolicyError",
           "SocketForwarder", "Support", "format_size", "parse_size", "policy_from_table", "probe",
           "probe_limits", "relay_argv", "runtime_binds", "sbatch_limit_options", "wrap"]
