"""Fixtures: run a real `tern serve` per test, on a free port, in a temp dir.

The binary is never built here. It comes from $TERN_BIN, or
<repo>/target/release/tern (built by `cargo build --release` in .ci/run).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
DOMAIN = "example.test"
MAX_MESSAGE_SIZE = 52428800


def tern_bin() -> Path:
    p = Path(os.environ.get("TERN_BIN", REPO_ROOT / "target" / "release" / "tern"))
    if not p.is_absolute():
        p = REPO_ROOT / p
    return p


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def toml_list(items) -> str:
    return "[" + ", ".join(toml_str(i) for i in items) + "]"


DEFAULT_DOMAINS = {
    DOMAIN: {
        "mailboxes": ["alice", "bob", "carol"],
        "aliases": {"info": ["alice", "bob"], "sales": ["alice"]},
    }
}


def render_config(
    port: int,
    data_dir: Path,
    *,
    hostname: str = "mx.example.test",
    trusted_networks=(),
    domains=None,
    limits=None,
    smtp=None,
) -> str:
    domains = DEFAULT_DOMAINS if domains is None else domains
    lim = {
        "max_message_size": MAX_MESSAGE_SIZE,
        "max_recipients": 100,
        "max_connections": 1000,
        "max_connections_per_ip": 50,
        "command_timeout": "300s",
        "data_timeout": "180s",
    }
    lim.update(limits or {})
    smtp_opts = {"bare_line_endings": "reject", "early_talkers": "reject", "vrfy": False, "expn": False}
    smtp_opts.update(smtp or {})

    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        return toml_str(v)

    out = [
        f"hostname = {toml_str(hostname)}",
        f"data_dir = {toml_str(str(data_dir))}",
        f"trusted_networks = {toml_list(trusted_networks)}",
        "",
        "[[listener]]",
        f"address = {toml_str(f'{HOST}:{port}')}",
        'role = "mx"',
        "",
    ]
    for name, d in domains.items():
        out.append(f"[domains.{toml_str(name)}]")
        out.append(f"mailboxes = {toml_list(d.get('mailboxes', []))}")
        if d.get("aliases"):
            inner = ", ".join(f"{toml_str(k)} = {toml_list(v)}" for k, v in d["aliases"].items())
            out.append(f"aliases = {{ {inner} }}")
        if d.get("catch_all"):
            out.append(f"catch_all = {toml_str(d['catch_all'])}")
        out.append("")
    out.append("[limits]")
    out += [f"{k} = {val(v)}" for k, v in lim.items()]
    out.append("")
    out.append("[smtp]")
    out += [f"{k} = {val(v)}" for k, v in smtp_opts.items()]
    out.append("")
    return "\n".join(out)


class TernServer:
    def __init__(self, workdir: Path, **config):
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host = HOST
        self.config_path = workdir / "tern.toml"
        self.config_path.write_text(render_config(self.port, self.data_dir, **config))
        self.log_path = workdir / "tern.log"
        self.proc: subprocess.Popen | None = None
        self._log = None

    # -- lifecycle -------------------------------------------------------
    def start(self, timeout: float = 15.0) -> None:
        binary = tern_bin()
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(binary), "serve", "--config", str(self.config_path), "--log-format", "text"],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"tern serve exited early with {self.proc.returncode}\n{self.log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    pytest.fail(f"tern serve did not accept on {self.host}:{self.port} within {timeout}s\n{self.log()}")
                time.sleep(0.05)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait, return the exit code (kill and fail if it hangs)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail(f"tern serve did not exit within {timeout}s of SIGTERM\n{self.log()}")
        if self._log:
            self._log.close()
            self._log = None
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log(self, tail: int = 8000) -> str:
        try:
            text = self.log_path.read_bytes().decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        return "--- tern log (tail) ---\n" + text[-tail:]

    # -- mailboxes -------------------------------------------------------
    def maildir(self, local: str, domain: str = DOMAIN) -> Path:
        return self.data_dir / "mail" / domain / local

    def new_files(self, local: str, domain: str = DOMAIN) -> list[Path]:
        new = self.maildir(local, domain) / "new"
        if not new.is_dir():
            return []
        return sorted(p for p in new.iterdir() if p.is_file() and not p.name.startswith("."))

    def wait_for_messages(self, local: str, count: int, timeout: float = 10.0, settle: float = 0.5,
                          domain: str = DOMAIN) -> list[Path]:
        """Poll until `local` has at least `count` files in new/, then wait until the
        count is stable for `settle` seconds (so extra deliveries are seen too)."""
        deadline = time.monotonic() + timeout
        files = self.new_files(local, domain)
        while len(files) < count and time.monotonic() < deadline:
            time.sleep(0.05)
            files = self.new_files(local, domain)
        stable_since = time.monotonic()
        while time.monotonic() - stable_since < settle:
            time.sleep(0.05)
            again = self.new_files(local, domain)
            if len(again) != len(files):
                files, stable_since = again, time.monotonic()
        assert len(files) >= count, (
            f"{local}@{domain}: expected {count} message(s) in {self.maildir(local, domain)}/new "
            f"within {timeout}s, found {len(files)}\n{self.log()}"
        )
        return files

    def all_delivered(self) -> list[Path]:
        root = self.data_dir / "mail"
        if not root.is_dir():
            return []
        return sorted(p for p in root.glob("*/*/new/*") if p.is_file())


@pytest.fixture
def tern_binary() -> Path:
    binary = tern_bin()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(
            f"tern binary not found at {binary}: run `cargo build --release` first or set TERN_BIN",
            pytrace=False,
        )
    return binary


@pytest.fixture
def tern_factory(tmp_path_factory, tern_binary):
    """Start a server with a custom config: `srv = tern_factory(smtp={...})`."""
    servers: list[TernServer] = []

    def make(**config) -> TernServer:
        workdir = tmp_path_factory.mktemp("tern")
        srv = TernServer(workdir, **config)
        srv.start()
        servers.append(srv)
        return srv

    yield make

    failures = []
    for srv in servers:
        code = srv.stop()
        if code != 0:
            failures.append(f"tern serve exited {code} after SIGTERM (expected 0)\n{srv.log()}")
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)


@pytest.fixture
def tern(tern_factory) -> TernServer:
    return tern_factory()
