"""A small raw-socket SMTP client for tests that need exact control of bytes.

smtplib normalises line endings and refuses to send malformed input, so the
smuggling, pipelining and BDAT tests talk to the server through this class.
"""

from __future__ import annotations

import base64
import re
import shutil
import socket
import ssl
import time
from dataclasses import dataclass
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest


@dataclass
class Reply:
    code: int
    lines: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def __str__(self) -> str:  # shown in assertion messages
        return f"{self.code} {self.text!r}"


class ConnectionClosed(Exception):
    pass


class SmtpWire:
    def __init__(self, host: str, port: int, timeout: float = 10.0, *,
                 tls: ssl.SSLContext | None = None, server_hostname: str | None = None):
        """`tls`: implicit TLS (the `submissions` role), handshake before the greeting."""
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self.buf = b""
        if tls is not None:
            self.wrap_tls(tls, server_hostname)

    def wrap_tls(self, context: ssl.SSLContext, server_hostname: str | None) -> None:
        """TLS handshake on the connection as it is now. Bytes already buffered
        would be plaintext the server sent before the handshake: none allowed."""
        assert self.buf == b"", f"plaintext bytes from the server before the TLS handshake: {self.buf!r}"
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)

    def starttls(self, context: ssl.SSLContext, server_hostname: str | None) -> Reply:
        r = self.cmd("STARTTLS")
        assert r.code == 220, f"STARTTLS: {r}"
        self.wrap_tls(context, server_hostname)
        return r

    # -- low level -------------------------------------------------------
    def send(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no complete reply from server in time; buffered: %r" % self.buf[-300:])
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout as e:
            raise TimeoutError("no complete reply from server in time; buffered: %r" % self.buf[-300:]) from e
        if not chunk:
            raise ConnectionClosed("server closed the connection; buffered: %r" % self.buf[-300:])
        self.buf += chunk

    def _line(self, deadline: float) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill(deadline)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self, timeout: float | None = None) -> Reply:
        """Read one (possibly multi-line) reply."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        lines: list[str] = []
        code = None
        while True:
            raw = self._line(deadline)
            text = raw.decode("utf-8", "replace")
            m = re.match(r"^(\d{3})([ -])(.*)$", text) or re.match(r"^(\d{3})()$", text)
            if not m:
                raise AssertionError(f"malformed reply line from server: {raw!r}")
            this_code = int(m.group(1))
            if code is None:
                code = this_code
            elif this_code != code:
                raise AssertionError(f"multi-line reply changed code: {lines!r} then {raw!r}")
            lines.append(m.group(3))
            if m.group(2) != "-":
                return Reply(code, lines)

    def replies(self, n: int, timeout: float | None = None) -> list[Reply]:
        return [self.reply(timeout) for _ in range(n)]

    def no_reply_within(self, seconds: float) -> bytes:
        """Return whatever arrives within `seconds` (expected: nothing)."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                self._fill(deadline)
        except TimeoutError:
            pass
        except ConnectionClosed:
            pass
        extra, self.buf = self.buf, b""
        return extra

    def cmd(self, line: str | bytes, timeout: float | None = None) -> Reply:
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.send(line + b"\r\n")
        return self.reply(timeout)

    # -- helpers ---------------------------------------------------------
    def greet_and_ehlo(self, name: str = "client.test") -> Reply:
        greeting = self.reply()
        assert greeting.code == 220, f"greeting: {greeting}"
        ehlo = self.cmd(f"EHLO {name}")
        assert ehlo.code == 250, f"EHLO: {ehlo}"
        return ehlo

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "SmtpWire":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def b64(data: str | bytes) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.b64encode(data).decode("ascii")


def sasl_plain(user: str, password: str, authzid: str = "") -> str:
    """The base64 PLAIN response (RFC 4616): authzid NUL authcid NUL passwd."""
    return b64(f"{authzid}\0{user}\0{password}")


QUEUED_RE = re.compile(r"queued as <?([A-Za-z0-9._:+/=-]+)>?")


def queue_id(reply_text: str) -> str:
    m = QUEUED_RE.search(reply_text)
    assert m, f"250 after DATA does not say 'queued as <ID>': {reply_text!r}"
    return m.group(1)


def dot_stuff(body: bytes) -> bytes:
    """CRLF-normalised, dot-stuffed content ending with CRLF (without the final '.')."""
    text = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not text.endswith(b"\r\n"):
        text += b"\r\n"
    lines = text.split(b"\r\n")
    return b"\r\n".join((b"." + ln) if ln.startswith(b".") else ln for ln in lines)


def parse_message(path: Path):
    """(raw bytes, parsed message) of a delivered Maildir file."""
    raw = path.read_bytes()
    return raw, BytesParser(policy=policy.SMTP).parsebytes(raw)


def header_names(raw: bytes) -> list[str]:
    """Names of the header fields in order, from the raw file (before the first blank line)."""
    head = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0]
    names = []
    for line in re.split(rb"\r?\n", head):
        if line[:1] in (b" ", b"\t") or not line:
            continue
        names.append(line.split(b":", 1)[0].decode("utf-8", "replace"))
    return names


def need(tool: str):
    return pytest.mark.skipif(shutil.which(tool) is None, reason=f"{tool} not installed (.ci/run installs it)")
