"""`dss-console` command line.

Verbs: (none) opens the GUI; `login`, `logout`, `pro ...` (scriptable provider calls that
mirror `itksnap-wt -dssp-*`), `sandbox` (a local real DSS server with demo data).
Qt is imported only by the GUI verb, so a headless box never loads it.

Exit codes: 0 ok, 1 the operation failed (one line on stderr says why), 2 usage error,
3 `pro claim` found nothing to claim, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from dss_console import __version__, plugins
from dss_console.commands.errors import (
    EXIT_FAILED,
    EXIT_USAGE,
    PROG,
    CliError,
)

DESCRIPTION = """\
Console and headless tools for ITK-SNAP DSS service providers.

Run without a verb to open the console window. Typical first steps:
  dss-console login --server https://dss.itksnap.org --token-stdin   (paste a token from
                                                                       <server>/token)
  dss-console pro services
  dss-console pro claim HASH MYLAB $(hostname)
Try it all locally first with `dss-console sandbox`, or in the window with
`dss-console --sandbox` (DSS), `dss-console --sandbox v6` (vantage6 4.x) or
`dss-console --sandbox v6 --sandbox-version 5` (vantage6 5.x).
"""


# --sandbox [SOURCE]: each source's window parts bring its sandbox (the default first).
SANDBOX_SOURCES = tuple(plugins.SOURCE_WINDOWS)


def sandbox_source(name: str, version: str | None) -> str:
    """The source whose sandbox `--sandbox NAME [--sandbox-version MAJOR]` opens: with a
    version, the member of NAME's family (plugins.SOURCE_FAMILIES) for servers of that
    major version. ValueError in words when there is none."""
    from dss_console.core.source_plugin import plugin_family, plugin_server_major

    if version is None:
        return name
    family = plugin_family(plugins.family_plugin(name)) if name in plugins.SOURCES else name
    members = plugins.SOURCE_FAMILIES.get(family, (family,))
    for member in members:
        if member in plugins.SOURCE_WINDOWS and \
                plugin_server_major(plugins.family_plugin(member)) == version:
            return member
    majors = [m for m in (plugin_server_major(plugins.family_plugin(n)) for n in members
                          if n in plugins.SOURCE_WINDOWS) if m]
    offered = f"it has {', '.join(majors)}" if majors else "it has no versions to choose"
    raise ValueError(f"--sandbox {name} has no version {version} ({offered})")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: usage error: {message}\n")


def _server_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--server", metavar="URL",
                        help="DSS server URL (default: the server you last logged in to)")
    common.add_argument("--ca-bundle", metavar="FILE",
                        help="CA certificates (PEM) to trust for this server, for a server "
                             "with a private certificate authority; TLS is always verified")
    return common


def build_parser() -> argparse.ArgumentParser:
    from dss_console.commands import approvals, audit, auth, pro, sandbox, v6, worker
    from dss_console.commands.wt import WT_HELP

    parser = _Parser(prog=PROG, description=DESCRIPTION,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    gui = parser.add_argument_group("console window (no verb)")
    gui.add_argument("--sandbox", nargs="?", const=SANDBOX_SOURCES[0], choices=SANDBOX_SOURCES,
                     metavar="{" + ",".join(SANDBOX_SOURCES) + "}",
                     help="open the console on a local sandbox with demo work: `--sandbox` or "
                          "`--sandbox dss` logs in to an embedded DSS server with demo tickets "
                          "and the demo service's command configured; `--sandbox v6` logs in "
                          "as a node of a local vantage6 4.15.2 server with demo tasks posted "
                          "and the demo algorithm configured (its first use builds the "
                          "server's Python environment: 1-2 minutes, needs PyPI); "
                          "`--sandbox v6 --sandbox-version 5` (or `--sandbox v6x5`) logs in "
                          "as a node of a local vantage6 HQ 5.0.3, behind a stand-in for "
                          "Keycloak made for the sandbox (Keycloak itself cannot be "
                          "installed here), with demo tasks posted (its first use builds "
                          "HQ's Python 3.13 environment)")
    gui.add_argument("--sandbox-version", metavar="MAJOR",
                     help="with --sandbox SOURCE: the server's major version, for a source "
                          "with several (vantage6: 4, the default, or 5)")
    gui.add_argument("--self-test", action="store_true",
                     help="with --sandbox: log in, claim a demo ticket (a vantage6 run), run "
                          "it to success, then exit 0 (non-zero with the reason otherwise)")
    gui.add_argument("--screenshot", type=Path, metavar="FILE",
                     help="with --self-test: save a PNG of the window at the end")
    gui.add_argument("--config", dest="gui_config", metavar="FILE",
                     help="settings file for the console (default: $DSS_CONSOLE_CONFIG, else the "
                          "platform config dir)")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    common = _server_options()
    auth.add_parsers(verbs, common)
    pro.add_parser(verbs, common)
    worker.add_parser(verbs, common)
    approvals.add_parser(verbs)
    sandbox.add_parser(verbs)
    v6.add_parser(verbs)
    audit.add_parser(verbs)
    # Listed for --help only: `wt` takes itksnap-wt's command line, dispatched before argparse.
    verbs.add_parser("wt", help=WT_HELP, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    hidden = _hidden_verb(args_list[:1])
    if hidden is not None:
        return hidden(args_list[1:]) or 0
    if args_list[:1] == ["wt"]:
        from dss_console.commands.wt import wt_main

        return wt_main(args_list[1:])
    parser = build_parser()
    args = parser.parse_args(args_list)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    gui_flags = (args.sandbox is not None or args.self_test or args.screenshot
                 or args.gui_config or args.sandbox_version)
    if args.verb is not None and gui_flags:
        parser.error("--sandbox, --sandbox-version, --self-test, --screenshot and --config "
                     "(before the verb) are for the console window; give them without a verb")
    if args.self_test and args.sandbox is None:
        parser.error("--self-test needs --sandbox")
    if args.sandbox_version is not None:
        if args.sandbox is None:
            parser.error("--sandbox-version needs --sandbox")
        try:
            args.sandbox = sandbox_source(args.sandbox, args.sandbox_version)
        except ValueError as exc:
            parser.error(str(exc))
    if args.screenshot and not args.self_test:
        parser.error("--screenshot needs --self-test")
    if handler is None:
        if args.verb is None:
            return _open_gui(args)
        parser.parse_args([args.verb, "--help"])
        return EXIT_USAGE
    return run_handler(handler, args)


def _hidden_verb(first: list[str]) -> Callable[[list[str]], int | None] | None:
    """Entry points for child processes. A frozen bundle has no `python -m`, so the DSS
    server, the hook and the demo service are reached through the executable itself."""
    if first == ["_serve-sandbox-server"]:
        from dss_console.sandbox.serve import serve_main

        return serve_main
    if first == ["_hook"]:
        from dss_console.engine.hook import hook_main

        return hook_main
    if first == ["_demo-service"]:
        from dss_console.resources.demo_service.segment import main as demo_main

        return demo_main
    return None


def run_handler(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a verb; expected failures become one line on stderr, never a traceback."""
    from dss_console.dss import DssError

    try:
        return handler(args)
    except CliError as exc:
        _say_error(str(exc))
        return exc.code
    except DssError as exc:
        _say_error(str(exc))
        return EXIT_FAILED
    except OSError as exc:
        _say_error(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _say_error("interrupted")
        return 130


def _say_error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def _open_gui(args: argparse.Namespace) -> int:
    from dss_console.commands.context import require_named_settings

    try:
        # Only the default settings file may be missing (the window makes it when saving).
        require_named_settings(args.gui_config, env_too=False)
    except CliError as exc:
        _say_error(str(exc))
        return exc.code
    try:
        from dss_console.gui.app import GuiOptions, run
    except ImportError as exc:
        if getattr(sys, "frozen", False):
            # The bundle carries Qt; what is missing is a system library (libGL, fonts...).
            _say_error(f"the console window cannot start ({exc}); install the system "
                       "libraries Qt needs: apt-get install libgl1 libegl1 libfontconfig1 "
                       "fonts-dejavu-core libxcb1 (the headless verbs work without them)")
        else:
            _say_error(f"the console window needs PySide6 and qasync ({exc}); install them "
                       "with pip install 'dss-console[gui]', or use the headless verbs "
                       "(see --help)")
        return EXIT_FAILED
    return run(GuiOptions(sandbox=args.sandbox is not None,
                          sandbox_source=args.sandbox or SANDBOX_SOURCES[0],
                          self_test=args.self_test, screenshot=args.screenshot,
                          config=args.gui_config))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
