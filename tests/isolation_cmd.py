"""A service command for the isolation tests: tries what a contained command must not do,
then runs service_cmd.py's MODE (the real work) if all of it was refused.

    python isolation_cmd.py SECRET_FILE OTHER_JOB_DIR PORT MODE WORKSPACE RESULT [ARG...]

Anything it could reach ends it with an @dss error naming what (exit 5), before the work.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path


def reached(action: Callable[[], object]) -> bool:
    try:
        action()
    except OSError:
        return False
    return True


def main() -> int:
    secret, other, port, *work = sys.argv[1:]
    escaped = [what for what, action in [
        ("read the stored session", lambda: Path(secret).read_bytes()),
        ("list another job's dir", lambda: os.listdir(other)),
        ("connect to the DSS server", lambda: socket.create_connection(
            ("127.0.0.1", int(port)), timeout=2).close()),
        ("write outside its work dir", lambda: Path("/usr/dss-escaped").write_text("x")),
    ] if reached(action)]
    if escaped:
        print('@dss error "escaped: ' + ', '.join(escaped) + '"', flush=True)
        return 5
    service_cmd = Path(__file__).with_name("service_cmd.py")
    os.execv(sys.executable, [sys.executable, str(service_cmd), *work])
    return 0


if __name__ == "__main__":
    sys.exit(main())
