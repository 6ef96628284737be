"""Operations over HTTP, fetched with curl: `/metrics` counts exactly what was
sent, the admin API answers what the CLI answers, and the autoconfig documents
(Thunderbird, Autodiscover, Apple) name exactly the listeners that exist."""

from __future__ import annotations

import json
import re
import shutil
import smtplib
import subprocess
import time

import pytest

from conftest import ALICE, ALICE_PW, BOB, DOMAIN, HOST, free_port, render_config, tern_bin

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def curl(*args: str, data: bytes | None = None) -> tuple[int, str]:
    """curl -s ARGS; returns (HTTP status, body)."""
    cmd = ["curl", "-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}", *args]
    if data is not None:
        cmd += ["--data-binary", "@-"]
    p = subprocess.run(cmd, input=data, capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr.decode()
    body, _, code = p.stdout.decode("utf-8", "replace").rpartition("\n")
    return int(code), body


def cli(srv, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run([str(tern_bin()), *args, "--config", str(srv.config_path)],
                       input=None if stdin is None else stdin.encode(),
                       stdin=subprocess.DEVNULL if stdin is None else None,
                       capture_output=True, timeout=120, cwd=srv.workdir)
    assert p.returncode == 0, (p.stdout + p.stderr).decode()
    return p


def sample(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[1])
    return 0.0


@pytest.fixture
def ops(tern_factory):
    admin, autoconfig = free_port(), free_port()
    srv = tern_factory(
        submission=True,
        plaintext_auth_listener=True,
        imap=True,
        extra_listeners=[{"port": admin, "role": "admin"}, {"port": autoconfig, "role": "autoconfig"}],
        # Remote delivery off and no DNS needed: /readyz can say ready.
        delivery={"remote": False},
    )
    srv.admin = f"http://{HOST}:{admin}"
    srv.autoconfig = f"http://{HOST}:{autoconfig}"
    deadline = time.monotonic() + 10
    while True:
        try:
            if curl(f"{srv.admin}/healthz")[0] == 200:
                break
        except AssertionError:
            pass
        assert time.monotonic() < deadline, srv.log()
        time.sleep(0.05)
    return srv


def test_metrics_count_exactly_what_was_sent(ops):
    status, before = curl(f"{ops.admin}/metrics")
    assert status == 200 and before.rstrip().endswith("# EOF"), before[-200:]
    with smtplib.SMTP(HOST, ops.port) as s:
        for i in range(5):
            s.sendmail("x@remote.test", [ALICE], f"Subject: {i}\r\n\r\nhello\r\n")
        s.sendmail("x@remote.test", [ALICE, BOB], "Subject: two\r\n\r\nhello\r\n")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            s.sendmail("x@remote.test", ["nobody@" + DOMAIN], "Subject: x\r\n\r\nx\r\n")
    # AUTH PLAIN each time (smtplib's login() would try several mechanisms).
    with smtplib.SMTP(HOST, ops.plaintext_port) as s:
        s.ehlo()
        s.user, s.password = ALICE, "wrong"
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.auth("PLAIN", s.auth_plain)
    with smtplib.SMTP(HOST, ops.plaintext_port) as s:
        s.ehlo()
        s.user, s.password = ALICE, ALICE_PW
        s.auth("PLAIN", s.auth_plain)
        s.sendmail(ALICE, [BOB], f"From: {ALICE}\r\nSubject: sub\r\n\r\nhi\r\n")
    ops.wait_for_messages("alice", 6)
    ops.wait_for_messages("bob", 2)
    want = {
        'tern_messages_received_total{role="mx"}': 6,
        'tern_messages_received_total{role="submission"}': 1,
        'tern_recipients_total{role="mx"}': 7,
        'tern_recipients_rejected_total{code="5.1.1"}': 1,
        'tern_auth_total{protocol="smtp",mechanism="PLAIN",result="success"}': 1,
        'tern_auth_total{protocol="smtp",mechanism="PLAIN",result="failure"}': 1,
        'tern_spool_commit_seconds_count': 7,
        'tern_message_size_bytes_count': 7,
        'tern_deliveries_total{kind="local",result="delivered"}': 8,
        'tern_sessions_total{role="mx",outcome="closed"}': 1,
        'tern_sessions_total{role="submission",outcome="closed"}': 2,
    }
    deadline = time.monotonic() + 10
    while True:
        _, after = curl(f"{ops.admin}/metrics")
        moved = {k: sample(after, k) - sample(before, k) for k in want}
        if moved == want:
            break
        assert time.monotonic() < deadline, f"moved {moved}, expected {want}"
        time.sleep(0.1)
    assert sample(after, "tern_process_open_fds") > 0
    assert sample(after, "tern_process_resident_memory_bytes") > 1e6
    assert 'tern_queue_messages{state="active"} 0' in after


def test_health_and_readiness(ops):
    assert curl(f"{ops.admin}/healthz") == (200, "ok\n")
    status, body = curl(f"{ops.admin}/readyz")
    assert status == 200, body
    ready = json.loads(body)
    assert ready == {
        "ready": True,
        "checks": {"listeners": "ok", "spool": "ok", "queue": "ok", "dns": "not used"},
    }


def test_api_and_cli_give_the_same_answers(ops):
    # Users: one added through the API, one through the CLI; both list both.
    status, body = curl("-X", "POST", "-H", "Content-Type: application/json", f"{ops.admin}/api/users",
                        data=json.dumps({"address": "carol@example.test", "password": "carol-pw"}).encode())
    assert status == 200 and json.loads(body)["result"] == "added", body
    cli(ops, "user", "add", "dave@example.test", stdin="dave-pw\n")
    status, body = curl(f"{ops.admin}/api/users")
    assert status == 200
    assert json.loads(body) == json.loads(cli(ops, "user", "list", "--json").stdout)
    assert [u["address"] for u in json.loads(body)["users"]] == [
        ALICE, BOB, "carol@example.test", "dave@example.test"]
    # The new password works for SMTP AUTH at once (the server re-reads the file).
    status, _ = curl("-X", "DELETE", f"{ops.admin}/api/users/dave%40example.test")
    assert status == 200
    assert "dave" not in cli(ops, "user", "list").stdout.decode()

    # The queue: a held message seen the same way by both.
    with smtplib.SMTP(HOST, ops.plaintext_port) as s:
        s.login(ALICE, ALICE_PW)
        s.sendmail(ALICE, ["someone@remote.test"], f"From: {ALICE}\r\nSubject: q\r\n\r\nhi\r\n")
    status, body = curl(f"{ops.admin}/api/queue")
    assert status == 200
    api_list = json.loads(body)
    qid = api_list["messages"][0]["id"]
    assert curl("-X", "POST", f"{ops.admin}/api/queue/{qid}/hold")[0] == 200
    api_show = json.loads(curl(f"{ops.admin}/api/queue/{qid}")[1])
    cli_show = json.loads(cli(ops, "queue", "show", qid, "--json").stdout)
    for d in (api_show, cli_show):
        d.pop("now")
        d["message"].pop("age")
        d["message"].pop("next_attempt")
    assert api_show == cli_show and api_show["message"]["held"] is True
    assert curl("-X", "DELETE", f"{ops.admin}/api/queue/{qid}")[0] == 200
    assert json.loads(cli(ops, "queue", "list", "--json").stdout)["messages"] == []
    assert curl(f"{ops.admin}/api/queue/{qid}")[0] == 404

    # DNS records, with the client SRV records made from the listeners.
    status, body = curl(f"{ops.admin}/api/dns/{DOMAIN}")
    assert status == 200
    assert json.loads(body) == json.loads(cli(ops, "dns", DOMAIN, "--json").stdout)
    text = cli(ops, "dns", DOMAIN).stdout.decode()
    assert f"_submissions._tcp.{DOMAIN}. 3600 IN SRV 0 1 {ops.submissions_port} mx.example.test." in text
    assert f"_imaps._tcp.{DOMAIN}. 3600 IN SRV 10 1 {ops.imaps_port} mx.example.test." in text
    assert f"_pop3s._tcp.{DOMAIN}. 3600 IN SRV 0 0 0 ." in text


def listed_ports(doc: str, tag: str) -> list[int]:
    return [int(p) for p in re.findall(rf"<{tag}>(\d+)</{tag}>", doc)]


def test_autoconfig_names_exactly_the_listeners(ops):
    status, doc = curl(f"{ops.autoconfig}/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=alice%40example.test")
    assert status == 200, doc
    # imaps, imap (two imap listeners: the first is named), submissions, submission.
    assert listed_ports(doc, "port") == [ops.imaps_port, ops.imap_port, ops.submissions_port, ops.submission_port]
    assert "pop3" not in doc
    status, same = curl("-H", "Host: autoconfig.example.test", f"{ops.autoconfig}/mail/config-v1.1.xml")
    assert (status, same) == (200, doc)
    assert curl(f"{ops.autoconfig}/mail/config-v1.1.xml?emailaddress=a%40elsewhere.test")[0] == 404

    req = (b'<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/'
           b'autodiscover/outlook/requestschema/2006"><Request><EMailAddress>bob@example.test</EMailAddress>'
           b'<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/'
           b'responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>')
    status, ad = curl("-X", "POST", "-H", "Content-Type: text/xml",
                      f"{ops.autoconfig}/autodiscover/autodiscover.xml", data=req)
    assert status == 200, ad
    assert listed_ports(ad, "Port") == [ops.imaps_port, ops.imap_port, ops.submissions_port, ops.submission_port]
    assert "<LoginName>bob@example.test</LoginName>" in ad
    xxe = (b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
           b'<Autodiscover><Request><EMailAddress>&x;</EMailAddress></Request></Autodiscover>')
    status, body = curl("-X", "POST", f"{ops.autoconfig}/autodiscover/autodiscover.xml", data=xxe)
    assert status == 400 and "root:" not in body

    status, profile = curl(f"{ops.autoconfig}/apple/mobileconfig?emailaddress=bob%40example.test")
    assert status == 200
    assert f"<integer>{ops.imaps_port}</integer>" in profile
    assert f"<integer>{ops.submissions_port}</integer>" in profile
    assert "Password</key>" not in profile.replace("OutgoingPasswordSameAsIncomingPassword</key>", "")
    # A quoted local part is a valid address: escaped into the XML, never raw.
    status, profile = curl(f"{ops.autoconfig}/apple/mobileconfig?emailaddress=%22a%3Cb%3E%22%40example.test")
    assert status == 200 and "<b>" not in profile and "&lt;b&gt;" in profile


def test_admin_listener_off_loopback_needs_the_token(tern_binary, tmp_path):
    # The token is made before the server starts (the server refuses to
    # start an admin listener off loopback without one).
    port = free_port()
    workdir = tmp_path / "w"
    workdir.mkdir()
    data = workdir / "data"
    text = render_config(free_port(), data).replace(
        'role = "mx"\n', f'role = "mx"\n\n[[listener]]\naddress = "0.0.0.0:{port}"\nrole = "admin"\n', 1)
    cfg = workdir / "tern.toml"
    cfg.write_text(text)
    p = subprocess.run([str(tern_bin()), "serve", "--allow-root", "--config", str(cfg)],
                       capture_output=True, timeout=30, cwd=workdir)
    assert p.returncode != 0 and b"tern admin token" in p.stdout + p.stderr
    p = subprocess.run([str(tern_bin()), "admin", "token", "--config", str(cfg)],
                       capture_output=True, timeout=30, cwd=workdir)
    assert p.returncode == 0, p.stderr
    token = p.stdout.decode().strip()
    assert token.startswith("tern_") and token[5:] not in (data / "admin-token.sha256").read_text()
    server = subprocess.Popen([str(tern_bin()), "serve", "--allow-root", "--config", str(cfg)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir)
    try:
        url = f"http://{HOST}:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                if curl(f"{url}/healthz")[0] == 200:
                    break
            except AssertionError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert curl(f"{url}/metrics")[0] == 401
        assert curl("-H", "Authorization: Bearer tern_nope", f"{url}/api/queue")[0] == 401
        assert curl("-H", f"Authorization: Bearer {token}", f"{url}/api/queue")[0] == 200
        assert curl("-H", f"Authorization: Bearer {token}", f"{url}/metrics")[0] == 200
    finally:
        server.terminate()
        server.wait(timeout=20)
