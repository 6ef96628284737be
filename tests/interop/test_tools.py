"""Tern against third-party SMTP clients: swaks and Postfix's smtp-source."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import time

import pytest

from smtpwire import need, parse_message

SMTP_SOURCE = shutil.which("smtp-source") or ("/usr/sbin/smtp-source" if shutil.which("/usr/sbin/smtp-source") else None)


def swaks(srv, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = ["swaks", "--server", srv.host, "--port", str(srv.port), "--from", "x@y.test",
           "--helo", "client.test", *args]
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    p.transcript = p.stdout.decode("utf-8", "replace") + p.stderr.decode("utf-8", "replace")
    return p


def swaks_help() -> str:
    if shutil.which("swaks") is None:
        return ""
    p = subprocess.run(["swaks", "--help"], stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    return (p.stdout + p.stderr).decode("utf-8", "replace")


@need("swaks")
def test_swaks_plain(tern):
    p = swaks(tern, "--to", "alice@example.test", "--header", "Subject: swaks plain")
    assert p.returncode == 0, p.transcript
    assert re.search(r"<-\s+250 2\.0\.0 Ok: queued as", p.transcript), p.transcript
    [f] = tern.wait_for_messages("alice", 1)
    _, parsed = parse_message(f)
    assert parsed["Subject"] == "swaks plain"
    assert "X-Mailer" in parsed and "swaks" in parsed["X-Mailer"]
    assert "This is a test mailing" in parsed.get_content()


@need("swaks")
def test_swaks_pipelining(tern):
    p = swaks(tern, "--to", "bob@example.test", "--pipeline", "--header", "Subject: swaks pipelined")
    assert p.returncode == 0, p.transcript
    # swaks prints pipelined commands back to back, before any reply
    assert re.search(r" -> MAIL FROM:<x@y\.test>\n -> RCPT TO:<bob@example\.test>\n -> DATA\n", p.transcript), \
        "swaks did not pipeline (is PIPELINING advertised?)\n" + p.transcript
    [f] = tern.wait_for_messages("bob", 1)
    assert parse_message(f)[1]["Subject"] == "swaks pipelined"


@need("swaks")
def test_swaks_pipelining_with_refused_recipient(tern):
    p = swaks(tern, "--to", "alice@example.test,nosuchuser@example.test", "--pipeline")
    # swaks goes on to DATA when at least one RCPT is accepted
    assert "550 5.1.1" in p.transcript, p.transcript
    assert re.search(r"<-\s+250 2\.0\.0 Ok: queued as", p.transcript), p.transcript
    tern.wait_for_messages("alice", 1)


@need("swaks")
def test_swaks_bdat(tern):
    help_text = swaks_help()
    if not re.search(r"bdat|chunking", help_text, re.I):
        version = re.search(r"swaks version (\S+)", subprocess.run(
            ["swaks", "--version"], capture_output=True, stdin=subprocess.DEVNULL).stdout.decode())
        pytest.skip(f"this swaks ({version.group(1) if version else '?'}) has no BDAT/CHUNKING support; "
                    "BDAT is covered by test_wire.py")
    opt = re.search(r"(--\S*(?:bdat|chunk)\S*)", help_text, re.I).group(1)
    p = swaks(tern, "--to", "alice@example.test", opt)
    assert p.returncode == 0, p.transcript
    assert "BDAT" in p.transcript
    tern.wait_for_messages("alice", 1)


@need("swaks")
def test_swaks_attachment(tern, tmp_path):
    payload = bytes(range(256)) * 40  # binary, 10 kB
    att = tmp_path / "payload.bin"
    att.write_bytes(payload)
    p = swaks(tern, "--to", "carol@example.test", "--attach", str(att), "--header", "Subject: swaks attach")
    assert p.returncode == 0, p.transcript
    [f] = tern.wait_for_messages("carol", 1)
    _, parsed = parse_message(f)
    assert parsed["Subject"] == "swaks attach"
    assert parsed.get_content_type() == "multipart/mixed"
    parts = [part for part in parsed.iter_attachments()]
    assert len(parts) == 1
    assert parts[0].get_content() == payload, "attachment bytes changed in transit"


@need("swaks")
def test_swaks_one_megabyte_body(tern, tmp_path):
    # 1 MiB of printable lines, every line distinct, some starting with a dot
    lines = []
    size = 0
    i = 0
    while size < 1024 * 1024:
        stem = base64.b64encode(i.to_bytes(4, "big") * 12).decode()
        line = ("." if i % 97 == 0 else "") + f"{i:07d} {stem}"
        lines.append(line)
        size += len(line) + 1
        i += 1
    body = "\n".join(lines) + "\n"
    bodyfile = tmp_path / "body.txt"
    bodyfile.write_text(body)
    p = swaks(tern, "--to", "alice@example.test", "--body", f"@{bodyfile}", "--suppress-data",
              "--header", "Subject: swaks 1MB")
    assert p.returncode == 0, p.transcript
    [f] = tern.wait_for_messages("alice", 1, timeout=20)
    raw = f.read_bytes().replace(b"\r\n", b"\n")
    assert raw.endswith(body.encode()) or body.encode() in raw, "1 MB body altered in transit"
    assert len(raw) > 1024 * 1024


@need("swaks")
def test_swaks_relay_denied(tern):
    p = swaks(tern, "--to", "victim@remote.test")
    assert p.returncode != 0, p.transcript
    assert re.search(r"<\*\*\s+554 5\.7\.1", p.transcript), p.transcript
    assert tern.all_delivered() == []


def wait_stable_count(srv, local: str, expected: int, timeout: float = 60.0) -> int:
    """Poll alice's new/ until it holds `expected` files and stays so for 2 s (or timeout)."""
    deadline = time.monotonic() + timeout
    last, stable_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = len(srv.new_files(local))
        if n != last:
            last, stable_since = n, time.monotonic()
        elif n >= expected and time.monotonic() - stable_since >= 2.0:
            break
        time.sleep(0.1)
    return last


@pytest.mark.skipif(SMTP_SOURCE is None, reason="smtp-source (postfix package) not installed (.ci/run installs it)")
@pytest.mark.parametrize("reuse", [False, True], ids=["connection-per-message", "connection-reuse"])
def test_smtp_source_200_messages(tern_factory, reuse):
    # 200 connections within seconds from one IP: above the default per-IP
    # connection rate (limits.abuse.connections_per_ip), which is not under test here
    tern = tern_factory(abuse={"connections_per_ip": {"limit": 10000, "window": "1m"}})
    args = [SMTP_SOURCE, "-s", "5", "-m", "200", "-l", "10240", "-f", "x@y.test", "-t", "alice@example.test"]
    if reuse:
        args.insert(1, "-d")
    p = subprocess.run(args + [f"{tern.host}:{tern.port}"], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=300)
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    assert p.returncode == 0, f"smtp-source failed: {out}\n{tern.log()}"
    n = wait_stable_count(tern, "alice", 200)
    assert n == 200, f"expected exactly 200 messages in alice's new/, found {n}\n{tern.log()}"
    sizes = {f.stat().st_size for f in tern.new_files("alice")}
    assert min(sizes) > 10240, f"a message is shorter than its 10240-byte payload: {min(sizes)}"
