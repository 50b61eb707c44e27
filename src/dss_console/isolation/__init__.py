"""Containing a local command: a bubblewrap sandbox (what it may see) and limits for its
whole process tree (what it may use), built from the settings' words. No Qt, no engine:
the executors call it (docs/isolation-plan.md).

The relay (``relay.py``) is not imported here: it runs as ``python -m
dss_console.isolation.relay``, and a module the package already imported would be run twice
(runpy warns so on the command's stderr, the first line of its log)."""

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
from dss_console.isolation.sandbox import Bind, probe, runtime_binds, wrap

__all__ = ["ISOLATION_MODES", "POLICY_KEYS", "Bind", "Limits", "Policy", "PolicyError",
           "Support", "format_size", "parse_size", "policy_from_table", "probe",
           "probe_limits", "runtime_binds", "sbatch_limit_options", "wrap"]
