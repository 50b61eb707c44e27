"""A private desktop session for the notification tests: Xvfb on a free display, a session
D-Bus of its own and dunst, a real notification daemon (apt: dunst xvfb xauth; dev.sh installs
them). ``DBUS_SESSION_BUS_ADDRESS`` and ``DISPLAY`` point at it only inside the test.

What the daemon received is read back with ``dunstctl history`` (JSON), after
``dunstctl close-all`` (dunst's history holds closed notifications).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from waiting import wait_for

START_TIMEOUT = 20.0  # s; under two busy loops Xvfb takes a while


def _first_line(process: subprocess.Popen[bytes], what: str) -> str:
    """The first line a starting process prints (its display number, its bus address)."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT)
    line = process.stdout.readline().decode().strip() if ready else ""
    if not line:
        raise AssertionError(f"{what} did not start within {START_TIMEOUT} s "
                             f"(exit code {process.poll()})")
    return line


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


def _bus_has_owner(address: str, name: str) -> bool:
    from jeepney import DBusAddress, new_method_call
    from jeepney.io.blocking import open_dbus_connection

    bus = DBusAddress("/org/freedesktop/DBus", bus_name="org.freedesktop.DBus",
                      interface="org.freedesktop.DBus")
    with open_dbus_connection(bus=address) as connection:
        reply = connection.send_and_get_reply(new_method_call(bus, "NameHasOwner", "s", (name,)),
                                              timeout=5)
    return bool(reply.body[0])


@dataclass
class Notification:
    appname: str
    summary: str
    body: str
    id: int
    timestamp: int  # when the daemon received it (its own clock)


@dataclass
class DesktopSession:
    display: str
    bus_address: str
    env: dict[str, str]

    def dunstctl(self, *args: str) -> str:
        done = subprocess.run(["dunstctl", *args], env=self.env, capture_output=True,
                              text=True, timeout=30, check=True)
        return done.stdout

    def received(self) -> list[Notification]:
        """Every notification the daemon got (closing them first), oldest first."""
        self.dunstctl("close-all")
        data = json.loads(self.dunstctl("history"))["data"][0]
        found = [Notification(appname=n["appname"]["data"], summary=n["summary"]["data"],
                              body=n["body"]["data"], id=int(n["id"]["data"]),
                              timestamp=int(n["timestamp"]["data"])) for n in data]
        return sorted(found, key=lambda n: n.timestamp)


@pytest.fixture
def desktop_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                    ) -> Iterator[DesktopSession]:
    for tool in ("Xvfb", "dbus-daemon", "dunst", "dunstctl", "busctl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (apt-get install dunst xvfb xauth; "
                        "./dev.sh test installs them)")
    started: list[subprocess.Popen[bytes]] = []
    try:
        # -displayfd: Xvfb picks a free display itself and prints its number.
        xvfb = subprocess.Popen(["Xvfb", "-displayfd", "1", "-nolisten", "tcp"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        started.append(xvfb)
        display = ":" + _first_line(xvfb, "Xvfb")
        bus_dir = tmp_path / "bus"
        bus_dir.mkdir()
        dbus = subprocess.Popen(
            ["dbus-daemon", "--session", "--nofork", "--nopidfile",
             f"--address=unix:path={bus_dir / 'socket'}", "--print-address=1"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        started.append(dbus)
        address = _first_line(dbus, "dbus-daemon")
        env = {**os.environ, "DISPLAY": display, "DBUS_SESSION_BUS_ADDRESS": address}
        # No config: dunst's built-in defaults, whatever the machine's ~/.config holds.
        dunst = subprocess.Popen(["dunst", "-config", "/dev/null"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(dunst)
        wait_for(lambda: dunst.poll() is not None
                 or _bus_has_owner(address, "org.freedesktop.Notifications"),
                 timeout=START_TIMEOUT, what="dunst to own org.freedesktop.Notifications")
        assert dunst.poll() is None, f"dunst exited with {dunst.returncode}"
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", address)
        yield DesktopSession(display=display, bus_address=address, env=env)
    finally:
        for process in reversed(started):
            _stop(process)
