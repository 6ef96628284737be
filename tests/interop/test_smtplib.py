"""Tern against Python's smtplib: features, local delivery, aliases, refusals."""

from __future__ import annotations

import re
import smtplib
from email.message import EmailMessage
from email import policy

import pytest

from smtpwire import SmtpWire, header_names, parse_message, queue_id

SENDER = "x@y.test"


def message(to: str, subject: str, body: str = "Hello from the interop suite.\n", sender: str = SENDER):
    msg = EmailMessage(policy=policy.SMTP)  # CRLF: smtplib sends bytes as they are
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@y.test>"
    msg.set_content(body)
    return msg


def client(srv) -> smtplib.SMTP:
    s = smtplib.SMTP(srv.host, srv.port, local_hostname="client.test", timeout=15)
    s.ehlo()
    return s


def test_ehlo_advertises_extensions(tern):
    with client(tern) as s:
        assert s.ehlo_resp is not None
        for ext in ("pipelining", "size", "8bitmime", "smtputf8", "enhancedstatuscodes", "chunking", "dsn"):
            assert s.has_extn(ext), f"EHLO does not advertise {ext.upper()}: {s.ehlo_resp!r}"
        size = s.esmtp_features["size"].strip()
        assert size == str(52428800), f"SIZE should announce max_message_size, got {size!r}"
        # the greeting and EHLO name the configured host
        assert b"mx.example.test" in s.ehlo_resp


def test_send_message_to_alice_is_delivered_with_trace_headers(tern):
    msg = message("alice@example.test", "plain delivery")
    with client(tern) as s:
        code, _ = s.mail(SENDER)
        assert code == 250
        code, resp = s.rcpt("alice@example.test")
        assert code == 250, resp
        code, resp = s.data(msg.as_bytes(policy=policy.SMTP))
        assert code == 250, resp
        text = resp.decode()
        assert text.startswith("2.0.0"), f"no enhanced status code in {text!r}"
        qid = queue_id(text)

    [path] = tern.wait_for_messages("alice", 1)
    raw, parsed = parse_message(path)
    names = header_names(raw)
    assert names[:3] == ["Return-Path", "Delivered-To", "Received"], f"trace headers out of order: {names[:6]}"
    assert parsed["Return-Path"].strip() == f"<{SENDER}>"
    assert parsed["Delivered-To"].strip().lower() == "alice@example.test"
    received = " ".join(parsed.get_all("Received")[0].split())
    assert re.search(r"\bid <?" + re.escape(qid) + r">?", received), f"Received lacks id {qid}: {received!r}"
    assert "mx.example.test" in received
    # the original message follows, intact
    assert parsed["Subject"] == "plain delivery"
    assert parsed["Message-ID"] == "<plain-delivery@y.test>"
    assert "Hello from the interop suite." in parsed.get_content()
    # Maildir hygiene: nothing left in tmp/
    assert not any((tern.maildir("alice") / "tmp").iterdir())


def test_send_message_helper(tern):
    """The high-level smtplib.send_message path, as ordinary programs use it."""
    with client(tern) as s:
        refused = s.send_message(message("bob@example.test", "via send_message"))
        assert refused == {}
    [path] = tern.wait_for_messages("bob", 1)
    _, parsed = parse_message(path)
    assert parsed["Subject"] == "via send_message"
    assert tern.new_files("alice") == []


def test_plus_address_goes_to_base_mailbox(tern):
    with client(tern) as s:
        assert s.sendmail(SENDER, ["alice+tag@example.test"], message("alice+tag@example.test", "plus").as_bytes()) == {}
    [path] = tern.wait_for_messages("alice", 1)
    _, parsed = parse_message(path)
    assert parsed["Subject"] == "plus"
    assert parsed["Delivered-To"].strip().lower().startswith("alice")
    assert not tern.maildir("alice+tag").exists(), "a plus address must not create its own mailbox"


def test_alias_expands_to_two_mailboxes(tern):
    with client(tern) as s:
        assert s.sendmail(SENDER, ["info@example.test"], message("info@example.test", "alias").as_bytes()) == {}
    [a] = tern.wait_for_messages("alice", 1)
    [b] = tern.wait_for_messages("bob", 1)
    for p in (a, b):
        _, parsed = parse_message(p)
        assert parsed["Subject"] == "alias"
    assert tern.new_files("carol") == []
    assert not tern.maildir("info").exists(), "an alias must not get a mailbox of its own"


def test_alias_and_member_in_one_transaction_deliver_once_each(tern):
    """info -> alice, bob; sales -> alice. alice must get the message once (duplicates suppressed)
    or at most once per envelope recipient; never zero, and bob exactly once."""
    with client(tern) as s:
        assert s.sendmail(SENDER, ["info@example.test", "sales@example.test"],
                          message("info@example.test", "two aliases").as_bytes()) == {}
    alice = tern.wait_for_messages("alice", 1)
    bob = tern.wait_for_messages("bob", 1)
    assert len(bob) == 1
    assert 1 <= len(alice) <= 2


def test_unknown_user_is_refused_with_550(tern):
    with client(tern) as s:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as ei:
            s.sendmail(SENDER, ["nosuchuser@example.test"], message("nosuchuser@example.test", "unknown").as_bytes())
        code, text = ei.value.recipients["nosuchuser@example.test"]
        assert code == 550
        assert text.startswith(b"5.1.1"), text
        # the session goes on
        assert s.noop()[0] == 250
    assert tern.all_delivered() == []


def test_one_bad_recipient_does_not_sink_the_others(tern):
    with client(tern) as s:
        refused = s.sendmail(SENDER, ["nosuchuser@example.test", "carol@example.test"],
                             message("carol@example.test", "mixed").as_bytes())
        assert list(refused) == ["nosuchuser@example.test"]
        assert refused["nosuchuser@example.test"][0] == 550
    tern.wait_for_messages("carol", 1)


def test_postmaster_is_always_accepted(tern):
    with client(tern) as s:
        assert s.mail(SENDER)[0] == 250
        code, resp = s.rcpt("postmaster@example.test")
        assert code == 250, resp
        code, resp = s.rcpt("PostMaster@Example.Test")
        assert code == 250, resp
        assert s.rset()[0] == 250


def test_domain_is_case_insensitive(tern):
    with client(tern) as s:
        assert s.sendmail(SENDER, ["alice@EXAMPLE.Test"], message("alice@EXAMPLE.Test", "case").as_bytes()) == {}
    tern.wait_for_messages("alice", 1)


def test_relay_attempt_is_denied(tern):
    with client(tern) as s:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as ei:
            s.sendmail(SENDER, ["victim@remote.test"], message("victim@remote.test", "relay").as_bytes())
        code, text = ei.value.recipients["victim@remote.test"]
        assert code == 554, (code, text)
        assert text.startswith(b"5.7.1"), text
    assert tern.all_delivered() == []


RELAY_TRICKS = [
    "user%remote.test@example.test",
    '"user@remote.test"@example.test',
    "remote.test!user@example.test",
    "@example.test:user@remote.test",
    "user@remote.test@example.test",
    "user@example.test.",
    "user@[192.0.2.1]",
    "user@REMOTE.test",
    "user%remote.test@[127.0.0.1]",
    '"user%remote.test"@example.test',
]


@pytest.mark.parametrize("rcpt", RELAY_TRICKS)
def test_relay_tricks_never_accepted(tern, rcpt):
    """Each address would relay to remote.test if mis-parsed. `user` is no local mailbox,
    so every one must be refused at RCPT, and no message may be accepted."""
    with SmtpWire(tern.host, tern.port) as w:
        w.greet_and_ehlo()
        r = w.cmd(f"MAIL FROM:<{SENDER}>")
        assert r.code == 250, str(r)
        r = w.cmd(f"RCPT TO:<{rcpt}>")
        assert 500 <= r.code < 600, f"RCPT TO:<{rcpt}> must be refused, got {r}"
        r = w.cmd("DATA")
        assert r.code in (503, 554), f"DATA with no accepted recipient must be refused, got {r}"
        # the session is still in sync
        assert w.cmd("NOOP").code == 250
        assert w.cmd("QUIT").code == 221
    assert tern.all_delivered() == []


def test_trusted_network_may_relay(tern_factory):
    srv = tern_factory(trusted_networks=["127.0.0.0/8"])
    with client(srv) as s:
        assert s.mail(SENDER)[0] == 250
        code, resp = s.rcpt("someone@remote.test")
        assert code == 250, resp
        assert s.rset()[0] == 250  # nothing queued: no outbound traffic from the test


def test_smtputf8_sender(tern):
    sender = "jörg@bücher.test"
    msg = EmailMessage(policy=policy.SMTPUTF8)
    msg["From"] = sender
    msg["To"] = "alice@example.test"
    msg["Subject"] = "Grüße aus Köln"
    msg.set_content("Ünïcödé body ✓\n", cte="8bit")
    with client(tern) as s:
        refused = s.sendmail(sender, ["alice@example.test"], msg.as_bytes(policy=policy.SMTPUTF8),
                             mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        assert refused == {}
    [path] = tern.wait_for_messages("alice", 1)
    raw = path.read_bytes()
    assert "Return-Path: <jörg@bücher.test>".encode() in raw, raw[:300]
    assert "Grüße aus Köln".encode() in raw
    assert "Ünïcödé body ✓".encode() in raw


def test_utf8_address_without_smtputf8_is_refused(tern):
    with SmtpWire(tern.host, tern.port) as w:
        w.greet_and_ehlo()
        r = w.cmd("MAIL FROM:<jörg@bücher.test>".encode())
        assert r.code in (501, 553), f"UTF-8 sender without SMTPUTF8 must be refused, got {r}"
        assert w.cmd("RSET").code == 250
        assert w.cmd(f"MAIL FROM:<{SENDER}>").code == 250
        r = w.cmd("RCPT TO:<ålice@example.test>".encode())
        assert r.code in (501, 553), f"UTF-8 recipient without SMTPUTF8 must be refused, got {r}"


def test_vrfy_answers_252(tern):
    with client(tern) as s:
        code, text = s.verify("alice@example.test")
        assert code == 252, (code, text)
        code_unknown, _ = s.verify("nosuchuser@example.test")
        assert code_unknown == 252, "VRFY must not reveal which users exist"


def test_size_over_limit_is_refused_at_mail(tern):
    with client(tern) as s:
        code, text = s.mail(SENDER, options=[f"SIZE={52428800 + 1}"])
        assert code == 552, (code, text)
        assert text.startswith(b"5.3.4"), text
        assert s.mail(SENDER, options=["SIZE=1000"])[0] == 250


def test_message_over_limit_is_refused_after_data(tern_factory):
    srv = tern_factory(limits={"max_message_size": 100_000})
    big = message("alice@example.test", "too big", ("y" * 76 + "\n") * 2000)  # ~154 kB
    with client(srv) as s:
        assert s.mail(SENDER)[0] == 250
        assert s.rcpt("alice@example.test")[0] == 250
        code, text = s.data(big.as_bytes())
        assert code == 552, (code, text)
        assert s.noop()[0] == 250
    assert srv.all_delivered() == []


def test_recipient_limit(tern_factory):
    srv = tern_factory(limits={"max_recipients": 3})
    with client(srv) as s:
        assert s.mail(SENDER)[0] == 250
        for i in range(3):
            assert s.rcpt(f"alice+{i}@example.test")[0] == 250
        code, text = s.rcpt("bob@example.test")
        assert code == 452, (code, text)
        assert text.startswith(b"4.5.3"), text
        code, text = s.data(message("alice@example.test", "limit").as_bytes())
        assert code == 250, (code, text)
    tern_msgs = srv.wait_for_messages("alice", 1)
    assert tern_msgs
    assert srv.new_files("bob") == []


def test_many_sequential_messages_on_one_connection(tern):
    with client(tern) as s:
        for i in range(20):
            assert s.sendmail(SENDER, ["carol@example.test"], message("carol@example.test", f"seq {i}").as_bytes()) == {}
            assert s.rset()[0] == 250
    files = tern.wait_for_messages("carol", 20)
    assert len(files) == 20
    subjects = sorted(parse_message(p)[1]["Subject"] for p in files)
    assert subjects == sorted(f"seq {i}" for i in range(20))


def test_maildir_is_readable_by_a_third_party_maildir_reader(tern):
    """Python's mailbox.Maildir (the qmail layout, as mutt and Dovecot read
    it) lists and parses what Tern delivered, and can mark it seen (new/ →
    cur/ with :2,S) without Tern's names getting in the way."""
    import mailbox

    with client(tern) as s:
        for i in range(3):
            s.send_message(message("alice@example.test", f"maildir {i}"))
    tern.wait_for_messages("alice", 3)
    box = mailbox.Maildir(str(tern.maildir("alice")), create=False)
    subjects = sorted(m["Subject"] for m in box)
    assert subjects == ["maildir 0", "maildir 1", "maildir 2"]
    key = next(iter(box.keys()))
    msg = box[key]
    assert msg.get_subdir() == "new"
    msg.set_subdir("cur")
    msg.add_flag("S")
    box[key] = msg
    assert any(name.endswith(":2,S") for name in (p.name for p in (tern.maildir("alice") / "cur").iterdir()))
    assert len(box) == 3
