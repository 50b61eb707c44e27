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

from dss_console import __version__

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOTHING_TO_CLAIM = 3

PROG = "dss-console"

DESCRIPTION = """\
Console and headless tools for ITK-SNAP DSS service providers.

Run without a verb to open the console window. Typical first steps:
  dss-console login --server https://dss.itksnap.org --token-stdin   (paste a token from
                                                                       <server>/token)
  dss-console pro services
  dss-console pro claim HASH MYLAB $(hostname)
Try it all locally first with `dss-console sandbox`.
"""


class CliError(Exception):
    """An expected failure: printed as one line, exit code `code`."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


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
    from dss_console.commands import auth, pro, sandbox, worker

    parser = _Parser(prog=PROG, description=DESCRIPTION,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    common = _server_options()
    auth.add_parsers(verbs, common)
    pro.add_parser(verbs, common)
    worker.add_parser(verbs, common)
    sandbox.add_parser(verbs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    hidden = _hidden_verb(args_list[:1])
    if hidden is not None:
        return hidden(args_list[1:]) or 0
    parser = build_parser()
    args = parser.parse_args(args_list)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        if args.verb is None:
            return _open_gui(parser)
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


def _open_gui(parser: argparse.ArgumentParser) -> int:
    try:
        from dss_console.gui import app  # type: ignore[attr-defined]
    except ImportError:
        parser.print_help()
        print(f"\n{PROG}: the console window is not part of this build yet; use the verbs "
              "above.", file=sys.stderr)
        return EXIT_USAGE
    return int(app.run([]))  # pragma: no cover - the GUI issue wires this


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
