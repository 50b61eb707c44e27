"""Source plug-ins: one folder per kind of server the engine takes work from."""
