"""The source plug-ins the composition roots pick from the registry (issue 18): each is a
SourcePlugin, light to load, and the roots (the worker, the engine's spawner) name none."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from concurrent.futures import Future
from pathlib import Path

import pytest

import dss_console
from dss_console import plugins
from dss_console.core.source_plugin import ConnectError, SourcePlugin

SRC = Path(dss_console.__file__).parent


@pytest.mark.parametrize("name", list(plugins.SOURCES))
def test_each_registered_source_is_a_plug_in_in_its_own_words(name: str) -> None:
    plugin = plugins.source_plugin(name)
    assert isinstance(plugin, SourcePlugin)
    assert plugin.name == name and plugin.title
    # The worker prints the window's words for a job and a service.
    assert plugin.words() == plugins.presentation(name).words
    assert plugin.worker.choice and plugin.worker.no_command
    assert "{id}" in plugin.worker.blocked and "{reason}" in plugin.worker.blocked


def test_the_command_line_loads_the_plug_ins_but_no_client_of_theirs() -> None:
    """The worker's options and help come from the plug-ins whenever the command line is
    built: that must not load a vantage6 client, its crypto or a source."""
    script = textwrap.dedent("""
        import sys
        from dss_console.cli import build_parser
        build_parser()
        heavy = [m for m in sys.modules if m.startswith((
                 "dss_console.sources.v6.client", "dss_console.sources.v6.source",
                 "dss_console.sources.v6.crypto", "dss_console.sources.dss.source",
                 "cryptography", "socketio"))]
        assert not heavy, heavy
        assert "dss_console.sources.v6.plugin" in sys.modules
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_worker_offers_every_registered_source() -> None:
    from dss_console.cli import build_parser

    parser = build_parser()
    for name in plugins.SOURCES:
        assert parser.parse_args(["worker", "--source", name]).source == name
    with pytest.raises(SystemExit):
        parser.parse_args(["worker", "--source", "nosuch"])


def _string_constants(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)}


@pytest.mark.parametrize("root", ["commands/worker.py", "engine/spawn.py"])
def test_the_roots_name_no_source(root: str) -> None:
    names = set(plugins.SOURCES)
    assert not names & _string_constants(SRC / root), root
    assert ".v6" not in (SRC / root).read_text(encoding="utf-8")


@pytest.mark.parametrize("handover", ["", "not json", '{"private_key": ""}'])
def test_a_v6_handover_without_the_nodes_key_is_refused(handover: str) -> None:
    with pytest.raises(ConnectError) as refused:
        plugins.source_plugin("v6").handover_settings(handover)
    assert refused.value.code == 2 and "keys on stdin" in str(refused.value)


def test_a_credential_names_its_source() -> None:
    from dss_console.connection import LoggedIn
    from dss_console.dss import DssClient

    with DssClient("https://dss.example.org") as client:
        login = LoggedIn(client, "me@example.org")
        source = plugins.source_of(login)
        assert source.name == "dss" and source.renews_credential
        assert source.engine_key(login) == "https://dss.example.org"
        assert not plugins.source_plugin("v6").owns(login)
    with pytest.raises(ValueError):
        plugins.source_of("not a login")


@pytest.mark.parametrize("name", list(plugins.SOURCES))
@pytest.mark.parametrize("values, wording", [
    ({"server": "ftp://nowhere"}, "Check the server address"),
    ({"server": "https://server.example.org"}, "Paste "),
])
def test_a_login_form_missing_a_value_goes_nowhere(
        name: str, values: dict[str, str], wording: str, tmp_path: Path) -> None:
    """The form's values are checked before anything is sent or started: the window says
    what to fix, in the source's words."""
    from dss_console.core.source_plugin import LoginInputError, LoginStores

    plugin = plugins.source_plugin(name)
    secret = next(f.name for f in plugin.login_form.fields if f.kind == "secret")
    store = plugin.login_store(LoginStores(tmp_path, use_keyring=False))
    submitted: list[object] = []

    def submit(call: object) -> Future[object]:
        submitted.append(call)
        raise AssertionError("nothing may start")

    with pytest.raises(LoginInputError) as refused:
        plugin.start_login({**values, secret: "  "}, store, True, submit)
    assert str(refused.value).startswith(wording) and submitted == []


@pytest.mark.parametrize("name", list(plugins.SOURCES))
def test_each_source_keeps_its_logins_in_its_own_store_and_refuses_another(
        name: str, tmp_path: Path) -> None:
    """The window holds one store per source (a family's members share one) without knowing
    its kind; a plug-in handed another source's store says so instead of writing a
    credential where it does not belong."""
    from dss_console.core.source_plugin import LoginStores

    plugin = plugins.source_plugin(name)
    where = LoginStores(tmp_path, use_keyring=False)
    assert plugin.store_note(plugin.login_store(where)) is None
    # A family's members (plugins.SOURCE_FAMILIES: vantage6 4.x and 5.x) share one store.
    family = getattr(plugin, "family", name)
    others = [plugins.source_plugin(other).login_store(where) for other in plugins.SOURCES
              if getattr(plugins.source_plugin(other), "family", other) != family]
    assert others
    for store in others:
        with pytest.raises(TypeError, match="keeps"):
            plugin.store_note(store)
