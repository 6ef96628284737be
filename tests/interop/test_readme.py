"""The README's first-run recipes, run exactly as written against
`tern serve --config examples/dev.toml` (its fixed ports 2525/2587/…, in a
scratch copy of the repository's examples so the real ./data is untouched).

Skipped when one of the dev ports is taken (a developer's own dev server)."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT, tern_bin
from smtpwire import need

DEV_PORTS = (2525, 2587, 2465, 2143, 2993, 2110, 2995)


def readme_block_after(marker: str) -> str:
    """The first fenced block after the line containing `marker`."""
    text = (REPO_ROOT / "README.md").read_text()
    at = text.index(marker)
    m = re.compile(r"```[a-z]*\n(.*?)```", re.S).search(text, at)
    assert m, f"no code block after {marker!r}"
    return m.group(1)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@pytest.fixture
def dev_server(tmp_path):
    if not all(port_free(p) for p in DEV_PORTS):
        pytest.skip("a dev port is in use (another dev server running?)")
    shutil.copytree(REPO_ROOT / "examples", tmp_path / "examples")
    log = open(tmp_path / "tern.log", "wb")
    proc = subprocess.Popen([str(tern_bin()), "serve", "--config", "examples/dev.toml"],
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", 2587), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None, (tmp_path / "tern.log").read_text()
            time.sleep(0.1)
    yield tmp_path
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@need("msmtp")
def test_readme_msmtp_recipe_as_written(dev_server):
    """Issue 15's papercut: the recipe connects to 127.0.0.1, so the dev
    certificate must name that address; msmtp checks it."""
    conf = dev_server / "msmtprc"
    conf.write_text(readme_block_after("An msmtp\nconfiguration:"))
    conf.chmod(0o600)
    msg = (b"From: alice@example.test\r\nTo: bob@example.test\r\n"
           b"Subject: README recipe\r\n\r\nSent as the README says.\r\n")
    p = subprocess.run(["msmtp", "-C", str(conf), "bob@example.test"], input=msg,
                       cwd=dev_server, capture_output=True, timeout=60)
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    assert p.returncode == 0, out + (dev_server / "tern.log").read_text()[-4000:]
    new = dev_server / "data/mail/example.test/bob/new"
    deadline = time.time() + 10
    while time.time() < deadline and not any(new.glob("*")):
        time.sleep(0.1)
    [f] = list(new.glob("*"))
    assert b"Subject: README recipe" in f.read_bytes()


@need("openssl")
def test_ip_address_as_sni_is_not_a_warning(dev_server):
    """Clients that send an IP literal as SNI (rustls ignores it) must not
    fill the log with WARN lines the admin cannot act on."""
    p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:2465", "-servername", "127.0.0.1",
                        "-CAfile", str(dev_server / "data/tls/selfsigned.crt"), "-verify_return_error",
                        "-verify_ip", "127.0.0.1"],
                       input=b"QUIT\r\n", capture_output=True, timeout=30)
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    assert "Verify return code: 0 (ok)" in out, out
    time.sleep(0.5)
    log = (dev_server / "tern.log").read_text()
    assert "Illegal SNI" not in log, log[-3000:]
    assert not re.search(r"\bWARN\b.*rustls", log), log[-3000:]
