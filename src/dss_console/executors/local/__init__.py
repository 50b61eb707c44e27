"""Commands run as child processes of the worker, on this machine."""
