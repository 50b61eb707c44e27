# Run-time hook of the dss-console bundle: runs first in every process of the bundle (the
# console, the CLI verbs, and the bundle's own child processes), before PyInstaller's hooks.
#
# 1. Programs started from the bundle must see the machine's environment, not the bundle's.
#    On Linux the bootloader starts the app with LD_LIBRARY_PATH pointing at _internal/ (and
#    the user's value, if any, in LD_LIBRARY_PATH_ORIG). Every program the app starts would
#    inherit it and load the bundle's copies of libz, libpcre2, glib, libstdc++... instead of
#    the system's: git (run by the sandbox server to register the demo service), xdg-open
#    and the file manager behind "Open work dir", a service's command. The loader read the
#    variable when this process started, so changing it now only affects child processes.
#    LD_LIBRARY_PATH_ORIG is left in place, so code that restores from it gets the same value.
#
# 2. The bundle runs itself as a child (the sandbox server, $DSS_HOOK, the demo service), and
#    a service's command may be another PyInstaller program. The bootloader would take such a
#    child for a sub-process of this one (PyInstaller >= 6.10 reads its _PYI_* variables) and
#    skip its own set-up, so the child would run on the system's libraries. Setting
#    PYINSTALLER_RESET_ENVIRONMENT=1 (a documented PyInstaller switch) makes every such child
#    start as a new instance that sets itself up.


def _dss_console_rthook():
    # Imports inside: run-time hooks share the entry script's global namespace.
    import os
    import sys

    if sys.platform.startswith("linux"):
        original = os.environ.get("LD_LIBRARY_PATH_ORIG")
        if original is not None:
            os.environ["LD_LIBRARY_PATH"] = original
        else:
            os.environ.pop("LD_LIBRARY_PATH", None)
    os.environ["PYINSTALLER_RESET_ENVIRONMENT"] = "1"


_dss_console_rthook()
del _dss_console_rthook
