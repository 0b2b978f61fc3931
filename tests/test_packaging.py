"""What installs tidalq on a machine: systemd units, man pages, the README's commands,
the wheel."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import click
import pytest

from tests.helpers import DaemonProcess, FakeProcess, repo_root, subprocess_env
from tidalq.cli import main as cli_main
from tidalq.config import ENV_KEYS, config_keys

ROOT = repo_root()
UNITS = sorted((ROOT / "systemd").glob("tidalq.*"))
USER_UNITS = sorted((ROOT / "systemd" / "user").glob("tidalq.*"))


def _with_real_binary(unit: Path, out_dir: Path) -> Path:
    tidalq = shutil.which("tidalq") or f"{sys.executable} -m tidalq"
    text = unit.read_text()
    text = text.replace("/opt/tidalq/bin/tidalq", tidalq).replace("%h/.local/bin/tidalq", tidalq)
    target = out_dir / unit.name
    target.write_text(text)
    return target


@pytest.mark.parametrize(("units", "user"), [(UNITS, False), (USER_UNITS, True)])
def test_systemd_units_verify_cleanly(units: list[Path], user: bool, tmp_path: Path) -> None:
    assert {u.name for u in units} == {"tidalq.service", "tidalq.socket"}
    copies = [str(_with_real_binary(u, tmp_path)) for u in units]
    runtime = tmp_path / "xdg-runtime"
    runtime.mkdir(mode=0o700)
    args = ["systemd-analyze", *(["--user"] if user else []), "verify", "--man=no", *copies]
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    out = subprocess.run(args, capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stderr.strip() == "", out.stderr


def test_service_unit_has_what_the_daemon_needs() -> None:
    unit = (ROOT / "systemd" / "tidalq.service").read_text()
    for line in ("Type=notify", "StateDirectory=tidalq", "RuntimeDirectory=tidalq",
                 "Restart=on-failure", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "ProtectHome=yes", "PrivateTmp=yes", "SystemCallFilter=@system-service",
                 "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6"):
        assert line in unit
    stop = int(re.search(r"TimeoutStopSec=(\d+)s", unit).group(1))  # type: ignore[union-attr]
    assert stop > 20, "longer than the drain deadline"
    assert re.search(r"WatchdogSec=\d+", unit)
    assert re.search(r"ReadWritePaths=/srv/music/TIDAL", unit)


def unit_environment(unit: Path) -> dict[str, str]:
    return dict(line.removeprefix("Environment=").split("=", 1)
                for line in unit.read_text().splitlines() if line.startswith("Environment="))


def test_daemon_runs_with_the_environment_the_unit_gives(
        tmp_path: Path, fake_proc: FakeProcess) -> None:
    runtime, state, conf = tmp_path / "run" / "tidalq", tmp_path / "state", tmp_path / "etc"
    for d in (runtime, state, conf):
        d.mkdir(parents=True)
    (conf / "config.toml").write_text(f'api_urls = ["{fake_proc.url}"]\n'
                                      f'cover_url = "{fake_proc.url}"\n')
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(20)
    env = {**unit_environment(ROOT / "systemd" / "tidalq.service"),
           "TIDAL_DOWNLOADS": str(tmp_path / "lib"), "TIDALQ_SOCKET_GROUP": "root",
           "RUNTIME_DIRECTORY": str(runtime), "STATE_DIRECTORY": str(state),
           "CONFIGURATION_DIRECTORY": str(conf), "NOTIFY_SOCKET": str(tmp_path / "notify"),
           "WATCHDOG_USEC": "2000000"}
    d = DaemonProcess(tmp_path, env)
    d.env.pop("TIDALQ_SOCKET")
    d.socket = runtime / "tidalq.sock"
    try:
        d.start(wait=False)
        assert notify.recv(4096).startswith(b"READY=1")
        assert oct(d.socket.stat().st_mode & 0o777) == "0o660"
        assert (state / "queue.db").exists()
        d.env["TIDALQ_SOCKET"] = str(d.socket)
        job = d.cli("add", "album", "100").stdout.strip()
        assert d.cli("wait", job, "--timeout", "60").returncode == 0
        assert len(list((tmp_path / "lib").rglob("*.flac"))) == 3
        d.signal(signal.SIGTERM)
        assert d.wait_exit(30) == 0
    finally:
        d.stop()
        notify.close()


@pytest.mark.parametrize("page", ["tidalq.1", "tidalq.conf.5"])
def test_man_pages_render_without_warnings(page: str) -> None:
    out = subprocess.run(["groff", "-man", "-ww", "-z", str(ROOT / "man" / page)],
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stderr == "", out.stderr


def _commands(group: click.Group) -> dict[str, click.Command]:
    return {name: cmd for name, cmd in group.commands.items() if not cmd.hidden}


def test_man_page_documents_every_command_option_and_variable() -> None:
    page = (ROOT / "man" / "tidalq.1").read_text().replace("\\-", "-")
    for name, command in _commands(cli_main).items():
        assert re.search(rf"tidalq {name}\b|\.BR? {name}\b", page), f"command {name}"
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("-"):
                    assert opt in page, f"{name} {opt}"
    for opt in ("--socket", "--config", "--version", "--help"):
        assert opt in page
    for var in [*ENV_KEYS.values(), "REDIS_URL", "REDIS_DISABLED", "TIDALQ_CONFIG"]:
        assert var in page, var


def test_config_man_page_documents_every_key() -> None:
    page = (ROOT / "man" / "tidalq.conf.5").read_text()
    for key in config_keys():
        assert f".B {key}\n" in page, key
        if key in ENV_KEYS:  # commands (on_complete, on_fail) are set in the file only
            assert ENV_KEYS[key] in page


def test_wheel_installs_the_man_pages(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                          "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    wheel = next(tmp_path.glob("tidalq-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.endswith("data/data/share/man/man1/tidalq.1") for n in names)
    assert any(n.endswith("data/data/share/man/man5/tidalq.conf.5") for n in names)
    assert any(n.endswith("testing/data/track.m4a") for n in names)


def readme_blocks(section: str) -> list[str]:
    """The ```sh blocks of one ``## section`` of the README."""
    text = (ROOT / "README.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", body, re.S)


def readme_tidalq_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = [*re.findall(r"```sh\n(.*?)```", text.split("## Running it under systemd")[0],
                          re.S)]
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if re.search(r"(^|\(|\s)tidalq ", line)
            and not line.startswith(("python -m", "TIDALQ_API_URLS", "REDIS_URL", "pip "))]


def test_every_readme_command_runs(make_daemon: Any, tmp_path: Path) -> None:
    """Runs the README's `tidalq` commands in order, as a shell would."""
    d: DaemonProcess = make_daemon()
    script = ["set -e"]
    for line in readme_tidalq_lines():
        if line.startswith("tidalq watch"):
            script.append("timeout -s INT 2 tidalq watch || test $? -eq 124 -o $? -eq 130")
        elif "tidalq daemon" in line:
            continue  # the daemon is already running; its flags are checked below
        else:
            script.append(line)
    assert len(script) > 10
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "tidalq").write_text(f"#!/bin/sh\nexec {sys.executable} -m tidalq \"$@\"\n")
    (bin_dir / "tidalq").chmod(0o755)
    env = subprocess_env(**{k: v for k, v in d.env.items() if k.startswith(("TIDAL", "XDG"))})
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    out = subprocess.run(["bash", "-c", "\n".join(script)], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=240)
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    help_text = d.cli("daemon", "--help").stdout
    for flag in ("--http", "--no-workers", "--store", "--download-dir", "--max-concurrent"):
        assert flag in help_text


def test_the_readme_system_service_steps_install_a_unit_that_starts(tmp_path: Path) -> None:
    """The README's system-service steps, run as far as they go without a systemd
    manager, in a scratch root: every path under it, the user made with useradd --root."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for name in ("passwd", "group", "shadow", "gshadow", "login.defs"):
        if Path("/etc", name).exists():
            shutil.copy(Path("/etc", name), root / "etc" / name)
    block = next(b for b in readme_blocks("Running it under systemd") if "/opt/tidalq" in b)
    script = []
    for line in block.strip().splitlines():
        if line.startswith(("apt-get ", "systemctl ")):
            continue  # installed by scripts/test; no systemd manager runs here
        line = re.sub(r"(?<![\w.])/(opt|etc|srv|usr)/", rf"{root}/\1/", line)
        if line.startswith("useradd "):
            line = line.replace("useradd ", f"useradd --root {root} ", 1)
        elif "-o tidalq -g tidalq" in line:  # the user exists in the scratch root only
            line = line.replace("-o tidalq -g tidalq",
                                f"-o $(grep ^tidalq: {root}/etc/passwd | cut -d: -f3) "
                                f"-g $(grep ^tidalq: {root}/etc/group | cut -d: -f3)")
        script.append(line)
    for folder in ("usr/local/bin", "etc/systemd/system"):  # what every Debian has
        (root / folder).mkdir(parents=True, exist_ok=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    out = subprocess.run(["bash", "-ec", "\n".join(script)], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    unit = root / "etc/systemd/system/tidalq.service"
    exec_start = re.search(r"^ExecStart=(\S+)", unit.read_text(), re.M).group(1)  # type: ignore[union-attr]
    version = subprocess.run([f"{root}{exec_start}", "--version"], capture_output=True,
                             text=True, timeout=60)
    assert version.returncode == 0 and "tidalq" in version.stdout
    library = root / "srv/music/TIDAL"
    owner = int(re.search(r"^tidalq:[^:]*:(\d+):", (root / "etc/passwd").read_text(),
                          re.M).group(1))  # type: ignore[union-attr]
    assert library.is_dir() and library.stat().st_uid == owner
    verify = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={root}",
                             "tidalq.service", "tidalq.socket"], capture_output=True,
                            text=True, timeout=60)
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
    from tidalq.config import load_settings

    settings = load_settings(config_path=root / "etc/tidalq/config.toml", env={})
    assert settings.quality.value == "LOSSLESS"


def test_the_readme_offline_recipe_runs_as_written() -> None:
    """"Trying it offline", pasted into a shell after the venv exists (scripts/test made it)."""
    block = readme_blocks("Trying it offline")[0].strip().splitlines()
    assert block[0].startswith("python3 -m venv .venv")
    for leftover in ("/tmp/tidal-library", "/tmp/tidalq-try", "/tmp/tidalq-try.db"):
        shutil.rmtree(leftover, ignore_errors=True)
        Path(leftover).unlink(missing_ok=True) if Path(leftover).is_file() else None
    script = ["trap 'kill $(jobs -p) 2>/dev/null' EXIT", *block[1:]]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDAL", "REDIS"))}
    out = subprocess.run(["bash", "-ec", "\n".join(script)], cwd=ROOT, capture_output=True,
                         text=True, timeout=180, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "01 - Opening.flac" in out.stdout


def test_fake_upstream_command_in_readme_serves(fake_proc: FakeProcess) -> None:
    import urllib.request

    with urllib.request.urlopen(fake_proc.url + "/album/?id=100", timeout=5) as resp:
        assert b"First Light" in resp.read()
