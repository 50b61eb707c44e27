"""``python -m dss_console.resources.demo_service WORKSPACE RESULT [--pace S]``."""

import sys

from .segment import main

sys.exit(main(sys.argv[1:]))
