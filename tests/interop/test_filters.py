"""The filter pipeline against the real daemons (issue 14).

Every daemon runs privately, on loopback ports, with a configuration this
module writes (nothing from /etc is changed, no system service is used):

- rspamd 3.4 (Debian `rspamd`): the normal worker over HTTP (`/checkv2`),
  the proxy worker in milter mode (through Tern's milter client), the
  controller for learning (`tern spam learn`, IMAP moves into Junk).
  Network checks are off and its resolver is a closed port; test rules
  (multimap + force_actions) turn `Subject: tern-soft-reject` into a soft
  reject and `Subject: tern-spammy` into "add header". GTUBE is built in.
- clamd (Debian `clamav-daemon`) with a signature database this module
  writes itself (signature downloads are impossible offline): the EICAR
  test file's MD5 as a `.hdb` and its bytes as a `.ndb` body signature;
  reached over INSTREAM and through `clamav-milter`.
- dnsmasq publishing blocklist zones for 127.0.0.1 (the client address
  of every test).
"""

from __future__ import annotations

import base64
import hashlib
import imaplib
import json
import os
import shutil
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import DNSMASQ, HOST, free_port, free_udp_tcp_port, dns_query
from smtpwire import SmtpWire

RSPAMD = shutil.which("rspamd")
CLAMD = shutil.which("clamd") or ("/usr/sbin/clamd" if Path("/usr/sbin/clamd").exists() else None)
CLAMAV_MILTER = shutil.which("clamav-milter") or (
    "/usr/sbin/clamav-milter" if Path("/usr/sbin/clamav-milter").exists() else None)

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def wait_for(what: str, ok, proc: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{log.read_text(errors='replace')[-4000:]}")
        try:
            if ok():
                return
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"{what} did not come up within {timeout}s:\n{log.read_text(errors='replace')[-4000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# ---------------------------------------------------------------- rspamd

class Rspamd:
    def __init__(self, normal: int, controller: int, proxy: int, log: Path):
        self.normal, self.controller, self.proxy, self.log = normal, controller, proxy, log


RSPAMD_CONF = """
.include "$CONFDIR/common.conf"
options {{
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"
}}
logging {{
    type = "file";
    filename = "$LOGDIR/rspamd.log";
    level = "info";
}}
worker "normal" {{
    bind_socket = "127.0.0.1:{normal}";
    .include "$CONFDIR/worker-normal.inc"
    count = 1;
}}
worker "controller" {{
    bind_socket = "127.0.0.1:{controller}";
    .include "$CONFDIR/worker-controller.inc"
    password = "tern-test-password";
    enable_password = "tern-test-password";
    secure_ip = "192.0.2.1";
}}
worker "rspamd_proxy" {{
    bind_socket = "127.0.0.1:{proxy}";
    milter = yes;
    timeout = 120s;
    count = 1;
    upstream "local" {{ default = yes; self_scan = yes; }}
}}
"""

RSPAMD_LOCAL = {
    # No network: a closed resolver port, and the checks that only ask the
    # Internet are off.
    "options.inc": 'dns { nameserver = ["127.0.0.1:9"]; timeout = 0.2s; retransmits = 1; }\n',
    "classifier-bayes.conf": (
        'backend = "sqlite3";\nmin_learns = 1;\n'
        'statfile { symbol = "BAYES_HAM"; spam = false; path = "$DBDIR/bayes.ham.sqlite"; }\n'
        'statfile { symbol = "BAYES_SPAM"; spam = true; path = "$DBDIR/bayes.spam.sqlite"; }\n'
        'cache { path = "$DBDIR/learn_cache.sqlite"; }\n'
    ),
    "multimap.conf": (
        'TERN_SOFT { type = "header"; header = "Subject"; regexp = true; '
        'map = "${LOCAL_CONFDIR}/soft.map"; score = 0.0; }\n'
        'TERN_SPAMMY { type = "header"; header = "Subject"; regexp = true; '
        'map = "${LOCAL_CONFDIR}/spammy.map"; score = 8.0; }\n'
    ),
    "force_actions.conf": (
        'rules { TERN_SOFT_RULE { action = "soft reject"; expression = "TERN_SOFT"; '
        'message = "Soft reject for testing"; } }\n'
    ),
    "milter_headers.conf": (
        'use = ["x-spamd-result", "x-rspamd-server"];\nskip_local = false;\nskip_authenticated = false;\n'
    ),
}
RSPAMD_OFF = ["rbl", "surbl", "fuzzy_check", "dkim", "dmarc", "spf", "arc", "asn", "mx_check",
              "phishing", "emails", "replies", "reputation", "neural", "ratelimit", "greylist",
              "history_redis", "dcc", "url_redirector", "hfilter", "dkim_signing", "once_received"]


@pytest.fixture(scope="module")
def rspamd(tmp_path_factory):
    if RSPAMD is None:
        pytest.skip("rspamd not installed (.ci/run installs it)")
    d = tmp_path_factory.mktemp("rspamd")
    for sub in ("local.d", "db", "run", "log"):
        (d / sub).mkdir()
    normal, controller, proxy = free_port(), free_port(), free_port()
    (d / "rspamd.conf").write_text(RSPAMD_CONF.format(normal=normal, controller=controller, proxy=proxy))
    for name, text in RSPAMD_LOCAL.items():
        (d / "local.d" / name).write_text(text)
    for module in RSPAMD_OFF:
        (d / "local.d" / f"{module}.conf").write_text("enabled = false;\n")
    (d / "soft.map").write_text("/tern-soft-reject/\n")
    (d / "spammy.map").write_text("/tern-spammy/\n")
    log = d / "log" / "rspamd.log"
    out = d / "stdout.log"
    proc = subprocess.Popen(
        [RSPAMD, "-f", "-i", "-c", str(d / "rspamd.conf"),
         f"--var=LOCAL_CONFDIR={d}", f"--var=DBDIR={d / 'db'}",
         f"--var=RUNDIR={d / 'run'}", f"--var=LOGDIR={d / 'log'}"],
        stdin=subprocess.DEVNULL, stdout=open(out, "wb"), stderr=subprocess.STDOUT)

    def up():
        for port in (normal, controller):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1) as r:
                if r.status != 200:
                    return False
        with socket.create_connection((HOST, proxy), timeout=1):
            pass
        return True

    wait_for("rspamd", up, proc, out)
    yield Rspamd(normal, controller, proxy, log)
    stop(proc)


def mail(subject: str, body: str = "Hello, this is an ordinary message about the weekly meeting.",
         *, extra_headers: str = "") -> str:
    return (f"From: Carol <carol@sender.test>\r\nTo: alice@example.test\r\nSubject: {subject}\r\n"
            f"Date: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{abs(hash(subject + body))}@sender.test>\r\n"
            f"{extra_headers}MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{body}\r\n")


def send(srv, message: str, to: str = "alice@example.test"):
    """The reply to the end of data (or the first refusal before it)."""
    with SmtpWire(srv.host, srv.port, timeout=60) as c:
        c.greet_and_ehlo()
        r = c.cmd("MAIL FROM:<carol@sender.test>")
        if r.code != 250:
            return r
        r = c.cmd(f"RCPT TO:<{to}>")
        if r.code != 250:
            return r
        r = c.cmd("DATA")
        assert r.code == 354, r
        c.send(message.replace("\r\n.", "\r\n..").encode() + b"\r\n.\r\n")
        r = c.reply(timeout=60)
        assert c.cmd("RSET").code == 250, "the session goes on"
        c.cmd("QUIT")
        return r


def rspamd_stage(rspamd, **extra):
    stage = {"type": "rspamd", "url": f"http://127.0.0.1:{rspamd.normal}", "timeout": "30s"}
    stage.update(extra)
    return stage


def test_rspamd_gtube_is_rejected(tern_factory, rspamd):
    srv = tern_factory(filters=[rspamd_stage(rspamd)])
    r = send(srv, mail("gtube test", f"This is the GTUBE:\r\n{GTUBE}"))
    assert r.code == 554 and r.text.startswith("5.7.1 Gtube pattern"), r
    assert srv.all_delivered() == []
    assert "filter verdicts" in srv.log() and "action=\"reject\"" in srv.log()


def test_rspamd_clean_message_passes_with_spam_headers(tern_factory, rspamd):
    srv = tern_factory(filters=[rspamd_stage(rspamd)])
    r = send(srv, mail("meeting on thursday"))
    assert r.code == 250, r
    raw = srv.wait_for_messages("alice", 1)[0].read_bytes().decode()
    assert "X-Tern-Filter: mx.example.test; rspamd=no action (score=" in raw, raw
    assert "X-Spam-Status: No, score=" in raw
    # rspamd's own fields, from its milter_headers module.
    assert "X-Spamd-Result: default: False" in raw, raw
    # One structured line per message, with the queue id and every stage.
    log = srv.log()
    assert "filter verdicts" in log and "rspamd@eom=no action" in log, log


def test_rspamd_soft_reject_gives_451(tern_factory, rspamd):
    srv = tern_factory(filters=[rspamd_stage(rspamd)])
    r = send(srv, mail("tern-soft-reject please"))
    assert r.code == 451 and r.text.startswith("4.7.1 Soft reject for testing"), r
    assert srv.all_delivered() == []


def test_rspamd_add_header_goes_to_junk(tern_factory, rspamd):
    srv = tern_factory(filters=[rspamd_stage(rspamd)])
    r = send(srv, mail("tern-spammy offer"))
    assert r.code == 250, r
    junk = srv.maildir("alice") / ".Junk" / "new"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(junk.glob("*")):
        time.sleep(0.05)
    files = list(junk.glob("*"))
    assert len(files) == 1, srv.log()
    raw = files[0].read_bytes().decode()
    assert "X-Spam-Flag: YES" in raw and "action=\"add header\"" in raw, raw
    assert srv.new_files("alice") == []


def test_rspamd_proxy_in_milter_mode(tern_factory, rspamd):
    """rspamd's proxy worker speaks the milter protocol: Tern's milter client."""
    srv = tern_factory(filters=[{"type": "milter", "name": "rspamd-milter",
                                 "address": f"inet:{rspamd.proxy}@127.0.0.1", "timeout": "30s"}])
    r = send(srv, mail("gtube via milter", f"{GTUBE}"))
    assert r.code == 554 and "Gtube pattern" in r.text, r
    r = send(srv, mail("tern-soft-reject via milter"))
    assert r.code == 451, r
    r = send(srv, mail("milter meeting notes"))
    assert r.code == 250, r
    raw = srv.wait_for_messages("alice", 1)[0].read_bytes().decode()
    # The milter's header changes: rspamd adds its result fields.
    assert "X-Spamd-Result:" in raw and "X-Rspamd-Server:" in raw, raw
    assert "X-Tern-Filter: mx.example.test; rspamd-milter=" in raw, raw


def test_spam_learn_cli_and_imap_move_into_junk(tern_factory, rspamd, tmp_path):
    password = tmp_path / "rspamd.pw"
    password.write_text("tern-test-password\n")
    stage = rspamd_stage(rspamd, controller=f"http://127.0.0.1:{rspamd.controller}",
                         password_file=password)
    srv = tern_factory(filters=[stage], imap=True)
    spam = tmp_path / "spam.eml"
    token = os.urandom(8).hex()
    spam.write_text(mail(f"cheap pills {token}",
                         f"Buy cheap pills now {token}, discount pharmacy, order today, limited offer."))
    cli = [str(srv_bin()), "spam", "learn", "--spam", str(spam), "--config", str(srv.config_path)]
    p = subprocess.run(cli, capture_output=True, timeout=60)
    out = (p.stdout + p.stderr).decode()
    assert p.returncode == 0 and "learned as spam" in out, out
    p = subprocess.run(cli, capture_output=True, timeout=60)
    assert "already learned" in (p.stdout + p.stderr).decode()
    bad = subprocess.run([str(srv_bin()), "spam", "learn", "--ham", str(tmp_path / "missing.eml"),
                          "--config", str(srv.config_path)], capture_output=True, timeout=60)
    assert bad.returncode != 0
    # IMAP: a message moved into Junk is learned as spam.
    r = send(srv, mail(f"newsletter {token}", f"Special newsletter offer {token} with many words in it."))
    assert r.code == 250, r
    srv.wait_for_messages("alice", 1)
    before = learned_count(rspamd)
    imap = imaplib.IMAP4(HOST, srv.imap_port)
    imap.login("alice@example.test", "alice-Secret-1 (with spaces)")
    imap.select("INBOX")
    typ, _ = imap.uid("MOVE", "1:*", "Junk")
    assert typ == "OK"
    imap.logout()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and learned_count(rspamd) <= before:
        time.sleep(0.2)
    assert learned_count(rspamd) > before, srv.log()
    assert "rspamd learned a message moved by a user" in srv.log()


def srv_bin() -> Path:
    from conftest import tern_bin
    return tern_bin()


def learned_count(rspamd) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{rspamd.controller}/stat",
                                 headers={"Password": "tern-test-password"})
    with urllib.request.urlopen(req, timeout=5) as r:
        stat = json.load(r)
    return int(stat.get("learned", 0))


# ---------------------------------------------------------------- clamd

class Clam:
    def __init__(self, clamd_port: int, milter_port: int | None):
        self.clamd_port, self.milter_port = clamd_port, milter_port


def write_signatures(db: Path) -> None:
    db.mkdir()
    (db / "tern-test.hdb").write_text(f"{hashlib.md5(EICAR).hexdigest()}:{len(EICAR)}:Tern.Test.EICAR-HDB\n")
    (db / "tern-test.ndb").write_text(f"Tern.Test.EICAR-NDB:0:*:{EICAR.hex()}\n")


@pytest.fixture(scope="module")
def clam(tmp_path_factory):
    if CLAMD is None:
        pytest.skip("clamd not installed (.ci/run installs clamav-daemon)")
    d = tmp_path_factory.mktemp("clamd")
    write_signatures(d / "db")
    port = free_port()
    (d / "clamd.conf").write_text(
        f"Foreground yes\nDatabaseDirectory {d / 'db'}\nTCPSocket {port}\nTCPAddr 127.0.0.1\n"
        f"LogFile {d / 'clamd.log'}\nStreamMaxLength 1M\nUser root\nPidFile {d / 'clamd.pid'}\n")
    out = d / "stdout.log"
    clamd = subprocess.Popen([CLAMD, "-c", str(d / "clamd.conf")], stdin=subprocess.DEVNULL,
                             stdout=open(out, "wb"), stderr=subprocess.STDOUT)

    def pong():
        with socket.create_connection((HOST, port), timeout=1) as s:
            s.sendall(b"zPING\0")
            return s.recv(16).startswith(b"PONG")

    wait_for("clamd", pong, clamd, out)
    milter = None
    milter_port = None
    if CLAMAV_MILTER is not None:
        milter_port = free_port()
        (d / "milter.conf").write_text(
            f"Foreground yes\nMilterSocket inet:{milter_port}@127.0.0.1\nClamdSocket tcp:127.0.0.1:{port}\n"
            f"User root\nOnInfected Reject\nOnClean Accept\nAddHeader Replace\nLogFile {d / 'milter.log'}\n"
            f"LogInfected Full\nPidFile {d / 'milter.pid'}\nRejectMsg \"Virus found: %v\"\n")
        mout = d / "milter-stdout.log"
        milter = subprocess.Popen([CLAMAV_MILTER, "-c", str(d / "milter.conf")], stdin=subprocess.DEVNULL,
                                  stdout=open(mout, "wb"), stderr=subprocess.STDOUT)

        def listening():
            with socket.create_connection((HOST, milter_port), timeout=1):
                return True

        wait_for("clamav-milter", listening, milter, mout)
    yield Clam(port, milter_port)
    if milter is not None:
        stop(milter)
    stop(clamd)


def eicar_attachment() -> str:
    return ("From: carol@sender.test\r\nTo: alice@example.test\r\nSubject: your invoice\r\n"
            "Date: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <eicar@sender.test>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\n"
            "See the attachment.\r\n--XX\r\nContent-Type: application/octet-stream\r\n"
            "Content-Disposition: attachment; filename=eicar.com\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            f"{base64.b64encode(EICAR).decode()}\r\n--XX--\r\n")


def test_clamd_instream_rejects_eicar_naming_the_signature(tern_factory, clam):
    srv = tern_factory(filters=[{"type": "clamd", "address": f"127.0.0.1:{clam.clamd_port}",
                                 "max_size": 1000000}])
    r = send(srv, eicar_attachment())
    assert r.code == 554, r
    assert r.text.startswith("5.7.1 Message rejected: virus found: Tern.Test.EICAR-"), r
    r = send(srv, mail("clean invoice"))
    assert r.code == 250, r
    raw = srv.wait_for_messages("alice", 1)[0].read_bytes().decode()
    assert "X-Tern-Filter: mx.example.test; clamav=clean" in raw, raw
    # Larger than clamd's StreamMaxLength (1M) and ours: not sent, recorded.
    big = ("x" * 998 + "\r\n") * 1100
    r = send(srv, mail("big", big), to="bob@example.test")
    assert r.code == 250, r
    raw = srv.wait_for_messages("bob", 1)[0].read_bytes().decode()
    assert "clamav=skipped (larger than 1000000 bytes)" in raw


def test_clamd_stream_limit_lower_than_ours_fails_as_configured(tern_factory, clam):
    """clamd refuses a stream past its StreamMaxLength (1M here) with an
    error: fail closed gives 451, never a lost message."""
    srv = tern_factory(filters=[{"type": "clamd", "address": f"127.0.0.1:{clam.clamd_port}",
                                 "max_size": 5000000, "fail": "closed"}])
    big = ("x" * 998 + "\r\n") * 1100
    r = send(srv, mail("big", big))
    assert r.code == 451 and r.text.startswith("4.7.1"), r
    assert srv.all_delivered() == []


def test_clamav_milter(tern_factory, clam):
    if clam.milter_port is None:
        pytest.skip("clamav-milter not installed (.ci/run installs it)")
    srv = tern_factory(filters=[{"type": "milter", "name": "clamav-milter",
                                 "address": f"inet:{clam.milter_port}@127.0.0.1", "timeout": "30s"}])
    r = send(srv, eicar_attachment())
    assert r.code >= 500 and "Tern.Test.EICAR" in r.text, r
    r = send(srv, mail("clean through the milter"))
    assert r.code == 250, r
    raw = srv.wait_for_messages("alice", 1)[0].read_bytes().decode()
    assert "X-Virus-Scanned: clamav-milter" in raw and "X-Virus-Status: Clean" in raw, raw


def test_two_milters_in_order_and_rspamd_and_clamd(tern_factory, rspamd, clam):
    """Several stages, like Postfix's smtpd_milters plus scanners."""
    stages = [{"type": "clamd", "address": f"127.0.0.1:{clam.clamd_port}"}, rspamd_stage(rspamd)]
    if clam.milter_port is not None:
        stages.insert(0, {"type": "milter", "name": "clamav-milter",
                          "address": f"inet:{clam.milter_port}@127.0.0.1"})
    stages.append({"type": "milter", "name": "rspamd-milter", "address": f"inet:{rspamd.proxy}@127.0.0.1"})
    srv = tern_factory(filters=stages)
    r = send(srv, mail("all of them"))
    assert r.code == 250, r
    raw = srv.wait_for_messages("alice", 1)[0].read_bytes().decode()
    line = next(l for l in raw.split("\r\n") if l.startswith("X-Tern-Filter:"))
    names = [part.split("=")[0].strip() for part in line.split(";")[1:]]
    want = ["clamav", "rspamd", "rspamd-milter"]
    if clam.milter_port is not None:
        want.insert(0, "clamav-milter")
    assert names == want, line


# ---------------------------------------------------------------- DNSBL

@pytest.fixture(scope="module")
def dnsbl_dns(tmp_path_factory):
    """dnsmasq with blocklist zones listing 127.0.0.1."""
    if DNSMASQ is None:
        pytest.skip("dnsmasq not installed (.ci/run installs dnsmasq-base)")
    d = tmp_path_factory.mktemp("dnsbl")
    port = free_udp_tcp_port()
    args = [DNSMASQ, "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--no-poll",
            "--pid-file=", "--log-facility=-", "--log-queries", f"--port={port}",
            "--listen-address=127.0.0.1", "--bind-interfaces", "--user=nobody", "--group=nogroup",
            "--local=/test/",
            "--host-record=1.0.0.127.bl.test,127.0.0.2",
            "--host-record=1.0.0.127.zen.test,127.255.255.254",
            "--host-record=1.0.0.127.wl.test,127.0.10.1",
            "--host-record=dnsbl-ready.test,127.0.0.1"]
    log = d / "dnsmasq.log"
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    wait_for("dnsmasq", lambda: dns_query(port, "dnsbl-ready.test", 1, timeout=0.3) == (0, 1), proc, log)
    yield [f"{HOST}:{port}"]
    stop(proc)


def test_dnsbl_listed_client_refused_at_mail(tern_factory, dnsbl_dns):
    srv = tern_factory(dns_nameservers=dnsbl_dns,
                       filters=[{"type": "dnsbl", "zones": ["bl.test", "zen.test"]}])
    with SmtpWire(srv.host, srv.port) as c:
        c.greet_and_ehlo()
        r = c.cmd("MAIL FROM:<carol@sender.test>")
        assert r.code == 554, r
        assert r.text == "5.7.1 Service unavailable; client [127.0.0.1] blocked using bl.test", r
        c.cmd("QUIT")


def test_dnsbl_error_codes_and_allowlists(tern_factory, dnsbl_dns):
    # zen.test answers 127.255.255.254 ("query through a public resolver"):
    # an error, never a listing.
    srv = tern_factory(dns_nameservers=dnsbl_dns,
                       filters=[{"type": "dnsbl", "zones": [{"zone": "zen.test", "kind": "spamhaus"}]}])
    r = send(srv, mail("zen error code"))
    assert r.code == 250, r
    raw = srv.wait_for_messages("alice", 1)[0].read_bytes().decode()
    assert "dnsbl=zen.test=error:127.255.255.254" in raw, raw
    # An allowlist with a negative weight outweighs the blocklist.
    srv = tern_factory(dns_nameservers=dnsbl_dns,
                       filters=[{"type": "dnsbl", "hook": "rcpt",
                                 "zones": ["bl.test", {"zone": "wl.test", "weight": -5}]}])
    r = send(srv, mail("allowlisted"))
    assert r.code == 250, r
