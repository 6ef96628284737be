#!/usr/bin/env python3
"""IMAP load tool for bench/imap.sh (not a test: it prints figures, it never
fails on one).

  imapload.py gen DIR N                 N Maildir message files in DIR (deterministic)
  imapload.py sync   --port P ...       SELECT INBOX + UID FETCH 1:* (UID FLAGS), timed
  imapload.py search --port P --word W  UID SEARCH TEXT "W", timed (median of --runs)
  imapload.py fetch  --port P --count C UID FETCH <uid> BODY.PEEK[] for C UIDs spread over the mailbox
  imapload.py append --port P --dir D --count C   APPEND C files of D to a new mailbox
  imapload.py idle   --port P --sessions S --hold H   S sessions: LOGIN, SELECT INBOX, then nothing

Every figure is printed as `key=value` on stdout. The client speaks raw
IMAP over a plain socket (loopback only, LOGIN in clear, which the bench
configurations allow on 127.0.0.1): imaplib's per-line overhead would be
a large share of a 100,000-line FETCH.
"""

import argparse
import asyncio
import os
import random
import re
import socket
import statistics
import sys
import time

LITERAL = re.compile(rb"\{(\d+)\+?\}$")

# ----------------------------------------------------------------- corpus

# The word TEXT searches look for: in the body of about 1 message in 100
# (and in no header, no attachment), so both servers must find the same UIDs.
MARKER = "zebracorn"


def words(rng, n):
    out = []
    for _ in range(n):
        out.append("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10))))
    return out


class Text:
    """Text slices cut from one long pool (generating words one by one for
    100,000 messages would take minutes)."""

    def __init__(self, rng, vocab):
        self.rng = rng
        self.pool = paragraph(rng, vocab, 4 << 20)
        assert MARKER not in self.pool

    def take(self, size):
        start = self.pool.find("\r\n", self.rng.randrange(len(self.pool) - size - 200)) + 2
        end = self.pool.rfind("\r\n", start, start + max(size, 80))
        if end <= start:
            end = self.pool.find("\r\n", start + 1)
        return self.pool[start:end + 2]


def paragraph(rng, vocab, size):
    """ASCII text of about `size` bytes, lines under 78 characters."""
    lines, line, total = [], [], 0
    while total < size:
        w = rng.choice(vocab)
        if sum(len(x) + 1 for x in line) + len(w) > 72:
            lines.append(" ".join(line))
            total += len(lines[-1]) + 2
            line = []
            if rng.random() < 0.12:
                lines.append("")
        line.append(w)
    if line:
        lines.append(" ".join(line))
    return "\r\n".join(lines) + "\r\n"


def base64_lines(rng, nbytes):
    import base64
    raw = rng.randbytes(nbytes)
    enc = base64.b64encode(raw).decode()
    return "\r\n".join(enc[i:i + 76] for i in range(0, len(enc), 76)) + "\r\n"


def message(rng, vocab, text_pool, i, size, marker):
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(1700000000 + i * 37))
    subj = " ".join(rng.choice(vocab) for _ in range(rng.randint(3, 8)))
    frm = f"{rng.choice(vocab)}.{rng.choice(vocab)}@sender{rng.randint(1, 500)}.test"
    head = (
        f"Return-Path: <{frm}>\r\n"
        f"Received: from mx{rng.randint(1, 9)}.sender.test (mx.sender.test [192.0.2.{rng.randint(1, 254)}])\r\n"
        f"\tby mx.example.test with ESMTPS id {rng.getrandbits(48):012x}\r\n"
        f"\tfor <alice@example.test>; {date}\r\n"
        f"From: {rng.choice(vocab).capitalize()} <{frm}>\r\n"
        f"To: Alice <alice@example.test>\r\n"
        f"Subject: {subj}\r\n"
        f"Date: {date}\r\n"
        f"Message-ID: <{i}.{rng.getrandbits(32):08x}@sender.test>\r\n"
        f"MIME-Version: 1.0\r\n"
    )
    text_size = size
    multipart = rng.random() < 0.3 and size > 6000
    if multipart:
        text_size = rng.randint(1000, max(1500, size // 4))
    text = text_pool.take(max(200, text_size - len(head)) if not multipart else text_size)
    if marker:
        cut = text.find("\r\n", len(text) // 2)
        text = text[:cut] + f" {MARKER}" + text[cut:]
    if not multipart:
        return (head + "Content-Type: text/plain; charset=us-ascii\r\n"
                "Content-Transfer-Encoding: 7bit\r\n\r\n" + text).encode()
    boundary = f"=_bench_{rng.getrandbits(64):016x}"
    attach = max(512, (size - len(head) - len(text)) * 3 // 4)
    kind = rng.choice([("application/pdf", "report.pdf"), ("image/jpeg", "photo.jpg"),
                       ("application/octet-stream", "data.bin")])
    body = (
        f"This is a multi-part message in MIME format.\r\n\r\n"
        f"--{boundary}\r\n"
        f"Content-Type: text/plain; charset=us-ascii\r\n"
        f"Content-Transfer-Encoding: 7bit\r\n\r\n{text}\r\n"
        f"--{boundary}\r\n"
        f"Content-Type: {kind[0]}; name=\"{kind[1]}\"\r\n"
        f"Content-Disposition: attachment; filename=\"{kind[1]}\"\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n{base64_lines(rng, attach)}\r\n"
        f"--{boundary}--\r\n"
    )
    return (head + f"Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n" + body).encode()


def gen(args):
    rng = random.Random(12)
    vocab = words(rng, 3000)
    text_pool = Text(rng, vocab)
    os.makedirs(args.dir, exist_ok=True)
    total = markers = 0
    for i in range(args.n):
        # Log-uniform between 2 and 50 KB: most mail is small, a tail is large.
        size = int(2048 * (25 ** rng.random()))
        marker = rng.random() < 0.01
        markers += marker
        data = message(rng, vocab, text_pool, i, size, marker)
        name = f"{1700000000 + i}.M{i}P4242.bench.example.test,S={len(data)}"
        with open(os.path.join(args.dir, name), "wb") as f:
            f.write(data)
        t = 1700000000 + i * 37
        os.utime(os.path.join(args.dir, name), (t, t))
        total += len(data)
    print(f"messages={args.n} bytes={total} marker_messages={markers} marker={MARKER}")


# ----------------------------------------------------------------- client


class Imap:
    """A minimal synchronous IMAP client: tagged commands, literals skipped or kept."""

    def __init__(self, port, host="127.0.0.1"):
        self.s = socket.create_connection((host, port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.n = 0
        greeting = self.line()
        if not greeting.startswith(b"* OK"):
            raise SystemExit(f"greeting: {greeting!r}")

    def fill(self):
        chunk = self.s.recv(1 << 20)
        if not chunk:
            raise SystemExit("connection closed by the server")
        self.buf += chunk

    def line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return out
            self.fill()

    def take(self, n):
        while len(self.buf) < n:
            self.fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def send(self, data):
        self.s.sendall(data)

    def command(self, text, keep_literals=False, on_untagged=None):
        """Sends a command; returns (status line, untagged lines, literal bytes)."""
        self.n += 1
        tag = b"a%d" % self.n
        self.send(tag + b" " + text.encode() + b"\r\n")
        return self.response(tag, keep_literals, on_untagged)

    def response(self, tag, keep_literals=False, on_untagged=None):
        untagged, literal_bytes, kept = [], 0, []
        while True:
            ln = self.line()
            m = LITERAL.search(ln)
            while m:  # a line ending with a literal continues after it
                data = self.take(int(m.group(1)))
                literal_bytes += len(data)
                if keep_literals:
                    kept.append(data)
                ln = ln + b"<lit>" + self.line()
                m = LITERAL.search(ln)
            if ln.startswith(tag + b" "):
                if not ln[len(tag) + 1:].startswith(b"OK"):
                    raise SystemExit(f"{tag.decode()} failed: {ln[:200]!r}")
                return ln, untagged, literal_bytes if not keep_literals else kept
            if on_untagged is not None:
                on_untagged(ln)
            else:
                untagged.append(ln)

    def login(self, user, password):
        self.command(f'LOGIN "{user}" "{password}"')

    def close(self):
        try:
            self.command("LOGOUT")
        except SystemExit:
            pass
        self.s.close()


def connect(args):
    c = Imap(args.port)
    c.login(args.user, args.password)
    return c


def sync(args):
    c = connect(args)
    t0 = time.perf_counter()
    _, sel, _ = c.command("SELECT INBOX")
    t1 = time.perf_counter()
    count = [0]

    def seen(ln):
        if b" FETCH " in ln:
            count[0] += 1

    c.command("UID FETCH 1:* (UID FLAGS)", on_untagged=seen)
    t2 = time.perf_counter()
    exists = next((int(x.split()[1]) for x in sel if x.endswith(b" EXISTS")), -1)
    c.close()
    print(f"select_s={t1 - t0:.3f} fetch_s={t2 - t1:.3f} sync_s={t2 - t0:.3f} exists={exists} fetched={count[0]}")


def search(args):
    c = connect(args)
    c.command("SELECT INBOX")
    times, hits = [], None
    for _ in range(args.runs):
        t0 = time.perf_counter()
        _, un, _ = c.command(f'UID SEARCH TEXT "{args.word}"')
        times.append(time.perf_counter() - t0)
        line = next((x for x in un if x.startswith(b"* SEARCH")), b"* SEARCH")
        hits = len(line.split()) - 2
    c.close()
    print(f"search_s={statistics.median(times):.3f} search_runs={','.join('%.3f' % t for t in times)} hits={hits}")


def fetch(args):
    c = connect(args)
    c.command("SELECT INBOX")
    uids = []
    _, un, _ = c.command("UID SEARCH ALL")
    for ln in un:
        if ln.startswith(b"* SEARCH"):
            uids = [int(x) for x in ln.split()[2:]]
    step = max(1, len(uids) // args.count)
    pick = uids[::step][:args.count]
    total = 0
    t0 = time.perf_counter()
    for u in pick:
        _, _, n = c.command(f"UID FETCH {u} BODY.PEEK[]")
        total += n
    dt = time.perf_counter() - t0
    c.close()
    print(f"fetch_bodies_s={dt:.3f} bodies={len(pick)} body_bytes={total}")


def append(args):
    files = sorted(os.listdir(args.dir))[:args.count]
    c = connect(args)
    c.command(f"CREATE {args.mailbox}")
    total = 0
    t0 = time.perf_counter()
    marks = [t0]
    for k, name in enumerate(files, 1):
        if k % 1000 == 0:
            marks.append(time.perf_counter())
        with open(os.path.join(args.dir, name), "rb") as f:
            data = f.read()
        total += len(data)
        c.n += 1
        tag = b"a%d" % c.n
        # Synchronizing literal, as most clients send: one round trip more.
        c.send(tag + b" APPEND %s (\\Seen) {%d}\r\n" % (args.mailbox.encode(), len(data)))
        ln = c.line()
        if not ln.startswith(b"+"):
            raise SystemExit(f"APPEND: no continuation: {ln[:200]!r}")
        c.send(data + b"\r\n")
        c.response(tag)
    dt = time.perf_counter() - t0
    _, un, _ = c.command(f"STATUS {args.mailbox} (MESSAGES)")
    c.close()
    per = ",".join("%.1f" % (b - a) for a, b in zip(marks, marks[1:]))
    print(f"append_s={dt:.3f} append_per_1000_s={per or '-'} appended={len(files)} append_bytes={total} status={un[0].decode(errors='replace') if un else ''}")


# ------------------------------------------------------------------- idle


def mem_available_mb():
    with open("/proc/meminfo") as f:
        for ln in f:
            if ln.startswith("MemAvailable:"):
                return int(ln.split()[1]) // 1024
    return 1 << 30


async def idle_session(args, sem, held, errors, stop):
    async with sem:
        for attempt in range(5):
            try:
                r, w = await asyncio.open_connection("127.0.0.1", args.port)
                await r.readline()
                w.write(f'a1 LOGIN "{args.user}" "{args.password}"\r\n'.encode())
                while True:
                    ln = await r.readline()
                    if not ln:
                        raise ConnectionError("closed at LOGIN")
                    if ln.startswith(b"a1 "):
                        break
                if not ln.startswith(b"a1 OK"):
                    raise ConnectionError(ln.decode(errors="replace").strip())
                w.write(b"a2 SELECT INBOX\r\n" if args.select else b"a2 NOOP\r\n")
                while True:
                    ln = await r.readline()
                    if not ln:
                        raise ConnectionError("closed at SELECT")
                    if ln.startswith(b"a2 "):
                        break
                if not ln.startswith(b"a2 OK"):
                    raise ConnectionError(ln.decode(errors="replace").strip())
                held.append((r, w))
                break
            except (OSError, ConnectionError) as e:
                errors.append(str(e))
                await asyncio.sleep(0.5 * (attempt + 1))
    if len(held) % 1000 == 0 and held:
        print(f"# {len(held)} sessions up", file=sys.stderr, flush=True)


async def idle_main(args):
    sem = asyncio.Semaphore(args.parallel)
    held, errors, stop = [], [], asyncio.Event()
    t0 = time.perf_counter()
    opened = 0
    pending = set()
    start_avail = mem_available_mb()
    stopped = ""
    while opened < args.sessions:
        avail = mem_available_mb()
        if args.min_avail_mb and avail < args.min_avail_mb:
            stopped = f"MemAvailable below {args.min_avail_mb} MB"
        elif args.max_growth_mb and start_avail - avail > args.max_growth_mb:
            stopped = f"MemAvailable fell by more than {args.max_growth_mb} MB"
        if stopped:
            print(f"# stopping at {len(held)} sessions: {stopped}", file=sys.stderr)
            break
        batch = min(args.parallel, args.sessions - opened)
        tasks = [asyncio.create_task(idle_session(args, sem, held, errors, stop)) for _ in range(batch)]
        pending.update(tasks)
        await asyncio.gather(*tasks)
        pending.difference_update(tasks)
        opened += batch
    up = time.perf_counter() - t0
    # Tell the driver the sessions are up; it samples memory during the hold.
    print(f"idle_up sessions={len(held)} setup_s={up:.1f} errors={len(errors)} stopped={'memory' if stopped else 'no'}", flush=True)
    if errors:
        print(f"# first error: {errors[0]}", file=sys.stderr)
    await asyncio.sleep(args.hold)
    alive = 0
    for r, w in held:
        if not r.at_eof():
            alive += 1
        w.close()
    print(f"idle_done alive={alive}", flush=True)


def idle(args):
    asyncio.run(idle_main(args))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("dir")
    g.add_argument("n", type=int)
    g.set_defaults(func=gen)
    for name, func in [("sync", sync), ("search", search), ("fetch", fetch), ("append", append), ("idle", idle)]:
        s = sub.add_parser(name)
        s.add_argument("--port", type=int, required=True)
        s.add_argument("--user", default="alice@example.test")
        s.add_argument("--password", default="bench-password")
        s.set_defaults(func=func)
        if name == "search":
            s.add_argument("--word", default=MARKER)
            s.add_argument("--runs", type=int, default=3)
        if name == "fetch":
            s.add_argument("--count", type=int, default=1000)
        if name == "append":
            s.add_argument("--dir", required=True)
            s.add_argument("--count", type=int, default=10000)
            s.add_argument("--mailbox", default="Bench")
        if name == "idle":
            s.add_argument("--sessions", type=int, default=10000)
            s.add_argument("--parallel", type=int, default=8)
            s.add_argument("--hold", type=float, default=10)
            s.add_argument("--min-avail-mb", type=int, default=3000,
                           help="stop opening sessions when MemAvailable is below this")
            s.add_argument("--max-growth-mb", type=int, default=8000,
                           help="stop opening sessions when MemAvailable fell by this much since the start")
            s.add_argument("--no-select", dest="select", action="store_false",
                           help="LOGIN then NOOP instead of SELECT INBOX")
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
