"""POP3 differential: the same command script against Tern and a private
dovecot-pop3d, each on its own copy of the same Maildir files; replies are
compared after normalising what legitimately differs (the text after
+OK/-ERR, UIDL values, which are compared by their pattern of equality).

Differences that remain are deliberate and listed in KNOWN (with why)."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ALICE, ALICE_PW, HOST, free_port

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
POP3_BIN = "/usr/lib/dovecot/pop3"

need_dovecot_pop3 = pytest.mark.skipif(
    not (os.access(DOVECOT, os.X_OK) and os.access(POP3_BIN, os.X_OK) and os.geteuid() == 0),
    reason="needs dovecot-core and dovecot-pop3d (Debian) and root")

# The messages, in UID order: CRLF with dot lines; bare LF without a final
# newline; MIME multipart; an empty body; a long line.
MESSAGES = [
    b"From: a@b.test\r\nSubject: one\r\n\r\nline 1\r\n.dot line\r\n..two dots\r\n.\r\nlast\r\n",
    b"From: a@b.test\nSubject: two\n\nbare lf\n.dot\nno final newline",
    (b"From: a@b.test\r\nSubject: three\r\nMIME-Version: 1.0\r\n"
     b"Content-Type: multipart/mixed; boundary=\"xx\"\r\n\r\npreamble\r\n--xx\r\n"
     b"Content-Type: text/plain\r\n\r\npart one\r\n--xx\r\nContent-Type: text/plain\r\n\r\n"
     b"part two\r\n--xx--\r\n"),
    b"From: a@b.test\r\nSubject: four\r\n\r\n",
    b"From: a@b.test\r\nSubject: five\r\n\r\n" + b"x" * 900 + b"\r\nend\r\n",
]

SCRIPT = [
    "STAT", "LIST", "LIST 2", "LIST 9", "LIST 0", "UIDL", "UIDL 3",
    "RETR 1", "RETR 2", "RETR 3", "RETR 4", "RETR 5",
    "TOP 1 0", "TOP 1 2", "TOP 2 1", "TOP 3 3", "TOP 4 5", "TOP 5 100",
    "DELE 2", "DELE 2", "RETR 2", "LIST 2", "STAT", "LIST", "RSET", "STAT",
    "NOOP", "RETR 0", "RETR 99", "TOP 1", "DELE 4", "QUIT",
]
AFTER = ["STAT", "UIDL", "QUIT"]
# Before login, each on a connection of its own (Dovecot closes a login
# connection after a few errors, Tern after 10): commands of the wrong
# state, PASS before USER, APOP (offered by neither), an unknown command, a
# USER without a name.
BEFORE = ["STAT", "LIST", "RETR 1", "DELE 1", "PASS x", "USER", "NOOP",
          "APOP alice 0123456789abcdef0123456789abcdef", "XYZZY"]

MULTI = ("LIST", "UIDL", "RETR", "TOP", "CAPA")

# The one deliberate difference: message 2 does not end with a line end.
# Both servers send it with a CRLF added before the terminating dot (the
# RETR and TOP bodies are identical), but Dovecot's LIST/STAT size leaves
# those 2 octets out, while Tern reports what RETR sends (issue 13: "LIST
# and STAT report the sizes RETR really sends"). Recorded exactly: step
# index in SCRIPT + AFTER -> (Tern's reply, Dovecot's reply), so any other
# change fails.
_ALL = [b"1 72\r\n", b"3 205\r\n", b"4 33\r\n", b"5 940\r\n"]
_KNOWN_SCRIPT: dict[int, tuple] = {
    0: (("+OK", [b"5", b"1315"]), ("+OK", [b"5", b"1313"])),
    1: (("+OK", [_ALL[0], b"2 65\r\n", *_ALL[1:]]), ("+OK", [_ALL[0], b"2 63\r\n", *_ALL[1:]])),
    2: (("+OK", [b"2 65\r\n"]), ("+OK", [b"2 63\r\n"])),
    25: (("+OK", [b"5", b"1315"]), ("+OK", [b"5", b"1313"])),
    32: (("+OK", [b"4", b"1282"]), ("+OK", [b"4", b"1280"])),
}
KNOWN = {len(BEFORE) + i: v for i, v in _KNOWN_SCRIPT.items()}
# A second deliberate difference: `USER` without a name. RFC 1939 requires
# the name; Tern answers -ERR at once, Dovecot says +OK (and fails the PASS
# that follows).
KNOWN[BEFORE.index("USER")] = (("-ERR", []), ("+OK", []))


def seed(root: Path) -> None:
    for sub in ("new", "cur", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, m in enumerate(MESSAGES):
        p = root / "new" / f"1700000000.M{i}.diff"
        p.write_bytes(m)
        t = 1_700_000_000 + i
        os.utime(p, (t, t))


class Conn:
    def __init__(self, port: int):
        self.s = socket.create_connection((HOST, port), timeout=15)
        self.f = self.s.makefile("rb")

    def line(self) -> bytes:
        return self.f.readline()

    def cmd(self, c: str) -> tuple[str, list[bytes]]:
        self.s.sendall(c.encode() + b"\r\n")
        first = self.line()
        status = "+OK" if first.startswith(b"+OK") else ("-ERR" if first.startswith(b"-ERR") else repr(first))
        verb = c.split()[0]
        body: list[bytes] = []
        multi = verb in MULTI and status == "+OK" and not (verb in ("LIST", "UIDL") and len(c.split()) > 1)
        if multi:
            while True:
                l = self.line()
                assert l.endswith(b"\r\n"), (c, l)
                if l == b".\r\n":
                    break
                body.append(l)
        elif verb in ("STAT", "LIST", "UIDL") and status == "+OK":
            # The single-line answers carry data: keep it.
            body.append(first[4:].split(b" ", 2)[0] if verb == "STAT" else first[4:])
            if verb == "STAT":
                body.append(first.split()[2])
        return status, body

    def close(self) -> None:
        self.s.close()


def run_script(port: int) -> list[tuple[str, list[bytes]]]:
    out = []
    for step in BEFORE:
        c = Conn(port)
        assert c.line().startswith(b"+OK")
        out.append(c.cmd(step))
        c.close()
    c = Conn(port)
    assert c.line().startswith(b"+OK")
    for step in (f"USER {ALICE}", f"PASS {ALICE_PW}"):
        st, _ = c.cmd(step)
        assert st == "+OK", (port, step, st)
    for step in SCRIPT:
        out.append(c.cmd(step))
    c.close()
    c = Conn(port)
    c.line()
    c.cmd(f"USER {ALICE}")
    c.cmd(f"PASS {ALICE_PW}")
    for step in AFTER:
        out.append(c.cmd(step))
    c.close()
    return out


def normalise_uidls(results, script) -> None:
    """UIDL values: replaced by the index of their first appearance."""
    seen: dict[bytes, int] = {}
    for (cmd, (_, body)) in zip(script, results):
        if cmd.startswith("UIDL"):
            for i, line in enumerate(body):
                n, _, uid = line.strip().partition(b" ")
                body[i] = n + b" u" + str(seen.setdefault(uid, len(seen))).encode()


@need_dovecot_pop3
def test_same_replies_as_dovecot(tern_factory, tmp_path):
    srv = tern_factory(pop3=True)
    # Tern: the files go into alice's INBOX before her first login.
    seed(srv.maildir("alice"))
    # Dovecot: a private instance on a copy of the same files.
    base = Path(os.environ.get("TMPDIR", "/tmp")) / f"tern-pop3-diff-{os.getpid()}"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(mode=0o755)
    nobody = pwd.getpwnam("nobody")
    mail = base / "mail"
    seed(mail / "alice")
    subprocess.run(["chown", "-R", f"{nobody.pw_uid}:{nobody.pw_gid}", str(mail)], check=True)
    port = free_port()
    conf = base / "dovecot.conf"
    conf.write_text(f"""\
protocols = pop3
listen = 127.0.0.1
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
ssl = no
disable_plaintext_auth = no
first_valid_uid = 1
mail_location = maildir:{mail}/%n
pop3_uidl_format = %08Xv%08Xu
passdb {{
  driver = static
  args = nopassword=y
}}
userdb {{
  driver = static
  args = uid={nobody.pw_uid} gid={nobody.pw_gid} home={mail}/%n
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
""")
    proc = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "dovecot did not start"
                time.sleep(0.05)
        theirs = run_script(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    ours = run_script(srv.pop3_ports[0])
    steps = [f"before:{c}" for c in BEFORE] + SCRIPT + [f"after:{c}" for c in AFTER]
    normalise_uidls(ours, BEFORE + SCRIPT + AFTER)
    normalise_uidls(theirs, BEFORE + SCRIPT + AFTER)
    diffs = []
    for i, (step, o, t) in enumerate(zip(steps, ours, theirs)):
        if (o, t) != KNOWN.get(i, (t, t)):
            diffs.append(f"{i} {step}:\n  tern:    {o}\n  dovecot: {t}")
    shutil.rmtree(base, ignore_errors=True)
    assert not diffs, "replies differ from Dovecot's:\n" + "\n".join(diffs)
