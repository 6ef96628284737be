"""Differential IMAP suite: Tern and a private Dovecot (the reference server)
get the same messages and the same command scripts; the normalised responses
must match, except for the differences listed, each with its RFC reason, in
imap_corpus/DIFFERENCES.md.

* Messages: imap_corpus/messages/*.eml, written into both INBOX Maildirs'
  new/ (as another MDA would; the same bytes, names and mtimes, so both
  servers number them in the same order and report the same sizes).
* Scripts: imap_corpus/scripts/*.imap, run in name order on one account
  (state carries over from script to script), each over IMAPS. One command
  a line, without tag; `#` comments; directives:
    `!connect`          a new connection (the old one is dropped)
    `!idle NAME`        IDLE, drop messages/NAME into INBOX, wait for EXISTS, DONE
    `!save VAR`         remember the last HIGHESTMODSEQ seen as $VAR
    `!other CMD`        CMD on a second session of the same user (logged in
                        at its first use; its responses are a step too)
    `!idle-other CMD`   IDLE on the main session, CMD on the second one,
                        collect what the main session is told, DONE
  and in commands: $USER, $PASS (quoted), $PLAIN (SASL PLAIN, base64),
  $UIDVALIDITY (the last seen), $VAR, `{file:NAME}` (a message as a
  synchronising literal), `{utf8:TEXT}` (TEXT as a literal).
* Normalisation (imapwire.normalise): tags, the text after OK/NO/BAD/BYE,
  UIDVALIDITY, MODSEQ values, INTERNALDATE/SAVEDATE, email/mailbox ids,
  \\Recent, the capabilities only one server has by design (CAPS_IGNORED),
  the order of untagged responses and of FETCH items.

`test_dovecot_against_itself` runs the corpus against two Dovecots: it must
show no difference at all (the normaliser hides nothing real and keeps no
instance-specific value). `test_tern_against_dovecot` is the real check."""

from __future__ import annotations

import base64
import json
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import ALICE, ALICE_PW, BOB, BOB_PW, HOST
from imapservers import DovecotTarget, TLS_NAME, TernTarget, dovecot_missing, start_dovecot
from imapwire import ImapError, RawImap, normalise_all

CORPUS = Path(__file__).resolve().parent / "imap_corpus"
SCRIPTS = sorted((CORPUS / "scripts").glob("*.imap"))
MESSAGES = CORPUS / "messages"
# The messages in INBOX before the first script, in this (UID) order.
INITIAL = ["01-plain.eml", "02-multipart.eml", "03-encoded.eml", "04-reply.eml", "05-forward.eml",
           "06-newsletter.eml", "07-noheaders-body.eml"]
MTIME0 = 1725260400  # 2024-09-02 07:00:00 UTC

pytestmark = pytest.mark.timeout(280)

need_dovecot = pytest.mark.skipif(dovecot_missing() is not None, reason=str(dovecot_missing()))


@dataclass
class Difference:
    ident: str
    kind: str                       # allowed | tern-missing | tern-bug
    title: str
    at: list[tuple[str, str]]       # (script, command)


def parse_known_differences() -> list[Difference]:
    """The entries of DIFFERENCES.md: a heading "### Dn (kind): title"
    followed by lines "- at `script` `command`"."""
    out: list[Difference] = []
    for line in (CORPUS / "DIFFERENCES.md").read_text().splitlines():
        m = re.match(r"^### (D\d+) \((allowed|tern-missing|tern-bug)\): (.*)$", line)
        if m:
            out.append(Difference(m.group(1), m.group(2), m.group(3), []))
            continue
        m = re.match(r"^- at `([^`]+)` `([^`]+)`\s*$", line)
        if m and out:
            out[-1].at.append((m.group(1), m.group(2)))
    return out


@dataclass
class Step:
    script: str
    command: str                    # as written in the script
    transcript: list[str] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)


class Runner:
    """Runs the scripts against one server, recording every step."""

    def __init__(self, target):
        self.t = target
        self.conn: RawImap | None = None
        self.vars: dict[str, str] = {}
        self.last_modseq: str | None = None
        self.uidvalidity: str | None = None
        self.steps: list[Step] = []
        self.drop_seq = 0
        self.other: RawImap | None = None

    def connect(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = RawImap(HOST, self.t.imaps_port, tls=self.t.ssl_context(), server_name=TLS_NAME, timeout=10)

    def drop(self, name: str) -> None:
        self.drop_seq += 1
        i = 100 + self.drop_seq
        self.t.drop((MESSAGES / name).read_bytes(), "alice", f"{MTIME0 + i * 3600}.M{i}P1.corpus",
                    MTIME0 + i * 3600)

    def substitute(self, line: str) -> list[str | bytes]:
        subst = {
            "USER": ALICE,
            "PASS": '"' + ALICE_PW.replace("\\", "\\\\").replace('"', '\\"') + '"',
            "PLAIN": base64.b64encode(f"\0{ALICE}\0{ALICE_PW}".encode()).decode(),
            "UIDVALIDITY": self.uidvalidity or "0",
            **self.vars,
        }
        line = re.sub(r"\$([A-Z][A-Z0-9]*)", lambda m: subst.get(m.group(1), m.group(0)), line)
        parts: list[str | bytes] = []
        pos = 0
        for m in re.finditer(r"\{(file|utf8):([^}]*)\}", line):
            parts.append(line[pos:m.start()])
            parts.append((MESSAGES / m.group(2)).read_bytes() if m.group(1) == "file" else m.group(2).encode())
            pos = m.end()
        parts.append(line[pos:])
        return [p for p in parts if p != ""]

    def observe(self, responses: list[bytes]) -> None:
        for r in responses:
            m = re.search(rb"UIDVALIDITY (\d+)", r)
            if m and not r.startswith(b"* STATUS"):
                self.uidvalidity = m.group(1).decode()
            m = re.search(rb"HIGHESTMODSEQ (\d+)", r)
            if m:
                self.last_modseq = m.group(1).decode()
            m = re.search(rb"\(MODSEQ \((\d+)\)\)", r) or re.search(rb"MODSEQ \((\d+)\)", r)
            if m and self.last_modseq is not None and int(m.group(1)) > int(self.last_modseq):
                self.last_modseq = m.group(1).decode()

    def run_command(self, script: str, line: str) -> Step:
        step = Step(script, line)
        tag = self.conn.next_tag()
        try:
            untagged, tagged = self.command(tag, self.substitute(line))
        except (ImapError, OSError) as e:
            step.transcript = [f"<connection error: {type(e).__name__}>"]
            self.steps.append(step)
            self.conn = None
            return step
        self.observe(untagged + [tagged])
        step.raw = untagged + [tagged]
        step.transcript = normalise_all(untagged, tagged, tag)
        self.steps.append(step)
        return step

    def command(self, tag: str, parts):
        """Like RawImap.command, but a "+" to a command without a literal
        (AUTHENTICATE without an initial response) is answered with "*"
        (cancel), so a script never hangs."""
        c = self.conn
        if not any(isinstance(p, bytes) for p in parts):
            c.send(f"{tag} {''.join(parts)}\r\n".encode())
            untagged = []
            t = tag.encode() + b" "
            while True:
                r = c.read_response(timeout=c.timeout)
                if r is None:
                    raise ImapError(f"no tagged response to {tag}; got {untagged!r}")
                if r.startswith(t):
                    return untagged, r
                if r.startswith(b"+"):
                    untagged.append(r)
                    c.send(b"*\r\n")
                    continue
                untagged.append(r)
        return c.command(*parts, tag=tag)

    def idle(self, script: str, name: str | None) -> None:
        step = Step(script, f"!idle {name or ''}".strip())
        c = self.conn
        tag = c.idle_start()
        got = [b"+ idling\r\n"]
        if name:
            time.sleep(0.2)
            self.drop(name)
            got += c.idle_wait(lambda r: r.endswith(b" EXISTS\r\n"), 5)
        else:
            got += c.idle_wait(lambda r: False, 0.5)
        # RECENT may trail EXISTS: collect what follows right away
        got += c.idle_wait(lambda r: False, 0.3)
        untagged, tagged = c.idle_done(tag)
        self.observe(got + untagged)
        step.raw = got + untagged + [tagged]
        step.transcript = normalise_all(got + untagged, tagged, tag)
        self.steps.append(step)

    def other_command(self, script: str, line: str) -> Step:
        """CMD on the second session; recorded like any step."""
        if self.other is None:
            self.other = RawImap(HOST, self.t.imaps_port, tls=self.t.ssl_context(), server_name=TLS_NAME,
                                 timeout=10)
            self.other.ok("AUTHENTICATE PLAIN " + base64.b64encode(f"\0{ALICE}\0{ALICE_PW}".encode()).decode())
        step = Step(script, "!other " + line)
        tag = self.other.next_tag()
        untagged, tagged = self.other.command(*self.substitute(line), tag=tag)
        step.raw = untagged + [tagged]
        step.transcript = normalise_all(untagged, tagged, tag)
        self.steps.append(step)
        return step

    def idle_other(self, script: str, line: str) -> None:
        step = Step(script, "!idle-other " + line)
        c = self.conn
        tag = c.idle_start()
        got = [b"+ idling\r\n"]
        self.other_command(script, line)
        got += c.idle_wait(lambda r: r.startswith(b"* "), 5)
        got += c.idle_wait(lambda r: False, 0.5)
        untagged, tagged = c.idle_done(tag)
        self.observe(got + untagged)
        step.raw = got + untagged + [tagged]
        step.transcript = normalise_all(got + untagged, tagged, tag)
        self.steps.append(step)

    def run_script(self, path: Path) -> None:
        self.connect()
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line == "!connect":
                self.connect()
            elif line == "!idle" or line.startswith("!idle "):
                arg = line.split(None, 1)[1] if " " in line else None
                if self.conn is not None:
                    self.idle(path.name, arg)
            elif line.startswith("!other "):
                self.other_command(path.name, line.split(None, 1)[1])
            elif line.startswith("!idle-other "):
                self.idle_other(path.name, line.split(None, 1)[1])
            elif line.startswith("!save "):
                self.vars[line.split()[1]] = self.last_modseq or "0"
            elif self.conn is None:
                self.steps.append(Step(path.name, line, ["<not connected>"]))
            else:
                self.run_command(path.name, line)
        for c in (self.conn, self.other):
            if c is not None:
                c.close()
        self.conn = self.other = None


def prepare(target) -> None:
    """The initial INBOX: the corpus messages, as another MDA would drop them."""
    for i, name in enumerate(INITIAL):
        target.drop((MESSAGES / name).read_bytes(), "alice", f"{MTIME0 + i * 3600}.M{i}P1.corpus",
                    MTIME0 + i * 3600)


def run_corpus(target) -> Runner:
    prepare(target)
    r = Runner(target)
    for script in SCRIPTS:
        r.run_script(script)
    return r


def compare(ref: Runner, other: Runner, out_dir: Path) -> list[tuple[str, str, list[str], list[str]]]:
    """The steps answered differently: (script, command, reference, other)."""
    assert [(s.script, s.command) for s in ref.steps] == [(s.script, s.command) for s in other.steps]
    report, diffs = [], []
    for a, b in zip(ref.steps, other.steps):
        same = a.transcript == b.transcript
        report.append({"script": a.script, "command": a.command, "same": same,
                       "reference": a.transcript, "other": b.transcript,
                       "other_raw": [x.decode("utf-8", "replace") for x in b.raw][:20]})
        if not same:
            diffs.append((a.script, a.command, a.transcript, b.transcript))
    (out_dir / "differential.json").write_text(json.dumps(report, indent=1))
    return diffs


def show(d) -> str:
    script, command, ref, other = d
    return (f"{script}: {command}\n    dovecot: " + "\n             ".join(ref)
            + "\n    tern:    " + "\n             ".join(other))


@need_dovecot
def test_dovecot_against_itself(tmp_path):
    """Two Dovecots, same corpus: the normalised transcripts are identical
    (the normaliser removes every instance-specific value and nothing else
    differs), and the corpus has at least 150 commands."""
    users = [(ALICE, ALICE_PW), (BOB, BOB_PW)]
    a = start_dovecot(users)
    b = start_dovecot(users)
    try:
        ra = run_corpus(DovecotTarget(a))
        time.sleep(1.1)  # a different second: different UIDVALIDITY and dates
        rb = run_corpus(DovecotTarget(b))
        diffs = compare(ra, rb, tmp_path)
        n = len(ra.steps)
        assert n >= 150, f"the corpus has {n} commands, the issue asks for at least 150"
        errors = [s for s in ra.steps if s.transcript and s.transcript[0].startswith("<")]
        assert not errors, [(s.script, s.command, s.transcript) for s in errors]
        assert not diffs, "\n\n".join(show(d) for d in diffs[:40]) + "\n" + a.log()
    finally:
        for dv in (a, b):
            dv.stop()
            shutil.rmtree(dv.base, ignore_errors=True)


@pytest.fixture(scope="module")
def tern_vs_dovecot(tmp_path_factory):
    """Both corpora run once; the per-script tests below compare them."""
    from conftest import TernServer, tern_bin
    if dovecot_missing():
        pytest.skip(dovecot_missing())
    if not tern_bin().is_file():
        pytest.fail(f"tern binary not found at {tern_bin()}", pytrace=False)
    out = tmp_path_factory.mktemp("imap-differential")
    dv = start_dovecot([(ALICE, ALICE_PW), (BOB, BOB_PW)])
    srv = TernServer(tmp_path_factory.mktemp("tern"), imap=True)
    srv.start()
    try:
        ref = run_corpus(DovecotTarget(dv))
        tern = run_corpus(TernTarget(srv))
        yield compare(ref, tern, out), out, srv.log(3000)
    finally:
        code = srv.stop()
        dv.stop()
        shutil.rmtree(dv.base, ignore_errors=True)
    assert code == 0, f"tern serve exited {code} after SIGTERM"


def test_differences_file_is_well_formed():
    """Every entry has a kind, an RFC reason and commands that exist."""
    known = parse_known_differences()
    commands = {(p.name, line.strip()) for p in SCRIPTS for line in p.read_text().splitlines()}
    commands = {(n, c.strip()) for n, c in commands}
    # `!idle-other CMD` also records CMD's own step as `!other CMD`
    commands |= {(n, "!other " + c[len("!idle-other "):]) for n, c in commands if c.startswith("!idle-other ")}
    text = (CORPUS / "DIFFERENCES.md").read_text()
    for d in known:
        assert d.at, f"{d.ident} lists no command"
        for key in d.at:
            assert key in commands, f"{d.ident}: {key} is not a command of the corpus"
        body = text.split(f"### {d.ident} ", 1)[1].split("\n### ", 1)[0]
        assert "RFC" in body, f"{d.ident} gives no RFC reason"
    idents = [d.ident for d in known]
    assert len(idents) == len(set(idents)), idents


@need_dovecot
@pytest.mark.parametrize("script", [p.name for p in SCRIPTS])
def test_tern_against_dovecot(tern_vs_dovecot, script):
    """One script's commands, Tern vs Dovecot. Fails on a difference not
    listed in DIFFERENCES.md, on a listed `tern-bug`, and on a listed
    difference that no longer occurs; a `tern-missing` one (a feature Tern
    lacks) makes the script xfail, with the list."""
    diffs, out, log = tern_vs_dovecot
    known = parse_known_differences()
    by_key: dict[tuple[str, str], Difference] = {}
    for d in known:
        for key in d.at:
            by_key[key] = d
    mine = [d for d in diffs if d[0] == script]
    occurred = {(d[0], d[1]) for d in mine}
    unexpected = [show(d) for d in mine if (d[0], d[1]) not in by_key]
    bugs = sorted({f"{by_key[(d[0], d[1])].ident}: {by_key[(d[0], d[1])].title}" for d in mine
                   if (d[0], d[1]) in by_key and by_key[(d[0], d[1])].kind == "tern-bug"})
    missing = sorted({f"{by_key[(d[0], d[1])].ident}: {by_key[(d[0], d[1])].title}" for d in mine
                      if (d[0], d[1]) in by_key and by_key[(d[0], d[1])].kind == "tern-missing"})
    stale = [f"{d.ident} `{k[1]}`" for d in known for k in d.at if k[0] == script and k not in occurred]
    msg = ""
    if unexpected:
        msg += (f"{len(unexpected)} command(s) answered differently, not in DIFFERENCES.md "
                f"(all steps: {out / 'differential.json'}):\n\n" + "\n\n".join(unexpected))
    if bugs:
        msg += "\n\nTern deviations listed in DIFFERENCES.md (tern-bug):\n" + "\n".join(bugs)
        msg += "\n\n" + "\n\n".join(show(d) for d in mine if (d[0], d[1]) in by_key
                                      and by_key[(d[0], d[1])].kind == "tern-bug")
    if stale:
        msg += "\n\nlisted in DIFFERENCES.md but no longer different (update the file):\n" + "\n".join(stale)
    assert not msg, msg
    if missing:
        pytest.xfail("Tern lacks (DIFFERENCES.md): " + "; ".join(missing))
