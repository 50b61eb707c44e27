"""Handlers of the command-line verbs (argument parsing lives with each verb)."""
