"""Commands run as child processes of the worker, on this machine."""

from dss_console.executors.local.executor import LocalExecutor

__all__ = ["LocalExecutor"]
