"""Fixtures: run a real `tern serve` per test, on a free port, in a temp dir.

The binary is never built here. It comes from $TERN_BIN, or
<repo>/target/release/tern (built by `cargo build --release` in .ci/run).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
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

# Users of submission servers (`TernServer(submission=True)`), created with the
# real `tern user add` CLI before the server starts. alice also gets a CRAM-MD5
# secret (`--cram-md5`); bob does not.
ALICE = "alice@example.test"
ALICE_PW = "alice-Secret-1 (with spaces)"
BOB = "bob@example.test"
BOB_PW = "bob-secret-2"
DEFAULT_USERS = ((ALICE, ALICE_PW, True), (BOB, BOB_PW, False))

# Names in the generated self-signed certificate; clients that verify it must
# use one of them as the TLS server name.
TLS_NAMES = ("mx.example.test", "localhost")

# [limits.abuse] for submission servers unless a test overrides a section:
# no tarpit, short AUTH failure delays (the brute-force test sets its own).
DEFAULT_ABUSE = {
    "tarpit": {"initial_delay": "0s"},
    "auth": {"initial_delay": "10ms", "max_delay": "20ms"},
}

ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


def tern_bin() -> Path:
    p = Path(os.environ.get("TERN_BIN", REPO_ROOT / "target" / "release" / "tern"))
    if not p.is_absolute():
        p = REPO_ROOT / p
    return p


_handed_out: set[int] = set()


def free_port() -> int:
    """A port free right now, never one this process handed out before (a server
    with several listeners needs distinct ports)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


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
    extra_listeners=(),
    abuse=None,
    auth=None,
    submission=None,
    tls=None,
    dns_nameservers=("127.0.0.1:9",),
    delivery=None,
    queue=None,
    mail_auth=None,
    dkim=None,
    imap_settings=None,
    pop3=None,
    filters=(),
) -> str:
    """The TOML config. `extra_listeners`: dicts with `port`, `role` and optionally
    `plaintext_auth`, after the MX listener on `port`. `abuse`: section name ->
    settings for `[limits.abuse.NAME]`. `auth`, `submission`, `tls`: settings of
    those tables (`tls = {"certificates": [{"cert": ..., "key": ...}]}`).
    `dns_nameservers`: `[dns] nameservers` ("ip:port" strings; the default is a
    closed loopback port, so no test ever asks the machine's resolver).
    `delivery`, `queue`: settings of `[delivery]` and `[queue]`; a dict value
    in `delivery` becomes a sub-table (`delivery={"smarthost": {...}}` ->
    `[delivery.smarthost]`). A domain dict may carry `lmtp` ("unix:/path" or
    "tcp:host:port"). `mail_auth`, `dkim`: settings of `[mail_auth]` and
    `[dkim]`; the inbound checks are off unless `mail_auth` is given (with the
    default closed-port nameserver every lookup would only time out).
    `imap_settings`: settings of `[imap]` (append_limit, max_sessions_per_user,
    quota). `filters`: `[[filter]]` stages, dicts in order (`{"type": "rspamd",
    "url": ...}`)."""
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
        if isinstance(v, Path):
            return toml_str(str(v))
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {val(x)}" for k, x in v.items()) + " }"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(val(x) for x in v) + "]"
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
    for lst in extra_listeners:
        out.append("[[listener]]")
        out.append(f"address = {toml_str(HOST + ':' + str(lst['port']))}")
        out.append(f"role = {toml_str(lst['role'])}")
        if lst.get("plaintext_auth"):
            out.append("plaintext_auth = true")
        out.append("")
    for name, d in domains.items():
        out.append(f"[domains.{toml_str(name)}]")
        out.append(f"mailboxes = {toml_list(d.get('mailboxes', []))}")
        if d.get("aliases"):
            inner = ", ".join(f"{toml_str(k)} = {toml_list(v)}" for k, v in d["aliases"].items())
            out.append(f"aliases = {{ {inner} }}")
        if d.get("catch_all"):
            out.append(f"catch_all = {toml_str(d['catch_all'])}")
        if d.get("lmtp"):
            out.append(f"lmtp = {toml_str(d['lmtp'])}")
        out.append("")
    out.append("[limits]")
    out += [f"{k} = {val(v)}" for k, v in lim.items()]
    out.append("")
    for section, settings in (abuse or {}).items():
        out.append(f"[limits.abuse.{section}]")
        out += [f"{k} = {val(v)}" for k, v in settings.items()]
        out.append("")
    out.append("[smtp]")
    out += [f"{k} = {val(v)}" for k, v in smtp_opts.items()]
    out.append("")
    # Never query the machine's resolver from a test: a closed loopback port
    # fails every lookup at once, so remote recipients are simply deferred.
    out.append("[dns]")
    out.append(f"nameservers = {toml_list(dns_nameservers)}")
    out.append("")
    for table, settings in (("delivery", delivery), ("queue", queue)):
        if settings:
            subtables = {k: v for k, v in settings.items() if isinstance(v, dict)}
            out.append(f"[{table}]")
            out += [f"{k} = {val(v)}" for k, v in settings.items() if k not in subtables]
            out.append("")
            for name, sub in subtables.items():
                out.append(f"[{table}.{name}]")
                out += [f"{k} = {val(v)}" for k, v in sub.items()]
                out.append("")
    mail_auth = {"enabled": False} if mail_auth is None else mail_auth
    for table, settings in (("auth", auth), ("submission", submission), ("tls", tls),
                            ("mail_auth", mail_auth), ("dkim", dkim), ("imap", imap_settings),
                            ("pop3", pop3)):
        if settings:
            out.append(f"[{table}]")
            out += [f"{k} = {val(v)}" for k, v in settings.items()]
            out.append("")
    # `filters`: the [[filter]] stages in order, each a dict of its keys
    # (`type` first); they come last (arrays of tables).
    for stage in filters:
        out.append("[[filter]]")
        out += [f"{k} = {val(v)}" for k, v in stage.items()]
        out.append("")
    return "\n".join(out)


_effective_config: str | None = None


def effective_config() -> str:
    """What `tern check-config` prints for a default test config: every setting
    this binary knows, with its default (lets a test adapt to a newer key)."""
    global _effective_config
    if _effective_config is None:
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            cfg = Path(d) / "tern.toml"
            cfg.write_text(render_config(free_port(), Path(d) / "data"))
            p = subprocess.run([str(tern_bin()), "check-config", str(cfg)], stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=60)
            _effective_config = (p.stdout + p.stderr).decode("utf-8", "replace")
    return _effective_config


class TernServer:
    """One `tern serve`. With `submission=True` it also listens with the roles
    `submission` (STARTTLS + AUTH, `submission_port`) and `submissions` (implicit
    TLS, `submissions_port`), plus, with `plaintext_auth_listener=True`, a
    `submission` listener with `plaintext_auth = true` (`plaintext_port`); its
    users file holds `users` ((address, password, cram_md5) triples, default
    alice and bob), written by `tern user add`.

    With `imap=True` it also listens with the roles `imap` (STARTTLS) and
    `imaps` (implicit TLS): `imap_port` is an `imap` listener with
    `plaintext_auth = true` (LOGIN allowed before TLS, loopback only),
    `imaps_port` the implicit-TLS one and `imap_starttls_port` an `imap`
    listener without plaintext_auth (LOGINDISABLED until STARTTLS). IMAP
    users are the same users file (login name = full address)."""

    def __init__(self, workdir: Path, *, submission: bool = False, plaintext_auth_listener: bool = False,
                 imap: bool = False, users=None, pop3: bool = False, **config):
        self.workdir = workdir
        # POP3 (`pop3=True`): `pop3_ports` = (role pop3 with plaintext_auth on
        # loopback, role pop3 with STLS before USER/PASS, role pop3s with
        # implicit TLS); the users file as for submission. `[pop3]` settings
        # come in as `pop3_settings={...}`.
        self.pop3_ports: tuple[int, int, int] | None = None
        if pop3:
            self.pop3_ports = (free_port(), free_port(), free_port())
            config["extra_listeners"] = list(config.pop("extra_listeners", ())) + [
                {"port": self.pop3_ports[0], "role": "pop3", "plaintext_auth": True},
                {"port": self.pop3_ports[1], "role": "pop3"},
                {"port": self.pop3_ports[2], "role": "pop3s"},
            ]
            config["pop3"] = config.pop("pop3_settings", None)
            submission = True
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host = HOST
        self.submission_port: int | None = None
        self.submissions_port: int | None = None
        self.plaintext_port: int | None = None
        self.users_file: Path | None = None
        self.imap_port: int | None = None
        self.imaps_port: int | None = None
        self.imap_starttls_port: int | None = None
        if submission or plaintext_auth_listener or imap:
            listeners = list(config.pop("extra_listeners", ()))
            if submission or plaintext_auth_listener:
                self.submission_port = free_port()
                self.submissions_port = free_port()
                listeners += [{"port": self.submission_port, "role": "submission"},
                              {"port": self.submissions_port, "role": "submissions"}]
            if plaintext_auth_listener:
                self.plaintext_port = free_port()
                listeners.append({"port": self.plaintext_port, "role": "submission", "plaintext_auth": True})
            if imap:
                self.imap_port = free_port()
                self.imaps_port = free_port()
                self.imap_starttls_port = free_port()
                listeners += [{"port": self.imap_port, "role": "imap", "plaintext_auth": True},
                              {"port": self.imaps_port, "role": "imaps"},
                              {"port": self.imap_starttls_port, "role": "imap"}]
            config["extra_listeners"] = listeners
            auth = dict(config.pop("auth", None) or {})
            auth.setdefault("users_file", workdir / "users.toml")
            config["auth"] = auth
            abuse = {k: dict(v) for k, v in DEFAULT_ABUSE.items()}
            for section, settings in (config.pop("abuse", None) or {}).items():
                abuse.setdefault(section, {}).update(settings)
            config["abuse"] = abuse
            self.users_file = Path(auth["users_file"])
        self.config_path = workdir / "tern.toml"
        self.config_path.write_text(render_config(self.port, self.data_dir, **config))
        self.log_path = workdir / "tern.log"
        self.proc: subprocess.Popen | None = None
        self._log = None
        if self.users_file is not None:
            for address, password, cram in (DEFAULT_USERS if users is None else users):
                self.add_user(address, password, cram_md5=cram)

    @property
    def ports(self) -> list[int]:
        return [p for p in (self.port, self.submission_port, self.submissions_port, self.plaintext_port,
                            self.imap_port, self.imaps_port, self.imap_starttls_port,
                            *(self.pop3_ports or ())) if p]

    # -- users (the real CLI) -----------------------------------------------
    def user_cli(self, *args: str, password: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        """`tern user ARGS --config CONFIG`, the password (if any) as one line on stdin."""
        p = subprocess.run(
            [str(tern_bin()), "user", *args, "--config", str(self.config_path)],
            input=None if password is None else (password + "\n").encode("utf-8"),
            stdin=subprocess.DEVNULL if password is None else None,
            capture_output=True, timeout=timeout, cwd=self.workdir,
        )
        p.output = (p.stdout + p.stderr).decode("utf-8", "replace")
        return p

    def add_user(self, address: str, password: str, *, cram_md5: bool = False) -> None:
        args = ["add", address] + (["--cram-md5"] if cram_md5 else [])
        p = self.user_cli(*args, password=password)
        assert p.returncode == 0, f"tern user {' '.join(args)} exited {p.returncode}: {p.output}"

    def del_user(self, address: str) -> None:
        p = self.user_cli("del", address)
        assert p.returncode == 0, f"tern user del {address} exited {p.returncode}: {p.output}"

    # -- TLS -------------------------------------------------------------------
    @property
    def cert_path(self) -> Path:
        """The self-signed certificate the server generated at start (no [tls] certificates)."""
        return self.data_dir / "tls" / "selfsigned.crt"

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts only the generated certificate
        (check_hostname on: use a name from TLS_NAMES as the server name)."""
        assert self.cert_path.is_file(), f"no generated certificate at {self.cert_path}\n{self.log()}"
        ctx = ssl.create_default_context(cafile=str(self.cert_path))
        assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
        return ctx

    # -- lifecycle -------------------------------------------------------
    def start(self, timeout: float = 15.0) -> None:
        binary = tern_bin()
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(binary), "serve", "--allow-root", "--config", str(self.config_path), "--log-format", "text"],
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
                for port in self.ports:
                    with socket.create_connection((self.host, port), timeout=0.5):
                        pass
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
            text = ANSI_RE.sub("", self.log_path.read_bytes().decode("utf-8", "replace"))
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


@pytest.fixture
def tern_submit(tern_factory) -> TernServer:
    """MX + submission (587 role) + submissions (465 role) + a plaintext_auth
    submission listener; users alice (with CRAM-MD5) and bob."""
    return tern_factory(submission=True, plaintext_auth_listener=True)


@pytest.fixture
def tern_imap(tern_factory) -> TernServer:
    """MX + imap (plaintext_auth, `imap_port`) + imaps (`imaps_port`) + a strict
    imap listener (`imap_starttls_port`); users alice and bob."""
    return tern_factory(imap=True)


# ---------------------------------------------------------------------------
# DNS on loopback: a private dnsmasq for the outbound tests
# ---------------------------------------------------------------------------

DNSMASQ = shutil.which("dnsmasq") or next(
    (p for p in ("/usr/sbin/dnsmasq", "/sbin/dnsmasq") if os.access(p, os.X_OK)), None)

# The zones every outbound test sees. Every name is under .test and every
# address is in 127.0.0.0/8; dnsmasq answers .test itself (`--local=/test/`:
# unknown names are NXDOMAIN, known names without the asked type are NODATA)
# and has no upstream servers, so no query ever leaves the machine.
MX_HOSTS = {
    "remote.test": "127.0.0.2",      # MX 10 mx.remote.test
    "reject.test": "127.0.0.3",      # MX 10 mx.reject.test (a second, different server)
    "smarthost.test": "127.0.0.4",   # A only: the smarthost
}
DOWN_ADDR = "127.0.0.5"              # nothing listens there
NXDOMAIN = "nothere.test"            # no records at all


def dnsmasq_args(port: int) -> list[str]:
    args = [
        DNSMASQ, "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--no-poll",
        "--pid-file=", "--log-facility=-", "--log-queries",
        f"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces",
        "--user=nobody", "--group=nogroup", "--local=/test/",
        "--mx-host=remote.test,mx.remote.test,10",
        f"--host-record=mx.remote.test,{MX_HOSTS['remote.test']}",
        "--mx-host=reject.test,mx.reject.test,10",
        f"--host-record=mx.reject.test,{MX_HOSTS['reject.test']}",
        f"--host-record=smarthost.test,{MX_HOSTS['smarthost.test']}",
        # backup.test: the preferred MX is down, the second one is remote.test's
        "--mx-host=backup.test,mx1.backup.test,10",
        f"--host-record=mx1.backup.test,{DOWN_ADDR}",
        "--mx-host=backup.test,mx.remote.test,20",
        # implicit.test: no MX, an A record (RFC 5321 5.1 implicit MX)
        f"--host-record=implicit.test,{MX_HOSTS['remote.test']}",
        # nullmx.test: RFC 7505 null MX, "MX 0 ." (rdata: preference 0, root name)
        "--dns-rr=nullmx.test,15,000000",
    ]
    return args


def dns_query(port: int, name: str, qtype: int, timeout: float = 2.0) -> tuple[int, int]:
    """(rcode, answer count) of one UDP query to 127.0.0.1:port."""
    import struct
    qid = 0x5445
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode("ascii")
    q += b"\0" + struct.pack(">HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(q, (HOST, port))
        r = s.recv(4096)
    rid, flags, _qd, an, _ns, _ar = struct.unpack(">HHHHHH", r[:12])
    assert rid == qid
    return flags & 0xF, an


def free_udp_tcp_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (dnsmasq binds both)."""
    while True:
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                u.bind((HOST, port))
            except OSError:
                continue
        return port


class DnsServer:
    def __init__(self, proc: subprocess.Popen, port: int, log_path: Path):
        self.proc = proc
        self.port = port
        self.log_path = log_path

    @property
    def nameservers(self) -> list[str]:
        return [f"{HOST}:{self.port}"]

    def log(self) -> str:
        try:
            return "--- dnsmasq log ---\n" + self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no dnsmasq log)"


@pytest.fixture(scope="session")
def dns_server(tmp_path_factory):
    """A dnsmasq in the foreground on 127.0.0.1:<free port> publishing the zones in
    `dnsmasq_args` (never port 53, never /etc/resolv.conf, no upstream). Pass
    `dns_nameservers=dns_server.nameservers` to tern_factory."""
    if DNSMASQ is None:
        pytest.skip("dnsmasq not installed (.ci/run installs dnsmasq-base)")
    workdir = tmp_path_factory.mktemp("dnsmasq")
    log_path = workdir / "dnsmasq.log"
    for _attempt in range(3):
        port = free_udp_tcp_port()
        log = open(log_path, "wb")
        proc = subprocess.Popen(dnsmasq_args(port), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 10
        ready = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = dns_query(port, "mx.remote.test", 1, timeout=0.3) == (0, 1)
            except OSError:
                ready = False
            if ready:
                break
            time.sleep(0.05)
        if ready:
            break
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
    else:
        pytest.fail("dnsmasq did not answer on loopback:\n" + log_path.read_text(errors="replace"))
    server = DnsServer(proc, port, log_path)
    yield server
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
