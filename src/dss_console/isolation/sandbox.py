"""The sandbox: a command line for bubblewrap (``bwrap``, what Flatpak uses) built from a
:class:`~dss_console.isolation.policy.Policy`.

Inside, a command sees only what is listed (never "everything but the secrets"): the
system read-only (/usr, /etc less its key files, the /bin and /lib links), its work dir
read-write, its inputs read-only, a private /tmp, an empty HOME, /proc and a minimal /dev;
plus the paths the policy names and what the caller must show for the hook, the itksnap-wt
shim and the vantage6 wrapper (:func:`runtime_binds`: this Python and this package,
read-only). It gets no network unless the policy allows it (a fresh network namespace has
only its own loopback), its own PID namespace (its whole tree dies with it: bwrap's
``--die-with-parent``) and a new session (no typing into the operator's terminal).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dss_console.isolation.policy import Policy

BWRAP = "bwrap"
INSTALL_HINT = ("install the package \"bubblewrap\" (Debian/Ubuntu: apt install bubblewrap; "
                "Fedora/RHEL: dnf install bubblewrap)")
SANDBOX_HOME = "/home/sandbox"
# Top-level system paths shown read-only when they exist (a link stays a link: merged /usr).
_SYSTEM = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Readable by their owner, and a root-run worker is their owner: hidden even from /etc.
_ETC_SECRETS = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-",
                "/etc/sudoers", "/etc/ssh", "/etc/munge", "/etc/ssl/private",
                "/etc/krb5.keytab", "/etc/vantage6", "/etc/dss-console")
# Variables that point at the operator's session: a keyring or agent socket, a display,
# per-user config/data dirs the sandbox does not show anyway.
_SESSION_VARIABLES = ("DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR", "SSH_AUTH_SOCK",
                      "GPG_AGENT_INFO", "GNOME_KEYRING_CONTROL", "DISPLAY", "WAYLAND_DISPLAY",
                      "XAUTHORITY", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME",
                      "XDG_STATE_HOME", "KRB5CCNAME", "OLDPWD")


@dataclass(frozen=True)
class Bind:
    """A host path the sandbox shows (at the same place unless ``target`` says)."""

    path: str
    writable: bool = False
    target: str | None = None  # where the sandbox shows it; None: at the same place


def probe(bwrap: str | None = None) -> str | None:
    """Why a sandbox cannot run here, in words naming what to install or enable; None
    when it can. Runs a real (tiny) sandbox: only that proves namespaces are allowed."""
    program = bwrap or shutil.which(BWRAP)
    if program is None:
        return f"the sandbox tool bubblewrap (bwrap) is not installed: {INSTALL_HINT}"
    try:
        max_ns = Path("/proc/sys/user/max_user_namespaces").read_text().strip()
    except OSError:
        max_ns = ""
    argv = [program, "--unshare-all", "--die-with-parent", "--new-session",
            *_system_args(), "--proc", "/proc", "--dev", "/dev", "true"]
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the sandbox tool {program} cannot run: {exc}"
    if done.returncode == 0:
        return None
    said = done.stderr.decode(errors="replace").strip().splitlines()
    detail = said[-1] if said else f"exit code {done.returncode}"
    if max_ns == "0" or "namespace" in detail.lower() or "uid map" in detail.lower():
        return (f"the sandbox cannot start: user namespaces are off on this machine ({detail}); "
                "an administrator can allow them (sysctl user.max_user_namespaces=15000; "
                "Debian: kernel.unprivileged_userns_clone=1; Ubuntu 24.04+: an AppArmor "
                "profile for bwrap or kernel.apparmor_restrict_unprivileged_userns=0)")
    return f"the sandbox cannot start: {program} said: {detail}"


def runtime_binds() -> list[Bind]:
    """What the engine's helpers need inside, read-only: this Python (the hook and the
    itksnap-wt shim run ``python -m dss_console…``; the vantage6 wrapper too) and the
    package itself (an editable install lives outside site-packages)."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    for module in ("dss_console", "dss_console.resources"):
        spec = importlib.util.find_spec(module)
        for location in (spec.submodule_search_locations or []) if spec else []:
            paths.add(os.path.realpath(location))
    if sys.executable:
        paths.add(os.path.dirname(os.path.realpath(sys.executable)))
    return [Bind(p) for p in sorted(paths) if p and not _is_system(p)]


def wrap(argv: Sequence[str], env: Mapping[str, str], workdir: Path | str,
         inputs: Sequence[Path | str], policy: Policy, extra_binds: Sequence[Bind] = (),
         *, hidden: Sequence[Path | str] = (), cwd: Path | str | None = None,
         bwrap: str = BWRAP) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that run ``argv`` in the policy's sandbox.

    ``workdir`` is shown read-write, ``inputs`` read-only (also when inside the work dir),
    ``extra_binds`` as they say (the caller's: :func:`runtime_binds`, the shim, a proxy
    socket), then the policy's ``read_only`` / ``read_write``. ``hidden`` are paths that
    stay invisible even under a shown path (the console's data and config dirs, the work
    root: another job's dir is then not even listable). ``cwd``: where the command starts
    (default: the work dir); it must be shown.
    """
    workdir = os.path.abspath(workdir)
    mounts: list[tuple[str, list[str]]] = [("/tmp", ["--tmpfs", "/tmp"]),
                                           (SANDBOX_HOME, ["--tmpfs", SANDBOX_HOME])]
    shown: list[Bind] = [Bind(workdir, True)]
    shown += [Bind(os.path.abspath(p)) for p in inputs]
    shown += list(extra_binds)
    shown += [Bind(p) for p in policy.read_only]
    shown += [Bind(p, True) for p in policy.read_write]
    for bind in shown:
        if os.path.exists(bind.path):
            option = "--bind" if bind.writable else "--ro-bind"
            target = bind.target or bind.path
            mounts.append((target, [option, bind.path, target]))
    late: list[str] = []
    for path in (os.path.abspath(p) for p in hidden):
        # Only a path under something shown needs covering; elsewhere it is absent already.
        if not any(_under(path, b.target or b.path) for b in shown):
            continue
        if os.path.isdir(path):
            # Read-only only at the end: a shown path below it needs its mount point made.
            mounts.append((path, ["--tmpfs", path]))
            late += ["--remount-ro", path]
        elif os.path.exists(path):
            mounts.append((path, ["--ro-bind", "/dev/null", path]))
    if policy.network:
        # A resolv.conf pointing into /run (systemd-resolved) would dangle: /run is not shown.
        resolv = os.path.realpath("/etc/resolv.conf")
        if not _under(resolv, "/etc") and os.path.exists(resolv):
            mounts.append((resolv, ["--ro-bind", resolv, resolv]))
    # Parents before children, so a read-only input inside the read-write work dir, or a
    # work dir inside a hidden work root, lands on top. Stable: equal depths keep the order.
    mounts.sort(key=lambda m: _depth(m[0]))

    args = [bwrap, "--die-with-parent", "--new-session", "--unshare-all"]
    if policy.network:
        args.append("--share-net")
    args += _system_args()
    for secret in _ETC_SECRETS:
        if os.path.isdir(secret):
            args += ["--tmpfs", secret, "--remount-ro", secret]
        elif os.path.lexists(secret):
            args += ["--ro-bind", "/dev/null", secret]
    args += ["--proc", "/proc", "--dev", "/dev", "--symlink", "../tmp", "/var/tmp"]
    for _path, words in mounts:
        args += words
    # The root itself (bwrap's own tmpfs with the mount points) read-only: writing anywhere
    # but the work dir, /tmp and HOME fails with "Read-only file system".
    args += late
    args += ["--remount-ro", "/", "--chdir", os.path.abspath(cwd or workdir), "--"]
    args += list(argv)

    sandbox_env = {k: v for k, v in env.items() if k not in _SESSION_VARIABLES}
    sandbox_env["HOME"] = SANDBOX_HOME
    sandbox_env["TMPDIR"] = "/tmp"
    sandbox_env["PWD"] = os.path.abspath(cwd or workdir)
    return args, sandbox_env


def _system_args() -> list[str]:
    args = []
    for path in _SYSTEM:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


def _is_system(path: str) -> bool:
    return any(_under(path, system) for system in ("/usr", "/bin", "/sbin", "/lib", "/lib64"))


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _depth(path: str) -> int:
    return len([part for part in path.split("/") if part])
