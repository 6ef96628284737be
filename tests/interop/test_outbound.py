"""Outbound delivery (issue 4) against third-party servers on loopback.

alice submits through Tern's submission port; Tern looks the recipient domain
up in a private dnsmasq on 127.0.0.1 (the `dns_server` fixture: remote.test
-> 127.0.0.2, reject.test -> 127.0.0.3, smarthost.test -> 127.0.0.4, ...) and
delivers to `[delivery] remote_port` of that address, where Postfix's
smtp-sink, a private Postfix or (for LMTP) Dovecot listens. Failures come back
to alice's local Maildir as DSNs, parsed with the email package. Nothing is
ever sent outside 127.0.0.0/8.
"""

from __future__ import annotations

import smtplib
import subprocess
import tempfile
import time
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest

from conftest import ALICE, ALICE_PW, DOWN_ADDR, MX_HOSTS, NXDOMAIN, tern_bin, free_port
from remotes import (DOVECOT, DOVECOT_LMTP, IS_ROOT, OPENSSL, POSTFIX, SMTP_SINK, PrivateDovecot,
                     PrivatePostfix, SmtpSink, ca_signed_cert, self_signed_cert, shared_port, world_readable_tmpdir)

REMOTE = MX_HOSTS["remote.test"]
REJECT = MX_HOSTS["reject.test"]
SMARTHOST = MX_HOSTS["smarthost.test"]
TERN_NAME = "mx.example.test"          # hostname of every Tern in these tests

need_sink = pytest.mark.skipif(SMTP_SINK is None, reason="smtp-sink not installed (postfix package; .ci/run installs it)")
need_postfix = pytest.mark.skipif(
    POSTFIX is None or not IS_ROOT or OPENSSL is None,
    reason="a private Postfix instance needs postfix, openssl and root (.ci/run installs them; CI runs as root)")
need_dovecot = pytest.mark.skipif(
    DOVECOT is None or DOVECOT_LMTP is None or not IS_ROOT,
    reason="Dovecot LMTP needs dovecot-core, dovecot-lmtpd and root (.ci/run installs them)")


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

@pytest.fixture
def mx_port() -> int:
    """The port every fake MX of this test listens on (Tern's remote_port)."""
    return shared_port()


@pytest.fixture
def remotes(tmp_path_factory):
    """Start smtp-sinks / Postfix / Dovecot for one test; all stopped at the end."""
    started = []

    class Remotes:
        def sink(self, addr: str, port: int, *options: str) -> SmtpSink:
            s = SmtpSink(tmp_path_factory.mktemp("sink"), addr, port, options).start()
            started.append(s)
            return s

        def postfix(self, addr: str, port: int, **kw) -> PrivatePostfix:
            base = world_readable_tmpdir("tern-interop-postfix-")
            pf = PrivatePostfix(base, addr, port, **kw)
            started.append(pf)
            return pf.start()

        def dovecot(self, port: int, users) -> PrivateDovecot:
            base = world_readable_tmpdir("tern-interop-dovecot-")
            dv = PrivateDovecot(base, port, users)
            started.append(dv)
            return dv.start()

        def logs(self) -> str:
            return "\n".join(s.log() for s in started)

    yield Remotes()
    import shutil
    for s in reversed(started):
        s.stop()
        base = getattr(s, "base", None)
        if base is not None and str(base).startswith("/tmp/tern-interop-"):
            shutil.rmtree(base, ignore_errors=True)


def outbound_tern(tern_factory, dns_server, remote_port: int, *, delivery=None, queue=None, **config):
    """A Tern with submission listeners (alice, bob), DNS from the loopback dnsmasq,
    remote delivery to `remote_port`, and retries every second."""
    d = {"remote_port": remote_port, "connect_timeout": "5s"}
    d.update(delivery or {})
    q = {"intervals": ["1s"], "max_age": "30s"}
    q.update(queue or {})
    return tern_factory(submission=True, plaintext_auth_listener=True,
                        dns_nameservers=dns_server.nameservers, delivery=d, queue=q, **config)


def make_message(to: list[str], subject: str, body: str = "Sent through Tern to the outside.\n") -> EmailMessage:
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = ALICE
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0000"
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@client.test>"
    msg.set_content(body)
    return msg


def submit(srv, to: list[str], subject: str, body: str = "Sent through Tern to the outside.\n") -> EmailMessage:
    """alice submits over the plaintext_auth submission listener; every RCPT must be accepted."""
    msg = make_message(to, subject, body)
    with smtplib.SMTP(srv.host, srv.plaintext_port, local_hostname="client.test", timeout=30) as s:
        s.login(ALICE, ALICE_PW)
        refused = s.send_message(msg, from_addr=ALICE, to_addrs=to)
        assert refused == {}, refused
    return msg


def spool_entries(srv) -> list[str]:
    q = srv.data_dir / "spool" / "queue"
    if not q.is_dir():
        return []
    return sorted(p.name for p in q.iterdir() if not p.name.startswith("."))


def wait_queue_empty(srv, timeout: float = 20.0, extra_log: str = "") -> None:
    deadline = time.monotonic() + timeout
    while spool_entries(srv) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert spool_entries(srv) == [], (f"queue not empty after {timeout}s: {spool_entries(srv)}\n"
                                      f"{srv.log()}\n{extra_log}")


def parse(path: Path):
    return BytesParser(policy=policy.default).parsebytes(path.read_bytes())


class Dsn:
    """A delivery status notification (RFC 3464) parsed with the email package."""

    def __init__(self, path: Path):
        self.path = path
        self.msg = parse(path)
        assert self.msg.get_content_type() == "multipart/report", (path, self.msg.get_content_type())
        assert self.msg.get_param("report-type") == "delivery-status", self.msg["Content-Type"]
        parts = list(self.msg.iter_parts())
        assert len(parts) >= 2, f"a report has a human part and a delivery-status part: {path}"
        assert parts[0].get_content_type() == "text/plain", parts[0].get_content_type()
        status = [p for p in parts if p.get_content_type() == "message/delivery-status"]
        assert len(status) == 1, [p.get_content_type() for p in parts]
        blocks = status[0].get_payload()
        assert len(blocks) >= 2, "per-message fields, then one block per recipient"
        self.per_message = blocks[0]
        self.recipients = blocks[1:]
        self.human = parts[0].get_content()
        self.returned = [p for p in parts[2:]]

    def final_recipients(self) -> list[str]:
        out = []
        for r in self.recipients:
            v = str(r["Final-Recipient"])
            assert v.lower().startswith("rfc822;"), v
            out.append(v.split(";", 1)[1].strip())
        return out

    def field(self, name: str) -> list[str]:
        return [" ".join(str(r[name]).split()) if r[name] is not None else None for r in self.recipients]


def bounces(srv, count: int, timeout: float = 20.0, extra_log: str = "") -> list[Dsn]:
    """alice's Maildir holds exactly `count` messages (stable for a second): her DSNs."""
    try:
        files = srv.wait_for_messages("alice", count, timeout=timeout, settle=1.0)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{extra_log}") from None
    assert len(files) == count, f"alice got {len(files)} messages, expected {count} DSN(s)\n{srv.log()}"
    return [Dsn(f) for f in files]


def assert_no_bounce(srv, wait: float = 1.0) -> None:
    time.sleep(wait)
    files = srv.new_files("alice")
    assert files == [], "unexpected message(s) to alice:\n" + "\n\n".join(
        f.read_text(errors="replace")[:3000] for f in files)


def tern_received(msg) -> list[str]:
    """Received: fields that Tern added (by mx.example.test)."""
    return [" ".join(str(r).split()) for r in msg.get_all("Received", []) if f"by {TERN_NAME}" in str(r)]


# ---------------------------------------------------------------------------
# smtp-sink as the remote MX
# ---------------------------------------------------------------------------

@need_sink
def test_dns_fixture_publishes_the_test_zones(dns_server):
    """The loopback DNS answers what the tests rely on (no upstream: unknown names fail fast)."""
    from conftest import dns_query
    assert dns_query(dns_server.port, "remote.test", 15) == (0, 1)            # MX
    assert dns_query(dns_server.port, "mx.remote.test", 1) == (0, 1)         # A
    assert dns_query(dns_server.port, "nullmx.test", 15) == (0, 1)           # MX 0 .
    assert dns_query(dns_server.port, "backup.test", 15) == (0, 2)
    assert dns_query(dns_server.port, "implicit.test", 15) == (0, 0)         # NODATA
    assert dns_query(dns_server.port, NXDOMAIN, 15)[0] == 3                  # NXDOMAIN
    assert dns_query(dns_server.port, "example.com", 1)[0] != 0              # nothing outside .test


@need_sink
def test_sink_receives_two_recipients(tern_factory, dns_server, remotes, mx_port):
    sink = remotes.sink(REMOTE, mx_port)
    srv = outbound_tern(tern_factory, dns_server, mx_port)
    sent = submit(srv, ["rcpt1@remote.test", "rcpt2@remote.test"], "to the sink")
    wait_queue_empty(srv, extra_log=sink.log())
    msgs = sink.wait_for_messages(1)
    assert len(msgs) == 1, f"two recipients at one domain go in one transaction: {msgs}\n{sink.log()}"
    [m] = msgs
    assert m.mail.split()[0] == f"<{ALICE}>", m.mail
    assert sorted(r.split()[0] for r in m.rcpts) == ["<rcpt1@remote.test>", "<rcpt2@remote.test>"]
    assert m.helo == TERN_NAME, f"EHLO name should be Tern's hostname: {m.helo}"
    got = m.message
    assert got["Subject"] == "to the sink"
    assert got["Message-ID"] == sent["Message-ID"]
    assert "Sent through Tern to the outside." in got.get_content()
    assert len(tern_received(got)) == 1, got.get_all("Received")
    # the sink is the remote end: nothing comes back to alice
    assert_no_bounce(srv)
    assert sink.commands().count(".") == 1, sink.log()
    # Every log line of the outbound driver names the message's queue id.
    driver = [l for l in srv.log().splitlines() if "outbound: " in l]
    assert driver, srv.log()
    assert all("queue_id=" in l for l in driver), "\n".join(l for l in driver if "queue_id=" not in l)


@need_sink
def test_sink_backup_mx_and_implicit_mx(tern_factory, dns_server, remotes, mx_port):
    """backup.test: MX 10 is down (connection refused), MX 20 is the sink;
    implicit.test: no MX, only an A record pointing at the sink."""
    sink = remotes.sink(REMOTE, mx_port)
    srv = outbound_tern(tern_factory, dns_server, mx_port)
    submit(srv, ["b@backup.test"], "via the backup mx")
    submit(srv, ["i@implicit.test"], "via the implicit mx")
    wait_queue_empty(srv, extra_log=sink.log())
    msgs = sink.wait_for_messages(2)
    got = sorted((m.rcpts[0].split()[0], m.message["Subject"]) for m in msgs)
    assert got == [("<b@backup.test>", "via the backup mx"), ("<i@implicit.test>", "via the implicit mx")], got
    assert_no_bounce(srv)


@need_sink
def test_sink_rejects_one_recipient(tern_factory, dns_server, remotes, mx_port):
    """ok@remote.test goes to an accepting sink; no@reject.test to a sink that
    rejects every RCPT with a 5xx. One DSN, naming only the rejected one."""
    good = remotes.sink(REMOTE, mx_port)
    bad = remotes.sink(REJECT, mx_port, "-f", "RCPT", "-B", "550 5.1.1 Recipient unknown here")
    srv = outbound_tern(tern_factory, dns_server, mx_port)
    submit(srv, ["ok@remote.test", "no@reject.test"], "one of two rejected")
    logs = good.log() + bad.log()
    wait_queue_empty(srv, extra_log=logs)
    [m] = good.wait_for_messages(1)
    assert [r.split()[0] for r in m.rcpts] == ["<ok@remote.test>"]
    assert any(c.startswith("rcpt") and "no@reject.test" in c for c in bad.commands()), bad.log()
    assert "." not in bad.commands(), "no recipient accepted: no message data to the rejecting sink"

    [dsn] = bounces(srv, 1, extra_log=logs)
    assert dsn.final_recipients() == ["no@reject.test"]
    assert dsn.field("Action") == ["failed"]
    assert dsn.field("Status") == ["5.1.1"], "the remote's enhanced status code"
    [diag] = dsn.field("Diagnostic-Code")
    assert diag.lower().startswith("smtp;"), diag
    assert "550" in diag and "Recipient unknown here" in diag, diag
    assert dsn.msg["From"] is not None
    assert dsn.msg["To"] is not None and ALICE in str(dsn.msg["To"])
    # the null envelope sender (RFC 3464 / 5321 6.1): Return-Path <> in the Maildir file
    assert dsn.msg["Return-Path"] is not None and str(dsn.msg["Return-Path"]).strip() == "<>", dsn.msg["Return-Path"]


@pytest.mark.parametrize("command", ["MAIL", "DATA", "."])
@need_sink
def test_sink_hard_rejects_transaction(tern_factory, dns_server, remotes, mx_port, command):
    """A 5xx to MAIL, DATA or the end of data fails every recipient of the
    transaction: one DSN naming both."""
    sink = remotes.sink(REMOTE, mx_port, "-f", command, "-B", f"554 5.7.1 No thanks at {command}")
    srv = outbound_tern(tern_factory, dns_server, mx_port)
    submit(srv, ["r1@remote.test", "r2@remote.test"], f"rejected at {command}")
    wait_queue_empty(srv, extra_log=sink.log())
    [dsn] = bounces(srv, 1, extra_log=sink.log())
    assert sorted(dsn.final_recipients()) == ["r1@remote.test", "r2@remote.test"]
    assert dsn.field("Action") == ["failed", "failed"]
    assert all(s == "5.7.1" for s in dsn.field("Status")), dsn.field("Status")
    assert all(f"No thanks at {command}" in d for d in dsn.field("Diagnostic-Code")), dsn.field("Diagnostic-Code")


@pytest.mark.parametrize("command", ["RCPT", "."])
@need_sink
def test_sink_defers_then_accepts_delivered_once(tern_factory, dns_server, remotes, mx_port, command):
    """A sink that soft-rejects (4xx) RCPT or the end of data, then is replaced
    by one that accepts on the same port: delivered exactly once, no DSN."""
    deferring = remotes.sink(REMOTE, mx_port, "-r", command, "-b", "451 4.3.0 Try again later")
    srv = outbound_tern(tern_factory, dns_server, mx_port)
    submit(srv, ["later@remote.test"], f"deferred at {command}")
    deadline = time.monotonic() + 15
    verb = "rcpt" if command == "RCPT" else "."
    while not any(c.split()[0] == verb for c in deferring.commands()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(c.split()[0] == verb for c in deferring.commands()), f"no attempt reached {command}\n{deferring.log()}\n{srv.log()}"
    assert spool_entries(srv), "a deferred message stays queued"
    deferring.stop()
    accepting = remotes.sink(REMOTE, mx_port)
    wait_queue_empty(srv, timeout=30, extra_log=accepting.log())
    msgs = accepting.wait_for_messages(1, settle=3.0)   # 3 s: several retry intervals
    assert len(msgs) == 1, f"delivered {len(msgs)} times\n{accepting.log()}"
    assert msgs[0].message["Subject"] == f"deferred at {command}"
    assert [r.split()[0] for r in msgs[0].rcpts] == ["<later@remote.test>"]
    assert accepting.commands().count(".") == 1
    assert_no_bounce(srv)


@need_sink
def test_sink_defers_until_expiry(tern_factory, dns_server, remotes, mx_port):
    """Always 4xx: after max_age the recipient fails with a DSN carrying the last reply."""
    sink = remotes.sink(REMOTE, mx_port, "-r", "RCPT", "-b", "452 4.2.2 Mailbox full, try later")
    srv = outbound_tern(tern_factory, dns_server, mx_port, queue={"intervals": ["1s"], "max_age": "4s"})
    start = time.monotonic()
    submit(srv, ["full@remote.test"], "expires")
    [dsn] = bounces(srv, 1, timeout=30, extra_log=sink.log())
    elapsed = time.monotonic() - start
    assert elapsed >= 3.5, f"bounced after {elapsed:.1f}s, before max_age (4s)"
    assert dsn.final_recipients() == ["full@remote.test"]
    assert dsn.field("Action") == ["failed"]
    [status] = dsn.field("Status")
    assert status.startswith("4.") or status.startswith("5."), status
    [diag] = dsn.field("Diagnostic-Code")
    assert diag is not None and "Mailbox full, try later" in diag, diag
    tries = sum(1 for c in sink.commands() if c.startswith("rcpt"))
    assert tries >= 2, f"retried every second before giving up: {tries} attempt(s)\n{sink.log()}"
    wait_queue_empty(srv)


@need_sink
def test_null_mx_bounces_at_once(tern_factory, dns_server, remotes, mx_port):
    """RFC 7505: nullmx.test publishes "MX 0 ." -> immediate 5.1.10, no connection anywhere."""
    sink = remotes.sink(REMOTE, mx_port)
    srv = outbound_tern(tern_factory, dns_server, mx_port, queue={"intervals": ["1s"], "max_age": "60s"})
    start = time.monotonic()
    submit(srv, ["nobody@nullmx.test"], "to a null mx")
    [dsn] = bounces(srv, 1, timeout=15)
    assert time.monotonic() - start < 10, "a null MX is a permanent failure, not a retry until max_age"
    assert dsn.final_recipients() == ["nobody@nullmx.test"]
    assert dsn.field("Action") == ["failed"]
    assert dsn.field("Status") == ["5.1.10"]
    assert sink.commands() == []
    wait_queue_empty(srv)


@need_sink
def test_nxdomain_bounces(tern_factory, dns_server, remotes, mx_port):
    """A recipient domain that does not exist (NXDOMAIN from the loopback DNS) fails permanently."""
    srv = outbound_tern(tern_factory, dns_server, mx_port, queue={"intervals": ["1s"], "max_age": "60s"})
    start = time.monotonic()
    submit(srv, [f"x@{NXDOMAIN}"], "to nowhere")
    [dsn] = bounces(srv, 1, timeout=15)
    assert time.monotonic() - start < 10, "NXDOMAIN is permanent, not retried until max_age"
    assert dsn.final_recipients() == [f"x@{NXDOMAIN}"]
    assert dsn.field("Action") == ["failed"]
    assert dsn.field("Status")[0].startswith("5."), dsn.field("Status")
    wait_queue_empty(srv)


@need_sink
def test_smarthost_plain_through_sink(tern_factory, dns_server, remotes, mx_port):
    """[delivery.smarthost] tls = "none": everything goes to smarthost.test
    (resolved through the loopback DNS), whatever the recipient domain; no
    MX lookup for the recipients (nothere.test does not even exist)."""
    sink = remotes.sink(SMARTHOST, mx_port)
    decoy = remotes.sink(REMOTE, mx_port)
    srv = outbound_tern(tern_factory, dns_server, mx_port,
                        delivery={"smarthost": {"host": "smarthost.test", "port": mx_port, "tls": "none"}})
    submit(srv, ["a@remote.test", f"b@{NXDOMAIN}"], "via the smarthost")
    wait_queue_empty(srv, extra_log=sink.log())
    msgs = sink.wait_for_messages(1)
    rcpts = sorted(r.split()[0] for m in msgs for r in m.rcpts)
    assert rcpts == ["<a@remote.test>", f"<b@{NXDOMAIN}>"], rcpts
    assert all(m.message["Subject"] == "via the smarthost" for m in msgs)
    assert all(len(tern_received(m.message)) == 1 for m in msgs)
    assert decoy.commands() == [], "the MX of remote.test must not be used with a smarthost"
    assert not any(c.startswith("auth") for c in sink.commands()), "no credentials configured: no AUTH"
    assert_no_bounce(srv)


# ---------------------------------------------------------------------------
# Postfix as the receiving MTA and as a smarthost
# ---------------------------------------------------------------------------

@need_postfix
def test_postfix_receives_relayed_mail(tern_factory, dns_server, remotes, mx_port, tmp_path):
    """Tern -> MX lookup -> a private Postfix on 127.0.0.2 offering STARTTLS
    with a self-signed certificate (opportunistic TLS: used, not verified) ->
    virtual(8) Maildir. A recipient Postfix does not know comes back as a DSN
    quoting Postfix's reply."""
    cert, key = self_signed_cert(tmp_path, ["mx.remote.test"])
    pf = remotes.postfix(REMOTE, mx_port, virtual_domain="remote.test", users=["rcpt1", "rcpt2"],
                         cert=cert, key=key)
    srv = outbound_tern(tern_factory, dns_server, mx_port)
    sent = submit(srv, ["rcpt1@remote.test", "rcpt2@remote.test", "unknown@remote.test"], "to postfix")
    wait_queue_empty(srv, timeout=30, extra_log=pf.log())
    for user in ("rcpt1", "rcpt2"):
        [f] = pf.wait_for_messages(user, 1)
        got = parse(f)
        assert got["Subject"] == "to postfix"
        assert got["Message-ID"] == sent["Message-ID"]
        assert "Sent through Tern to the outside." in got.get_content()
        received = [" ".join(str(r).split()) for r in got.get_all("Received", [])]
        assert len(tern_received(got)) == 1, received
        postfix_rcvd = [r for r in received if "by postfix.remote.test" in r]
        assert postfix_rcvd, received
        assert f"from {TERN_NAME}" in postfix_rcvd[0], f"Tern's EHLO name: {postfix_rcvd[0]}"
        assert "ESMTPS" in postfix_rcvd[0], f"opportunistic STARTTLS was not used: {postfix_rcvd[0]}\n{pf.log()}"
        assert str(got["Return-Path"]).strip() == f"<{ALICE}>", got["Return-Path"]
    [dsn] = bounces(srv, 1, extra_log=pf.log())
    assert dsn.final_recipients() == ["unknown@remote.test"]
    assert dsn.field("Action") == ["failed"]
    assert dsn.field("Status") == ["5.1.1"]
    [diag] = dsn.field("Diagnostic-Code")
    assert "550" in diag and "unknown@remote.test" in diag, diag


def _smarthost_tls_roundtrip(tern_factory, dns_server, remotes, mx_port, cert, key, ca_file, subject,
                             timeout: float = 30):
    pf = remotes.postfix(SMARTHOST, mx_port, virtual_domain="remote.test", users=["far"],
                         hostname="smarthost.test", cert=cert, key=key)
    srv = outbound_tern(tern_factory, dns_server, mx_port, delivery={"smarthost": {
        "host": "smarthost.test", "port": mx_port, "tls": "starttls", "ca_file": ca_file}})
    submit(srv, ["far@remote.test"], subject)
    wait_queue_empty(srv, timeout=timeout, extra_log=pf.log())
    [f] = pf.wait_for_messages("far", 1)
    got = parse(f)
    assert got["Subject"] == subject
    rcvd = [" ".join(str(r).split()) for r in got.get_all("Received", []) if "by smarthost.test" in str(r)]
    assert rcvd and "ESMTPS" in rcvd[0], rcvd
    assert f"from {TERN_NAME}" in rcvd[0], rcvd
    assert_no_bounce(srv)


@need_postfix
def test_postfix_smarthost_starttls_private_ca(tern_factory, dns_server, remotes, mx_port, tmp_path):
    """[delivery.smarthost] tls = "starttls", ca_file = a private CA: Postfix on
    smarthost.test with a certificate for that name signed by the CA."""
    ca, cert, key = ca_signed_cert(tmp_path, ["smarthost.test"])
    _smarthost_tls_roundtrip(tern_factory, dns_server, remotes, mx_port, cert, key, ca, "through a tls smarthost")


@need_postfix
def test_postfix_smarthost_starttls_self_signed(tern_factory, dns_server, remotes, mx_port, tmp_path):
    """ca_file = the smarthost's own self-signed certificate (what a home setup has)."""
    cert, key = self_signed_cert(tmp_path, ["smarthost.test"])
    _smarthost_tls_roundtrip(tern_factory, dns_server, remotes, mx_port, cert, key, cert, "self-signed smarthost",
                             timeout=10)


@need_postfix
def test_postfix_smarthost_starttls_self_signed_leaf(tern_factory, dns_server, remotes, mx_port, tmp_path):
    """ca_file = a self-signed certificate marked CA:FALSE (an end-entity certificate pinned as its own root)."""
    cert, key = self_signed_cert(tmp_path, ["smarthost.test"], extra=["basicConstraints=critical,CA:FALSE"])
    _smarthost_tls_roundtrip(tern_factory, dns_server, remotes, mx_port, cert, key, cert, "self-signed leaf smarthost")


@need_postfix
def test_postfix_smarthost_untrusted_certificate_defers(tern_factory, dns_server, remotes, mx_port, tmp_path):
    """A smarthost whose certificate does not chain to ca_file: never sent, not even in clear; deferred."""
    _, cert, key = ca_signed_cert(tmp_path / "real", ["smarthost.test"])
    other, _, _ = ca_signed_cert(tmp_path / "other", ["smarthost.test"])
    pf = remotes.postfix(SMARTHOST, mx_port, virtual_domain="remote.test", users=["far"],
                         hostname="smarthost.test", cert=cert, key=key)
    srv = outbound_tern(tern_factory, dns_server, mx_port, delivery={"smarthost": {
        "host": "smarthost.test", "port": mx_port, "tls": "starttls", "ca_file": other}})
    submit(srv, ["far@remote.test"], "must not leave")
    time.sleep(4)   # several 1 s retry intervals
    assert pf.new_files("far") == [], "delivered through a smarthost with an untrusted certificate"
    assert spool_entries(srv), "the message must stay queued (deferred)\n" + srv.log()
    assert_no_bounce(srv, wait=0)
    log = pf.log()
    assert "connect from" in log, "Tern did try the smarthost\n" + log
    assert "far@remote.test" not in log, "no transaction may start without verified TLS\n" + log


# ---------------------------------------------------------------------------
# Dovecot LMTP
# ---------------------------------------------------------------------------

_lmtp_support: str | None = None


def lmtp_unsupported_reason() -> str | None:
    """None when this binary accepts `[domains.X] lmtp`, else why not."""
    global _lmtp_support
    if _lmtp_support is None:
        from conftest import render_config
        with tempfile.TemporaryDirectory() as d:
            cfg = Path(d) / "tern.toml"
            cfg.write_text(render_config(free_port(), Path(d) / "data", domains={
                "example.test": {"mailboxes": ["alice"]},
                "lmtp.test": {"mailboxes": ["dan"], "lmtp": "tcp:127.0.0.1:24"}}))
            p = subprocess.run([str(tern_bin()), "check-config", str(cfg)], capture_output=True,
                               stdin=subprocess.DEVNULL, timeout=60)
            out = (p.stdout + p.stderr).decode(errors="replace")
            _lmtp_support = "" if p.returncode == 0 and "lmtp" in out else (
                "this tern does not accept [domains.X] lmtp yet (tern check-config: "
                + " ".join(out.split())[:300] + ")")
    return _lmtp_support or None


@need_dovecot
@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_dovecot_lmtp(tern_factory, remotes, transport):
    reason = lmtp_unsupported_reason()
    if reason:
        pytest.skip(reason)
    dv = remotes.dovecot(free_port(), ["dan@lmtp.test", "erin@lmtp.test"])
    target = f"tcp:127.0.0.1:{dv.port}" if transport == "tcp" else f"unix:{dv.socket}"
    srv = tern_factory(domains={
        "example.test": {"mailboxes": ["alice", "bob"]},
        # frank exists for Tern but not in Dovecot's userdb: Dovecot refuses him
        "lmtp.test": {"mailboxes": ["dan", "erin", "frank"], "lmtp": target},
    }, queue={"intervals": ["1s"], "max_age": "30s"})
    msg = make_message(["dan@lmtp.test", "erin@lmtp.test", "frank@lmtp.test"], f"over lmtp {transport}")
    with smtplib.SMTP(srv.host, srv.port, local_hostname="client.test", timeout=30) as s:
        refused = s.send_message(msg, from_addr=ALICE,
                                 to_addrs=["dan@lmtp.test", "erin@lmtp.test", "frank@lmtp.test"])
        assert refused == {}, refused
    for rcpt in ("dan@lmtp.test", "erin@lmtp.test"):
        [f] = dv.wait_for_messages(rcpt, 1)
        got = parse(f)
        assert got["Subject"] == f"over lmtp {transport}"
        assert len(tern_received(got)) == 1, got.get_all("Received")
        assert str(got["Return-Path"]).strip() == f"<{ALICE}>", got["Return-Path"]
        # Dovecot's own trace field: it was spoken to over LMTP, by Tern (LHLO name)
        lmtp_rcvd = [" ".join(str(r).split()) for r in got.get_all("Received", []) if "with LMTP" in str(r)]
        assert len(lmtp_rcvd) == 1 and lmtp_rcvd[0].startswith(f"from {TERN_NAME} "), got.get_all("Received")
    assert srv.new_files("dan", "lmtp.test") == [], "an LMTP domain is not delivered to Tern's own Maildir"
    wait_queue_empty(srv, extra_log=dv.log())
    [dsn] = bounces(srv, 1, extra_log=dv.log())
    assert dsn.final_recipients() == ["frank@lmtp.test"]
    assert dsn.field("Action") == ["failed"]
    assert dsn.field("Status") == ["5.1.1"]
    assert "550" in dsn.field("Diagnostic-Code")[0], dsn.field("Diagnostic-Code")


# ---------------------------------------------------------------------------
# delay warnings, success/relayed notices, connection reuse
# ---------------------------------------------------------------------------

@need_sink
def test_sink_defers_and_alice_gets_one_delay_warning(tern_factory, dns_server, remotes, mx_port):
    """Always 4xx at RCPT, delay_warning_after = 2s: one "delayed" report with
    Will-Retry-Until, then nothing more while the retries go on."""
    sink = remotes.sink(REMOTE, mx_port, "-r", "RCPT", "-b", "451 4.3.0 Try again later")
    srv = outbound_tern(tern_factory, dns_server, mx_port,
                        queue={"intervals": ["1s"], "max_age": "1h", "delay_warning_after": "2s"})
    submit(srv, ["slow@remote.test"], "still trying")
    [dsn] = bounces(srv, 1, timeout=30, extra_log=sink.log())
    assert dsn.msg["Subject"] == "Delayed Mail (still being retried)"
    assert dsn.final_recipients() == ["slow@remote.test"]
    assert dsn.field("Action") == ["delayed"]
    [status] = dsn.field("Status")
    assert status.startswith("4."), status
    assert dsn.field("Will-Retry-Until")[0] is not None
    [diag] = dsn.field("Diagnostic-Code")
    assert diag is not None and "Try again later" in diag, diag
    assert [p.get_content_type() for p in dsn.returned] == ["text/rfc822-headers"]
    # More retries, no second warning.
    time.sleep(3)
    assert len(srv.new_files("alice")) == 1
    assert sum(1 for c in sink.commands() if c.startswith("rcpt")) >= 3, sink.log()
    assert spool_entries(srv), "still queued"


@need_sink
def test_notify_success_through_a_hop_without_dsn_gives_a_relayed_notice(tern_factory, dns_server, remotes,
                                                                          mx_port):
    """smtp-sink -e speaks plain SMTP (HELO, no DSN): Tern reports "relayed"
    for NOTIFY=SUCCESS. A local recipient with NOTIFY=SUCCESS gets "delivered"."""
    sink = remotes.sink(REMOTE, mx_port, "-e")
    srv = outbound_tern(tern_factory, dns_server, mx_port)
    msg = make_message(["far@remote.test", ALICE], "tell me when")
    with smtplib.SMTP(srv.host, srv.plaintext_port, local_hostname="client.test", timeout=30) as s:
        s.login(ALICE, ALICE_PW)
        refused = s.send_message(msg, from_addr=ALICE, to_addrs=["far@remote.test", ALICE],
                                 rcpt_options=["NOTIFY=SUCCESS"])
        assert refused == {}, refused
    sink.wait_for_messages(1)
    files = srv.wait_for_messages("alice", 3, timeout=20, settle=1.0)
    reports = [Dsn(f) for f in files if b"report-type=delivery-status" in f.read_bytes()]
    assert len(reports) == 2, [f.read_text(errors="replace")[:500] for f in files]
    by_action = {r.field("Action")[0]: r for r in reports}
    assert set(by_action) == {"relayed", "delivered"}, by_action.keys()
    assert by_action["relayed"].final_recipients() == ["far@remote.test"]
    assert by_action["relayed"].msg["Subject"] == "Relayed mail"
    assert by_action["delivered"].final_recipients() == [ALICE]
    assert by_action["delivered"].msg["Subject"] == "Successful Mail Delivery Report"
    assert any(c.startswith("helo") for c in sink.commands()), sink.log()


@need_sink
def test_messages_to_one_destination_reuse_the_connection(tern_factory, dns_server, remotes, mx_port):
    """Three messages one after the other: one EHLO, three transactions."""
    sink = remotes.sink(REMOTE, mx_port)
    srv = outbound_tern(tern_factory, dns_server, mx_port)
    for n in range(3):
        submit(srv, [f"r{n}@remote.test"], f"reuse {n}")
        sink.wait_for_messages(n + 1)
    wait_queue_empty(srv, extra_log=sink.log())
    cmds = sink.commands()
    assert sum(1 for c in cmds if c.startswith("ehlo")) == 1, sink.log()
    assert sum(1 for c in cmds if c.startswith("mail")) == 3, sink.log()
    assert_no_bounce(srv)
