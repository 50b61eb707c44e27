"""`dss-console v6 ...`: this machine as a vantage6 4.x node (issue 11).

    dss-console v6 login --server URL --api-key-stdin [--private-key FILE]
    dss-console v6 logout [--node NAME] [--server URL]
    dss-console v6 status
    dss-console v6 audit [--node NAME] [--since DAYS] [--json|--csv]
    dss-console v6 sandbox [--port N] [--data DIR]

The API key and the private key are kept in the OS keyring, else in a 0600 file
(:class:`dss_console.credentials.V6CredentialStore`), and never printed. Only the sandbox
prints secrets, on purpose: they are throw-away and it is what the sandbox is for.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from dss_console.commands.errors import EXIT_USAGE, CliError
from dss_console.commands.sandbox import run_until_stopped
from dss_console.commands.v6_audit import add_audit_parser

FAMILY = "v6"  # plugins.SOURCE_FAMILIES: the vantage6 nodes, one plug-in per server major

V6_DESCRIPTION = """\
Run this machine as a vantage6 node that runs algorithms as local commands.

  dss-console v6 login --server URL --api-key-stdin [--private-key FILE]
  dss-console v6 login --server URL --auth-url URL [--realm NAME] --node NAME \\
                       --api-key-stdin [--private-key FILE]       (a 5.x server)
  dss-console v6 status
  dss-console v6 logout [--node NAME]
  dss-console v6 audit [--node NAME] [--since DAYS] [--json|--csv]
  dss-console v6 sandbox [--port N] [--data DIR]
"""

SANDBOX_DESCRIPTION = """\
Start the real vantage6-server 4.15.2 on 127.0.0.1 (SQLite, in a temporary folder unless
--data is given), seeded with organizations station and research, a plain and an encrypted
collaboration (demo, demo-enc), a node of station in each, organization keys and a
researcher; print everything needed to log in, and run until Ctrl-C. The first use builds
the server's own Python environment (needs PyPI, 1-2 minutes).

--version 5: the real vantage6-hq 5.0.3 instead, in its own Python 3.13 environment, behind
a small Keycloak-compatible stand-in of ours (Keycloak itself cannot be installed on these
machines): the same demo organizations, collaborations and nodes, a researcher and a service
account; the lines printed log the nodes in with --auth-url and --node. In the console
window: dss-console --sandbox v6 --sandbox-version 5.
"""


def add_parser(verbs: argparse._SubParsersAction) -> None:
    v6 = verbs.add_parser("v6", help="run this machine as a vantage6 node",
                          description=V6_DESCRIPTION,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = v6.add_subparsers(dest="v6_verb", metavar="COMMAND")
    v6.set_defaults(handler=_usage(v6))

    login = sub.add_parser(
        "login", help="log in as a node with its API key",
        description="Check a node API key against the server and remember it (OS keyring, "
                    "else a private file). The server's version is asked first (GET "
                    "<server>/api/version, <server>/hq/version): a 4.x node logs in with its "
                    "API key alone; a 5.x node through the server's authentication server "
                    "(Keycloak: --auth-url, --realm) as the client NAME-node-client (--node "
                    "NAME), the API key being that client's secret. "
                    "Prints the node, its organization and its "
                    "collaboration. An encrypted collaboration needs the organization's "
                    "private key (PEM); when the organization has no public key on the "
                    "server, this key's is uploaded, as the official node does at start; a "
                    "key that does not match the registered one is refused (see "
                    "--replace-public-key).")
    login.add_argument("--server", required=True, metavar="URL",
                       help="the vantage6 server, e.g. https://v6.example.org (…/api optional)")
    login.add_argument("--auth-url", metavar="URL",
                       help="vantage6 5.x only: the server's authentication server (Keycloak), "
                            "e.g. https://auth.example.org")
    login.add_argument("--realm", metavar="NAME",
                       help="vantage6 5.x only: the Keycloak realm (default: vantage6)")
    login.add_argument("--node", metavar="NAME",
                       help="vantage6 5.x: the node's name (required there: its client is "
                            "NAME-node-client); 4.x: checked against the key's node")
    login.add_argument("--api-key-stdin", action="store_true", required=True,
                       help="read the node's API key from standard input (never an argument: "
                            "the process list would show it)")
    login.add_argument("--private-key", type=Path, metavar="FILE",
                       help="the organization's private key (PEM), for encrypted collaborations")
    login.add_argument("--replace-public-key", action="store_true",
                       help="the private key is not the one whose public key the organization "
                            "registered: replace the registered public key with this key's. "
                            "Other nodes of the organization (and tasks already encrypted for "
                            "the old key) then stop decrypting")
    login.add_argument("--ca-bundle", metavar="FILE",
                       help="CA certificates (PEM) to trust for this server; TLS is always "
                            "verified")
    login.set_defaults(handler=login_command)

    logout = sub.add_parser("logout", help="forget a node's API key and private key",
                            description="Forget the stored API key and private key of a node "
                                        "(default: the one logged in last).")
    logout.add_argument("--node", metavar="NAME", help="the node's name (see `v6 status`)")
    logout.add_argument("--server", metavar="URL", help="when two servers have such a node")
    logout.set_defaults(handler=logout_command)

    status = sub.add_parser("status", help="the nodes logged in here and their servers",
                            description="For each stored node: server, node, organization, "
                                        "collaboration, encryption, and what the server says "
                                        "now (reachable, key accepted, open runs).")
    status.add_argument("--ca-bundle", metavar="FILE", help="CA certificates (PEM) to trust")
    status.set_defaults(handler=status_command)

    add_audit_parser(sub)

    sandbox = sub.add_parser("sandbox", help="run a local vantage6 server with demo data",
                             description=SANDBOX_DESCRIPTION,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    sandbox.add_argument("--version", choices=("4", "5"), default="4",
                         help="the server's major version: 4 (vantage6-server 4.15.2, the "
                              "default) or 5 (vantage6-hq 5.0.3 behind a Keycloak-compatible "
                              "stand-in of ours: Keycloak itself cannot be installed here; "
                              "needs Python 3.13)")
    sandbox.add_argument("--port", type=int, default=0,
                         help="port on 127.0.0.1 (default: a free one)")
    sandbox.add_argument("--data", type=Path, metavar="DIR",
                         help="keep the server's database, keys and logs in DIR (default: a "
                              "temporary folder removed on exit)")
    sandbox.set_defaults(handler=sandbox_command)


def _usage(parser: argparse.ArgumentParser) -> Any:
    def show(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return show


def _store() -> Any:
    from dss_console.credentials import V6CredentialStore

    return V6CredentialStore()


def _verify(args: argparse.Namespace) -> bool | str:
    return getattr(args, "ca_bundle", None) or True


# -- login / logout / status ------------------------------------------------------------


@runtime_checkable
class _NodeLogin(Protocol):
    """What `v6 login` asks of the vantage6 family's member that serves the server."""

    def cli_login(self, args: argparse.Namespace, api_key: str,
                  store: object) -> tuple[list[str], list[str]]: ...


def login_command(args: argparse.Namespace) -> int:
    from dss_console import plugins
    from dss_console.core.source_plugin import ConnectError

    api_key = sys.stdin.readline().strip()
    if not api_key:
        raise CliError("no API key on standard input (the node's API key, as the server "
                       "printed it when the node was created)", code=EXIT_USAGE)
    try:
        from dss_console.sources.v6.client import normalise_server_url

        normalise_server_url(args.server)
    except ValueError as exc:
        raise CliError(str(exc), code=EXIT_USAGE) from None
    store = _store()
    try:
        # The server's major version picks the plug-in (GET <api>/version): a 4.x node
        # logs in with its API key alone, a 5.x node through the server's Keycloak.
        member = plugins.family_member(FAMILY, args.server, _verify(args))
        if not isinstance(member, _NodeLogin):
            raise CliError(f"{args.server}: this vantage6 version has no command-line login")
        lines, warnings = member.cli_login(args, api_key, store)
    except ConnectError as exc:
        raise CliError(str(exc), code=exc.code) from None
    for warning in warnings:
        print(warning, file=sys.stderr)
    if store.fallback_note:
        print(store.fallback_note, file=sys.stderr)
    for line in lines:
        print(line)
    return 0


@runtime_checkable
class _ServerUrl(Protocol):
    def server_url(self, text: str) -> str: ...


def logout_command(args: argparse.Namespace) -> int:
    from dss_console import plugins

    store = _store()
    entry = None
    if args.server:
        # The server as each member of the family names it (4.x …/api, 5.x …/hq): no probe,
        # a node can be forgotten while its server is down.
        members = map(plugins.family_plugin, plugins.SOURCE_FAMILIES[FAMILY])
        try:
            servers = {m.server_url(args.server) for m in members if isinstance(m, _ServerUrl)}
        except ValueError as exc:
            raise CliError(str(exc), code=EXIT_USAGE) from None
        found = {store.find_node(server, args.node) for server in servers} - {None}
        entry = found.pop() if len(found) == 1 else None
    else:
        entry = store.find_node(None, args.node)
    if entry is None:
        known = ", ".join(f"{n['node']} ({n['server']})" for n in store.v6_nodes()) or "none"
        raise CliError(f"no single stored node matches (stored: {known}); name one with "
                       "--node NAME [--server URL]")
    node = next(n for n in store.v6_nodes() if f"{n['server']}#{n['node']}" == entry)
    store.delete_node(node["server"], node["node"])
    print(f"logged out node {node['node']!r} of {node['server']}: API key and private key "
          "forgotten here")
    return 0


@runtime_checkable
class _StoredNodes(Protocol):
    """What `v6 status` asks of the family's members about a stored node."""

    def owns_stored(self, stored: object) -> bool: ...

    def check_stored(self, stored: object, verify: bool | str) -> str: ...


def status_command(args: argparse.Namespace) -> int:
    from dss_console import plugins

    members = [m for m in map(plugins.family_plugin, plugins.SOURCE_FAMILIES[FAMILY])
               if isinstance(m, _StoredNodes)]
    store = _store()
    nodes = store.v6_nodes()
    if not nodes:
        print("no vantage6 node logged in here (dss-console v6 login --server URL "
              "--api-key-stdin)")
        return 0
    for entry in nodes:
        info = entry.get("info", {})
        print(f"{entry['node']} @ {entry['server']}")
        print(f"  organization {info.get('organization')!r}, collaboration "
              f"{info.get('collaboration')!r} "
              f"({'encrypted' if info.get('encrypted') else 'not encrypted'}); "
              f"credentials in the {entry.get('store', 'file')}")
        stored = store.load_node(entry["server"], entry["node"])
        if stored is None:
            print("  server: (credentials missing: log in again)")
            continue
        member = next((m for m in members if m.owns_stored(stored)), None)
        said = member.check_stored(stored, _verify(args)) if member is not None \
            else "(stored by a newer dss-console: not checked)"
        print(f"  server: {said}")
    return 0


# -- sandbox ---------------------------------------------------------------------------


def sandbox_settings_toml(sandbox_info: dict[str, Any]) -> str:
    """A settings file fragment that runs the demo algorithm on the demo CSV."""
    from dss_console.isolation import probe

    demo = sandbox_info["demo"]
    # As a new algorithm entry is written (a sandbox without network; its subtasks reach
    # the node's proxy through a relay), where this machine can run the sandbox; where it
    # cannot, the demo says why and runs as the worker's user instead of staying paused.
    problem = probe()
    isolation = ['isolation = "sandbox"', "network = false"] if problem is None else [
        f'isolation = "none"  # no sandbox here: {problem}'.replace("\n", " ")]
    return "\n".join([
        "[v6]",
        "",
        f'[v6.algorithms."{demo["image"]}"]',
        f"python = {json.dumps(sandbox_info['python'])}",
        f"package = {json.dumps(demo['package'])}",
        "subtasks = true",
        # The operator's gate, so people see it: each run (and subtask) waits for Approve,
        # and its result for Release, in the window or `dss-console approvals`.
        'approve = "both"',
        *isolation,
        f'[v6.algorithms."{demo["image"]}".env]',
        f"PYTHONPATH = {json.dumps(demo['pythonpath'])}",
        "",
        "[v6.databases.default]",
        f"uri = {json.dumps(demo['csv'])}",
        'type = "csv"',
        "",
    ])


def sandbox_command(args: argparse.Namespace) -> int:
    if args.version == "5":
        return _hq_sandbox_command(args)
    from dss_console.sources.v6.sandbox import V6Sandbox
    from dss_console.sources.v6.venv import V6SandboxError

    box = V6Sandbox(data_dir=args.data, port=args.port,
                    report=lambda line: print(line, file=sys.stderr, flush=True))

    def show() -> None:
        settings_file = box.data_dir / "v6-settings.toml"
        settings_file.write_text(sandbox_settings_toml(box.info), encoding="utf-8")
        _print_sandbox(box, settings_file)

    return run_until_stopped(box, "vantage6 sandbox", V6SandboxError, show)


def _print_parties(seed: dict[str, Any]) -> None:
    for name, org in seed["organizations"].items():
        print(f"  organization {name} (id {org['id']}): private key {org['key_file']}")
    for name, node in seed["nodes"].items():
        kind = "encrypted" if node["encrypted"] else "plain"
        print(f"  node {name} in {node['collaboration']} ({kind}): API key {node['api_key']}")


def _print_sandbox(box: Any, settings_file: Path) -> None:
    seed = box.info["seed"]
    user, password = box.researcher
    q = shlex.quote
    print(f"vantage6 {box.info['version']} sandbox running at {box.url} (API {box.api_url})",
          flush=True)
    print(f"  data: {box.data_dir}   (everything below is also in {box.sandbox_file}, 0600)")
    _print_parties(seed)
    print(f"  researcher: {user} / {password} (organization research)")
    print(f"  demo algorithm: image {box.info['demo']['image']!r}, settings in {settings_file}")
    print("log in as the data station's nodes:")
    for name, node in seed["nodes"].items():
        key = f" --private-key {q(seed['organizations']['station']['key_file'])}" \
            if node["encrypted"] else ""
        print(f"  echo {node['api_key']} | dss-console v6 login --server {box.url} "
              f"--api-key-stdin{key}")
        print(f"  dss-console worker --source v6 --server {box.url} --node {name} "
              f"--config {q(str(settings_file))}")
    station = seed["organizations"]["station"]["id"]
    collab = seed["collaborations"]["demo"]["id"]
    print("as the researcher (Python with vantage6-client==4.15.2, e.g. "
          f"{box.info['python']}):")
    print("  from vantage6.client import UserClient")
    print(f"  c = UserClient('http://127.0.0.1', {box.server.port}, '/api', log_level='warn')")
    print(f"  c.authenticate({user!r}, {password!r}); c.setup_encryption(None)")
    print(f"  t = c.task.create(collaboration={collab}, organizations=[{station}], "
          f"name='mean', image={box.info['demo']['image']!r}, description='',")
    print("                     input_={'method': 'central_mean', 'kwargs': {'column': 'age'}},"
          " databases=[{'label': 'default'}])")
    print("  print(c.wait_for_results(t['id']))")
    print("Press Ctrl-C to stop.", flush=True)


def _hq_sandbox_command(args: argparse.Namespace) -> int:
    """`v6 sandbox --version 5`: HQ 5.0.3 and the identity stand-in, until Ctrl-C/SIGTERM."""
    from dss_console.sources.v6.venv import V6SandboxError
    from dss_console.sources.v6x5.sandbox import HqSandbox

    box = HqSandbox(data_dir=args.data, port=args.port,
                    report=lambda line: print(line, file=sys.stderr, flush=True))
    return run_until_stopped(box, "vantage6 5.x sandbox", V6SandboxError,
                             lambda: _print_hq_sandbox(box))


def _print_hq_sandbox(box: Any) -> None:
    seed = box.info["seed"]
    q = shlex.quote
    realm = box.info["realm"]
    print(f"vantage6 HQ {box.info['version']} sandbox running at {box.url} (API "
          f"{box.api_url})", flush=True)
    print(f"  authentication: {box.auth_url} (realm {realm}): a Keycloak-compatible stand-in "
          "for this sandbox only, not an identity provider")
    print(f"  data: {box.data_dir}   (everything below is also in {box.sandbox_file}, 0600)")
    _print_parties(seed)
    user, password = box.researcher
    client_id, secret = box.service_account
    print(f"  researcher: {user} / {password}; service account {client_id} / {secret}")
    print("log in as the data station's nodes:")
    for name, node in seed["nodes"].items():
        key = f" --private-key {q(seed['organizations']['station']['key_file'])}" \
            if node["encrypted"] else ""
        print(f"  echo {node['api_key']} | dss-console v6 login --server {box.url} "
              f"--auth-url {box.auth_url} --node {name} --api-key-stdin{key}")
    print("then: dss-console worker --source v6 --server URL --node NAME; or the whole in "
          "the window: dss-console --sandbox v6 --sandbox-version 5")
    print("Press Ctrl-C to stop.", flush=True)
