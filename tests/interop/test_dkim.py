"""DKIM interop (issue 5): Tern's signatures verified by dkimpy (`dkimverify`,
package python3-dkim) and OpenDKIM (`opendkim-testmsg`, package
opendkim-tools); messages signed by dkimpy (`dkimsign`) verified by Tern;
tampered messages fail everywhere.

The two verifiers find keys through /etc/resolv.conf, which on a test machine
points off the machine. So they run in a private network namespace
(`unshare -n -m`): a loopback interface only, a dnsmasq on 127.0.0.1:53 that
publishes the keys and nothing else (no upstream), and a bind-mounted
resolv.conf naming it. No query can leave the namespace. Tern itself gets its
DNS from a private dnsmasq on a loopback port (`[dns] nameservers`)."""

from __future__ import annotations

import shlex
import shutil
import smtplib
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (ALICE, ALICE_PW, BOB, DNSMASQ, HOST, TernServer, dns_query,
                      free_udp_tcp_port, tern_bin)

TOOLS = {
    "dkimverify": shutil.which("dkimverify"),
    "dkimsign": shutil.which("dkimsign"),
    "opendkim-testmsg": shutil.which("opendkim-testmsg") or (
        "/usr/sbin/opendkim-testmsg" if Path("/usr/sbin/opendkim-testmsg").exists() else None),
    "unshare": shutil.which("unshare"),
    "ip": shutil.which("ip") or ("/usr/sbin/ip" if Path("/usr/sbin/ip").exists() else None),
    "openssl": shutil.which("openssl"),
}


def need_tools():
    missing = [k for k, v in TOOLS.items() if v is None]
    if DNSMASQ is None:
        missing.append("dnsmasq")
    if missing:
        pytest.skip(f"missing {', '.join(missing)} (.ci/run installs python3-dkim, opendkim-tools, dnsmasq-base)")
    probe = subprocess.run([TOOLS["unshare"], "-n", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a private network namespace: {probe.stderr.decode(errors='replace')}")


def txt_args(records: list[tuple[str, str]]) -> list[str]:
    """dnsmasq --txt-record options; long values as several 255-byte strings."""
    out = []
    for name, value in records:
        chunks = [value[i:i + 255] for i in range(0, len(value), 255)]
        out.append(f"--txt-record={name}," + ",".join(chunks))
    return out


def in_private_dns(workdir: Path, records: list[tuple[str, str]], command: list[str],
                   stdin: bytes) -> subprocess.CompletedProcess:
    """Runs `command` in a new network and mount namespace whose only DNS
    server is a dnsmasq on 127.0.0.1:53 publishing `records`."""
    workdir.mkdir(parents=True, exist_ok=True)
    resolv = workdir / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions attempts:1 timeout:2\n")
    pidfile = workdir / "dnsmasq.pid"
    dnsmasq = [DNSMASQ, "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--no-poll",
               f"--pid-file={pidfile}", "--port=53", "--listen-address=127.0.0.1",
               "--bind-interfaces", "--user=root", "--group=root", "--local=/test/",
               *txt_args(records)]
    script = "\n".join([
        "set -e",
        f"{shlex.quote(TOOLS['ip'])} link set lo up",
        # Without --no-daemon dnsmasq forks only once its sockets are bound.
        " ".join(shlex.quote(a) for a in dnsmasq),
        f"mount --bind {shlex.quote(str(resolv))} /etc/resolv.conf",
        "set +e",
        " ".join(shlex.quote(a) for a in command),
        "rc=$?",
        f"kill \"$(cat {shlex.quote(str(pidfile))})\"",
        "exit $rc",
    ])
    return subprocess.run([TOOLS["unshare"], "-n", "-m", "sh", "-c", script], input=stdin,
                          capture_output=True, timeout=60)


def keygen(srv: TernServer, algorithm: str, selector: str) -> tuple[str, str]:
    """`tern dkim keygen example.test`; returns the TXT record (name, value)."""
    p = subprocess.run([str(tern_bin()), "dkim", "keygen", "example.test", "--algorithm", algorithm,
                        "--selector", selector, "--config", str(srv.config_path)],
                       capture_output=True, timeout=120, cwd=srv.workdir)
    out = p.stdout.decode()
    assert p.returncode == 0, out + p.stderr.decode()
    name = out.split()[0].rstrip(".")
    value = "".join(out.split('"')[1::2])
    return name, value


@pytest.fixture
def signing_tern(tmp_path_factory):
    """A Tern with a submission listener and two keys for example.test (RSA
    and Ed25519, made by `tern dkim keygen` before the start); yields it and
    the TXT records to publish."""
    need_tools()
    workdir = tmp_path_factory.mktemp("tern-dkim")
    srv = TernServer(workdir, submission=True, plaintext_auth_listener=True,
                     dkim={"keys_dir": workdir / "dkim"})
    records = [keygen(srv, "rsa", "rsa2026"), keygen(srv, "ed25519", "ed2026")]
    srv.start()
    yield srv, records
    assert srv.stop() == 0, srv.log()


def submit_signed(srv: TernServer, subject: str) -> bytes:
    """alice submits a message to bob; returns it as stored in bob's Maildir."""
    msg = (f"From: Alice <{ALICE}>\r\nTo: Bob <{BOB}>\r\nSubject: {subject}\r\n"
           "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
           "Hello Bob,\r\n\r\nthis message is signed by Tern.  \r\n\r\n\r\n").encode()
    with smtplib.SMTP(HOST, srv.plaintext_port, local_hostname="client.test", timeout=30) as s:
        s.login(ALICE, ALICE_PW)
        assert s.sendmail(ALICE, [BOB], msg) == {}
    files = srv.wait_for_messages("bob", 1)
    matching = [f for f in files if f"Subject: {subject}".encode() in f.read_bytes()]
    assert len(matching) == 1, [f.read_bytes()[:300] for f in files]
    return matching[0].read_bytes()


def test_tern_signatures_verify_with_dkimpy_and_opendkim(signing_tern, tmp_path):
    srv, records = signing_tern
    stored = submit_signed(srv, "interop")
    assert stored.count(b"DKIM-Signature:") == 2, stored[:2000]
    assert b"a=rsa-sha256" in stored and b"a=ed25519-sha256" in stored
    assert b"c=relaxed/relaxed" in stored

    # dkimpy checks every signature (-v prints each result).
    p = in_private_dns(tmp_path / "dkimpy", records, [TOOLS["dkimverify"], "--index", "0"], stored)
    assert p.returncode == 0 and b"signature ok" in p.stdout, (p.stdout, p.stderr)
    p = in_private_dns(tmp_path / "dkimpy1", records, [TOOLS["dkimverify"], "--index", "1"], stored)
    assert p.returncode == 0 and b"signature ok" in p.stdout, (p.stdout, p.stderr)

    # OpenDKIM verifies and prints nothing when all is well (a Maildir file
    # in Unix line ends, as an MTA hands it to a filter).
    unix = stored.replace(b"\r\n", b"\n")
    p = in_private_dns(tmp_path / "opendkim", records, [TOOLS["opendkim-testmsg"]], unix)
    assert p.returncode == 0 and p.stdout == b"" and p.stderr == b"", (p.returncode, p.stdout, p.stderr)

    # A changed body, or a changed signed header, fails both verifiers.
    for tampered in (stored.replace(b"signed by Tern", b"signed by Eve"),
                     stored.replace(b"Subject: interop", b"Subject: interop (changed)")):
        assert tampered != stored
        p = in_private_dns(tmp_path / "dkimpy-bad", records, [TOOLS["dkimverify"]], tampered)
        assert p.returncode != 0 and b"signature ok" not in p.stdout, (p.stdout, p.stderr)
        p = in_private_dns(tmp_path / "opendkim-bad", records, [TOOLS["opendkim-testmsg"]],
                           tampered.replace(b"\r\n", b"\n"))
        assert p.returncode != 0, (p.stdout, p.stderr)


# --------------------------------------------------------------------------
# dkimpy signs, Tern verifies


@pytest.fixture
def sender_key(tmp_path):
    """An RSA key of the remote domain sender.test, made with openssl."""
    need_tools()
    key = tmp_path / "sender.key"
    subprocess.run([TOOLS["openssl"], "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    der = subprocess.run([TOOLS["openssl"], "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    import base64
    return key, ("s1._domainkey.sender.test", "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode())


@pytest.fixture
def sender_dns(tmp_path, sender_key):
    """A dnsmasq on a free loopback port (not 53) publishing sender.test's key,
    SPF and DMARC (p=reject), for Tern's [dns] nameservers."""
    _key, (name, value) = sender_key
    port = free_udp_tcp_port()
    args = [DNSMASQ, "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--no-poll",
            "--pid-file=", f"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces",
            "--user=nobody", "--group=nogroup", "--local=/test/", "--local=/in-addr.arpa/",
            *txt_args([(name, value), ("sender.test", "v=spf1 ip4:192.0.2.1 -all"),
                       ("_dmarc.sender.test", "v=DMARC1; p=reject")])]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if dns_query(port, "sender.test", 16, timeout=0.3) == (0, 1):
                break
        except OSError:
            pass
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("dnsmasq did not answer")
    yield [f"{HOST}:{port}"]
    proc.terminate()
    proc.wait(timeout=10)


def dkimsign(key: Path, message: bytes) -> bytes:
    p = subprocess.run([TOOLS["dkimsign"], "s1", "sender.test", str(key)], input=message,
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    # SMTP wants CRLF; Tern refuses bare LF (smuggling defence).
    return p.stdout.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def our_results(stored: bytes) -> str:
    header = stored.split(b"\r\n\r\n", 1)[0].decode()
    unfolded = header.replace("\r\n\t", " ").replace("\r\n ", " ")
    ours = [l for l in unfolded.split("\r\n") if l.startswith("Authentication-Results: mx.example.test;")]
    assert len(ours) == 1, header
    return ours[0]


def test_dkimpy_signatures_verify_in_tern(tern_factory, sender_key, sender_dns):
    key, _record = sender_key
    srv = tern_factory(dns_nameservers=sender_dns, mail_auth={"enabled": True, "iprev": False})
    msg = (b"From: Carol <carol@sender.test>\nTo: alice@example.test\nSubject: from dkimpy\n"
           b"Date: Mon, 23 Nov 2026 12:00:00 +0000\nMessage-ID: <dkimpy-1@sender.test>\n\n"
           b"Signed by dkimpy.\n")
    signed = dkimsign(key, msg)
    assert signed.startswith(b"DKIM-Signature:"), signed[:200]
    assert b"\n" not in signed.replace(b"\r\n", b"")
    tampered = signed.replace(b"Signed by dkimpy.", b"Signed by nobody.")
    with smtplib.SMTP(HOST, srv.port, local_hostname="client.test", timeout=60) as s:
        # SPF fails (only 192.0.2.1 may send) but the aligned signature
        # passes DMARC: delivered.
        assert s.sendmail("carol@sender.test", ["alice@example.test"], signed) == {}
        # The tampered copy has no valid signature: DMARC p=reject refuses it.
        with pytest.raises(smtplib.SMTPDataError) as refused:
            s.sendmail("carol@sender.test", ["alice@example.test"], tampered)
        assert refused.value.smtp_code == 550, refused.value
        assert refused.value.smtp_error.startswith(b"5.7.1"), refused.value
    [f] = srv.wait_for_messages("alice", 1)
    results = our_results(f.read_bytes())
    assert "dkim=pass header.i=@sender.test header.s=s1" in results, results
    assert "dmarc=pass" in results and "spf=fail" in results, results


def test_tampered_dkimpy_signature_fails_in_tern(tern_factory, sender_key, sender_dns):
    key, _record = sender_key
    # Tag only, so that the failed message is delivered and its results seen.
    srv = tern_factory(dns_nameservers=sender_dns,
                       mail_auth={"enabled": True, "iprev": False, "dmarc_reject": "tag"})
    msg = (b"From: carol@sender.test\nTo: alice@example.test\nSubject: original\n\nBody.\n")
    signed = dkimsign(key, msg)
    with smtplib.SMTP(HOST, srv.port, local_hostname="client.test", timeout=60) as s:
        assert s.sendmail("carol@sender.test", ["alice@example.test"],
                          signed.replace(b"Subject: original", b"Subject: altered")) == {}
    [f] = srv.wait_for_messages("alice", 1)
    results = our_results(f.read_bytes())
    assert "dkim=fail" in results and "dmarc=fail" in results, results
