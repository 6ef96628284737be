"""A raw IMAP client (bytes on a socket: tags, literals, IDLE) and the
response normaliser of the differential suite.

imaplib hides what the server sent (it parses as it reads and cannot IDLE
before Python 3.14); these tests need the exact responses. Nothing here
connects anywhere but the address it is given (the tests give loopback)."""

from __future__ import annotations

import re
import select
import socket
import ssl
import time

CRLF = b"\r\n"
LITERAL_RE = re.compile(rb"\{(\d+)\+?\}\r\n$")


class ImapError(Exception):
    pass


class RawImap:
    """One connection. `greeting` is the server's first line."""

    def __init__(self, host: str, port: int, *, tls: ssl.SSLContext | None = None, server_name: str = "localhost",
                 timeout: float = 15.0):
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.server_name = server_name
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname=server_name)
        self.buf = b""
        self.n = 0
        self.greeting = self.read_response()

    # -- bytes -----------------------------------------------------------------
    def _fill(self, timeout: float | None = None) -> bool:
        """Read more bytes; False on timeout (only when `timeout` is given)."""
        if timeout is not None:
            pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()
            if not pending:
                r, _, _ = select.select([self.sock], [], [], max(timeout, 0))
                if not r:
                    return False
        data = self.sock.recv(65536)
        if not data:
            raise ImapError("connection closed by the server; unread: %r" % self.buf)
        self.buf += data
        return True

    def _line(self, timeout: float | None = None) -> bytes | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while CRLF not in self.buf:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            if not self._fill(left):
                return None
        line, self.buf = self.buf.split(CRLF, 1)
        return line + CRLF

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_response(self, timeout: float | None = None) -> bytes | None:
        """One response, literals included (the bytes as sent, CRLFs kept)."""
        first = self._line(timeout)
        if first is None:
            return None
        out = first
        while True:
            m = LITERAL_RE.search(out)
            if not m:
                return out
            out += self._exact(int(m.group(1)))
            out += self._line()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    # -- commands ----------------------------------------------------------------
    def next_tag(self) -> str:
        self.n += 1
        return f"A{self.n:03d}"

    def command(self, *parts: str | bytes, tag: str | None = None) -> tuple[list[bytes], bytes]:
        """Send a command (str parts are text, bytes parts are sent as
        synchronising literals, waiting for each "+"), read to its tagged
        response: (untagged and continuation responses, tagged response)."""
        tag = tag or self.next_tag()
        untagged: list[bytes] = []
        pending = (tag + " ").encode()
        for p in parts:
            if isinstance(p, bytes):
                self.send(pending + b"{%d}\r\n" % len(p))
                pending = b""
                while True:
                    r = self.read_response()
                    if r.startswith(b"+"):
                        break
                    if r.startswith(tag.encode() + b" "):
                        return untagged, r  # the server refused the literal
                    untagged.append(r)
                pending = p
            else:
                pending += p.encode("utf-8")
        self.send(pending + CRLF)
        return self.read_until_tagged(tag, untagged)

    def read_until_tagged(self, tag: str, untagged=None) -> tuple[list[bytes], bytes]:
        untagged = [] if untagged is None else untagged
        t = tag.encode() + b" "
        while True:
            r = self.read_response(timeout=self.timeout)
            if r is None:
                raise ImapError(f"no tagged response to {tag} within {self.timeout}s; got {untagged!r}")
            if r.startswith(t):
                return untagged, r
            untagged.append(r)

    def ok(self, *parts: str | bytes) -> list[bytes]:
        untagged, tagged = self.command(*parts)
        if not tagged.split(b" ", 2)[1].upper() == b"OK":
            raise ImapError(f"{parts!r}: {tagged!r} (untagged: {untagged!r})")
        return untagged

    def starttls(self, ctx: ssl.SSLContext) -> None:
        self.ok("STARTTLS")
        assert not self.buf, "bytes after the STARTTLS OK (injection)"
        self.sock = ctx.wrap_socket(self.sock, server_hostname=self.server_name)

    def idle_start(self) -> str:
        tag = self.next_tag()
        self.send(f"{tag} IDLE\r\n".encode())
        r = self.read_response(timeout=self.timeout)
        if r is None or not r.startswith(b"+"):
            raise ImapError(f"IDLE: no continuation, got {r!r}")
        return tag

    def idle_wait(self, pred, timeout: float) -> list[bytes]:
        """Responses received during IDLE until pred(response) or timeout."""
        got = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.read_response(timeout=deadline - time.monotonic())
            if r is None:
                break
            got.append(r)
            if pred(r):
                break
        return got

    def idle_done(self, tag: str) -> tuple[list[bytes], bytes]:
        self.send(b"DONE\r\n")
        return self.read_until_tagged(tag)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------
# A small parser of response syntax (enough to reorder and compare)
# ---------------------------------------------------------------------------

class Lit(bytes):
    """A literal's content (kept apart from atoms and strings)."""


def tokenize(data: bytes, i: int = 0):
    """Parse a response body into nested lists: atoms (bytes, brackets
    included as in BODY[HEADER.FIELDS (A B)]<0>), quoted strings (str),
    literals (Lit), NIL (None) and parenthesised lists (list)."""
    out: list = []
    stack: list[list] = []
    cur = out
    n = len(data)
    while i < n:
        c = data[i:i + 1]
        if c in (b" ", b"\r", b"\n"):
            i += 1
        elif c == b"(":
            new: list = []
            cur.append(new)
            stack.append(cur)
            cur = new
            i += 1
        elif c == b")":
            cur = stack.pop() if stack else cur
            i += 1
        elif c == b'"':
            j = i + 1
            s = bytearray()
            while j < n and data[j:j + 1] != b'"':
                if data[j:j + 1] == b"\\":
                    j += 1
                s += data[j:j + 1]
                j += 1
            cur.append(bytes(s).decode("utf-8", "replace"))
            i = j + 1
        elif c == b"{" or (c == b"~" and data[i + 1:i + 2] == b"{"):
            if c == b"~":  # literal8 (RFC 3516)
                i += 1
            j = data.index(b"}", i)
            size = int(data[i + 1:j].rstrip(b"+"))
            start = data.index(b"\n", j) + 1
            cur.append(Lit(data[start:start + size]))
            i = start + size
        else:
            j = i
            depth = 0
            while j < n:
                ch = data[j:j + 1]
                if ch == b"[":
                    depth += 1
                elif ch == b"]":
                    depth -= 1
                elif depth == 0 and ch in (b" ", b"(", b")", b"\r", b"\n"):
                    break
                j += 1
            atom = data[i:j]
            cur.append(None if atom.upper() == b"NIL" else atom)
            i = j
    return out


def render(v) -> str:
    if v is None:
        return "NIL"
    if isinstance(v, Lit):
        # a literal and a quoted string are the same string (RFC 9051 4.3)
        v = bytes(v).decode("utf-8", "replace")
    elif isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "(" + " ".join(render(x) for x in v) + ")"


# ---------------------------------------------------------------------------
# Normalisation (see imap_corpus/DIFFERENCES.md, "Normalisation")
# ---------------------------------------------------------------------------

# Capabilities only one of the two servers offers by design; removed from
# CAPABILITY responses before comparing (the rest must match).
CAPS_IGNORED = {
    # Dovecot 2.3 extras Tern does not claim (issue 12 does not ask for them)
    "LOGIN-REFERRALS", "SORT=DISPLAY", "THREAD=REFS", "URL-PARTIAL", "CATENATE", "I18NLEVEL=1",
    "ESORT", "WITHIN", "CONTEXT=SEARCH", "SNIPPET=FUZZY", "PREVIEW=FUZZY", "PREVIEW", "NOTIFY",
    "SPECIAL-USE-EXTENSIONS",
    # Tern extras Dovecot 2.3 lacks (or has only through plugins)
    "IMAP4REV2", "UTF8=ACCEPT", "OBJECTID", "QUOTA", "QUOTA=RES-STORAGE", "CREATE-SPECIAL-USE",
    "LITERAL-", "APPENDLIMIT",
}

STATUS_WORDS = {b"OK", b"NO", b"BAD", b"BYE", b"PREAUTH"}
CODE_RE = re.compile(rb"^\[([^\]]*(?:\[[^\]]*\][^\]]*)*)\]")


def norm_caps(words) -> str:
    caps = sorted({w.upper() for w in words if w.upper() not in CAPS_IGNORED and not w.upper().startswith("APPENDLIMIT=")})
    return " ".join(caps)


def norm_code(code: bytes) -> str:
    parts = code.split(b" ", 1)
    name = parts[0].upper()
    rest = parts[1] if len(parts) > 1 else b""
    if name == b"CAPABILITY":
        return "CAPABILITY " + norm_caps(rest.decode().split())
    if name == b"UIDVALIDITY":
        return "UIDVALIDITY <uidvalidity>"
    if name in (b"HIGHESTMODSEQ", b"NOMODSEQ"):
        return name.decode() + (" <modseq>" if rest else "")
    if name in (b"APPENDUID", b"COPYUID"):
        f = rest.split(b" ", 1)
        return f"{name.decode()} <uidvalidity> {f[1].decode() if len(f) > 1 else ''}".rstrip()
    if name == b"MAILBOXID":
        return "MAILBOXID <id>"
    if name in (b"PERMANENTFLAGS",):
        toks = tokenize(rest)
        flags = sorted(f.decode() for f in (toks[0] if toks else []) if f.lower() != b"\\recent")
        return f"{name.decode()} ({' '.join(flags)})"
    return code.decode("utf-8", "replace")


def norm_fetch_value(name: str, v):
    if name == "FLAGS":
        return sorted(f for f in v if f.lower() != b"\\recent")
    if name == "INTERNALDATE":
        return "<date>"
    if name == "SAVEDATE":
        return "<date>" if v is not None else None
    if name == "MODSEQ":
        return [b"<modseq>"]
    if name == "EMAILID" or name == "THREADID":
        return "<id>"
    return v


def norm_fetch(body) -> str:
    items = []
    for k in range(0, len(body) - 1, 2):
        name = render(body[k]).upper() if not isinstance(body[k], bytes) else body[k].decode().upper()
        # BODY.PEEK[...] is answered as BODY[...]; section names are case-insensitive
        items.append((name, render(norm_fetch_value(name, body[k + 1]))))
    items.sort()
    return "(" + " ".join(f"{k} {v}" for k, v in items) + ")"


def normalise(resp: bytes, tag: str | None = None) -> str:
    """One response as a comparable string."""
    if resp.startswith(b"+"):
        return "+"
    head, _, rest = resp.partition(b" ")
    who = "*" if head == b"*" else ("TAG" if tag is not None and head == tag.encode() else head.decode("utf-8", "replace"))
    word, _, rest2 = rest.partition(b" ")
    rest2 = rest2.rstrip(b"\r\n")
    if word.upper() in STATUS_WORDS:
        m = CODE_RE.match(rest2)
        code = f" [{norm_code(m.group(1))}]" if m else ""
        return f"{who} {word.upper().decode()}{code}"
    uword = word.upper()
    if uword == b"CAPABILITY":
        return "* CAPABILITY " + norm_caps(rest2.decode().split())
    if uword == b"ID":
        return "* ID <server>"
    if uword == b"FLAGS":
        toks = tokenize(rest2)
        return "* FLAGS (" + " ".join(sorted(f.decode() for f in toks[0] if f.lower() != b"\\recent")) + ")"
    if uword in (b"LIST", b"LSUB"):
        toks = tokenize(rest2)
        attrs = sorted(a.decode().lower() for a in toks[0])
        rest_toks = toks[1:]
        name = rest_toks[1]
        name_s = bytes(name).decode() if isinstance(name, bytes) else name
        ext = " " + render(rest_toks[2:]) if len(rest_toks) > 2 else ""
        return f"* {uword.decode()} ({' '.join(attrs)}) {render(rest_toks[0])} \"{name_s}\"{ext}"
    if uword == b"STATUS":
        toks = tokenize(rest2)
        name = toks[0]
        name_s = bytes(name).decode() if isinstance(name, bytes) else name
        pairs = toks[1]
        items = []
        for k in range(0, len(pairs) - 1, 2):
            key = pairs[k].decode().upper()
            val = pairs[k + 1].decode() if isinstance(pairs[k + 1], bytes) else render(pairs[k + 1])
            if key == "UIDVALIDITY":
                val = "<uidvalidity>"
            elif key == "HIGHESTMODSEQ":
                val = "<modseq>"
            elif key == "MAILBOXID":
                val = "<id>"
            items.append(f"{key} {val}")
        return f"* STATUS \"{name_s}\" ({' '.join(sorted(items))})"
    if uword == b"ESEARCH":
        toks = tokenize(rest2)
        out = []
        for t in toks:
            if isinstance(t, list):
                out.append("(TAG)")
            else:
                out.append(render(t).upper() if isinstance(t, bytes) and not t[:1].isdigit() else render(t))
        s = " ".join(out)
        s = re.sub(r"MODSEQ \d+", "MODSEQ <modseq>", s)
        return "* ESEARCH " + s
    if uword in (b"SEARCH", b"SORT"):
        s = rest2.decode()
        s = re.sub(r"\(MODSEQ \d+\)", "(MODSEQ <modseq>)", s)
        return f"* {uword.decode()} {s}".rstrip()
    # "* n EXISTS" / "* n FETCH (...)"
    if head == b"*" and word.isdigit():
        kind, _, data = rest2.partition(b" ")
        if kind.upper() == b"FETCH":
            return f"* {word.decode()} FETCH {norm_fetch(tokenize(data)[0])}"
        return f"* {word.decode()} {kind.upper().decode()}"
    return f"{who} {word.decode('utf-8', 'replace')} {rest2.decode('utf-8', 'replace')}".rstrip()


def normalise_all(untagged: list[bytes], tagged: bytes, tag: str) -> list[str]:
    """Untagged responses normalised and put in a canonical order (servers
    may send them in any order, RFC 3501 7 / RFC 9051 7; EXPUNGE and
    VANISHED keep their relative order), then the tagged one."""
    lines = [normalise(r, tag) for r in untagged]
    last = normalise(tagged, tag)
    # CAPABILITY as a response code of the tagged OK or as an untagged
    # response: the same information (RFC 9051 6.2.3, 7.1)
    m = re.match(r"TAG OK \[CAPABILITY (.*)\]$", last)
    if m:
        lines.append("* CAPABILITY " + m.group(1))
        last = "TAG OK"
    # MAILBOXID (RFC 8474 OBJECTID, which Dovecot 2.3 lacks: CAPS_IGNORED)
    lines = [x for x in lines if x != "* OK [MAILBOXID <id>]"]
    # EXPUNGE responses as the set of sequence numbers (before the command)
    # they remove: "* 7 EXPUNGE, * 6 EXPUNGE" and "* 6 EXPUNGE, * 6 EXPUNGE"
    # say the same (RFC 9051 7.5.1: each one renumbers the rest)
    removed: list[int] = []
    for x in lines:
        m = re.match(r"\* (\d+) EXPUNGE$", x)
        if m:
            orig = int(m.group(1))
            for r in sorted(removed):
                if r <= orig:
                    orig += 1
            removed.append(orig)
    if removed:
        lines = [x for x in lines if not re.match(r"\* \d+ EXPUNGE$", x)]
        lines.append("* EXPUNGE (of " + ",".join(str(r) for r in sorted(removed)) + ")")
    order_kept = ("VANISHED",)
    lines = sorted(lines, key=lambda s: next((k for k in order_kept if k in s.split(" ")[:3]), s))
    return lines + [last]
