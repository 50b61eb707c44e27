"""One vantage6 HQ 5.0.3 child process on 127.0.0.1, behind an identity server.

The 5.x counterpart of the 4.x sandbox's ``V6ServerProcess``: the venv's Python runs
``resources/v6x5/hq_script.py``; HQ's configuration (SQLite, ``api_path: /hq``, logs in the
data dir) is written 0600; the identity server's address and HQ's admin client arrive as
``KEYCLOAK_*`` variables, never on the command line. HQ reads the realm's public key once at
start and exits when it cannot: the identity server must answer before :meth:`start`.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path

from dss_console.server_process import child_environment
from dss_console.sources.v6.sandbox_common import Vantage6ServerProcess, write_server_config

API_PATH = "/hq"
LISTENING_PREFIX = "V6X5_HQ_LISTENING"


def hq_script() -> Path:
    """A resource, not a module: it imports vantage6, and a frozen bundle carries resources
    as files but modules only compiled."""
    return Path(str(importlib.resources.files("dss_console.resources") / "v6x5"
                    / "hq_script.py"))


@dataclass(frozen=True)
class IdentitySettings:
    """What HQ needs to reach its Keycloak (or the stand-in): ``KEYCLOAK_*``."""

    url: str
    realm: str
    admin_client: str
    admin_client_secret: str
    admin_username: str  # HQ's root user (also its username in the realm)
    admin_password: str

    def environment(self) -> dict[str, str]:
        return {"KEYCLOAK_URL": self.url, "KEYCLOAK_REALM": self.realm,
                "KEYCLOAK_ADMIN_CLIENT": self.admin_client,
                "KEYCLOAK_ADMIN_CLIENT_SECRET": self.admin_client_secret,
                "KEYCLOAK_ADMIN_USERNAME": self.admin_username,
                "KEYCLOAK_ADMIN_PASSWORD": self.admin_password}


class HqProcess(Vantage6ServerProcess):
    """``start(data_dir, identity)``; ``restart()`` keeps the port (outage tests)."""

    listening_prefix = LISTENING_PREFIX
    api_path = API_PATH
    probe_path = API_PATH + "/health"
    default_timeout = 120.0
    what = "vantage6 HQ"
    log_name = "hq-stdout.log"

    def __init__(self, python: Path) -> None:
        super().__init__(python)
        self._identity: IdentitySettings | None = None

    def start(self, data_dir: Path, identity: IdentitySettings, port: int = 0, *,
              timeout: float = 120.0) -> None:
        with self._lock:
            self._refuse_if_running()
            self._identity = identity
        self._launch(data_dir, port, timeout=timeout)

    def _command(self, data_dir: Path, port: int) -> tuple[list[str], dict[str, str]]:
        assert self._identity is not None
        config = write_server_config(data_dir, "hq", api_path=API_PATH,
                                     description="dss-console vantage6 5.x sandbox")
        env = child_environment(("V6_", "VANTAGE6_", "PYTHON", "KEYCLOAK_"),
                                self._identity.environment(), private_dirs_in=data_dir)
        return self._script_argv(hq_script(), config, port), env
