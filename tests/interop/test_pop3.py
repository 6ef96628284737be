"""POP3 interop: Python poplib (STLS, SASL AUTH, TOP, UIDL, implicit TLS,
LOGIN-DELAY), fetchmail with and without `keep` and killed before its QUIT,
curl pop3://, and imaplib beside poplib on the same INBOX, against the `pop3`
(plaintext_auth on loopback and STLS-only) and `pop3s` listeners of one
`tern serve`, with mail delivered over SMTP to the MX listener."""

from __future__ import annotations

import base64
import imaplib
import os
import poplib
import shutil
import smtplib
import subprocess
import time
from email.message import EmailMessage

import pytest

from conftest import ALICE, ALICE_PW, HOST, TLS_NAMES

TLS_NAME = TLS_NAMES[1]  # localhost: poplib and curl verify the name they connect to


def deliver(srv, subject: str, body: str = "Hello over POP3.\n.dot line\n") -> None:
    msg = EmailMessage()
    msg["From"] = "bob@else.test"
    msg["To"] = ALICE
    msg["Subject"] = subject
    msg.set_content(body)
    with smtplib.SMTP(HOST, srv.port, timeout=30) as s:
        s.send_message(msg)


def deliver_n(srv, n: int, prefix: str = "pop3 test") -> None:
    for i in range(1, n + 1):
        deliver(srv, f"{prefix} {i}")
    srv.wait_for_messages("alice", n, settle=0.2)


def login_plain(srv) -> poplib.POP3:
    p = poplib.POP3(HOST, srv.pop3_ports[0], timeout=30)
    p.user(ALICE)
    p.pass_(ALICE_PW)
    return p


@pytest.fixture
def srv(tern_factory):
    return tern_factory(pop3=True)


def test_poplib_stls_auth_top_uidl(srv):
    deliver_n(srv, 2)
    p = poplib.POP3(TLS_NAME, srv.pop3_ports[1], timeout=30)
    caps = p.capa()
    assert "STLS" in caps and "USER" not in caps and "SASL" not in caps, caps
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        p.user(ALICE)
    p.stls(context=srv.ssl_context())
    caps = p.capa()
    assert "STLS" not in caps
    for c in ("TOP", "UIDL", "USER", "SASL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "EXPIRE"):
        assert c in caps, (c, caps)
    assert "PLAIN" in caps["SASL"]
    # RFC 5034 AUTH with an initial response.
    ir = base64.b64encode(f"\0{ALICE}\0{ALICE_PW}".encode()).decode()
    resp = p._shortcmd(f"AUTH PLAIN {ir}")
    assert resp.startswith(b"+OK"), resp
    count, size = p.stat()
    assert count == 2
    _, listing, _ = p.list()
    sizes = [int(line.split()[1]) for line in listing]
    assert sum(sizes) == size
    for i, expected in enumerate(sizes, start=1):
        _, lines, octets = p.retr(i)
        # poplib strips CRLFs and the stuffing: the size is that plus 2 per line.
        assert sum(len(line) + 2 for line in lines) == expected
        assert f"Subject: pop3 test {i}".encode() in lines
        assert b".dot line" in lines
    _, top, _ = p.top(1, 0)
    assert top[-1] == b"" and b"Subject: pop3 test 1" in top
    assert b"Hello over POP3." not in top
    _, top1, _ = p.top(1, 1)
    assert top1 == top + [b"Hello over POP3."]
    _, uidls, _ = p.uidl()
    uidls = [u.split()[1] for u in uidls]
    assert len(set(uidls)) == 2
    p.dele(1)
    p.quit()
    # UIDL is stable across sessions; the deleted message is gone.
    p = login_plain(srv)
    _, again, _ = p.uidl()
    assert [u.split()[1] for u in again] == uidls[1:]
    p.quit()


def test_poplib_implicit_tls_and_in_use(srv):
    deliver_n(srv, 1)
    p = poplib.POP3_SSL(TLS_NAME, srv.pop3_ports[2], timeout=30, context=srv.ssl_context())
    p.user(ALICE)
    p.pass_(ALICE_PW)
    assert p.stat()[0] == 1
    q = poplib.POP3(HOST, srv.pop3_ports[0], timeout=30)
    q.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        q.pass_(ALICE_PW)
    p.dele(1)
    # A dropped connection (no QUIT) deletes nothing.
    p.sock.close()
    p.file.close()
    for _ in range(100):
        try:
            q.user(ALICE)
            q.pass_(ALICE_PW)
            break
        except poplib.error_proto as e:
            assert b"IN-USE" in e.args[0], e
            time.sleep(0.05)
    assert q.stat()[0] == 1
    q.quit()


def test_wrong_password_gets_auth_code(srv):
    p = poplib.POP3(HOST, srv.pop3_ports[0], timeout=30)
    p.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        p.pass_("wrong")
    p.quit()


def test_login_delay(tern_factory):
    srv = tern_factory(pop3=True, pop3_settings={"login_delay": "1h"})
    deliver_n(srv, 1)
    p = poplib.POP3(HOST, srv.pop3_ports[0], timeout=30)
    assert p.capa()["LOGIN-DELAY"] == ["3600"]
    p.user(ALICE)
    p.pass_(ALICE_PW)
    assert p.stat()[0] == 1
    p.quit()
    q = poplib.POP3(HOST, srv.pop3_ports[0], timeout=30)
    q.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"\[LOGIN-DELAY\]"):
        q.pass_(ALICE_PW)
    q.quit()


def login_when_free(srv) -> poplib.POP3:
    """Logs in, waiting while an ended session still holds the maildrop."""
    for _ in range(200):
        try:
            return login_plain(srv)
        except poplib.error_proto as e:
            assert b"IN-USE" in e.args[0], e
            time.sleep(0.05)
    raise AssertionError("the maildrop stayed locked")


def fetchmail_run(srv, tmp_path, *, keep: bool, mda: str | None = None) -> tuple[int, str]:
    mbox = tmp_path / "mbox"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        "set no bouncemail\n"
        "set no syslog\n"
        f"poll {HOST} service {srv.pop3_ports[0]} protocol pop3 auth password uidl timeout 30\n"
        f'  user "{ALICE}" there with password "{ALICE_PW}" is "local" here\n'
        f"  {'keep' if keep else 'no keep'}\n"
        # Loopback plaintext listener: no TLS wanted (fetchmail would try STLS).
        "  sslproto ''\n"
        f'  mda "{mda or f"cat >> {mbox}"}"\n'
    )
    rc.chmod(0o600)
    env = dict(os.environ, HOME=str(tmp_path), FETCHMAILHOME=str(tmp_path))
    p = subprocess.run(
        ["fetchmail", "-f", str(rc), "--idfile", str(tmp_path / "fetchids"), "--nodetach", "-v"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=120, env=env, cwd=tmp_path,
    )
    return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")


def mbox_subjects(tmp_path) -> list[str]:
    mbox = tmp_path / "mbox"
    if not mbox.exists():
        return []
    return [line.split(":", 1)[1].strip() for line in mbox.read_text().splitlines()
            if line.startswith("Subject:")]


@pytest.mark.skipif(shutil.which("fetchmail") is None, reason="fetchmail not installed (apt: fetchmail)")
def test_fetchmail_keep_then_delete(srv, tmp_path):
    deliver_n(srv, 2, prefix="fetch")
    code, out = fetchmail_run(srv, tmp_path, keep=True)
    assert code == 0, out
    assert sorted(mbox_subjects(tmp_path)) == ["fetch 1", "fetch 2"], out
    # keep: still on the server; the next run downloads nothing again.
    code, out = fetchmail_run(srv, tmp_path, keep=True)
    assert code == 1, out  # 1: no new mail
    assert len(mbox_subjects(tmp_path)) == 2
    p = login_plain(srv)
    assert p.stat()[0] == 2
    p.quit()
    # A new message, fetched without keep: only it is downloaded and deleted.
    deliver(srv, "fetch 3")
    code, out = fetchmail_run(srv, tmp_path, keep=False)
    assert code == 0, out
    assert sorted(mbox_subjects(tmp_path)) == ["fetch 1", "fetch 2", "fetch 3"], out
    p = login_plain(srv)
    assert p.stat()[0] == 2
    p.quit()


@pytest.mark.skipif(shutil.which("fetchmail") is None, reason="fetchmail not installed (apt: fetchmail)")
def test_fetchmail_killed_before_quit_deletes_nothing(srv, tmp_path):
    """Deletions only after a clean QUIT: fetchmail (no keep) is killed with
    SIGKILL by its MDA right after the first message is delivered, before
    it can QUIT. Nothing is deleted on the server; the next run downloads
    everything again (at least once) and then deletes it."""
    deliver_n(srv, 2, prefix="killed")
    mbox = tmp_path / "mbox"
    # The MDA runs under `sh -c` started by fetchmail: $PPID is fetchmail.
    code, out = fetchmail_run(srv, tmp_path, keep=False, mda=f"cat >> {mbox}; kill -9 $PPID")
    assert code == -9, (code, out)
    assert mbox_subjects(tmp_path) == ["killed 1"], out
    p = login_when_free(srv)
    assert p.stat()[0] == 2, "nothing deleted without QUIT"
    p.quit()
    code, out = fetchmail_run(srv, tmp_path, keep=False)
    assert code == 0, out
    assert sorted(mbox_subjects(tmp_path)) == ["killed 1", "killed 1", "killed 2"], out
    p = login_when_free(srv)
    assert p.stat()[0] == 0
    p.quit()


@pytest.mark.skipif(shutil.which("fetchmail") is None, reason="fetchmail not installed (apt: fetchmail)")
def test_fetchmail_over_pop3s_verifying_the_certificate(srv, tmp_path):
    """The README's fetchmail setup: implicit TLS, certificate checked."""
    deliver_n(srv, 1, prefix="tls fetch")
    mbox = tmp_path / "mbox"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        "set no bouncemail\n"
        "set no syslog\n"
        f"poll localhost via {HOST} service {srv.pop3_ports[2]} protocol pop3 uidl timeout 30\n"
        f'  user "{ALICE}" there with password "{ALICE_PW}" is "local" here\n'
        f"  ssl sslcertck sslcertfile {srv.cert_path} sslcommonname mx.example.test\n"
        f'  no keep mda "cat >> {mbox}"\n'
    )
    rc.chmod(0o600)
    env = dict(os.environ, HOME=str(tmp_path), FETCHMAILHOME=str(tmp_path))
    p = subprocess.run(
        ["fetchmail", "-f", str(rc), "--idfile", str(tmp_path / "fetchids"), "--nodetach", "-v"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=120, env=env, cwd=tmp_path,
    )
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    assert p.returncode == 0, out
    assert mbox_subjects(tmp_path) == ["tls fetch 1"], out
    pop = login_plain(srv)
    assert pop.stat()[0] == 0
    pop.quit()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_pop3(srv):
    deliver_n(srv, 2, prefix="curl")
    base = f"pop3://{HOST}:{srv.pop3_ports[0]}"
    user = f"{ALICE}:{ALICE_PW}"
    p = subprocess.run(["curl", "-sS", "--max-time", "30", "-u", user, f"{base}/"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    listing = p.stdout.decode().split("\r\n")
    assert listing[0].startswith("1 ") and listing[1].startswith("2 "), listing
    p = subprocess.run(["curl", "-sS", "--max-time", "30", "-u", user, f"{base}/2"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert b"Subject: curl 2\r\n" in p.stdout
    assert len(p.stdout) == int(listing[1].split()[1])
    # Over STLS, verifying the certificate.
    p = subprocess.run(["curl", "-sS", "--max-time", "30", "--ssl-reqd", "--cacert", str(srv.cert_path),
                        "-u", user, f"pop3://{TLS_NAME}:{srv.pop3_ports[1]}/1"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert b"Subject: curl 1\r\n" in p.stdout
    # DELE through curl's custom request, applied at its QUIT.
    p = subprocess.run(["curl", "-sS", "--max-time", "30", "-u", user, "-X", "DELE", "-I", f"{base}/1"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    pop = login_plain(srv)
    assert pop.stat()[0] == 1
    pop.quit()


def test_imaplib_and_poplib_on_the_same_inbox(tern_factory):
    """IMAP and POP3 at the same time: IMAP's selected session hears POP3's
    deletion at its next NOOP; POP3 sees at its next login what IMAP did
    (a message IMAP expunged is gone, one IMAP appended is there)."""
    srv = tern_factory(pop3=True, imap=True)
    deliver_n(srv, 3, prefix="both")
    imap = imaplib.IMAP4(HOST, srv.imap_port, timeout=30)
    imap.login(ALICE, ALICE_PW)
    typ, data = imap.select("INBOX")
    assert typ == "OK" and data == [b"3"], data
    p = login_plain(srv)
    assert p.stat()[0] == 3
    p.dele(1)
    # Not before QUIT.
    typ, _ = imap.noop()
    assert not [r for r in imap.untagged_responses.get("EXPUNGE", [])], imap.untagged_responses
    p.quit()
    imap.noop()
    assert imap.untagged_responses.pop("EXPUNGE", None) == [b"1"], imap.untagged_responses
    # IMAP expunges one, appends one: POP3's next session sees both.
    imap.store("1", "+FLAGS", "\\Deleted")
    imap.expunge()
    msg = b"From: imap@example.test\r\nSubject: appended by imap\r\n\r\nhello\r\n"
    typ, _ = imap.append("INBOX", None, None, msg)
    assert typ == "OK"
    p = login_plain(srv)
    count, _ = p.stat()
    assert count == 2
    _, lines, _ = p.retr(2)
    assert b"Subject: appended by imap" in lines
    _, lines, _ = p.retr(1)
    assert b"Subject: both 3" in lines
    p.quit()
    imap.logout()
