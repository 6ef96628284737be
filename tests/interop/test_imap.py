"""IMAP interop: real clients against Tern's IMAP listeners.

Python's imaplib (IMAP4 + STARTTLS, IMAP4_SSL), a raw socket for IDLE and the
Thunderbird-like flow (CONDSTORE, QRESYNC), curl's imap://, mbsync (isync)
and fetchmail. Every test runs against Tern ("tern") and, as a check of the
test itself, against a private Dovecot ("dovecot", the reference server; see
imapservers.py) — a test that passes on Dovecot and fails on Tern points at
Tern. Everything listens and connects on loopback only."""

from __future__ import annotations

import base64
import imaplib
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ALICE, ALICE_PW, BOB, BOB_PW, HOST
from imapservers import (DovecotTarget, SPECIAL_FOLDERS, TLS_NAME, TernTarget, dovecot_missing, start_dovecot,
                         wait_until)
from imapwire import RawImap

pytestmark = pytest.mark.timeout(120)

CORPUS = Path(__file__).resolve().parent / "imap_corpus" / "messages"


def msg(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


@pytest.fixture(params=["tern", "dovecot"])
def target(request):
    if request.param == "tern":
        srv = request.getfixturevalue("tern_factory")(imap=True)
        yield TernTarget(srv)
        return
    why = dovecot_missing()
    if why:
        pytest.skip(why)
    dv = start_dovecot([(ALICE, ALICE_PW), (BOB, BOB_PW)])
    try:
        yield DovecotTarget(dv)
    finally:
        dv.stop()
        shutil.rmtree(dv.base, ignore_errors=True)


def deliver_corpus(t, names, rcpt=ALICE):
    for n in names:
        t.deliver(msg(n), rcpt)


def login(t) -> imaplib.IMAP4:
    m = t.imaps()
    typ, _ = m.login(ALICE, ALICE_PW)
    assert typ == "OK"
    return m


def wait_exists(t, count: int, mailbox: str = "INBOX", timeout: float = 10) -> None:
    """Until STATUS shows `count` messages (SMTP delivery is asynchronous to IMAP)."""
    def check():
        m = login(t)
        try:
            typ, data = m.status(mailbox, "(MESSAGES)")
            return typ == "OK" and int(re.search(rb"MESSAGES (\d+)", data[0]).group(1)) >= count
        finally:
            m.logout()
    assert wait_until(check, timeout, 0.2), f"{mailbox} never reached {count} messages\n{t.log()}"


def fetch_map(data) -> dict[int, bytes]:
    """imaplib FETCH data -> {seq: raw response incl. literals}."""
    out: dict[int, bytes] = {}
    for item in data:
        if item is None or item == b")":
            continue
        raw = item[0] + item[1] if isinstance(item, tuple) else item
        seq = int(raw.split(b" ", 1)[0])
        out[seq] = out.get(seq, b"") + raw
    return out


def uids_of(m, criteria: str) -> list[int]:
    typ, data = m.uid("SEARCH", criteria)
    assert typ == "OK", (criteria, data)
    return [int(x) for x in data[0].split()]


# ---------------------------------------------------------------------------
# Connection, TLS, authentication
# ---------------------------------------------------------------------------

def test_capability_logindisabled_before_starttls(target):
    m = target.imap_plain(strict=True)
    try:
        caps = set(m.capabilities)
        assert "IMAP4REV1" in caps or "IMAP4REV2" in caps
        assert "STARTTLS" in caps and "LOGINDISABLED" in caps, caps
        # no mechanism that sends the password in the clear before TLS
        # (RFC 9051 11.1; challenge-response ones like SCRAM may be offered)
        assert not caps & {"AUTH=PLAIN", "AUTH=LOGIN"}, f"plaintext SASL offered before TLS: {caps}"
        with pytest.raises(imaplib.IMAP4.error):
            m.login(ALICE, ALICE_PW)
        m.host = TLS_NAME
        typ, _ = m.starttls(target.ssl_context())
        assert typ == "OK"
        typ, data = m.capability()
        after = set(data[0].decode().upper().split())
        assert "LOGINDISABLED" not in after and "STARTTLS" not in after, after
        assert "AUTH=PLAIN" in after, after
        typ, _ = m.login(ALICE, ALICE_PW)
        assert typ == "OK"
    finally:
        m.logout()


def test_login_on_plaintext_listener(target):
    m = target.imap_plain()
    assert "LOGINDISABLED" not in m.capabilities, m.capabilities
    assert m.login(ALICE, ALICE_PW)[0] == "OK"
    assert m.logout()[0] == "BYE"


def test_imaps_login_and_wrong_password(target):
    m = target.imaps()
    with pytest.raises(imaplib.IMAP4.error) as e:
        m.login(ALICE, "wrong password")
    assert "AUTHENTICATIONFAILED" in str(e.value), e.value
    assert m.login(ALICE, ALICE_PW)[0] == "OK"
    typ, data = m.capability()
    caps = data[0].decode().upper().split()
    for cap in ("IDLE", "UIDPLUS", "MOVE", "SPECIAL-USE", "CONDSTORE", "QRESYNC", "ENABLE", "NAMESPACE"):
        assert cap in caps, f"{cap} missing after login: {caps}"
    m.logout()


def test_authenticate_plain_over_starttls(target):
    m = target.imap_starttls()
    typ, _ = m.authenticate("PLAIN", lambda _challenge: f"\0{ALICE}\0{ALICE_PW}".encode())
    assert typ == "OK"
    typ, data = m.select("INBOX")
    assert typ == "OK"
    m.logout()
    # and with SASL-IR over a raw connection
    r = RawImap(HOST, target.imaps_port, tls=target.ssl_context(), server_name=TLS_NAME)
    try:
        ir = base64.b64encode(f"\0{BOB}\0{BOB_PW}".encode()).decode()
        untagged, tagged = r.command(f"AUTHENTICATE PLAIN {ir}")
        assert tagged.split()[1] == b"OK", (untagged, tagged)
        bad = base64.b64encode(f"\0{BOB}\0nope".encode()).decode()
        r2 = RawImap(HOST, target.imaps_port, tls=target.ssl_context(), server_name=TLS_NAME)
        untagged, tagged = r2.command(f"AUTHENTICATE PLAIN {bad}")
        assert tagged.split()[1] == b"NO", tagged
        r2.close()
    finally:
        r.close()


# ---------------------------------------------------------------------------
# Mailboxes
# ---------------------------------------------------------------------------

def list_entries(data) -> dict[str, set[str]]:
    out = {}
    for line in data:
        m = re.match(rb'\(([^)]*)\) (?:"."|NIL) (.+)$', line)
        assert m, line
        name = m.group(2).decode().strip('"')
        out[name] = {a.lower() for a in m.group(1).decode().split()}
    return out


def test_list_special_use(target):
    m = login(target)
    typ, data = m.list('""', "*")
    assert typ == "OK"
    boxes = list_entries(data)
    assert "INBOX" in boxes, boxes
    for name, use in SPECIAL_FOLDERS.items():
        assert name in boxes and use.lower() in boxes[name], f"{name} {use}: {boxes}"
    # RFC 6154: LIST (SPECIAL-USE) selects only mailboxes with a special use
    typ, data = m._simple_command("LIST", '(SPECIAL-USE)', '""', '"*"')
    assert typ == "OK"
    only = list_entries(m.untagged_responses.pop("LIST"))
    assert set(only) == set(SPECIAL_FOLDERS), only
    # RETURN (SPECIAL-USE) on an ordinary LIST
    typ, _ = m._simple_command("LIST", '""', '"%"', "RETURN", "(SPECIAL-USE)")
    assert typ == "OK"
    ret = list_entries(m.untagged_responses.pop("LIST"))
    assert "\\trash" in ret["Trash"], ret
    m.logout()


def test_status_select_examine(target):
    deliver_corpus(target, ["01-plain.eml", "02-multipart.eml", "03-encoded.eml"])
    wait_exists(target, 3)
    m = login(target)
    typ, data = m.status("INBOX", "(MESSAGES UNSEEN UIDNEXT UIDVALIDITY RECENT)")
    assert typ == "OK"
    st = dict(re.findall(rb"([A-Z]+) (\d+)", data[0]))
    assert st[b"MESSAGES"] == b"3" and st[b"UNSEEN"] == b"3" and int(st[b"UIDNEXT"]) >= 4, data
    assert int(st[b"UIDVALIDITY"]) > 0
    typ, data = m.status("Sent", "(MESSAGES UIDNEXT)")
    assert typ == "OK" and b"MESSAGES 0" in data[0], data

    typ, data = m.select("INBOX", readonly=True)  # EXAMINE
    assert typ == "OK" and data == [b"3"], data
    assert "READ-ONLY" in m.untagged_responses, m.untagged_responses
    # EXAMINE: no change to the mailbox (RFC 3501 6.3.2); a server may
    # refuse the STORE (NO) or ignore it, but the flag must not be set
    try:
        m.store("1", "+FLAGS", "(\\Deleted)")
    except imaplib.IMAP4.error:
        pass
    typ, data = m.fetch("1", "(FLAGS)")
    assert b"\\Deleted" not in data[0], f"STORE changed a message of an EXAMINEd mailbox: {data}"
    m.close()
    typ, data = m.select("INBOX")
    assert typ == "OK" and data == [b"3"]
    assert "READ-WRITE" in m.untagged_responses, m.untagged_responses
    uv = m.untagged_responses.get("UIDVALIDITY")
    assert uv and int(uv[0]) == int(st[b"UIDVALIDITY"]), (uv, st)
    typ, data = m.select("No/Such/Box")
    assert typ == "NO", data
    m.logout()


def test_fetch_items(target):
    deliver_corpus(target, ["01-plain.eml", "02-multipart.eml", "03-encoded.eml"])
    wait_exists(target, 3)
    m = login(target)
    m.select("INBOX")
    typ, data = m.fetch("1:3", "(FLAGS UID RFC822.SIZE)")
    assert typ == "OK"
    got = fetch_map(data)
    assert sorted(got) == [1, 2, 3], data
    for seq, raw in got.items():
        assert b"\\Seen" not in raw, raw
        assert re.search(rb"UID \d+", raw) and re.search(rb"RFC822\.SIZE \d+", raw), raw

    typ, data = m.fetch("1", "(BODY.PEEK[HEADER])")
    hdr = data[0][1]
    assert b"Subject: Quarterly report\r\n" in hdr and hdr.endswith(b"\r\n\r\n"), hdr
    typ, data = m.fetch("1", "(FLAGS)")
    assert b"\\Seen" not in data[0], "BODY.PEEK set \\Seen"

    typ, data = m.fetch("1", "(RFC822.SIZE BODY[])")
    raw = data[0][0] + data[0][1]
    size = int(re.search(rb"RFC822\.SIZE (\d+)", raw).group(1))
    body = data[0][1]
    assert len(body) == size, (len(body), size)
    assert body.endswith(msg("01-plain.eml")), "BODY[] is not the delivered message"
    typ, data = m.fetch("1", "(FLAGS)")
    assert b"\\Seen" in data[0][0] if isinstance(data[0], tuple) else b"\\Seen" in data[0], data

    typ, data = m.fetch("2", "(BODYSTRUCTURE)")
    bs = data[0] if isinstance(data[0], bytes) else data[0][0] + data[0][1]
    low = bs.lower()
    assert b'"mixed"' in low and b'"alternative"' in low, bs
    assert b'("text" "plain" ("charset" "utf-8")' in low and b'"html"' in low, bs
    assert b'"application" "pdf"' in low and b'"itinerary.pdf"' in low and b'"base64"' in low, bs

    typ, data = m.fetch("3", "(ENVELOPE)")
    env = data[0] if isinstance(data[0], bytes) else data[0][0] + data[0][1]
    assert b'"Wed, 04 Sep 2024 08:15:00 +0200"' in env, env
    assert b"=?UTF-8?B?R3LDvMOfZSBhdXMgTcO8bmNoZW4=?=" in env, env
    assert b'"juergen" "remote.test"' in env, env
    assert b"<gruesse-3@remote.test>" in env, env

    typ, data = m.fetch("2", "(BODY.PEEK[1.1] BODY.PEEK[2.MIME])")
    joined = b"".join(x[1] for x in data if isinstance(x, tuple))
    assert b"Here are the photos" in joined and b"Content-Disposition: attachment" in joined, data
    m.logout()


def test_uid_search(target):
    deliver_corpus(target, ["01-plain.eml", "02-multipart.eml", "03-encoded.eml", "04-reply.eml"])
    wait_exists(target, 4)
    m = login(target)
    m.select("INBOX")
    allu = uids_of(m, "ALL")
    assert len(allu) == 4 and allu == sorted(allu), allu
    assert uids_of(m, "UNSEEN") == allu
    m.uid("STORE", str(allu[0]), "+FLAGS", "(\\Seen)")
    assert uids_of(m, "UNSEEN") == allu[1:]
    assert uids_of(m, "SEEN") == allu[:1]
    assert uids_of(m, "TEXT banana") == [allu[0], allu[3]]
    assert uids_of(m, "BODY banana") == [allu[0], allu[3]]
    assert uids_of(m, 'FROM "carol@remote.test"') == [allu[1]]
    assert uids_of(m, "FROM bob") == [allu[0]]
    assert uids_of(m, 'SUBJECT "quarterly"') == [allu[0], allu[3]]
    assert uids_of(m, "SUBJECT nothing-like-this") == []
    assert uids_of(m, "NOT SUBJECT quarterly") == [allu[1], allu[2]]
    assert uids_of(m, "OR FROM carol SUBJECT Re:") == [allu[1], allu[3]]
    assert uids_of(m, 'HEADER Message-ID "<photos-2@remote.test>"') == [allu[1]]
    assert uids_of(m, "SENTBEFORE 04-Sep-2024") == [allu[0], allu[1]]
    assert uids_of(m, f"UID {allu[1]}:*") == allu[1:]
    m.logout()


# ---------------------------------------------------------------------------
# Changes: flags, expunge, move, copy, append, mailbox management
# ---------------------------------------------------------------------------

def test_store_flags_and_expunge(target):
    deliver_corpus(target, ["01-plain.eml", "02-multipart.eml", "03-encoded.eml"])
    wait_exists(target, 3)
    m = login(target)
    m.select("INBOX")
    typ, data = m.store("1", "+FLAGS", "(\\Seen)")
    assert typ == "OK" and b"\\Seen" in data[0], data
    typ, data = m.store("2", "+FLAGS.SILENT", "(\\Deleted $Work)")
    assert typ == "OK"
    typ, data = m.fetch("2", "(FLAGS)")
    assert b"\\Deleted" in data[0] and b"$Work" in data[0], data
    typ, data = m.store("1", "-FLAGS", "(\\Seen)")
    assert b"\\Seen" not in data[0], data
    typ, data = m.expunge()
    assert typ == "OK" and data == [b"2"], data
    typ, data = m.search(None, "ALL")
    assert data == [b"1 2"], data
    m.logout()
    # flags are persistent (a new session sees them)
    m = login(target)
    m.select("INBOX")
    typ, data = m.fetch("1:*", "(FLAGS)")
    assert all(b"\\Deleted" not in d for d in data), data
    m.logout()


def test_uid_move_to_trash_and_copy(target):
    deliver_corpus(target, ["01-plain.eml", "02-multipart.eml", "03-encoded.eml"])
    wait_exists(target, 3)
    m = login(target)
    m.select("INBOX")
    allu = uids_of(m, "ALL")
    typ, data = m.uid("MOVE", str(allu[0]), "Trash")
    assert typ == "OK", data
    copyuid = [v for v in m.untagged_responses.get("OK", []) if v.startswith(b"[COPYUID")] + \
        [v for v in data if v and b"COPYUID" in v]
    assert copyuid, f"no COPYUID after UID MOVE: {m.untagged_responses} {data}"
    assert uids_of(m, "ALL") == allu[1:]
    typ, data = m.copy("1", "Archive")
    assert typ == "OK"
    assert b"COPYUID" in data[0] or any(b"COPYUID" in x for x in m.untagged_responses.get("COPYUID", [b""])), data
    assert uids_of(m, "ALL") == allu[1:], "COPY removed the source"
    for box, expect in (("Trash", 1), ("Archive", 1), ("INBOX", 2)):
        typ, data = m.status(box, "(MESSAGES)")
        assert f"MESSAGES {expect}".encode() in data[0], (box, data)
    m.select("Trash")
    typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"Quarterly report" in data[0][1], data
    m.logout()


def test_append_to_sent_with_appenduid(target):
    m = login(target)
    typ, data = m.append("Sent", "(\\Seen)", imaplib.Time2Internaldate(1725890400), msg("08-draft.eml"))
    assert typ == "OK", data
    mt = re.search(rb"\[APPENDUID (\d+) (\d+)\]", data[0])
    assert mt, f"no APPENDUID: {data}"
    uidvalidity, uid = int(mt.group(1)), int(mt.group(2))
    typ, data = m.status("Sent", "(MESSAGES UIDVALIDITY)")
    assert b"MESSAGES 1" in data[0] and f"UIDVALIDITY {uidvalidity}".encode() in data[0], data
    m.select("Sent")
    typ, data = m.uid("FETCH", str(uid), "(FLAGS INTERNALDATE BODY.PEEK[])")
    raw = data[0][0]
    # date-day-fixed is (SP DIGIT) / 2DIGIT (RFC 3501 9, RFC 9051 9): both forms are right
    assert b"\\Seen" in raw and re.search(rb'INTERNALDATE "( 9|09)-Sep-2024 14:00:00 \+0000"', raw), raw
    assert data[0][1] == msg("08-draft.eml")
    # APPEND to a mailbox that does not exist: NO [TRYCREATE]
    typ, data = m.append("Nonexistent", None, None, msg("08-draft.eml"))
    assert typ == "NO" and b"TRYCREATE" in data[0], data
    m.logout()


def test_create_rename_delete(target):
    m = login(target)
    assert m.create("Projects")[0] == "OK"
    assert m.create("Projects/Tern")[0] == "OK"
    typ, data = m.create("Projects")
    assert typ == "NO", data
    m.append("Projects/Tern", None, None, msg("01-plain.eml"))
    boxes = list_entries(m.list('""', "Projects*")[1])
    assert "Projects" in boxes and "Projects/Tern" in boxes, boxes
    assert "\\haschildren" in boxes["Projects"], boxes
    assert m.rename("Projects/Tern", "Projects/Rust")[0] == "OK"
    typ, data = m.status("Projects/Rust", "(MESSAGES)")
    assert b"MESSAGES 1" in data[0], data
    typ, data = m.status("Projects/Tern", "(MESSAGES)")
    assert typ == "NO", data
    assert m.delete("Projects/Rust")[0] == "OK"
    assert m.delete("Projects")[0] == "OK"
    boxes = list_entries(m.list('""', "*")[1])
    assert not any(b.startswith("Projects") for b in boxes), boxes
    typ, data = m.delete("INBOX")
    assert typ == "NO", data
    m.logout()


# ---------------------------------------------------------------------------
# IDLE and the Thunderbird-like flow
# ---------------------------------------------------------------------------

def raw_login(target) -> RawImap:
    r = RawImap(HOST, target.imaps_port, tls=target.ssl_context(), server_name=TLS_NAME)
    ir = base64.b64encode(f"\0{ALICE}\0{ALICE_PW}".encode()).decode()
    r.ok(f"AUTHENTICATE PLAIN {ir}")
    return r


def test_idle_sees_smtp_delivery_within_a_second(target):
    deliver_corpus(target, ["01-plain.eml"])
    wait_exists(target, 1)
    r = raw_login(target)
    try:
        untagged = r.ok("SELECT INBOX")
        assert b"* 1 EXISTS\r\n" in untagged, untagged
        tag = r.idle_start()
        time.sleep(0.2)
        t0 = time.monotonic()
        target.deliver(msg("09-late.eml"), ALICE)
        got = r.idle_wait(lambda x: x == b"* 2 EXISTS\r\n", 5)
        elapsed = time.monotonic() - t0
        assert b"* 2 EXISTS\r\n" in got, f"no EXISTS during IDLE after 5 s: {got}\n{target.log()}"
        assert elapsed < 1.0, f"EXISTS came {elapsed:.2f}s after the SMTP 250 (want < 1 s)"
        untagged, tagged = r.idle_done(tag)
        assert tagged.split()[1] == b"OK", tagged
        untagged = r.ok("FETCH 2 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert any(b"Arrives during IDLE" in u for u in untagged), untagged
    finally:
        r.close()


def status_items(line: bytes) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in re.findall(rb"([A-Z]+) (\d+)", line)}


def test_thunderbird_like_flow(target):
    deliver_corpus(target, ["01-plain.eml", "02-multipart.eml"])
    wait_exists(target, 2)
    r = RawImap(HOST, target.imaps_port, tls=target.ssl_context(), server_name=TLS_NAME)
    try:
        caps = r.ok("CAPABILITY")
        assert b"AUTH=PLAIN" in caps[0], caps
        ir = base64.b64encode(f"\0{ALICE}\0{ALICE_PW}".encode()).decode()
        r.ok(f"AUTHENTICATE PLAIN {ir}")
        caps = b" ".join(r.ok("CAPABILITY")).upper()
        for c in (b"CONDSTORE", b"QRESYNC", b"IDLE", b"MOVE", b"UIDPLUS", b"SPECIAL-USE"):
            assert c in caps, caps
        r.ok('ID ("name" "Thunderbird" "version" "128.0")')
        ns = r.ok("NAMESPACE")
        assert any(u.startswith(b"* NAMESPACE") for u in ns), ns
        lines = r.ok('LIST (SPECIAL-USE) "" "*"')
        specials = {re.search(rb'"([^"]+)"\r\n$|(\S+)\r\n$', u).group(0).strip().strip(b'"').decode(): u
                    for u in lines if u.startswith(b"* LIST")}
        assert set(specials) == set(SPECIAL_FOLDERS), lines
        lines = r.ok('LIST "" "*"')
        names = [re.search(rb'(?:"([^"]+)"|(\S+))\r\n$', u) for u in lines if u.startswith(b"* LIST")]
        names = [(n.group(1) or n.group(2)).decode() for n in names]
        assert "INBOX" in names
        for name in names:
            st = r.ok(f'STATUS "{name}" (MESSAGES UNSEEN RECENT UIDNEXT UIDVALIDITY HIGHESTMODSEQ)')
            assert st and st[0].startswith(b"* STATUS"), (name, st)
        sel = r.ok("SELECT INBOX (CONDSTORE)")
        joined = b"".join(sel)
        assert b"* 2 EXISTS" in joined and b"HIGHESTMODSEQ" in joined, sel
        uidvalidity = int(re.search(rb"UIDVALIDITY (\d+)", joined).group(1))
        hdrs = r.ok("UID FETCH 1:* (UID RFC822.SIZE FLAGS MODSEQ BODY.PEEK[HEADER.FIELDS "
                    "(From To Cc Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To "
                    "Content-Type Reply-To)])")
        assert len([h for h in hdrs if b" FETCH " in h]) == 2, hdrs
        assert b"Subject: Holiday photos" in b"".join(hdrs)
        # IDLE, new mail arrives
        tag = r.idle_start()
        time.sleep(0.2)
        target.deliver(msg("09-late.eml"), ALICE)
        got = r.idle_wait(lambda x: x == b"* 3 EXISTS\r\n", 5)
        assert b"* 3 EXISTS\r\n" in got, got
        r.idle_done(tag)
        new = r.ok("UID FETCH 3:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (Subject)])")
        assert b"Arrives during IDLE" in b"".join(new), new
        r.ok("UID STORE 1 +FLAGS (\\Seen)")
        moved = r.ok("UID MOVE 2 Trash")
        assert any(b"COPYUID" in u for u in moved), moved
        assert b"* 2 EXPUNGE\r\n" in moved or any(b"VANISHED" in u for u in moved), moved
        hm = r.ok("STATUS INBOX (HIGHESTMODSEQ)")
        modseq = status_items(hm[0])["HIGHESTMODSEQ"]
        untagged, tagged = r.command("APPEND Sent (\\Seen) ", msg("08-draft.eml"))
        assert tagged.split()[1] == b"OK" and b"APPENDUID" in tagged, tagged
        r.command("LOGOUT")
    finally:
        r.close()
    # a change made by another client while Thunderbird is away
    m = login(target)
    m.select("INBOX")
    m.uid("STORE", "3", "+FLAGS", "(\\Deleted)")
    m.expunge()
    m.logout()
    r = raw_login(target)
    try:
        enabled = r.ok("ENABLE QRESYNC")
        assert any(b"QRESYNC" in u.upper() for u in enabled), enabled
        sel = r.ok(f"SELECT INBOX (QRESYNC ({uidvalidity} {modseq}))")
        joined = b"".join(sel)
        assert b"* VANISHED (EARLIER) 3\r\n" in joined, sel
        assert b"* 1 EXISTS" in joined, sel
        # a client with an older modseq learns of the MOVE too (UID 2)
        sel = r.ok(f"SELECT INBOX (QRESYNC ({uidvalidity} 1 1:3))")
        v = [u for u in sel if u.startswith(b"* VANISHED (EARLIER)")]
        assert v and set(re.split(rb"[,:]", v[0].split()[-1])) >= {b"2", b"3"}, sel
        r.command("LOGOUT")
    finally:
        r.close()


# ---------------------------------------------------------------------------
# Other clients: curl, mbsync, fetchmail
# ---------------------------------------------------------------------------

CURL = shutil.which("curl")
MBSYNC = shutil.which("mbsync")
FETCHMAIL = shutil.which("fetchmail")


def run(args, timeout=60, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(args, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)
    p.output = (p.stdout + p.stderr).decode("utf-8", "replace")
    p.text = p.stdout.decode("utf-8", "replace")
    return p


def test_curl_imap(target, tmp_path):
    if CURL is None:
        pytest.skip("curl not installed (.ci/run installs it)")
    deliver_corpus(target, ["01-plain.eml", "02-multipart.eml"])
    wait_exists(target, 2)
    base = ["curl", "-sS", "--max-time", "20", "--cacert", str(target.cert_path),
            "--resolve", f"{TLS_NAME}:{target.imaps_port}:{HOST}",
            "--resolve", f"{TLS_NAME}:{target.imap_port}:{HOST}",
            "--user", f"{ALICE}:{ALICE_PW}"]
    p = run(base + [f"imaps://{TLS_NAME}:{target.imaps_port}/"])
    assert p.returncode == 0, p.output
    assert "INBOX" in p.text and "Trash" in p.text, p.text
    p = run(base + [f"imaps://{TLS_NAME}:{target.imaps_port}/INBOX;UID=1"])
    assert p.returncode == 0, p.output
    assert p.stdout.endswith(msg("01-plain.eml")), p.stdout
    # plain imap:// with STARTTLS required (--ssl-reqd)
    p = run(base + ["--ssl-reqd", f"imap://{TLS_NAME}:{target.imap_port}/INBOX?SUBJECT%20Holiday"])
    assert p.returncode == 0, p.output
    assert re.search(r"\* SEARCH 2\b", p.text), p.text
    # upload (APPEND) to Sent, then read it back by UID
    draft = tmp_path / "draft.eml"
    draft.write_bytes(msg("08-draft.eml"))
    p = run(base + ["-T", str(draft), f"imaps://{TLS_NAME}:{target.imaps_port}/Sent"])
    assert p.returncode == 0, p.output
    p = run(base + [f"imaps://{TLS_NAME}:{target.imaps_port}/Sent;UID=1"])
    assert p.returncode == 0 and p.stdout == msg("08-draft.eml"), p.output


def test_mbsync_two_way(target, tmp_path):
    if MBSYNC is None:
        pytest.skip("mbsync not installed (.ci/run installs isync)")
    deliver_corpus(target, ["01-plain.eml", "02-multipart.eml", "03-encoded.eml"])
    wait_exists(target, 3)
    local = tmp_path / "local"
    local.mkdir()
    pwfile = tmp_path / "pw"
    pwfile.write_text(ALICE_PW)
    rc = tmp_path / "mbsyncrc"
    rc.write_text(f"""\
IMAPAccount tern
Host {HOST}
Port {target.imaps_port}
User {ALICE}
PassCmd "cat {pwfile}"
SSLType IMAPS
CertificateFile {target.cert_path}
Timeout 20

IMAPStore remote
Account tern

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns INBOX Sent Trash
Create Both
Expunge Both
SyncState *
Sync All
""")
    # mbsync checks the certificate's name against Host; the generated one
    # names localhost, so connect through that name (resolving to loopback
    # only: /etc/hosts maps localhost to 127.0.0.1)
    rc.write_text(rc.read_text().replace(f"Host {HOST}", f"Host {TLS_NAME}"))
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    p = run([MBSYNC, "-c", str(rc), "-a"], env=env)
    assert p.returncode == 0, p.output + target.log()
    cur = list((local / "INBOX" / "cur").iterdir()) + list((local / "INBOX" / "new").iterdir())
    assert len(cur) == 3, (cur, p.output)
    # locally: mark one seen, flag another; add a message to Sent
    files = sorted(cur)
    seen = files[0]
    seen.rename(local / "INBOX" / "cur" / (seen.name.split(":2,")[0] + ":2,S"))
    (local / "Sent" / "cur").mkdir(parents=True, exist_ok=True)
    (local / "Sent" / "cur" / f"{int(time.time())}.local1.test:2,S").write_bytes(msg("08-draft.eml"))
    # remotely: flag a message
    m = login(target)
    m.select("INBOX")
    m.store("3", "+FLAGS", "(\\Flagged)")
    m.logout()
    p = run([MBSYNC, "-c", str(rc), "-a"], env=env)
    assert p.returncode == 0, p.output
    m = login(target)
    m.select("INBOX")
    typ, data = m.fetch("1:*", "(FLAGS)")
    seen_count = sum(1 for d in data if b"\\Seen" in d)
    assert seen_count == 1, data
    typ, data = m.status("Sent", "(MESSAGES)")
    assert b"MESSAGES 1" in data[0], data
    m.logout()
    local_flags = [f.name.split(":2,")[-1] for f in (local / "INBOX" / "cur").iterdir()]
    assert any("F" in fl for fl in local_flags), local_flags
    # a message deleted locally is expunged on the server (Expunge Both)
    victim = next(f for f in (local / "INBOX" / "cur").iterdir() if "S" in f.name.split(":2,")[-1])
    victim_id = re.search(rb"(?im)^Message-ID: (<[^>]+>)", victim.read_bytes()).group(1).decode()
    victim.unlink()
    p = run([MBSYNC, "-c", str(rc), "-a"], env=env)
    assert p.returncode == 0, p.output
    m = login(target)
    typ, data = m.status("INBOX", "(MESSAGES)")
    assert b"MESSAGES 2" in data[0], f"local deletion not propagated: {data}\n{p.output}"
    m.select("INBOX")
    typ, data = m.search(None, "HEADER", "Message-ID", f'"{victim_id}"')
    assert data == [b""], f"the deleted message {victim_id} is still there: {data}"
    m.logout()


def fetchmail_rc(tmp_path, target, keep: bool, mda_out: Path) -> Path:
    rc = tmp_path / "fetchmailrc"
    rc.write_text(f"""\
set no syslog
set no bouncemail
poll {TLS_NAME} with proto IMAP port {target.imaps_port} timeout 20
  user "{ALICE}" there with password "{ALICE_PW}" is "tester" here
  ssl sslcertck sslcertfile "{target.cert_path}"
  {"keep" if keep else "nokeep"}
  mda "/bin/sh -c 'cat > {mda_out}/$(date +%s%N).eml'"
""")
    rc.chmod(0o600)
    return rc


def test_fetchmail_keep_and_delete(target, tmp_path):
    if FETCHMAIL is None:
        pytest.skip("fetchmail not installed (.ci/run installs it)")
    deliver_corpus(target, ["01-plain.eml", "02-multipart.eml"])
    wait_exists(target, 2)
    out = tmp_path / "out"
    out.mkdir()
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "FETCHMAILHOME": str(tmp_path)}
    rc = fetchmail_rc(tmp_path, target, True, out)
    p = run([FETCHMAIL, "-f", str(rc), "--nodetach", "--all", "-v"], env=env)
    assert p.returncode == 0, p.output + target.log()
    got = sorted(out.iterdir())
    assert len(got) == 2, (got, p.output)
    assert any(b"Subject: Holiday photos" in g.read_bytes() for g in got)
    m = login(target)
    typ, data = m.status("INBOX", "(MESSAGES)")
    assert b"MESSAGES 2" in data[0], f"--keep deleted messages: {data}"
    m.logout()
    rc = fetchmail_rc(tmp_path, target, False, out)
    p = run([FETCHMAIL, "-f", str(rc), "--nodetach", "--all", "-v"], env=env)
    assert p.returncode == 0, p.output
    assert len(list(out.iterdir())) == 4
    m = login(target)
    typ, data = m.status("INBOX", "(MESSAGES)")
    assert b"MESSAGES 0" in data[0], f"without --keep the messages stay: {data}"
    m.logout()


# ---------------------------------------------------------------------------
# Extensions and limits (servers configured per test)
# ---------------------------------------------------------------------------

def servers(tern_xfail: str | None = None, dovecot_skip: str | None = None):
    """Parameters "tern" and "dovecot" for `make_target`; `tern_xfail` marks
    what Tern lacks (strict: the test fails once Tern has it), `dovecot_skip`
    what the reference server does not offer."""
    return [
        pytest.param("tern", marks=[pytest.mark.xfail(strict=True, reason=tern_xfail)] if tern_xfail else []),
        pytest.param("dovecot", marks=[pytest.mark.skip(reason=dovecot_skip)] if dovecot_skip else []),
    ]


@pytest.fixture
def make_target(request):
    started = []

    def make(kind: str, *, tern_config=None, dovecot_conf: str = "", dovecot_imap_plugins: str = ""):
        if kind == "tern":
            return TernTarget(request.getfixturevalue("tern_factory")(imap=True, **(tern_config or {})))
        why = dovecot_missing()
        if why:
            pytest.skip(why)
        dv = start_dovecot([(ALICE, ALICE_PW), (BOB, BOB_PW)], dovecot_conf, dovecot_imap_plugins)
        started.append(dv)
        return DovecotTarget(dv)

    yield make
    for dv in started:
        dv.stop()
        shutil.rmtree(dv.base, ignore_errors=True)


def test_literal_plus_append(target):
    """LITERAL+ (RFC 7888): APPEND with a non-synchronising literal, no "+" wait."""
    r = raw_login(target)
    try:
        caps = b" ".join(r.ok("CAPABILITY")).upper()
        assert b"LITERAL+" in caps, caps
        data = msg("08-draft.eml")
        tag = r.next_tag()
        r.send(f"{tag} APPEND Sent (\\Seen) {{{len(data)}+}}\r\n".encode() + data + b"\r\n")
        untagged, tagged = r.read_until_tagged(tag)
        assert tagged.split()[1] == b"OK" and b"APPENDUID" in tagged, (untagged, tagged)
        assert not any(u.startswith(b"+") for u in untagged), f"continuation sent for a LITERAL+: {untagged}"
        st = r.ok("STATUS Sent (MESSAGES)")
        assert b"MESSAGES 1" in st[0], st
    finally:
        r.close()


def scram_sha256(user: str, password: str):
    """A SCRAM-SHA-256 client (RFC 5802/7677) as an imaplib authobject; the
    server's final message is verified."""
    import hashlib
    import hmac
    import os as _os
    cnonce = base64.b64encode(_os.urandom(18)).decode()
    first_bare = f"n={user},r={cnonce}"
    state = {"step": 0}

    def step(challenge: bytes) -> bytes:
        if state["step"] == 0:
            state["step"] = 1
            return ("n,," + first_bare).encode()
        if state["step"] == 1:
            state["step"] = 2
            server_first = challenge.decode()
            attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
            assert attrs["r"].startswith(cnonce), server_first
            salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
            client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
            stored = hashlib.sha256(client_key).digest()
            without_proof = f"c=biws,r={attrs['r']}"
            auth_msg = f"{first_bare},{server_first},{without_proof}".encode()
            sig = hmac.new(stored, auth_msg, hashlib.sha256).digest()
            proof = bytes(a ^ b for a, b in zip(client_key, sig))
            server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
            state["expect"] = base64.b64encode(hmac.new(server_key, auth_msg, hashlib.sha256).digest()).decode()
            return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()
        final = challenge.decode()
        assert final == "v=" + state["expect"], f"server signature wrong: {final}"
        state["verified"] = True
        return b""

    return step, state


def test_authenticate_login_and_scram_sha256(target):
    m = target.imaps()
    answers = iter([ALICE.encode(), ALICE_PW.encode()])
    typ, _ = m.authenticate("LOGIN", lambda _c: next(answers))
    assert typ == "OK"
    m.logout()
    m = target.imaps()
    step, state = scram_sha256(ALICE, ALICE_PW)
    typ, data = m.authenticate("SCRAM-SHA-256", step)
    assert typ == "OK", data
    assert state.get("verified") or b"v=" in b"".join(d for d in data if d), (state, data)
    m.logout()
    m = target.imaps()
    step, _ = scram_sha256(ALICE, "wrong password")
    with pytest.raises((imaplib.IMAP4.error, AssertionError)):
        m.authenticate("SCRAM-SHA-256", step)
    m.shutdown()


def test_compress_deflate(target):
    """COMPRESS=DEFLATE (RFC 4978), asked for by issue 12."""
    import zlib
    r = raw_login(target)
    try:
        caps = b" ".join(r.ok("CAPABILITY")).upper()
        assert b"COMPRESS=DEFLATE" in caps, caps
        r.ok("COMPRESS DEFLATE")
        assert not r.buf
        comp, decomp = zlib.compressobj(wbits=-15), zlib.decompressobj(wbits=-15)
        r.sock.sendall(comp.compress(b"Z1 NOOP\r\nZ2 STATUS INBOX (MESSAGES)\r\n") + comp.flush(zlib.Z_SYNC_FLUSH))
        out = b""
        deadline = time.monotonic() + 5
        while b"Z2 OK" not in out and time.monotonic() < deadline:
            out += decomp.decompress(r.sock.recv(65536))
        assert b"Z1 OK" in out and b"* STATUS" in out and b"Z2 OK" in out, out
    finally:
        r.close()


@pytest.mark.parametrize("server", servers())
def test_quota_getquotaroot_and_overquota(make_target, server, tmp_path):
    """QUOTA (RFC 9208): GETQUOTAROOT reports usage and limit (KiB); an APPEND
    past the limit fails with [OVERQUOTA]."""
    t = make_target(server, tern_config={"imap_settings": {"quota": 20 * 1024}},
                    dovecot_conf="mail_plugins = $mail_plugins quota\n"
                                 "plugin {\n  quota = maildir:User quota\n  quota_rule = *:storage=20K\n}",
                    dovecot_imap_plugins="imap_quota")
    r = raw_login(t)
    try:
        caps = b" ".join(r.ok("CAPABILITY")).upper()
        assert b"QUOTA" in caps, caps
        out = r.ok("GETQUOTAROOT INBOX")
        root = [u for u in out if u.startswith(b"* QUOTAROOT")]
        quota = [u for u in out if u.startswith(b"* QUOTA ")]
        assert root and quota, out
        m = re.search(rb"STORAGE (\d+) (\d+)", quota[0])
        assert m and int(m.group(2)) == 20 and int(m.group(1)) == 0, quota
        untagged, tagged = r.command("APPEND INBOX ", msg("02-multipart.eml"))
        assert tagged.split()[1] == b"OK", tagged
        out = r.ok("GETQUOTAROOT INBOX")
        used = int(re.search(rb"STORAGE (\d+) ", b"".join(out)).group(1))
        assert used >= 1, out
        big = b"Subject: big\r\n\r\n" + b"x" * 76 + b"\r\n"
        big = big * 400  # ~31 KB
        untagged, tagged = r.command("APPEND INBOX ", big)
        assert tagged.split()[1] == b"NO" and b"[OVERQUOTA]" in tagged, tagged
        st = r.ok("STATUS INBOX (MESSAGES)")
        assert b"MESSAGES 1" in st[0], st
    finally:
        r.close()


@pytest.mark.parametrize("server", servers())
def test_sessions_per_user_limit(make_target, server):
    """Connections per user are bounded (issue 12: configurable, e.g. 20):
    with a limit of 3, a 4th session of the same user is refused, another
    user is not affected, and a slot freed by LOGOUT can be used again."""
    t = make_target(server, tern_config={"imap_settings": {"max_sessions_per_user": 3}},
                    dovecot_conf="mail_max_userip_connections = 3")
    sessions = [raw_login(t) for _ in range(3)]
    try:
        extra = RawImap(HOST, t.imaps_port, tls=t.ssl_context(), server_name=TLS_NAME)
        ir = base64.b64encode(f"\0{ALICE}\0{ALICE_PW}".encode()).decode()
        try:
            untagged, tagged = extra.command(f"AUTHENTICATE PLAIN {ir}")
            refused = tagged.split()[1] != b"OK"
        except Exception:
            refused = True
        assert refused, f"a 4th session was accepted: {tagged!r}"
        extra.close()
        bob = RawImap(HOST, t.imaps_port, tls=t.ssl_context(), server_name=TLS_NAME)
        bob.ok("AUTHENTICATE PLAIN " + base64.b64encode(f"\0{BOB}\0{BOB_PW}".encode()).decode())
        bob.close()
        sessions.pop().command("LOGOUT")
        again = None
        for _ in range(40):
            try:
                again = raw_login(t)
                break
            except Exception:
                time.sleep(0.05)
        assert again is not None, "the freed slot never became usable"
        sessions.append(again)
    finally:
        for s in sessions:
            s.close()


@pytest.mark.parametrize("server", servers(dovecot_skip="Dovecot 2.3 has no IMAP4rev2, UTF8=ACCEPT or OBJECTID"))
def test_imap4rev2_utf8_objectid(make_target, server):
    """ENABLE IMAP4rev2 / UTF8=ACCEPT (RFC 9051, RFC 6855): UTF-8 mailbox
    names without modified UTF-7; OBJECTID (RFC 8474): MAILBOXID and EMAILID."""
    t = make_target(server)
    deliver_corpus(t, ["03-encoded.eml"])
    wait_exists(t, 1)
    r = raw_login(t)
    try:
        en = b"".join(r.ok("ENABLE IMAP4rev2 UTF8=ACCEPT")).upper()
        assert b"IMAP4REV2" in en and b"UTF8=ACCEPT" in en, en
        r.ok('CREATE "Grüße"')
        lines = r.ok('LIST "" "*"')
        assert any("Grüße".encode() in u for u in lines), lines
        st = r.ok('STATUS "Grüße" (MESSAGES MAILBOXID)')
        assert b"MAILBOXID (" in st[0], st
        sel = b"".join(r.ok("SELECT INBOX"))
        assert b"MAILBOXID (" in sel, sel
        f = b"".join(r.ok("FETCH 1 (EMAILID SAVEDATE)"))
        assert re.search(rb"EMAILID \([A-Za-z0-9_-]+\)", f) and b"SAVEDATE" in f, f
    finally:
        r.close()
    # an IMAP4rev1 client sees the same mailbox in modified UTF-7 (RFC 3501 5.1.3)
    m = login(t)
    boxes = list_entries(m.list('""', "*")[1])
    assert "Gr&APwA3w-e" in boxes, boxes
    m.logout()


@pytest.mark.parametrize("server", servers(dovecot_skip="Dovecot 2.3 does not offer CREATE-SPECIAL-USE"))
def test_create_special_use(make_target, server):
    """CREATE-SPECIAL-USE (RFC 6154 3): CREATE with USE (\\Archive)."""
    t = make_target(server)
    r = raw_login(t)
    try:
        r.ok('CREATE "Old mail" (USE (\\Archive))')
        lines = r.ok('LIST "" "Old mail" RETURN (SPECIAL-USE)')
        assert any(b"\\Archive" in u for u in lines), lines
        untagged, tagged = r.command('CREATE "Bad use" (USE (\\NotAUse))')
        assert tagged.split()[1] == b"NO" and b"USEATTR" in tagged, tagged
    finally:
        r.close()


def test_idle_sees_other_sessions_changes(target):
    """A session in IDLE is told, within a second, about a flag change
    (FETCH) and an expunge (EXPUNGE) made by another session."""
    deliver_corpus(target, ["01-plain.eml", "02-multipart.eml"])
    wait_exists(target, 2)
    idler, other = raw_login(target), raw_login(target)
    try:
        idler.ok("SELECT INBOX")
        other.ok("SELECT INBOX")
        tag = idler.idle_start()
        time.sleep(0.2)
        t0 = time.monotonic()
        other.ok("STORE 1 +FLAGS (\\Flagged)")
        got = idler.idle_wait(lambda r: r.startswith(b"* 1 FETCH"), 5)
        assert any(r.startswith(b"* 1 FETCH") and b"\\Flagged" in r for r in got), got
        assert time.monotonic() - t0 < 1.0, f"flag change announced after {time.monotonic() - t0:.2f}s"
        t0 = time.monotonic()
        other.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
        other.ok("EXPUNGE")
        got = idler.idle_wait(lambda r: r == b"* 2 EXPUNGE\r\n", 5)
        assert b"* 2 EXPUNGE\r\n" in got, got
        assert time.monotonic() - t0 < 1.0, f"expunge announced after {time.monotonic() - t0:.2f}s"
        untagged, tagged = idler.idle_done(tag)
        assert tagged.split()[1] == b"OK", tagged
        assert b"* 1 EXISTS" not in b"".join(untagged)
        left = idler.ok("FETCH 1:* (UID FLAGS)")
        assert len([x for x in left if b" FETCH " in x]) == 1, left
    finally:
        idler.close()
        other.close()
