"""The settings file: defaults, strict loading, the TOML writer, overrides, precedence."""

from __future__ import annotations

import dataclasses
import os
import socket
import stat
import sys
from pathlib import Path

import pytest

from dss_console import paths
from dss_console.engine.settings import (
    CONFIG_ENV,
    ServiceCommand,
    Settings,
    SettingsError,
    load_settings,
    parse_duration,
    parse_settings,
    save_settings,
    settings_path,
    settings_to_toml,
    validate_command_template,
)
from settings_helpers import services_of, settings_with, v6_of

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

HASH = "b7d9605c5d84f78449fd338d1b17e286adb7ea9e"
ASHS = "bash /opt/ashs/service_ashs.sh {ticket} {workdir} {workspace} {result}"

# The example the README shows: every key the schema has.
FULL_EXAMPLE = f"""\
server = "https://dss.itksnap.org"
servers = ["https://dss.itksnap.org", "http://127.0.0.1:8080"]
provider = "mylab"
instance = "node1"
workroot = "/data/dss-work"
poll_interval = 5.0
concurrency = 2
retention_days = 7
interrupted = "rerun"
ca_bundle = "/etc/ssl/my-ca.pem"
notify = false

[services."ASHS-PMC-T1"]
command = "{ASHS}"
timeout = "6h"
max_jobs = 1
cwd = "/opt/ashs"
auto = true

[services."ASHS-PMC-T1".env]
ASHS_ROOT = "/opt/ashs"

[services.{HASH}]
command = "python -m demo {{workspace}} {{result}}"
auto = false
"""


@pytest.fixture(autouse=True)
def _no_env_config(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own DSS_CONSOLE_CONFIG must not leak into these tests.
    monkeypatch.delenv(CONFIG_ENV, raising=False)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(SettingsError) as info:
        load_settings(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message  # always names the file
    return message[len(f"{path}: ") :]


# -- defaults and the full example -----------------------------------------------------


def test_missing_file_gives_defaults(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "nope" / "settings.toml")
    assert settings == Settings()
    assert settings.server is None and settings.servers == [] and settings.provider is None
    assert settings.instance == socket.gethostname()
    assert settings.workroot.name == "work"
    assert settings.poll_interval == 5.0
    assert settings.concurrency == 1
    assert settings.retention_days == 7
    assert settings.interrupted == "rerun"
    assert settings.on_shutdown == "resume"
    assert settings.ca_bundle is None and settings.notify == ()
    assert services_of(settings) == {}


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "")) == Settings()


def test_notify_true_still_means_succeeded_and_failed(tmp_path: Path) -> None:
    # Files written before the kinds: the switch keeps meaning what it meant.
    assert load_settings(write(tmp_path, "notify = true\n")).notify == ("failed", "succeeded")
    assert load_settings(write(tmp_path, "notify = false\n")).notify == ()
    # A list, in any order and with repeats, reads as the kinds in their own order.
    path = write(tmp_path, '# mine\nnotify = ["succeeded", "decision", "succeeded"]\n')
    assert load_settings(path).notify == ("decision", "succeeded")


def test_saved_notify_is_the_list_of_kinds(tmp_path: Path) -> None:
    path = write(tmp_path, "# keep me\nnotify = true\nconcurrency = 2\n")
    settings = load_settings(path)
    save_settings(dataclasses.replace(settings, notify=("decision",)), path)
    text = path.read_text()
    assert 'notify = ["decision"]' in text and "# keep me" in text, text
    assert load_settings(path).notify == ("decision",)
    save_settings(dataclasses.replace(settings, notify=()), path)
    assert "notify" not in path.read_text()  # the default (none) is left out
    assert load_settings(path).notify == ()


def test_full_example_loads(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, FULL_EXAMPLE))
    assert settings.server == "https://dss.itksnap.org"
    assert settings.servers == ["https://dss.itksnap.org", "http://127.0.0.1:8080"]
    assert settings.provider == "mylab"
    assert settings.instance == "node1"
    assert settings.workroot == Path("/data/dss-work")
    assert settings.concurrency == 2
    assert settings.ca_bundle == "/etc/ssl/my-ca.pem"
    ashs = services_of(settings)["ASHS-PMC-T1"]
    assert ashs == ServiceCommand(
        key="ASHS-PMC-T1",
        command=ASHS,
        timeout=21600.0,
        max_jobs=1,
        cwd="/opt/ashs",
        env={"ASHS_ROOT": "/opt/ashs"},
        auto=True,
    )
    assert services_of(settings)[HASH].auto is False
    assert services_of(settings)[HASH].timeout is None


def test_relative_workroot_is_taken_from_the_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir("/")
    settings = load_settings(write(tmp_path, 'workroot = "jobs"'))
    assert settings.workroot == tmp_path / "jobs"


def test_workroot_expands_the_home_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = load_settings(write(tmp_path, 'workroot = "~/dss"'))
    assert settings.workroot == tmp_path / "dss"


def test_settings_do_not_create_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert Settings().workroot == tmp_path / "data" / paths.APP_NAME / "work"
    assert not (tmp_path / "data").exists()


# -- writing ---------------------------------------------------------------------------

TRICKY = [
    "",
    'say "hi"',
    "C:\\Program Files\\ashs\\",
    "line one\nline two\r\n\ttabbed",
    "ünïcødé → 日本語 🧠",
    "\x01\x1f\x7f control characters",
    "'single' and \"double\" and \\\" both",
    "trailing backslash \\",
    '"""',
]


def tricky_settings(tmp_path: Path) -> Settings:
    services = {}
    for i, text in enumerate(TRICKY):
        key = f"svc.{i} with spaces \"q\" é" if i % 2 else f"plain-{i}"
        services[key] = ServiceCommand(
            key=key,
            command=f"run --label {{service}} {{workspace}} {{result}} # {i}",
            timeout=90.5 if i % 3 else 3600.0,
            max_jobs=i + 1 if i % 2 else None,
            cwd=text or None,
            env={"PLAIN": text, f"odd key {i}.x": text, "EMPTY": ""},
            auto=bool(i % 2),
        )
    services[HASH] = ServiceCommand(key=HASH, command="x {{literal}} {ticket}")
    return settings_with(
        server="https://dss.example.org/sub path",
        servers=["https://a.example.org", "http://127.0.0.1:8080"],
        provider='lab "one" \\ ü',
        instance="node\t1\n",
        workroot=tmp_path / "wörk root" / 'with "quotes"',
        poll_interval=0.25,
        concurrency=7,
        retention_days=1.5,
        interrupted="fail",
        on_shutdown="fail",
        ca_bundle=str(tmp_path / "ca bundle.pem"),
        notify=("decision", "succeeded"),
        services=services,
    )


def test_round_trip_with_tricky_strings(tmp_path: Path) -> None:
    settings = tricky_settings(tmp_path)
    path = save_settings(settings, tmp_path / "settings.toml")
    assert load_settings(path) == settings
    # A standard TOML reader agrees with ours, value for value.
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    assert data["provider"] == settings.provider
    for key, service in services_of(settings).items():
        assert data["services"][key]["command"] == service.command
        assert data["services"][key].get("env", {}) == service.env


def test_round_trip_of_defaults_and_of_the_example(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    save_settings(Settings(), path)
    assert path.read_text() == ""  # nothing differs from the defaults
    assert load_settings(path) == Settings()
    example = load_settings(write(tmp_path, FULL_EXAMPLE))
    save_settings(example, path)
    assert load_settings(path) == example


def test_saved_text_is_readable(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, FULL_EXAMPLE))
    text = settings_to_toml(settings)
    assert 'server = "https://dss.itksnap.org"\n' in text
    assert "retention_days" not in text  # equal to the default
    assert "timeout = 21600\n" in text  # whole seconds, not 21600.0
    assert '[services."ASHS-PMC-T1"]\n' in text
    assert '[services."ASHS-PMC-T1".env]\nASHS_ROOT = "/opt/ashs"\n' in text
    assert "poll_interval" not in text


def test_host_dependent_defaults_are_not_written(tmp_path: Path) -> None:
    # Several hosts may share one home dir; pinning this host's name would give them all
    # the same instance code.
    text = settings_to_toml(Settings(provider="lab"))
    assert "instance" not in text and "workroot" not in text
    assert "instance = " in settings_to_toml(Settings(instance="other"))


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_save_is_private_and_creates_the_dir(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "settings.toml"
    save_settings(Settings(provider="lab"), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    # Overwriting keeps it private and leaves no temp files behind.
    path.chmod(0o644)
    save_settings(Settings(provider="other"), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["settings.toml"]
    assert load_settings(path).provider == "other"


def test_save_refuses_settings_it_could_not_load(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text('provider = "kept"\n')
    for bad in (
        Settings(concurrency=0),
        Settings(interrupted="maybe"),
        settings_with(services={"X": ServiceCommand("X", "run {workspce}")}),
        settings_with(services={"X": ServiceCommand("Y", "run")}),
        Settings(provider="bad \ud800 surrogate"),
    ):
        with pytest.raises(SettingsError):
            save_settings(bad, path)
    assert path.read_text() == 'provider = "kept"\n'
    assert [p.name for p in tmp_path.iterdir()] == ["settings.toml"]


def test_save_to_an_unwritable_place(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SettingsError, match="cannot write"):
        save_settings(Settings(), blocker / "settings.toml")


# -- errors ----------------------------------------------------------------------------


SVC = '[services.X]\ncommand = "run"\n'  # a valid service table to add one bad key to
CMD = "[services.X]\ncommand = "  # ... or to give a bad command


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("poll_intervall = 3", "unknown key 'poll_intervall' (did you mean 'poll_interval'?)"),
        ("foo = 1\nbar = 2", "unknown keys 'foo', 'bar'"),
        ("server = 5", "server: must be a string, not an integer"),
        ('server = "dss.org"', "server: 'dss.org' is not an http:// or https:// URL"),
        ('servers = "https://a.org"', "servers: must be an array of URLs, not a string"),
        ('servers = ["https://a.org", 3]', "servers[1]: must be a string, not an integer"),
        ('provider = ""', "provider: must not be empty"),
        ('instance = "  "', "instance: must not be empty"),
        ("workroot = false", "workroot: must be a string, not a boolean"),
        ("poll_interval = 0", "poll_interval: must be longer than 0 seconds, not 0"),
        ('poll_interval = "soon"', "poll_interval: 'soon' is not a duration"),
        ("concurrency = 0", "concurrency: must be at least 1, not 0"),
        ("concurrency = 1.5", "concurrency: must be an integer, not a number"),
        ("concurrency = true", "concurrency: must be an integer, not a boolean"),
        ('concurrency = "2"', "concurrency: must be an integer, not a string"),
        ("retention_days = -1", "retention_days: must be a number 0 or more, not -1"),
        ("retention_days = nan", "retention_days: must be a number 0 or more, not nan"),
        ('interrupted = "retry"', "interrupted: must be \"rerun\" or \"fail\", not 'retry'"),
        ('on_shutdown = "leave"', "on_shutdown: must be \"resume\" or \"fail\", not 'leave'"),
        ("ca_bundle = []", "ca_bundle: must be a string, not an array"),
        ('notify = "yes"', 'notify: must be a list of "decision", "failed", "succeeded" (e.g. '
                           'notify = ["decision", "failed"]), not a string'),
        ('notify = ["failure"]', "notify: unknown kind 'failure' (did you mean 'failed'?): use "
                                 '"decision", "failed", "succeeded"'),
        ("notify = [1]", "notify[0]: must be a string, not an integer"),
        ('services = "x"', "services: must be a table, not a string"),
        ('services.X = "run"', 'services."X": must be a table, not a string'),
        ("[services.X]\ntimeout = 5", "services.\"X\": missing 'command'"),
        (SVC + "timout = 5", "services.\"X\": unknown key 'timout' (did you mean 'timeout'?)"),
        (CMD + "5", 'services."X".command: must be a string, not an integer'),
        (CMD + '"  "', 'services."X".command: must not be empty'),
        (CMD + '"run \'{result}"', "command: cannot split the command into words: No closing"),
        (CMD + '"run {workspce}"', "command: unknown placeholder {workspce}; did you mean"),
        (CMD + '"run --out={reslt}.txt"', "{reslt} in '--out={reslt}.txt'; did you mean {result}?"),
        (CMD + '"run {ticket:08d}"', "{ticket} in '{ticket:08d}' takes no format spec"),
        (CMD + '"awk {print}"', "unknown placeholder {print}"),
        (CMD + '"run {"', "bad braces in '{'"),
        (CMD + '"run }"', "bad braces in '}'"),
        (CMD + '"run {}"', "unknown placeholder {}"),
        (SVC + 'timeout = "6 hours"', "services.\"X\".timeout: '6 hours' is not a duration "
         "(use seconds or e.g. 6h, 90m)"),
        (SVC + "timeout = 0", 'services."X".timeout: must be longer than 0 seconds'),
        (SVC + "timeout = true", 'services."X".timeout: True is not a duration'),
        (SVC + "max_jobs = 0", 'services."X".max_jobs: must be at least 1, not 0'),
        (SVC + "cwd = 1", 'services."X".cwd: must be a string, not an integer'),
        (SVC + "auto = 1", 'services."X".auto: must be true or false, not an integer'),
        (SVC + "env = 1", 'services."X".env: must be a table, not an integer'),
        (SVC + "env = {N = 4}", 'env.N: must be a string, not an integer (quote it: N = "...")'),
        (SVC + 'env = {"A=B" = "x"}', 'env."A=B": is not a valid environment variable name'),
        ('[services."My.Service"]\ncommand = "{ticket"', 'services."My.Service".command: bad'),
        ('[services.My.Service]\ncommand = "run"', 'services."My": no command, but a sub-table '
         "'Service': a service name with dots or spaces must be quoted, e.g. "
         '[services."My.Service"]'),
        ('[services.""]\ncommand = "run"', 'services."": the service key must not be empty'),
        (SVC + 'executor = "k8s"', 'services."X".executor: must be "local" or "slurm", not'),
        (SVC + 'sbatch_options = "--partition=gpu"', 'services."X".sbatch_options: must be an '
         "array of strings, not a string"),
        (SVC + "sbatch_options = [3]", 'services."X".sbatch_options[0]: must be a string'),
        (SVC + 'sbatch_options = ["--job-name={tiket}"]', 'sbatch_options[0]: unknown '
         "placeholder {tiket} in '--job-name={tiket}'; did you mean {ticket}?"),
        (SVC + 'itksnap_wt = "yes"', 'services."X".itksnap_wt: must be true or false'),
    ],
)
def test_error_messages(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in load_error(tmp_path, text)


def test_toml_syntax_error_has_the_line(tmp_path: Path) -> None:
    message = load_error(tmp_path, 'provider = "lab"\nconcurrency = = 2\n')
    assert message.startswith("not valid TOML: ")
    assert "line 2" in message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_bytes(b'provider = "\xff"\n')
    with pytest.raises(SettingsError, match="not UTF-8 text"):
        load_settings(path)


def test_a_directory_is_not_a_settings_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="is a directory"):
        load_settings(tmp_path)


# -- durations and templates -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (21600, 21600.0),
        (2.5, 2.5),
        ("3600", 3600.0),
        (" 1.5 ", 1.5),
        ("6h", 21600.0),
        ("90m", 5400.0),
        ("45s", 45.0),
        ("1h30m", 5400.0),
        ("1h 30m 15s", 5415.0),
        ("1.5h", 5400.0),
        ("2d", 172800.0),
        ("6H", 21600.0),
        ("0", 0.0),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "6 hours", "h", "1m1h", "-5", -5, "inf", float("nan"), True, "1.h", "5ms"]
)
def test_parse_duration_refuses(text: object) -> None:
    with pytest.raises(SettingsError, match="is not a duration"):
        parse_duration(text)  # type: ignore[arg-type]


def test_parse_duration_is_an_argparse_type() -> None:
    assert issubclass(SettingsError, ValueError)


@pytest.mark.parametrize(
    "template",
    [
        ASHS,
        "python -m x {workspace} {result}",
        "run --ticket={ticket} --name {service} --hash {service_hash} {inputs}",
        "awk '{{print $1}}' {workdir}/log",
        "sh -c 'echo \"{ticket}\" > out'",
        "'/opt/my tools/run' {workspace}",
    ],
)
def test_valid_templates(template: str) -> None:
    validate_command_template(template)


# -- lookup and overrides --------------------------------------------------------------


def test_command_for_prefers_a_hash_key(tmp_path: Path) -> None:
    settings = settings_with(
        services={
            "Demo": ServiceCommand("Demo", "by-name"),
            HASH.upper(): ServiceCommand(HASH.upper(), "by-hash"),
            "Other": ServiceCommand("Other", "other"),
        }
    )
    found = settings.command_for("Demo", HASH)
    assert found is not None and found.command == "by-hash"
    found = settings.command_for("Demo", "0" * 40)
    assert found is not None and found.command == "by-name"
    assert settings.command_for("demo", "0" * 40) is None  # names match exactly
    assert settings.command_for("Missing", "1" * 40) is None


def test_matches() -> None:
    assert ServiceCommand(HASH, "x").matches("Whatever", HASH)
    assert ServiceCommand(HASH.upper(), "x").matches("Whatever", HASH)
    assert ServiceCommand("Demo", "x").matches("Demo", HASH)
    assert not ServiceCommand("Demo", "x").matches("Demo2", HASH)
    assert not ServiceCommand("Demo", "x").matches("demo", HASH)


def test_overrides_replace_the_command_and_keep_the_options() -> None:
    base = settings_with(
        services={"Demo": ServiceCommand("Demo", "old", timeout=60, env={"A": "1"}, auto=False)}
    )
    new = base.with_command_overrides(["Demo=new {workspace} {result}", "Added=run {ticket}"])
    assert services_of(new)["Demo"] == ServiceCommand(
        "Demo", "new {workspace} {result}", timeout=60, env={"A": "1"}, auto=False
    )
    assert services_of(new)["Added"] == ServiceCommand("Added", "run {ticket}")
    assert services_of(base)["Demo"].command == "old"  # the original is untouched
    assert "Added" not in services_of(base)


def test_override_values_may_contain_equals_signs() -> None:
    new = Settings().with_command_overrides(["Demo=run --out={result} --x=1"])
    assert services_of(new)["Demo"].command == "run --out={result} --x=1"


def test_an_override_by_name_wins_over_a_hash_key_in_the_file() -> None:
    base = settings_with(services={HASH: ServiceCommand(HASH, "from-file")})
    new = base.with_command_overrides(["Demo=from-cli"])
    found = new.command_for("Demo", HASH)
    assert found is not None and found.command == "from-cli"
    found = base.command_for("Demo", HASH)
    assert found is not None and found.command == "from-file"
    # The precedence survives dataclasses.replace (the worker adjusts settings that way).
    found = dataclasses.replace(new, concurrency=3).command_for("Demo", HASH)
    assert found is not None and found.command == "from-cli"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("Demo", "expected SERVICE=TEMPLATE"),
        ("=run", "expected SERVICE=TEMPLATE"),
        ("Demo=", "expected SERVICE=TEMPLATE"),
        ("Demo=  ", "expected SERVICE=TEMPLATE"),
        ("Demo=run {workspce}", "--command 'Demo': unknown placeholder {workspce}"),
        ("Demo=run 'x", "--command 'Demo': cannot split"),
    ],
)
def test_bad_overrides(override: str, expected: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings().with_command_overrides([override])
    assert str(info.value).startswith("--command ")
    assert expected in str(info.value)


# -- where the file is -----------------------------------------------------------------


def test_settings_path_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    default = paths.config_dir() / "settings.toml"
    assert settings_path() == default
    assert settings_path("") == default
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "env.toml"))
    assert settings_path() == tmp_path / "env.toml"
    assert settings_path(tmp_path / "flag.toml") == tmp_path / "flag.toml"
    assert settings_path(str(tmp_path / "flag.toml")) == tmp_path / "flag.toml"
    monkeypatch.setenv(CONFIG_ENV, "")
    assert settings_path() == default
    monkeypatch.setenv("HOME", str(tmp_path))
    assert settings_path("~/x.toml") == tmp_path / "x.toml"


def test_load_and_save_follow_the_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    env_file = tmp_path / "env" / "settings.toml"
    monkeypatch.setenv(CONFIG_ENV, str(env_file))
    assert save_settings(Settings(provider="from-env")) == env_file
    assert load_settings().provider == "from-env"
    assert load_settings(None).provider == "from-env"
    flag_file = write(tmp_path, 'provider = "from-flag"')
    assert load_settings(flag_file).provider == "from-flag"
    assert not (tmp_path / "xdg").exists()


@pytest.mark.skipif(sys.platform != "linux", reason="XDG paths")
def test_default_location_is_the_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    path = save_settings(Settings(provider="lab"))
    assert path == tmp_path / "xdg" / paths.APP_NAME / "settings.toml"
    assert load_settings().provider == "lab"


def test_cluster_and_itksnap_wt_keys_round_trip(tmp_path: Path) -> None:
    path = write(tmp_path, '[services.X]\ncommand = "run {workspace} {result}"\n'
                           'executor = "slurm"\n'
                           'sbatch_options = ["--partition=gpu", "--output=x-{ticket}"]\n'
                           "itksnap_wt = true\n")
    service = services_of(load_settings(path))["X"]
    assert service.executor == "slurm" and service.itksnap_wt
    assert service.options["sbatch_options"] == ["--partition=gpu", "--output=x-{ticket}"]
    again = save_settings(load_settings(path), tmp_path / "again.toml")
    assert services_of(load_settings(again))["X"] == service


def test_executor_overrides_from_the_command_line(tmp_path: Path) -> None:
    settings = settings_with(services={"X": ServiceCommand(key="X", command="run")})
    assert services_of(settings.with_executor_overrides(["X=slurm"]))["X"].executor == "slurm"
    assert services_of(settings)["X"].executor == "local"  # a copy
    with pytest.raises(SettingsError, match="expected SERVICE=local or SERVICE=slurm"):
        settings.with_executor_overrides(["X=pbs"])
    with pytest.raises(SettingsError, match="'Y': that service has no command"):
        settings.with_executor_overrides(["Y=slurm"])


def test_send_output_tail_is_off_by_default_and_each_service_may_opt_in(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(
        'send_output_tail = true\n'
        '[services.A]\ncommand = "a {result}"\nsend_output_tail = false\n'
        '[services.B]\ncommand = "b {result}"\n'
        '[v6]\nsend_output_tail = true\n'
        '[v6.algorithms."img:1"]\ncommand = "x {output}"\nsend_output_tail = false\n')
    settings = load_settings(path)
    assert settings.send_output_tail is True
    assert services_of(settings)["A"].send_output_tail is False
    assert services_of(settings)["B"].send_output_tail is None  # the top-level default
    assert v6_of(settings).send_output_tail is True
    assert v6_of(settings).algorithms["img:1"].send_output_tail is False
    again = parse_settings(settings_to_toml(settings), path)
    assert again == settings
    defaults = Settings()
    assert defaults.send_output_tail is False and v6_of(defaults).send_output_tail is False
    path.write_text('[v6]\nshare_logs = true\nsend_output_tail = false\n')
    with pytest.raises(SettingsError, match="old name of send_output_tail"):
        load_settings(path)
    path.write_text('send_output_tail = "yes"\n')
    with pytest.raises(SettingsError, match="send_output_tail: must be true or false"):
        load_settings(path)


# -- editing in place ------------------------------------------------------------------

COMMENTED = """\
# Our lab's worker. Ask Ana before changing the pause.
provider = "lab"          # the name the server knows
pause_window = "30m"      # half an hour, not 1800
poll_interval = "10s"

[services."ASHS-PMC-T1"]  # the big one
command = "bash /opt/ashs/run.sh {workspace} {result}"
timeout = "6h"            # ASHS takes 4 h at most

[services."ASHS-PMC-T1".env]
ASHS_ROOT = "/opt/ashs"   # shared install

[v6.databases.default]
uri = "/data/cohort.csv"  # refreshed nightly
type = "csv"
"""


def test_saving_unchanged_settings_leaves_the_file_alone(tmp_path: Path) -> None:
    path = write(tmp_path, COMMENTED)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # a time a rewrite cannot keep
    save_settings(load_settings(path), path)
    assert path.read_text() == COMMENTED
    assert path.stat().st_mtime_ns == 1_000_000_000


def test_a_changed_value_changes_only_that_value(tmp_path: Path) -> None:
    path = write(tmp_path, COMMENTED)
    settings = load_settings(path)
    settings.concurrency = 3  # a new key
    services_of(settings)["ASHS-PMC-T1"].max_jobs = 2
    services_of(settings)["ASHS-PMC-T1"].timeout = 5400.0  # a changed duration, spelled as such
    save_settings(settings, path)
    text = path.read_text()
    assert load_settings(path) == settings
    expected = (COMMENTED
                .replace('poll_interval = "10s"\n', 'poll_interval = "10s"\nconcurrency = 3\n')
                .replace('timeout = "6h"            # ASHS takes 4 h at most\n',
                         'timeout = "1h30m"            # ASHS takes 4 h at most\nmax_jobs = 2\n'))
    assert text == expected


def test_removed_entries_go_and_the_rest_keeps_its_comments(tmp_path: Path) -> None:
    path = write(tmp_path, COMMENTED)
    settings = dataclasses.replace(load_settings(path),
                                   pause_window=900.0).with_services({})  # default: left out
    save_settings(settings, path)
    text = path.read_text()
    assert load_settings(path) == settings
    assert "ASHS" not in text and "pause_window" not in text
    assert "# Our lab's worker." in text and 'uri = "/data/cohort.csv"  # refreshed nightly' in text


def test_a_broken_file_is_written_whole(tmp_path: Path) -> None:
    path = write(tmp_path, "provider = \n")
    save_settings(Settings(provider="lab"), path)
    assert path.read_text() == 'provider = "lab"\n'
