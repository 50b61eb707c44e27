"""Executor plug-ins: one folder per way of running a job's command (named in plugins.py)."""
