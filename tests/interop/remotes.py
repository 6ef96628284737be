"""Third-party servers that Tern delivers to in the outbound tests, each run as
a private foreground process on a loopback address: Postfix's smtp-sink, a
private Postfix instance (its own config and queue directories, like
bench/compare.sh) and Dovecot's LMTP server. Nothing here touches the system
Postfix or Dovecot, and nothing listens outside 127.0.0.0/8."""

from __future__ import annotations

import os
import pwd
import grp
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from pathlib import Path

SMTP_SINK = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if os.access("/usr/sbin/smtp-sink", os.X_OK) else None)
POSTFIX = shutil.which("postfix") or ("/usr/sbin/postfix" if os.access("/usr/sbin/postfix", os.X_OK) else None)
POSTCONF = shutil.which("postconf") or ("/usr/sbin/postconf" if os.access("/usr/sbin/postconf", os.X_OK) else None)
DOVECOT = shutil.which("dovecot") or ("/usr/sbin/dovecot" if os.access("/usr/sbin/dovecot", os.X_OK) else None)
DOVECOT_LMTP = next((p for p in ("/usr/lib/dovecot/lmtp", "/usr/libexec/dovecot/lmtp") if os.access(p, os.X_OK)), None)
OPENSSL = shutil.which("openssl")
IS_ROOT = os.geteuid() == 0


def wait_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def port_free_on(port: int, addrs) -> bool:
    for addr in addrs:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((addr, port))
            except OSError:
                return False
    return True


def shared_port(addrs=("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")) -> int:
    """A TCP port free on every address in `addrs`: Tern's `remote_port` is one
    number for all MX hosts, so every fake MX listens on that same port."""
    from conftest import _handed_out
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((addrs[1] if len(addrs) > 1 else addrs[0], 0))
            port = s.getsockname()[1]
        if port not in _handed_out and port_free_on(port, addrs):
            _handed_out.add(port)
            return port
    raise RuntimeError("no port free on all of " + ", ".join(addrs))


def world_readable_tmpdir(prefix: str) -> Path:
    """A temp dir that unprivileged service users (Postfix's and Dovecot's mail
    users) can traverse: pytest's tmp_path lives under a 0700 directory."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    d.chmod(0o755)
    return d


def _openssl(*args: str) -> None:
    p = subprocess.run([OPENSSL, *args], capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
    assert p.returncode == 0, f"openssl {' '.join(args)}: {(p.stdout + p.stderr).decode(errors='replace')}"


def self_signed_cert(directory: Path, names: list[str], *, extra=()) -> tuple[Path, Path]:
    """(cert, key) of a fresh self-signed certificate for `names`, made the way
    admins usually do (`openssl req -x509`; OpenSSL 3 marks it CA:TRUE).
    `extra`: more -addext values."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    san = ",".join(f"DNS:{n}" for n in names)
    addext = [a for e in extra for a in ("-addext", e)]
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", f"/CN={names[0]}", "-addext", f"subjectAltName={san}", *addext,
             "-keyout", str(key), "-out", str(cert))
    return cert, key


def ca_signed_cert(directory: Path, names: list[str]) -> tuple[Path, Path, Path]:
    """(ca_cert, cert, key): a private CA and a server certificate for `names` signed by it."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = directory / "ca.pem", directory / "ca-key.pem"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Tern interop test CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-keyout", str(ca_key), "-out", str(ca_cert))
    key, csr, cert = directory / "key.pem", directory / "req.pem", directory / "cert.pem"
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={names[0]}",
             "-keyout", str(key), "-out", str(csr))
    ext = directory / "ext.cnf"
    ext.write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\nsubjectAltName=" + ",".join(f"DNS:{n}" for n in names) + "\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
             "-days", "2", "-extfile", str(ext), "-out", str(cert))
    return ca_cert, cert, key


# ---------------------------------------------------------------------------
# smtp-sink
# ---------------------------------------------------------------------------

@dataclass
class SinkMessage:
    """One transaction captured by smtp-sink -d."""
    path: Path
    helo: str | None
    mail: str
    rcpts: list[str]
    raw: bytes                       # the message as received (LF line ends)
    message: object = field(repr=False, default=None)


class SmtpSink:
    """`smtp-sink -u root -v -d DIR/msg. ADDR:PORT` plus `options` (e.g.
    ["-f", "RCPT"] to hard-reject every RCPT, ["-r", "."] to soft-reject the
    end of data). Each transaction is captured in its own file under dump_dir;
    `-v` puts the conversation (commands received) in the log."""

    def __init__(self, workdir: Path, addr: str, port: int, options=()):
        self.workdir = workdir
        self.addr = addr
        self.port = port
        self.options = list(options)
        self.dump_dir = workdir / "dump"
        self.log_path = workdir / "smtp-sink.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "SmtpSink":
        self.dump_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        cmd = [SMTP_SINK, "-u", "root" if IS_ROOT else pwd.getpwuid(os.geteuid()).pw_name,
               "-v", "-h", f"sink-{self.addr}", "-d", str(self.dump_dir / "msg."), *self.options,
               f"{self.addr}:{self.port}", "64"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        # Readiness without opening an SMTP session (which would show up in the
        # counters and the log): wait until the port is bound.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"smtp-sink exited {self.proc.returncode}\n{self.log()}")
            if not port_free_on(self.port, [self.addr]):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"smtp-sink did not bind {self.addr}:{self.port}\n{self.log()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        # the port must be free again before a replacement sink starts
        deadline = time.monotonic() + 10
        while not port_free_on(self.port, [self.addr]) and time.monotonic() < deadline:
            time.sleep(0.05)

    def log(self) -> str:
        try:
            return f"--- smtp-sink {self.addr}:{self.port} {' '.join(self.options)} ---\n" + \
                self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no smtp-sink log)"

    def commands(self) -> list[str]:
        """Commands received, lower-case verb first ("mail FROM:<...>", "rcpt TO:<...>", "data", ".")."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            prefix = f"{SMTP_SINK}: "
            if not line.startswith(prefix):
                prefix = "smtp-sink: "
                if not line.startswith(prefix):
                    continue
            rest = line[len(prefix):]
            verb, _, args = rest.partition(" ")
            verb = verb.lower()
            rest = f"{verb} {args}" if args else verb
            if verb in ("ehlo", "helo", "mail", "rcpt", "data", ".", "quit", "rset", "auth", "starttls", "noop", "bdat"):
                out.append(rest)
        return out

    def messages(self) -> list[SinkMessage]:
        out = []
        for path in sorted(self.dump_dir.iterdir()):
            data = path.read_bytes()
            lines = data.split(b"\n")
            helo, mail, rcpts = None, None, []
            i = 0
            while i < len(lines):
                line = lines[i].decode("utf-8", "replace")
                i += 1
                if line.startswith("X-Helo-Args: "):
                    helo = line[len("X-Helo-Args: "):]
                elif line.startswith("X-Mail-Args: "):
                    mail = line[len("X-Mail-Args: "):]
                elif line.startswith("X-Rcpt-Args: "):
                    rcpts.append(line[len("X-Rcpt-Args: "):])
                elif line.startswith("Received: "):
                    # smtp-sink's own three-line Received: ends its headers
                    while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
                        i += 1
                    break
            raw = b"\n".join(lines[i:])
            out.append(SinkMessage(path, helo, mail, rcpts, raw,
                                   BytesParser(policy=policy.default).parsebytes(raw)))
        return out

    def wait_for_messages(self, count: int, timeout: float = 15.0, settle: float = 1.0) -> list[SinkMessage]:
        """At least `count` complete transactions (their "." seen), stable for `settle` s."""
        def done() -> int:
            return sum(1 for c in self.commands() if c == ".")
        deadline = time.monotonic() + timeout
        while done() < count and time.monotonic() < deadline:
            time.sleep(0.05)
        n, since = done(), time.monotonic()
        while time.monotonic() - since < settle:
            time.sleep(0.05)
            if done() != n:
                n, since = done(), time.monotonic()
        time.sleep(0.1)
        msgs = [m for m in self.messages() if m.raw.strip()]
        assert len(msgs) >= count, f"smtp-sink captured {len(msgs)} message(s), expected {count}\n{self.log()}"
        return msgs


# ---------------------------------------------------------------------------
# Postfix (private instance)
# ---------------------------------------------------------------------------

class PrivatePostfix:
    """A private Postfix (`postfix -c DIR start`) whose only smtpd listens on
    ADDR:PORT and delivers `virtual_domain` to Maildirs (virtual(8)) for
    `users`. It relays nothing: every other destination uses the error
    transport, and it makes no DNS queries (peer name lookups off, no SMTP
    client use). With `cert`/`key` it offers STARTTLS."""

    def __init__(self, base: Path, addr: str, port: int, *, virtual_domain: str, users,
                 hostname: str = "postfix.remote.test", cert: Path | None = None, key: Path | None = None,
                 extra=()):
        self.base = base
        self.addr = addr
        self.port = port
        self.domain = virtual_domain
        self.users = list(users)
        self.conf = base / "conf"
        self.queue = base / "queue"
        self.data = base / "data"
        self.mail = base / "mail"
        self.maillog = base / "maillog"
        self.hostname = hostname
        self.cert = cert
        self.key = key
        self.extra = list(extra)
        self.started = False

    def _postconf(self, *args: str) -> None:
        subprocess.run([POSTCONF, "-c", str(self.conf), *args], check=True, capture_output=True,
                       stdin=subprocess.DEVNULL, timeout=60)

    def start(self) -> "PrivatePostfix":
        for d in (self.conf, self.queue, self.data, self.mail):
            d.mkdir(parents=True, exist_ok=True)
        nobody = pwd.getpwnam("nobody")
        nogroup = grp.getgrgid(nobody.pw_gid)
        os.chown(self.mail, nobody.pw_uid, nobody.pw_gid)
        pf = pwd.getpwnam("postfix")
        os.chown(self.data, pf.pw_uid, pf.pw_gid)
        master = []
        for line in Path("/etc/postfix/master.cf").read_text().splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[0] == "smtp" and fields[1] == "inet" and not line.startswith("#"):
                master.append(f"{self.addr}:{self.port}  inet  n  -  n  -  -  smtpd")
            else:
                master.append(line)
        (self.conf / "master.cf").write_text("\n".join(master) + "\n")
        (self.conf / "main.cf").write_text("")
        (self.conf / "vmailbox").write_text(
            "".join(f"{u}@{self.domain} {self.domain}/{u}/\n" for u in self.users))
        settings = [
            "compatibility_level = 3.6",
            f"queue_directory = {self.queue}",
            f"data_directory = {self.data}",
            f"myhostname = {self.hostname}",
            "mydomain = remote.test",
            "myorigin = remote.test",
            "mydestination =",
            "inet_interfaces = 127.0.0.1",
            "inet_protocols = ipv4",
            "mynetworks = 127.0.0.0/8",
            "relay_domains =",
            "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination",
            "default_transport = error:interop instance relays nothing",
            "relay_transport = error:interop instance relays nothing",
            "smtp_dns_support_level = disabled",
            "alias_maps =",
            "alias_database =",
            "smtpd_peername_lookup = no",
            f"virtual_mailbox_domains = {self.domain}",
            f"virtual_mailbox_base = {self.mail}",
            f"virtual_mailbox_maps = texthash:{self.conf}/vmailbox",
            f"virtual_uid_maps = static:{nobody.pw_uid}",
            f"virtual_gid_maps = static:{nogroup.gr_gid}",
            f"maillog_file = {self.maillog}",
            f"maillog_file_prefixes = {self.base}",
        ]
        if self.cert:
            settings += [
                "smtpd_tls_security_level = may",
                f"smtpd_tls_cert_file = {self.cert}",
                f"smtpd_tls_key_file = {self.key}",
                "smtpd_tls_received_header = yes",
                "smtpd_tls_loglevel = 1",
            ]
        settings += self.extra
        self._postconf("-e", *settings)
        self._postconf("-F", "*/*/chroot = n")
        p = subprocess.run([POSTFIX, "-c", str(self.conf), "start"], capture_output=True,
                           stdin=subprocess.DEVNULL, timeout=60)
        if p.returncode != 0:
            raise RuntimeError(f"postfix -c {self.conf} start exited {p.returncode}: "
                               f"{(p.stdout + p.stderr).decode(errors='replace')}")
        self.started = True
        if not wait_port(self.addr, self.port, 20):
            raise RuntimeError(f"postfix did not listen on {self.addr}:{self.port}\n{self.log()}")
        return self

    def stop(self) -> None:
        if self.started:
            subprocess.run([POSTFIX, "-c", str(self.conf), "stop"], capture_output=True,
                           stdin=subprocess.DEVNULL, timeout=60)
            self.started = False
            deadline = time.monotonic() + 15
            while not port_free_on(self.port, [self.addr]) and time.monotonic() < deadline:
                time.sleep(0.1)

    def log(self) -> str:
        try:
            return "--- postfix maillog ---\n" + self.maillog.read_text(errors="replace")[-6000:]
        except OSError:
            return "(no postfix maillog)"

    def new_files(self, user: str) -> list[Path]:
        new = self.mail / self.domain / user / "new"
        if not new.is_dir():
            return []
        return sorted(p for p in new.iterdir() if p.is_file())

    def wait_for_messages(self, user: str, count: int, timeout: float = 20.0, settle: float = 1.0) -> list[Path]:
        deadline = time.monotonic() + timeout
        files = self.new_files(user)
        while len(files) < count and time.monotonic() < deadline:
            time.sleep(0.1)
            files = self.new_files(user)
        since = time.monotonic()
        while time.monotonic() - since < settle:
            time.sleep(0.1)
            again = self.new_files(user)
            if len(again) != len(files):
                files, since = again, time.monotonic()
        assert len(files) >= count, (f"postfix: {user}@{self.domain} has {len(files)} message(s), "
                                     f"expected {count}\n{self.log()}")
        return files


# ---------------------------------------------------------------------------
# Dovecot LMTP
# ---------------------------------------------------------------------------

class PrivateDovecot:
    """`dovecot -F -c CONF`: LMTP only, on 127.0.0.1:PORT and on a unix socket,
    a passwd-file userdb with `users` (full addresses) and Maildirs under
    base/mail/DOMAIN/USER owned by nobody. Its own base_dir and state_dir."""

    def __init__(self, base: Path, port: int, users):
        self.base = base
        self.port = port
        self.users = list(users)
        self.socket = base / "lmtp.sock"
        self.mail = base / "mail"
        self.log_path = base / "dovecot.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "PrivateDovecot":
        for d in ("run", "state"):
            (self.base / d).mkdir(parents=True, exist_ok=True)
        self.mail.mkdir(parents=True, exist_ok=True)
        nobody = pwd.getpwnam("nobody")
        os.chown(self.mail, nobody.pw_uid, nobody.pw_gid)
        (self.base / "passwd").write_text("".join(f"{u}:::::::\n" for u in self.users))
        conf = self.base / "dovecot.conf"
        conf.write_text(f"""\
protocols = lmtp
listen = 127.0.0.1
base_dir = {self.base}/run
state_dir = {self.base}/state
log_path = {self.log_path}
ssl = no
mail_location = maildir:{self.mail}/%d/%n
passdb {{
  driver = passwd-file
  args = {self.base}/passwd
}}
userdb {{
  driver = passwd-file
  args = {self.base}/passwd
  default_fields = uid={nobody.pw_uid} gid={nobody.pw_gid} home={self.mail}/%d/%n
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.port}
  }}
  unix_listener {self.socket} {{
    mode = 0666
  }}
}}
""")
        out = open(self.base / "dovecot.out", "wb")
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)], stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=subprocess.STDOUT)
        out.close()
        if not wait_port("127.0.0.1", self.port, 20, self.proc):
            raise RuntimeError(f"dovecot did not listen on 127.0.0.1:{self.port}\n{self.log()}")
        deadline = time.monotonic() + 10
        while not self.socket.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def log(self) -> str:
        text = ""
        for p in (self.base / "dovecot.out", self.log_path):
            try:
                text += p.read_text(errors="replace")[-4000:]
            except OSError:
                pass
        return "--- dovecot log ---\n" + text

    def new_files(self, address: str) -> list[Path]:
        local, domain = address.split("@")
        new = self.mail / domain / local / "new"
        if not new.is_dir():
            return []
        return sorted(p for p in new.iterdir() if p.is_file())

    def wait_for_messages(self, address: str, count: int, timeout: float = 20.0, settle: float = 1.0) -> list[Path]:
        deadline = time.monotonic() + timeout
        files = self.new_files(address)
        while len(files) < count and time.monotonic() < deadline:
            time.sleep(0.1)
            files = self.new_files(address)
        since = time.monotonic()
        while time.monotonic() - since < settle:
            time.sleep(0.1)
            again = self.new_files(address)
            if len(again) != len(files):
                files, since = again, time.monotonic()
        assert len(files) >= count, f"dovecot: {address} has {len(files)} message(s), expected {count}\n{self.log()}"
        return files
