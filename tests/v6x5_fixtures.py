"""The real vantage6 HQ 5.0.3 behind the Keycloak-compatible stand-in, once per session, on
first use.

conftest.py registers the fixtures (``v6x5_python``, ``v6x5_sandbox``) for the whole session:
never import them into a test module, which would give that module an HQ of its own. Only
tests that ask for them start anything.

The 5.x venv lives in the *real* user cache (``~/.cache/dss-console/v6-sandbox-5.0.3``), not in
the per-session scratch XDG dirs conftest sets, so it is built once per machine (~70-90 s
here) and reused by every later session. Without a Python 3.13 the tests fail in words
(never skip: CI must not pass without them); only when PyPI is unreachable outside CI are they
skipped, loudly, as the 4.x ones are.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dss_console.sources.v6x5 import venv as v6x5venv
from dss_console.sources.v6x5.sandbox import HqSandbox

from v6_fixtures import _real_user_cache


@pytest.fixture(scope="session")
def v6x5_python() -> Path:
    """The 5.x venv's Python 3.13 (built on first use)."""
    os.environ.setdefault(v6x5venv.ENV_OVERRIDE,
                          str(_real_user_cache() / "dss-console" / v6x5venv.SPEC.name))
    try:
        return v6x5venv.ensure_venv(lambda line: print(line, file=sys.stderr))
    except v6x5venv.V6VenvUnavailable as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"*** v6 5.x SANDBOX UNAVAILABLE (PyPI unreachable?): {exc}")


@pytest.fixture(scope="session")
def v6x5_sandbox(v6x5_python: Path, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[HqSandbox]:
    """HQ 5.0.3 seeded, behind the stand-in; its data dir (logs, realm) lives under pytest's
    basetemp."""
    with HqSandbox(data_dir=tmp_path_factory.mktemp("v6x5-sandbox")) as sb:
        print(f"v6x5 sandbox up: {sb.timings}", file=sys.stderr)
        yield sb
