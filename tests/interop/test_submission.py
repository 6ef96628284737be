"""Submission (RFC 6409) and TLS: swaks, Python smtplib, msmtp and raw sockets
against the `submission` (STARTTLS, AUTH), `submissions` (implicit TLS, AUTH)
and plaintext_auth listeners of one `tern serve`."""

from __future__ import annotations

import re
import shutil
import smtplib
import ssl
import subprocess
import time
import warnings
from datetime import datetime, timezone
from email import policy
from email.message import EmailMessage
from email.utils import parsedate_to_datetime

import pytest

from conftest import ALICE, ALICE_PW, BOB, BOB_PW, TLS_NAMES, effective_config
from smtpwire import SmtpWire, b64, need, parse_message, queue_id, sasl_plain

TLS_NAME = TLS_NAMES[0]         # mx.example.test: for raw sockets (server_hostname given)
CONNECT_NAME = TLS_NAMES[1]     # localhost: smtplib/msmtp verify the name they connect to


def swaks_supports(feature: str) -> bool:
    if shutil.which("swaks") is None:
        return False
    p = subprocess.run(["swaks", "--support"], stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    return bool(re.search(rf"^=== {re.escape(feature)} supported", (p.stdout + p.stderr).decode(), re.M))


SWAKS_TLS = pytest.mark.skipif(
    not swaks_supports("TLS"),
    reason="swaks without TLS support (needs Net::SSLeay: libnet-ssleay-perl, installed by .ci/run)")


def message(frm: str, to: str, subject: str, body: str = "Submitted through Tern.\n", *,
            date: bool = True, message_id: bool = True) -> EmailMessage:
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = frm
    msg["To"] = to
    msg["Subject"] = subject
    if date:
        msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0000"
    if message_id:
        msg["Message-ID"] = f"<{subject.replace(' ', '-')}@client.test>"
    msg.set_content(body)
    return msg


def received_of(path) -> str:
    """Our Received: header (the first one), whitespace-folded."""
    _, parsed = parse_message(path)
    return " ".join(parsed.get_all("Received")[0].split())


def swaks(srv, port: int, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = ["swaks", "--server", srv.host, "--port", str(port), "--helo", "client.test", *args]
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    p.transcript = p.stdout.decode("utf-8", "replace") + p.stderr.decode("utf-8", "replace")
    return p


def smtp_starttls(srv, port: int | None = None) -> smtplib.SMTP:
    """smtplib over the submission port, upgraded with a context that verifies the
    generated certificate (server name: localhost)."""
    s = smtplib.SMTP(CONNECT_NAME, port or srv.submission_port, local_hostname="client.test", timeout=15)
    s.ehlo()
    code, resp = s.starttls(context=srv.ssl_context())
    assert code == 220, (code, resp)
    s.ehlo()
    return s


def smtp_ssl(srv) -> smtplib.SMTP_SSL:
    s = smtplib.SMTP_SSL(CONNECT_NAME, srv.submissions_port, local_hostname="client.test", timeout=15,
                         context=srv.ssl_context())
    s.ehlo()
    return s


def auth_plain(s: smtplib.SMTP, user: str, password: str):
    """AUTH PLAIN only (smtplib's login() would try CRAM-MD5 first, and a failed
    attempt counts towards the brute-force limits)."""
    s.ehlo_or_helo_if_needed()
    s.user, s.password = user, password
    code, resp = s.auth("PLAIN", s.auth_plain)
    # smtplib's auth() also returns (not raises) on 503
    assert code == 235, f"AUTH PLAIN as {user}: {code} {resp!r}"
    return code, resp


def wire_tls(srv) -> SmtpWire:
    """A raw connection to the submissions port (implicit TLS), greeted and EHLO'd."""
    w = SmtpWire(srv.host, srv.submissions_port, tls=srv.ssl_context(), server_hostname=TLS_NAME)
    w.greet_and_ehlo()
    return w


def try_auth_plain(srv, user: str, password: str):
    with wire_tls(srv) as w:
        return w.cmd(f"AUTH PLAIN {sasl_plain(user, password)}")


# ------------------------------------------------------------------ swaks

@need("swaks")
@SWAKS_TLS
@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_swaks_starttls_auth(tern_submit, mech):
    srv = tern_submit
    p = swaks(srv, srv.submission_port, "--tls", "--auth", mech, "--auth-user", ALICE, "--auth-password", ALICE_PW,
              "--from", ALICE, "--to", BOB, "--header", f"Subject: swaks starttls {mech}")
    assert p.returncode == 0, p.transcript + srv.log()
    # swaks marks TLS-protected lines with ~> / <~: AUTH happened inside TLS
    assert re.search(r"^ -> STARTTLS$", p.transcript, re.M), p.transcript
    assert re.search(rf"^ ~> AUTH {re.escape(mech)}\b", p.transcript, re.M), p.transcript
    assert re.search(r"^<~  235 2\.7\.0", p.transcript, re.M), p.transcript
    assert re.search(r"^<~  250 2\.0\.0 Ok: queued as", p.transcript, re.M), p.transcript
    [f] = srv.wait_for_messages("bob", 1)
    assert parse_message(f)[1]["Subject"] == f"swaks starttls {mech}"
    assert "with ESMTPSA" in received_of(f), received_of(f)


@need("swaks")
@SWAKS_TLS
def test_swaks_implicit_tls_plain(tern_submit):
    srv = tern_submit
    p = swaks(srv, srv.submissions_port, "--tlsc", "--auth", "PLAIN", "--auth-user", BOB, "--auth-password", BOB_PW,
              "--from", BOB, "--to", ALICE, "--header", "Subject: swaks tlsc")
    assert p.returncode == 0, p.transcript + srv.log()
    assert "STARTTLS" not in p.transcript, "implicit TLS: no STARTTLS expected\n" + p.transcript
    assert re.search(r"^<~  220 ", p.transcript, re.M), "the greeting must arrive over TLS\n" + p.transcript
    assert re.search(r"^ ~> AUTH PLAIN", p.transcript, re.M), p.transcript
    assert re.search(r"^<~  235 2\.7\.0", p.transcript, re.M), p.transcript
    [f] = srv.wait_for_messages("alice", 1)
    assert parse_message(f)[1]["Subject"] == "swaks tlsc"
    assert "with ESMTPSA" in received_of(f)


@need("swaks")
@SWAKS_TLS
def test_swaks_wrong_password(tern_submit):
    srv = tern_submit
    p = swaks(srv, srv.submission_port, "--tls", "--auth", "PLAIN", "--auth-user", ALICE,
              "--auth-password", "not-the-password", "--from", ALICE, "--to", BOB)
    assert p.returncode == 28, f"swaks exit code {p.returncode}, expected 28 (error in AUTH)\n{p.transcript}"
    assert re.search(r"^<~\*\s+535 5\.7\.8", p.transcript, re.M), p.transcript
    assert "MAIL FROM" not in p.transcript
    assert srv.all_delivered() == []


@need("swaks")
def test_swaks_auth_without_tls_is_not_offered(tern_submit):
    srv = tern_submit
    p = swaks(srv, srv.submission_port, "--auth", "PLAIN", "--auth-user", ALICE, "--auth-password", ALICE_PW,
              "--from", ALICE, "--to", BOB)
    assert p.returncode == 28, f"swaks exit code {p.returncode}, expected 28 (error in AUTH)\n{p.transcript}"
    assert "Host did not advertise authentication" in p.transcript, p.transcript
    assert re.search(r"^<-  250[ -]STARTTLS$", p.transcript, re.M), "STARTTLS must be offered\n" + p.transcript
    assert not re.search(r"^<-  250[ -]AUTH", p.transcript, re.M), p.transcript
    assert srv.all_delivered() == []


def test_plaintext_auth_refused_with_538_on_the_wire(tern_submit):
    srv = tern_submit
    with SmtpWire(srv.host, srv.submission_port) as w:
        ehlo = w.greet_and_ehlo()
        assert "STARTTLS" in ehlo.lines, str(ehlo)
        assert not any(ln.upper().startswith("AUTH") for ln in ehlo.lines), f"AUTH offered before TLS: {ehlo}"
        r = w.cmd(f"AUTH PLAIN {sasl_plain(ALICE, ALICE_PW)}")
        assert r.code == 538 and r.text.startswith("5.7.11"), f"plaintext AUTH PLAIN: {r}"
        r = w.cmd("AUTH LOGIN")
        assert r.code == 538 and r.text.startswith("5.7.11"), f"plaintext AUTH LOGIN: {r}"
        r = w.cmd(f"MAIL FROM:<{ALICE}>")
        assert r.code == 530 and r.text.startswith("5.7.0"), f"MAIL before AUTH: {r}"
        assert w.cmd("NOOP").code == 250
        assert w.cmd("QUIT").code == 221


@need("swaks")
@SWAKS_TLS
def test_swaks_envelope_sender_must_be_own(tern_submit):
    srv = tern_submit
    p = swaks(srv, srv.submission_port, "--tls", "--auth", "PLAIN", "--auth-user", BOB, "--auth-password", BOB_PW,
              "--from", ALICE, "--to", BOB)
    assert p.returncode == 23, f"swaks exit code {p.returncode}, expected 23 (error in MAIL)\n{p.transcript}"
    assert re.search(r"^<~\*\s+553 5\.7\.1", p.transcript, re.M), p.transcript
    assert srv.all_delivered() == []


@need("swaks")
@SWAKS_TLS
def test_swaks_from_header_must_be_own(tern_submit):
    srv = tern_submit
    p = swaks(srv, srv.submission_port, "--tls", "--auth", "PLAIN", "--auth-user", BOB, "--auth-password", BOB_PW,
              "--from", BOB, "--to", BOB, "--header", f"From: Alice <{ALICE}>")
    assert p.returncode == 26, f"swaks exit code {p.returncode}, expected 26 (refused after data)\n{p.transcript}"
    assert re.search(r"^<~\*\s+553 5\.7\.1", p.transcript, re.M), p.transcript
    assert srv.all_delivered() == []


# ------------------------------------------------------------------ smtplib

def test_smtplib_starttls_login_send_message(tern_submit):
    srv = tern_submit
    with smtplib.SMTP(CONNECT_NAME, srv.submission_port, local_hostname="client.test", timeout=15) as s:
        s.ehlo()
        assert s.has_extn("starttls"), s.ehlo_resp
        assert not s.has_extn("auth"), f"AUTH advertised before TLS: {s.ehlo_resp!r}"
        s.starttls(context=srv.ssl_context())
        s.ehlo()
        assert not s.has_extn("starttls"), f"STARTTLS advertised again after TLS: {s.ehlo_resp!r}"
        mechs = s.esmtp_features.get("auth", "").upper().split()
        for m in ("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"):
            assert m in mechs, f"{m} not advertised after TLS: {s.ehlo_resp!r}"
        cipher, version, _ = s.sock.cipher()
        code, _ = s.login(ALICE, ALICE_PW)
        assert code == 235
        assert s.send_message(message(ALICE, BOB, "smtplib starttls")) == {}
    [f] = srv.wait_for_messages("bob", 1)
    _, parsed = parse_message(f)
    assert parsed["Subject"] == "smtplib starttls"
    assert parsed["Return-Path"].strip() == f"<{ALICE}>"
    received = received_of(f)
    assert "with ESMTPSA" in received, received
    assert f"(using {version} {cipher})" in received, f"TLS {version} {cipher} not recorded: {received!r}"
    assert srv.new_files("alice") == []


def test_smtplib_smtp_ssl_login(tern_submit):
    srv = tern_submit
    with smtp_ssl(srv) as s:
        cipher, version, _ = s.sock.cipher()
        assert version in ("TLSv1.2", "TLSv1.3"), version
        # bob has no CRAM-MD5 secret: login() tries CRAM-MD5 first, fails, then PLAIN works
        code, _ = s.login(BOB, BOB_PW)
        assert code == 235
        assert s.send_message(message(BOB, ALICE, "smtplib smtp_ssl")) == {}
    [f] = srv.wait_for_messages("alice", 1)
    assert parse_message(f)[1]["Subject"] == "smtplib smtp_ssl"
    received = received_of(f)
    assert "with ESMTPSA" in received and f"(using {version} {cipher})" in received, received


def test_generated_certificate_names(tern_submit):
    srv = tern_submit
    for name in TLS_NAMES:
        with SmtpWire(srv.host, srv.submissions_port, tls=srv.ssl_context(), server_hostname=name) as w:
            assert w.reply().code == 220
    with pytest.raises(ssl.SSLCertVerificationError):
        SmtpWire(srv.host, srv.submissions_port, tls=srv.ssl_context(), server_hostname="other.test")
    # the default trust store does not know the self-signed certificate
    with pytest.raises(ssl.SSLCertVerificationError):
        SmtpWire(srv.host, srv.submissions_port, tls=ssl.create_default_context(), server_hostname=TLS_NAME)


def test_smtplib_cram_md5(tern_submit):
    srv = tern_submit
    with smtp_ssl(srv) as s:
        assert "CRAM-MD5" in s.esmtp_features["auth"].upper().split()
        s.user, s.password = ALICE, ALICE_PW
        code, resp = s.auth("CRAM-MD5", s.auth_cram_md5)
        assert code == 235, (code, resp)
        assert s.send_message(message(ALICE, BOB, "cram-md5")) == {}
    srv.wait_for_messages("bob", 1)
    # login() picks CRAM-MD5 first when advertised
    with smtp_ssl(srv) as s:
        assert s.login(ALICE, ALICE_PW)[0] == 235
    # bob has no CRAM-MD5 secret (added without --cram-md5)
    with smtp_ssl(srv) as s:
        s.user, s.password = BOB, BOB_PW
        with pytest.raises(smtplib.SMTPAuthenticationError) as ei:
            s.auth("CRAM-MD5", s.auth_cram_md5)
        assert ei.value.smtp_code == 535, ei.value


def test_mail_before_auth_is_refused_after_tls(tern_submit):
    srv = tern_submit
    with smtp_starttls(srv) as s:
        code, resp = s.mail(ALICE)
        assert code == 530 and resp.startswith(b"5.7.0"), (code, resp)
    with smtp_ssl(srv) as s:
        code, resp = s.mail(ALICE)
        assert code == 530 and resp.startswith(b"5.7.0"), (code, resp)


def test_date_and_message_id_added_when_missing(tern_submit):
    srv = tern_submit
    raw = message(ALICE, BOB, "no date no id", date=False, message_id=False).as_bytes()
    assert b"\nDate:" not in raw and b"\nMessage-ID:" not in raw.replace(b"Message-Id", b"Message-ID")
    before = datetime.now(timezone.utc)
    with smtp_starttls(srv) as s:
        auth_plain(s, ALICE, ALICE_PW)
        assert s.sendmail(ALICE, [BOB], raw) == {}
    [f] = srv.wait_for_messages("bob", 1)
    _, parsed = parse_message(f)
    assert len(parsed.get_all("Date", [])) == 1, f"expected one Date:, got {parsed.get_all('Date')}"
    date = parsedate_to_datetime(str(parsed["Date"]))
    assert abs((date - before).total_seconds()) < 120, f"added Date: {parsed['Date']} is not now ({before})"
    ids = parsed.get_all("Message-ID", [])
    assert len(ids) == 1, f"expected one Message-ID:, got {ids}"
    assert re.fullmatch(r"<[^<>@\s]+@[^<>@\s]+>", str(ids[0]).strip()), ids[0]
    assert parsed["Subject"] == "no date no id"


def test_date_and_message_id_kept_when_present(tern_submit):
    srv = tern_submit
    with smtp_starttls(srv) as s:
        auth_plain(s, ALICE, ALICE_PW)
        assert s.send_message(message(ALICE, BOB, "has date and id")) == {}
    [f] = srv.wait_for_messages("bob", 1)
    _, parsed = parse_message(f)
    assert parsed.get_all("Date") == ["Mon, 23 Nov 2026 10:00:00 +0000"]
    assert parsed.get_all("Message-ID") == ["<has-date-and-id@client.test>"]


def test_from_header_not_owned_is_refused(tern_submit):
    srv = tern_submit
    with smtp_starttls(srv) as s:
        auth_plain(s, ALICE, ALICE_PW)
        with pytest.raises(smtplib.SMTPDataError) as ei:
            s.sendmail(ALICE, [BOB], message(BOB, BOB, "forged from").as_bytes())
        assert ei.value.smtp_code == 553, ei.value
        assert ei.value.smtp_error.startswith(b"5.7.1"), ei.value
        # every From: address counts: one of two foreign is enough to refuse
        with pytest.raises(smtplib.SMTPDataError) as ei:
            s.sendmail(ALICE, [BOB], message(f"{ALICE}, {BOB}", BOB, "two froms").as_bytes())
        assert ei.value.smtp_code == 553, ei.value
        # the session goes on, and an honest message passes
        assert s.noop()[0] == 250
        assert s.sendmail(ALICE, [BOB], message(f"Alice <{ALICE}>", BOB, "honest").as_bytes()) == {}
    [f] = srv.wait_for_messages("bob", 1)
    assert parse_message(f)[1]["Subject"] == "honest"


def test_alias_that_delivers_to_the_user_is_an_allowed_sender(tern_submit):
    srv = tern_submit
    with smtp_starttls(srv) as s:  # sales -> alice only
        auth_plain(s, ALICE, ALICE_PW)
        assert s.sendmail("sales@example.test", [BOB], message("sales@example.test", BOB, "as sales").as_bytes()) == {}
    with smtp_starttls(srv) as s:
        auth_plain(s, BOB, BOB_PW)
        with pytest.raises(smtplib.SMTPSenderRefused) as ei:
            s.sendmail("sales@example.test", [ALICE], message("sales@example.test", ALICE, "bob as sales").as_bytes())
        assert ei.value.smtp_code == 553 and ei.value.smtp_error.startswith(b"5.7.1"), ei.value
    [f] = srv.wait_for_messages("bob", 1)
    assert parse_message(f)[1]["Subject"] == "as sales"
    assert srv.new_files("alice") == []


def test_authenticated_user_may_relay(tern_submit):
    srv = tern_submit
    with smtp_starttls(srv) as s:
        auth_plain(s, ALICE, ALICE_PW)
        assert s.mail(ALICE)[0] == 250
        code, resp = s.rcpt("friend@remote.test")
        assert code == 250, (code, resp)
        code, resp = s.data(message(ALICE, "friend@remote.test", "to remote").as_bytes())
        assert code == 250, (code, resp)
        queue_id(resp.decode())
    # outbound delivery is a later issue: the message waits in the spool
    assert srv.all_delivered() == []


def test_plaintext_auth_listener_allows_auth_without_tls(tern_submit):
    srv = tern_submit
    with smtplib.SMTP(srv.host, srv.plaintext_port, local_hostname="client.test", timeout=15) as s:
        s.ehlo()
        assert s.has_extn("auth"), f"plaintext_auth listener must offer AUTH without TLS: {s.ehlo_resp!r}"
        code, resp = s.mail(ALICE)
        assert code == 530, (code, resp)
        s.rset()
        assert auth_plain(s, ALICE, ALICE_PW)[0] == 235
        assert s.send_message(message(ALICE, BOB, "loopback plaintext")) == {}
    [f] = srv.wait_for_messages("bob", 1)
    received = received_of(f)
    assert "with ESMTPA" in received and "ESMTPSA" not in received, received
    assert "using TLS" not in received, received


def test_tls_1_2_is_the_minimum(tern_submit):
    srv = tern_submit
    old = srv.ssl_context()
    old.set_ciphers("ALL:@SECLEVEL=0")  # let this client offer TLS 1.0/1.1 at all
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionError)):
        SmtpWire(srv.host, srv.submissions_port, tls=old, server_hostname=TLS_NAME)
    with SmtpWire(srv.host, srv.submission_port) as w:
        w.greet_and_ehlo()
        with pytest.raises((ssl.SSLError, ConnectionError)):
            w.starttls(old, TLS_NAME)

    # TLS 1.2 works, and is what Received: records
    tls12 = srv.ssl_context()
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with smtplib.SMTP_SSL(CONNECT_NAME, srv.submissions_port, local_hostname="client.test", timeout=15,
                          context=tls12) as s:
        assert s.sock.version() == "TLSv1.2"
        auth_plain(s, ALICE, ALICE_PW)
        assert s.send_message(message(ALICE, BOB, "over tls 1.2")) == {}
    [f] = srv.wait_for_messages("bob", 1)
    received = received_of(f)
    assert "with ESMTPSA" in received and "(using TLSv1.2 " in received, received


@need("openssl")
@pytest.mark.parametrize("listener", ["starttls", "implicit"])
def test_openssl_s_client_verifies_the_generated_certificate(tern_submit, listener):
    srv = tern_submit
    port = srv.submission_port if listener == "starttls" else srv.submissions_port
    args = ["openssl", "s_client", "-connect", f"{srv.host}:{port}", "-CAfile", str(srv.cert_path),
            "-verify_hostname", TLS_NAME, "-verify_return_error", "-servername", TLS_NAME, "-ign_eof"]
    if listener == "starttls":
        args += ["-starttls", "smtp"]
    p = subprocess.run(args, input=b"EHLO client.test\r\nQUIT\r\n", capture_output=True, timeout=60)
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    assert p.returncode == 0, out
    assert "Verify return code: 0 (ok)" in out, out
    assert re.search(r"Protocol\s*:\s*TLSv1\.[23]", out), out
    assert re.search(r"^250[ -]AUTH ", out, re.M), "AUTH must be advertised after TLS\n" + out
    assert re.search(r"^221 ", out, re.M), out


# ------------------------------------------------------------------ raw sockets

@pytest.mark.parametrize("listener", ["mx", "submission"])
def test_starttls_injection_probe(tern_submit, listener):
    """CVE-2011-0411 class: a command pipelined after STARTTLS in the same write
    must be discarded, never answered inside the TLS session."""
    srv = tern_submit
    port = srv.port if listener == "mx" else srv.submission_port
    with SmtpWire(srv.host, port) as w:
        ehlo = w.greet_and_ehlo()
        assert "STARTTLS" in ehlo.lines, str(ehlo)
        w.send(b"STARTTLS\r\nNOOP\r\n")
        r = w.reply()
        assert r.code == 220, f"STARTTLS: {r}"
        w.wrap_tls(srv.ssl_context(), TLS_NAME)  # fails if a plaintext NOOP reply is already buffered
        w.send(b"EHLO client.test\r\n")
        first = w.reply()
        assert first.code == 250 and len(first.lines) > 1, \
            f"first reply after the handshake must be the multi-line EHLO reply, got {first} (stray NOOP answer?)"
        assert first.lines[0].startswith("mx.example.test"), str(first)
        assert "STARTTLS" not in first.lines, f"STARTTLS advertised twice: {first}"
        extra = w.no_reply_within(1.0)
        assert extra == b"", f"unexpected bytes after the EHLO reply: {extra!r}"
        assert w.cmd("NOOP").code == 250
        r = w.cmd("STARTTLS")
        assert r.code == 503, f"second STARTTLS: {r}"
        assert w.cmd("QUIT").code == 221


def test_starttls_resets_the_transaction_and_mx_never_offers_auth(tern_submit):
    srv = tern_submit
    with SmtpWire(srv.host, srv.port) as w:
        ehlo = w.greet_and_ehlo()
        assert not any(ln.upper().startswith("AUTH") for ln in ehlo.lines), str(ehlo)
        assert w.cmd("MAIL FROM:<x@y.test>").code == 250
        assert w.cmd(f"RCPT TO:<{ALICE}>").code == 250
        w.starttls(srv.ssl_context(), TLS_NAME)
        r = w.cmd("MAIL FROM:<x@y.test>")
        assert r.code == 503, f"MAIL without a new EHLO after STARTTLS: {r}"
        ehlo = w.cmd("EHLO client.test")
        assert ehlo.code == 250 and not any(ln.upper().startswith("AUTH") for ln in ehlo.lines), \
            f"the MX role must not offer AUTH, TLS or not: {ehlo}"
        r = w.cmd(f"RCPT TO:<{ALICE}>")
        assert r.code == 503, f"the transaction from before STARTTLS must be gone: {r}"
        r = w.cmd(f"AUTH PLAIN {sasl_plain(ALICE, ALICE_PW)}")
        assert r.code in (502, 503, 504), f"AUTH on the MX role: {r}"
        assert w.cmd(f"MAIL FROM:<{ALICE}>").code == 250
        r = w.cmd("RCPT TO:<x@remote.test>")
        assert r.code == 554 and r.text.startswith("5.7.1"), f"TLS alone must not allow relaying: {r}"


def test_plain_authzid_cannot_impersonate(tern_submit):
    srv = tern_submit
    with wire_tls(srv) as w:
        r = w.cmd(f"AUTH PLAIN {sasl_plain(ALICE, ALICE_PW, authzid=BOB)}")
        assert r.code == 535, f"alice's credentials with authzid bob: {r}"
        r = w.cmd(f"AUTH PLAIN {sasl_plain(ALICE, ALICE_PW, authzid=ALICE)}")
        assert r.code == 235, f"authzid equal to the user: {r}"
        r = w.cmd(f"MAIL FROM:<{BOB}>")
        assert r.code == 553, str(r)
        r = w.cmd(f"AUTH PLAIN {sasl_plain(BOB, BOB_PW)}")
        assert r.code == 503, f"second AUTH: {r}"


def test_auth_brute_force_blocks_the_ip(tern_factory):
    srv = tern_factory(submission=True,
                       abuse={"auth": {"block_ip_after": 3, "initial_delay": "10ms", "max_delay": "20ms"}})
    with wire_tls(srv) as w:
        for i in range(3):
            r = w.cmd(f"AUTH PLAIN {sasl_plain(ALICE, f'wrong-{i}')}")
            assert r.code == 535 and r.text.startswith("5.7.8"), f"failed login {i + 1}: {r}"
        r = w.cmd(f"AUTH PLAIN {sasl_plain(ALICE, ALICE_PW)}")
        assert r.code == 454 and r.text.startswith("4.7.0"), f"4th AUTH (right password) after 3 failures: {r}"
        r = w.cmd(f"MAIL FROM:<{ALICE}>")
        assert r.code == 530, f"not authenticated, MAIL must still need AUTH: {r}"
    # the block is per IP: a new connection, another user, the right password
    with wire_tls(srv) as w:
        r = w.cmd(f"AUTH PLAIN {sasl_plain(BOB, BOB_PW)}")
        assert r.code == 454 and r.text.startswith("4.7.0"), f"AUTH from the blocked IP on a new connection: {r}"
    assert srv.all_delivered() == []


def test_unknown_user_and_wrong_password_look_the_same(tern_submit):
    srv = tern_submit
    with wire_tls(srv) as w:
        wrong = w.cmd(f"AUTH PLAIN {sasl_plain(ALICE, 'wrong')}")
        unknown = w.cmd(f"AUTH PLAIN {sasl_plain('nobody@example.test', 'wrong')}")
        other_domain = w.cmd(f"AUTH PLAIN {sasl_plain('nobody@elsewhere.test', 'wrong')}")
        assert wrong.code == 535 and wrong.text.startswith("5.7.8"), str(wrong)
        assert (unknown.code, unknown.text) == (wrong.code, wrong.text), f"unknown user {unknown} vs wrong password {wrong}"
        assert (other_domain.code, other_domain.text) == (wrong.code, wrong.text), str(other_domain)
        # LOGIN: same replies at every step whether or not the user exists
        seen = []
        for user in (ALICE, "nobody@example.test"):
            r1 = w.cmd("AUTH LOGIN")
            r2 = w.cmd(b64(user))
            r3 = w.cmd(b64("wrong"))
            assert (r1.code, r2.code) == (334, 334), (str(r1), str(r2))
            seen.append((r1.text, r2.text, r3.code, r3.text))
        assert seen[0] == seen[1], f"AUTH LOGIN differs for a known and an unknown user: {seen}"
        assert seen[0][2] == 535


def test_users_file_hot_reload(tern_factory):
    srv = tern_factory(submission=True, abuse={"auth": {"block_ip_after": 100, "block_user_after": 100}})
    carol, carol_pw = "carol@example.test", "carol-pw-3"
    r = try_auth_plain(srv, carol, carol_pw)
    assert r.code == 535, f"carol is no user yet: {r}"

    srv.add_user(carol, carol_pw)
    assert carol in srv.user_cli("list").output
    deadline = time.monotonic() + 5
    while True:
        time.sleep(1.0)
        r = try_auth_plain(srv, carol, carol_pw)
        if r.code == 235 or time.monotonic() > deadline:
            break
    assert r.code == 235, f"carol added with `tern user add` could not log in within 5 s: {r}\n{srv.log()}"
    with wire_tls(srv) as w:
        assert w.cmd(f"AUTH PLAIN {sasl_plain(carol, carol_pw)}").code == 235
        assert w.cmd(f"MAIL FROM:<{carol}>").code == 250
        assert w.cmd(f"RCPT TO:<{ALICE}>").code == 250
        assert w.cmd("DATA").code == 354
        w.send(f"From: {carol}\r\nSubject: new user\r\n\r\nhi\r\n.\r\n")
        assert w.reply().code == 250

    # passwd: the old password stops working, the new one works
    p = srv.user_cli("passwd", BOB, password="bob-new-pw")
    assert p.returncode == 0, p.output
    deadline = time.monotonic() + 5
    while True:
        time.sleep(1.0)
        r = try_auth_plain(srv, BOB, "bob-new-pw")
        if r.code == 235 or time.monotonic() > deadline:
            break
    assert r.code == 235, f"bob's new password not accepted within 5 s: {r}"
    assert try_auth_plain(srv, BOB, BOB_PW).code == 535

    srv.del_user(carol)
    assert carol not in srv.user_cli("list").output
    deadline = time.monotonic() + 5
    while True:
        time.sleep(1.0)
        r = try_auth_plain(srv, carol, carol_pw)
        if r.code != 235 or time.monotonic() > deadline:
            break
    assert r.code == 535, f"carol deleted with `tern user del` could still log in after 5 s: {r}"
    assert try_auth_plain(srv, ALICE, ALICE_PW).code == 235
    [f] = srv.wait_for_messages("alice", 1)
    assert parse_message(f)[1]["Subject"] == "new user"


def test_messages_per_user_limit(tern_factory):
    srv = tern_factory(submission=True, abuse={"messages_per_user": {"limit": 2, "window": "1h"}})
    with smtp_starttls(srv) as s:
        auth_plain(s, ALICE, ALICE_PW)
        for i in range(2):
            assert s.sendmail(ALICE, [BOB], message(ALICE, BOB, f"quota {i}").as_bytes()) == {}
        with pytest.raises(smtplib.SMTPSenderRefused) as ei:
            s.sendmail(ALICE, [BOB], message(ALICE, BOB, "quota 2").as_bytes())
        assert ei.value.smtp_code == 451 and ei.value.smtp_error.startswith(b"4.7."), ei.value
        assert b"rate" in ei.value.smtp_error.lower(), f"the 4xx should say what happened: {ei.value}"
    # another user has a quota of their own
    with smtp_ssl(srv) as s:
        auth_plain(s, BOB, BOB_PW)
        assert s.sendmail(BOB, [BOB], message(BOB, BOB, "bob quota").as_bytes()) == {}
    files = srv.wait_for_messages("bob", 3)
    assert sorted(parse_message(f)[1]["Subject"] for f in files) == ["bob quota", "quota 0", "quota 1"]


def test_connection_rate_per_ip(tern_factory):
    limit = 5
    limits = {}
    if re.search(r"^rate_limit_exceptions\b", effective_config(), re.M):
        limits["rate_limit_exceptions"] = []  # loopback is exempt by default; this test connects from it
    srv = tern_factory(limits=limits, abuse={"connections_per_ip": {"limit": limit, "window": "1m"}})
    # tern_factory's readiness probe is a connection too: count greetings until the first 421
    greeted, refused = 0, None
    for _ in range(limit + 5):
        with SmtpWire(srv.host, srv.port) as w:
            r = w.reply()
            if r.code == 220:
                greeted += 1
                assert w.cmd("QUIT").code == 221
                continue
            refused = r
            break
    assert refused is not None, f"{greeted} connections within a minute, none refused (limit {limit})"
    assert refused.code == 421 and refused.text.startswith("4.7.0"), str(refused)
    assert limit - 2 <= greeted <= limit, f"{greeted} connections greeted before the refusal (limit {limit})"
    with SmtpWire(srv.host, srv.port) as w:
        assert w.reply().code == 421, "still over the rate: the next connection must be refused too"


# ------------------------------------------------------------------ msmtp

def msmtp_conf(srv, tmp_path, *, starttls: bool, user: str, password_lines: list[str], auth: str = "on"):
    conf = tmp_path / "msmtprc"
    conf.write_text("\n".join([
        "defaults",
        "syslog off",
        "",
        "account tern",
        f"host {CONNECT_NAME}",
        f"port {srv.submission_port if starttls else srv.submissions_port}",
        f"from {user}",
        "tls on",
        f"tls_starttls {'on' if starttls else 'off'}",
        f"tls_trust_file {srv.cert_path}",
        f"auth {auth}",
        f"user {user}",
        *password_lines,
        "",
        "account default : tern",
        "",
    ]))
    conf.chmod(0o600)  # msmtp refuses a config holding a password that others can read
    return conf


def run_msmtp(conf, rcpt: str, msg: EmailMessage) -> subprocess.CompletedProcess:
    p = subprocess.run(["msmtp", "-C", str(conf), "-a", "default", "--debug", rcpt], input=msg.as_bytes(),
                       capture_output=True, timeout=60)
    p.output = (p.stdout + p.stderr).decode("utf-8", "replace")
    return p


@need("msmtp")
def test_msmtp_starttls(tern_submit, tmp_path):
    srv = tern_submit
    conf = msmtp_conf(srv, tmp_path, starttls=True, user=ALICE,
                      password_lines=['password "' + ALICE_PW.replace("\\", "\\\\").replace('"', '\\"') + '"'])
    p = run_msmtp(conf, BOB, message(ALICE, BOB, "msmtp starttls"))
    assert p.returncode == 0, p.output + srv.log()
    assert "STARTTLS" in p.output and re.search(r"<-- 235 2\.7\.0", p.output), p.output
    [f] = srv.wait_for_messages("bob", 1)
    assert parse_message(f)[1]["Subject"] == "msmtp starttls"
    assert "with ESMTPSA" in received_of(f)


@need("msmtp")
def test_msmtp_implicit_tls(tern_submit, tmp_path):
    srv = tern_submit
    conf = msmtp_conf(srv, tmp_path, starttls=False, user=BOB,
                      password_lines=[f'passwordeval "echo {BOB_PW}"'])
    p = run_msmtp(conf, ALICE, message(BOB, ALICE, "msmtp implicit tls"))
    assert p.returncode == 0, p.output + srv.log()
    assert "STARTTLS" not in p.output, p.output
    [f] = srv.wait_for_messages("alice", 1)
    assert parse_message(f)[1]["Subject"] == "msmtp implicit tls"
    assert "with ESMTPSA" in received_of(f)


@need("msmtp")
@pytest.mark.parametrize("mech", ["plain", "login", "cram-md5", "scram-sha-256"])
def test_msmtp_each_mechanism(tern_submit, tmp_path, mech):
    srv = tern_submit
    conf = msmtp_conf(srv, tmp_path, starttls=True, user=ALICE, auth=mech,
                      password_lines=['password "' + ALICE_PW + '"'])
    p = run_msmtp(conf, BOB, message(ALICE, BOB, f"msmtp {mech}"))
    if p.returncode != 0 and re.search(r"authentication method .* not supported", p.output, re.I):
        pytest.skip(f"this msmtp does not support {mech}: {p.output[-300:]}")
    assert p.returncode == 0, p.output + srv.log()
    assert re.search(rf"--> AUTH {re.escape(mech.upper())}", p.output), p.output
    [f] = srv.wait_for_messages("bob", 1)
    assert parse_message(f)[1]["Subject"] == f"msmtp {mech}"


@need("msmtp")
def test_msmtp_wrong_password(tern_submit, tmp_path):
    srv = tern_submit
    conf = msmtp_conf(srv, tmp_path, starttls=True, user=BOB, auth="plain", password_lines=['password "nope"'])
    p = run_msmtp(conf, ALICE, message(BOB, ALICE, "msmtp wrong"))
    assert p.returncode != 0, p.output
    assert re.search(r"535 5\.7\.8", p.output), p.output
    assert srv.all_delivered() == []
