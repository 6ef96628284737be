"""IMAP servers for the interop tests, behind one interface (`ImapTarget`):
Tern (`TernServer(imap=True)`) and a private Dovecot (the reference server,
Debian dovecot-imapd), so every client test can also run against Dovecot and
the differential suite can put the same commands to both.

The private Dovecot runs in the foreground (`dovecot -F -c CONF`) with its
own base_dir, state_dir and log, a passwd-file with the test users and
Maildir++ mailboxes under `base/mail/DOMAIN/LOCAL` (INBOX is that directory,
folders `.Sent` ... — the layout Tern uses), owned by `nobody`. It listens on
loopback only: IMAP with STARTTLS on 127.0.0.1 (which Dovecot treats as
secure, so LOGIN works before TLS, like Tern's `plaintext_auth` listener),
the same on 127.0.0.2 (a connection from 127.0.0.1 to 127.0.0.2 is not
"local" for Dovecot: LOGINDISABLED until STARTTLS, like Tern's default
`imap` listener), IMAPS on 127.0.0.1 and LMTP on 127.0.0.1; with the
imap_zlib plugin (COMPRESS=DEFLATE) and the SASL mechanisms Tern offers
(PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-256). Nothing here touches the system
Dovecot."""

from __future__ import annotations

import imaplib
import os
import pwd
import shutil
import signal
import smtplib
import ssl
import subprocess
import time
from pathlib import Path

from conftest import DOMAIN, HOST, TLS_NAMES, free_port
from remotes import DOVECOT, IS_ROOT, OPENSSL, self_signed_cert, wait_port, world_readable_tmpdir

DOVECOT_IMAP = next((p for p in ("/usr/lib/dovecot/imap", "/usr/libexec/dovecot/imap") if os.access(p, os.X_OK)), None)
DOVECOT_LMTP = next((p for p in ("/usr/lib/dovecot/lmtp", "/usr/libexec/dovecot/lmtp") if os.access(p, os.X_OK)), None)

# Folders every account has (Tern creates them; the Dovecot config below
# auto-creates and subscribes them), with their RFC 6154 special use.
SPECIAL_FOLDERS = {"Sent": "\\Sent", "Drafts": "\\Drafts", "Junk": "\\Junk", "Trash": "\\Trash",
                   "Archive": "\\Archive"}

# The name the clients use for TLS (in both servers' certificates).
TLS_NAME = "localhost"
assert TLS_NAME in TLS_NAMES


def dovecot_missing() -> str | None:
    """Why a private Dovecot IMAP server cannot run here (None if it can)."""
    if DOVECOT is None or DOVECOT_IMAP is None:
        return "Dovecot IMAP not installed (.ci/run installs dovecot-core and dovecot-imapd)"
    if DOVECOT_LMTP is None:
        return "Dovecot LMTP not installed (.ci/run installs dovecot-lmtpd)"
    if OPENSSL is None:
        return "openssl not installed"
    if not IS_ROOT:
        return "a private Dovecot serving other users' Maildirs needs root"
    return None


class PrivateDovecotImap:
    """`dovecot -F -c CONF` with IMAP (STARTTLS, IMAPS) and LMTP; `users` are
    (address, password) pairs (PLAIN scheme in a private passwd-file)."""

    def __init__(self, base: Path, users, extra_conf: str = "", imap_plugins: str = ""):
        self.extra_conf = extra_conf
        self.imap_plugins = imap_plugins
        self.base = base
        self.users = list(users)
        self.imap_port = free_port()
        self.imaps_port = free_port()
        self.strict_port = free_port()
        self.lmtp_port = free_port()
        self.mail = base / "mail"
        self.log_path = base / "dovecot.log"
        self.proc: subprocess.Popen | None = None
        self.cert_path, self.key_path = self_signed_cert(base / "tls", list(TLS_NAMES))

    def maildir(self, local: str, domain: str = DOMAIN) -> Path:
        return self.mail / domain / local

    def start(self) -> "PrivateDovecotImap":
        nobody = pwd.getpwnam("nobody")
        for d in ("run", "state"):
            (self.base / d).mkdir(parents=True, exist_ok=True)
        self.mail.mkdir(parents=True, exist_ok=True)
        for address, _pw in self.users:
            local, domain = address.split("@")
            md = self.maildir(local, domain)
            for sub in ("", "new", "cur", "tmp"):
                (md / sub).mkdir(parents=True, exist_ok=True)
        for root, dirs, files in os.walk(self.mail):
            os.chown(root, nobody.pw_uid, nobody.pw_gid)
        for p in (self.cert_path, self.key_path):
            p.chmod(0o644)
        (self.base / "passwd").write_text("".join(
            f"{a}:{{PLAIN}}{pw}:{nobody.pw_uid}:{nobody.pw_gid}::{self.maildir(*a.split('@'))}::\n"
            for a, pw in self.users))
        folders = "".join(f"""
  mailbox {name} {{
    special_use = {use}
    auto = subscribe
  }}""" for name, use in SPECIAL_FOLDERS.items())
        conf = self.base / "dovecot.conf"
        conf.write_text(f"""\
protocols = imap lmtp
listen = {HOST}
base_dir = {self.base}/run
state_dir = {self.base}/state
log_path = {self.log_path}
ssl = yes
ssl_cert = <{self.cert_path}
ssl_key = <{self.key_path}
disable_plaintext_auth = yes
auth_mechanisms = plain login cram-md5 scram-sha-256
passdb {{
  driver = passwd-file
  args = {self.base}/passwd
}}
userdb {{
  driver = passwd-file
  args = {self.base}/passwd
}}
mail_location = maildir:~
namespace inbox {{
  inbox = yes
  separator = /{folders}
}}
service imap-login {{
  inet_listener imap {{
    address = {HOST}
    port = {self.imap_port}
  }}
  inet_listener imap_strict {{
    address = 127.0.0.2
    port = {self.strict_port}
  }}
  inet_listener imaps {{
    address = {HOST}
    port = {self.imaps_port}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = {HOST}
    port = {self.lmtp_port}
  }}
}}
service anvil {{
  unix_listener anvil {{
    mode = 0666
  }}
}}
{self.extra_conf}
protocol imap {{
  mail_plugins = $mail_plugins imap_zlib {self.imap_plugins}
}}
default_internal_user = nobody
default_login_user = nobody
""")
        out = open(self.base / "dovecot.out", "wb")
        env = dict(os.environ, TZ="UTC")
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)], stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=subprocess.STDOUT, env=env)
        out.close()
        for host, port in ((HOST, self.imap_port), (HOST, self.imaps_port), ("127.0.0.2", self.strict_port),
                           (HOST, self.lmtp_port)):
            if not wait_port(host, port, 20, self.proc):
                self.stop()
                raise RuntimeError(f"dovecot did not listen on {host}:{port}\n{self.log()}")
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


class ImapsClient(imaplib.IMAP4_SSL):
    """imaplib's IMAP4_SSL connecting to an address but verifying the
    certificate for `server_name` (imaplib uses the host for both)."""

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext, server_name: str = TLS_NAME,
                 timeout: float = 15):
        self._server_name = server_name
        super().__init__(host, port, ssl_context=ssl_context, timeout=timeout)

    def _create_socket(self, timeout):
        sock = imaplib.IMAP4._create_socket(self, timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname=self._server_name)


class ImapTarget:
    """What a test needs of an IMAP server, whichever it is."""

    name: str
    host = HOST
    imap_port: int        # STARTTLS, LOGIN allowed before TLS (loopback)
    imaps_port: int       # implicit TLS
    strict_host = HOST
    strict_port: int      # STARTTLS, LOGINDISABLED before TLS
    cert_path: Path

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.cert_path))
        assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
        return ctx

    def maildir(self, local: str, domain: str = DOMAIN) -> Path:
        raise NotImplementedError

    def deliver(self, msg: bytes, rcpt: str, sender: str = "sender@remote.test") -> None:
        raise NotImplementedError

    def drop(self, msg: bytes, local: str, name: str, mtime: float, folder: str = "") -> Path:
        """Write a message straight into a Maildir's new/ (as another MDA
        would), with a fixed mtime; readable by the server's mail user."""
        d = self.maildir(local) / (("." + folder) if folder else "")
        for sub in ("new", "cur", "tmp"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        tmp = d / "tmp" / name
        tmp.write_bytes(msg)
        os.utime(tmp, (mtime, mtime))
        self._own(tmp)
        dest = d / "new" / name
        os.rename(tmp, dest)
        return dest

    def _own(self, path: Path) -> None:
        pass

    # -- clients -------------------------------------------------------------
    def imaps(self, timeout: float = 15) -> ImapsClient:
        return ImapsClient(self.host, self.imaps_port, self.ssl_context(), timeout=timeout)

    def imap_starttls(self, *, strict: bool = False, timeout: float = 15) -> imaplib.IMAP4:
        host, port = (self.strict_host, self.strict_port) if strict else (self.host, self.imap_port)
        m = imaplib.IMAP4(host, port, timeout=timeout)
        m.host = TLS_NAME  # imaplib's STARTTLS verifies the certificate for self.host
        m.starttls(self.ssl_context())
        return m

    def imap_plain(self, *, strict: bool = False, timeout: float = 15) -> imaplib.IMAP4:
        host, port = (self.strict_host, self.strict_port) if strict else (self.host, self.imap_port)
        return imaplib.IMAP4(host, port, timeout=timeout)

    def log(self) -> str:
        return ""


class TernTarget(ImapTarget):
    name = "tern"

    def __init__(self, srv):
        self.srv = srv
        self.imap_port = srv.imap_port
        self.imaps_port = srv.imaps_port
        self.strict_port = srv.imap_starttls_port

    @property
    def cert_path(self) -> Path:
        return self.srv.cert_path

    def maildir(self, local: str, domain: str = DOMAIN) -> Path:
        return self.srv.maildir(local, domain)

    def deliver(self, msg: bytes, rcpt: str, sender: str = "sender@remote.test") -> None:
        with smtplib.SMTP(HOST, self.srv.port, timeout=15) as s:
            s.sendmail(sender, [rcpt], msg)

    def log(self) -> str:
        return self.srv.log()


class DovecotTarget(ImapTarget):
    name = "dovecot"
    strict_host = "127.0.0.2"

    def __init__(self, dv: PrivateDovecotImap):
        self.dv = dv
        self.imap_port = dv.imap_port
        self.imaps_port = dv.imaps_port
        self.strict_port = dv.strict_port
        self.cert_path = dv.cert_path

    def maildir(self, local: str, domain: str = DOMAIN) -> Path:
        return self.dv.maildir(local, domain)

    def deliver(self, msg: bytes, rcpt: str, sender: str = "sender@remote.test") -> None:
        with smtplib.LMTP(HOST, self.dv.lmtp_port, timeout=15) as s:
            s.sendmail(sender, [rcpt], msg)

    def _own(self, path: Path) -> None:
        nobody = pwd.getpwnam("nobody")
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
        for d in (path.parent.parent, path.parent.parent / "new", path.parent.parent / "cur",
                  path.parent.parent / "tmp"):
            os.chown(d, nobody.pw_uid, nobody.pw_gid)

    def log(self) -> str:
        return self.dv.log()


def start_dovecot(users, extra_conf: str = "", imap_plugins: str = "") -> PrivateDovecotImap:
    """`extra_conf`: more dovecot.conf text (global plugins, limits);
    `imap_plugins`: more plugins for the imap protocol."""
    base = world_readable_tmpdir("tern-interop-imap-dovecot-")
    dv = PrivateDovecotImap(base, users, extra_conf, imap_plugins)
    try:
        return dv.start()
    except Exception:
        shutil.rmtree(base, ignore_errors=True)
        raise


def wait_until(pred, timeout: float, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)
