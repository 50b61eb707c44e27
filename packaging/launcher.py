"""Entry script of the PyInstaller bundle: the same `main` as the `dss-console` console script.

Kept this small on purpose: everything (the GUI, the headless verbs and the hidden verbs the
bundle runs as its own child processes: the sandbox server, the hook, the demo service) is
dispatched by `dss_console.cli.main`.
"""

import sys

from dss_console.cli import main

if __name__ == "__main__":
    sys.exit(main())
