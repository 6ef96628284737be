#!/usr/bin/env bash
# IMAP benchmark: Tern beside a private Dovecot, same machine, same mailbox.
#
# Usage: bench/imap.sh            (as root; see bench/README.md for knobs)
#
# Generates a mailbox of MESSAGES messages once (kept in CORPUS for the next
# invocation), copies the same files under the same names into each
# server's INBOX `new/` (fresh index for each run: the server builds it at
# the first access), and measures for each server, one after the other:
#   sync cold   first SELECT INBOX + UID FETCH 1:* (UID FLAGS) after start
#   sync warm   the same on a second connection
#   search      UID SEARCH TEXT "<word in 1 % of the bodies>" (median of SEARCH_RUNS)
#   fetch       UID FETCH <uid> BODY.PEEK[] for FETCH_BODIES UIDs spread over INBOX
#   append      APPENDS messages (synchronizing literals) into a new mailbox
#   idle        IDLE_SESSIONS sessions logged in with INBOX selected, then
#               silent: Tern's process RSS vs the sum over all Dovecot
#               processes (Dovecot forks one `imap` process per session)
# and prints both figures, the ratio and the target. Everything listens on
# 127.0.0.1 (free ports); the private Dovecot has its own base_dir, state_dir
# and log, the system Dovecot is never configured or started. It prints
# figures; it never fails on a figure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

MESSAGES=${MESSAGES:-100000}
SEARCH_RUNS=${SEARCH_RUNS:-3}
FETCH_BODIES=${FETCH_BODIES:-1000}
APPENDS=${APPENDS:-10000}
IDLE_SESSIONS=${IDLE_SESSIONS:-10000}
IDLE_PARALLEL=${IDLE_PARALLEL:-8}        # logins in flight while opening idle sessions
IDLE_HOLD=${IDLE_HOLD:-10}               # seconds the idle sessions are held (RSS sampled meanwhile)
MIN_AVAIL_MB=${MIN_AVAIL_MB:-4000}       # the idle client stops opening sessions below this MemAvailable
MAX_GROWTH_MB=${MAX_GROWTH_MB:-10000}    # ... or when MemAvailable fell this much since it started
IDLE_SELECT=${IDLE_SELECT:-1}            # 0: idle sessions LOGIN and NOOP, without SELECT INBOX
TERN_IDLE_ENV=${TERN_IDLE_ENV:-}         # environment for Tern's idle run, e.g. MALLOC_MMAP_THRESHOLD_=131072
ONLY=${ONLY:-dovecot,tern}
TESTS=${TESTS:-sync,search,fetch,append,idle}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
CORPUS=${CORPUS:-$BENCH_DIR/tern-imap-corpus-$MESSAGES}
KEEP=${KEEP:-0}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BUILD=${BUILD:-$([ -n "${TERN_BIN:-}" ] && echo 0 || echo 1)}
TERN_BIN=${TERN_BIN:-$TARGET_DIR/release/tern}
USER_ADDR=alice@example.test
PASSWORD=bench-password
MAIL_UID=65534                           # Dovecot refuses root as mail user: its Maildir belongs to nobody
LOAD=$ROOT/bench/imapload.py

log() { printf '[imap-bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
want() { [[ ",$ONLY," == *",$1,"* ]]; }
test_on() { [[ ",$TESTS," == *",$1,"* ]]; }
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

[ "$(id -u)" -eq 0 ] || die "run as root: the private Dovecot needs it"
command -v python3 >/dev/null || die "python3 is needed (the IMAP client)"
if want dovecot && { ! [ -x /usr/sbin/dovecot ] || ! [ -x /usr/lib/dovecot/imap ]; }; then
    log "installing dovecot-imapd (the reference server; the system instance is not started)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dovecot-imapd </dev/null
fi
[ "$BUILD" = 1 ] && want tern && build_release tern

# 10,000 idle sessions need 10,000 descriptors in the server and the client.
NOFILE=$(( IDLE_SESSIONS * 2 + 1024 ))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$NOFILE" ]; then
    ulimit -n "$NOFILE" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fi

WORK=$(make_work_dir tern-imap-bench)
FS_KIND=$(fs_kind "$WORK")
TERN_PID=""
DOVE_CONF=""
RESULTS=$WORK/results

cleanup() {
    set +e
    if [ -n "$TERN_PID" ]; then kill -TERM "$TERN_PID" 2>/dev/null; wait "$TERN_PID" 2>/dev/null; fi
    if [ -n "$DOVE_CONF" ]; then doveadm -c "$DOVE_CONF" stop >/dev/null 2>&1; fi
    if [ "$KEEP" = 1 ]; then log "kept $WORK"; else
        rm -rf "$WORK"
        [ "$FS_KIND" != "ext4 (no journal)" ] \
            || log "removed $WORK: on ext4 without a journal, wait 6 minutes before the next benchmark here"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ corpus
if [ "$(find "$CORPUS" -maxdepth 1 -type f 2>/dev/null | wc -l)" -ne "$MESSAGES" ]; then
    log "generating $MESSAGES messages in $CORPUS (kept for the next run)"
    rm -rf "$CORPUS"
    python3 "$LOAD" gen "$CORPUS" "$MESSAGES" > "$WORK/gen.out"
else
    python3 - "$CORPUS" > "$WORK/gen.out" <<'PY'
import os, sys
d = sys.argv[1]; n = b = 0
for f in os.listdir(d):
    n += 1; b += os.path.getsize(os.path.join(d, f))
print(f"messages={n} bytes={b} (reused)")
PY
fi
CORPUS_LINE=$(cat "$WORK/gen.out")

# fill_inbox MAILDIR: the corpus into MAILDIR/new (same names for both servers).
fill_inbox() {
    mkdir -p "$1/new" "$1/cur" "$1/tmp"
    # find -exec: 100,000 names do not fit one command line.
    find "$CORPUS" -maxdepth 1 -type f -exec cp -p -t "$1/new/" {} +
}

# Descendants of a process, itself included.
tree_pids() {
    python3 - "$1" <<'PY'
import os, sys
root = int(sys.argv[1]); kids = {}
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            ppid = int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        kids.setdefault(ppid, []).append(int(p))
out, todo = [], [root]
while todo:
    p = todo.pop(); out.append(p); todo.extend(kids.get(p, []))
print(" ".join(map(str, out)))
PY
}

# mem_tree PID: "processes rss_kb pss_kb" summed over the process tree.
mem_tree() {
    python3 - $(tree_pids "$1") <<'PY'
import sys
n = rss = pss = 0
for p in sys.argv[1:]:
    try:
        for ln in open(f"/proc/{p}/smaps_rollup"):
            if ln.startswith("Rss:"): rss += int(ln.split()[1])
            elif ln.startswith("Pss:"): pss += int(ln.split()[1])
        n += 1
    except OSError:
        pass
print(n, rss, pss)
PY
}

kv() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" "$2" | tail -1; }

# ------------------------------------------------------------------ servers
start_tern() {
    local dir=$WORK/tern port
    port=$(free_port)
    mkdir -p "$dir/data"
    cat > "$dir/tern.toml" <<EOF
hostname = "tern.bench.test"
data_dir = "$dir/data"
trusted_networks = []

[[listener]]
address = "127.0.0.1:$port"
role = "imap"
plaintext_auth = true

[auth]
users_file = "$dir/users.toml"

[dns]
nameservers = ["127.0.0.1:9"]

[domains."example.test"]
mailboxes = ["alice"]

[limits]
max_connections = $(( IDLE_SESSIONS + 1000 ))
max_connections_per_ip = $(( IDLE_SESSIONS + 1000 ))

[imap]
max_sessions_per_user = $(( IDLE_SESSIONS + 100 ))

[mail_auth]
enabled = false
EOF
    printf '%s\n' "$PASSWORD" | "$TERN_BIN" user add "$USER_ADDR" --config "$dir/tern.toml" > "$dir/user.out" 2>&1 \
        || { cat "$dir/user.out" >&2; die "tern user add failed"; }
    "$TERN_BIN" check-config "$dir/tern.toml" > "$dir/check-config.out" 2>&1 \
        || { cat "$dir/check-config.out" >&2; die "tern check-config rejected the bench config"; }
    fill_inbox "$dir/data/mail/example.test/alice"
    sync; sleep 1
    "$TERN_BIN" serve --allow-root --config "$dir/tern.toml" --log-format text > "$dir/tern.log" 2>&1 &
    TERN_PID=$!
    wait_port "$port" 30 || { tail -20 "$dir/tern.log" >&2; die "tern did not start"; }
    SERVER_PID=$TERN_PID
    PORT=$port
}

stop_tern() {
    kill -TERM "$TERN_PID" 2>/dev/null; wait "$TERN_PID" 2>/dev/null || true
    TERN_PID=""
}

start_dovecot() {
    local dir=$WORK/dovecot port hash
    port=$(free_port)
    mkdir -p "$dir/run" "$dir/state" "$dir/home/alice"
    hash=$(doveadm pw -s SHA512-CRYPT -p "$PASSWORD")
    echo "$USER_ADDR:$hash:$MAIL_UID:$MAIL_UID::$dir/home/alice" > "$dir/passwd"
    cat > "$dir/dovecot.conf" <<EOF
# Private instance for bench/imap.sh. Dovecot's defaults except: plain IMAP
# on loopback, process and client limits raised for $IDLE_SESSIONS sessions.
protocols = imap
base_dir = $dir/run
state_dir = $dir/state
listen = 127.0.0.1
log_path = $dir/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
passdb {
  driver = passwd-file
  args = scheme=SHA512-CRYPT $dir/passwd
}
userdb {
  driver = passwd-file
  args = $dir/passwd
}
mail_location = maildir:~/Maildir
namespace inbox {
  inbox = yes
  separator = /
}
default_internal_user = nobody
default_login_user = nobody
default_process_limit = $(( IDLE_SESSIONS + 200 ))
default_client_limit = $(( IDLE_SESSIONS + 1000 ))
service imap-login {
  inet_listener imap {
    port = $port
  }
  inet_listener imaps {
    port = 0
  }
}
# imap's own default process_limit is 1024, whatever default_process_limit says.
service imap {
  process_limit = $(( IDLE_SESSIONS + 100 ))
}
# Not used here, but counted in the auth and anvil client limits.
service imap-urlauth-login {
  process_limit = 10
}
service anvil {
  client_limit = $(( IDLE_SESSIONS + 1000 ))
}
protocol imap {
  mail_max_userip_connections = $(( IDLE_SESSIONS + 100 ))
}
EOF
    fill_inbox "$dir/home/alice/Maildir"
    chown -R "$MAIL_UID:$MAIL_UID" "$dir/home"
    sync; sleep 1
    DOVE_CONF=$dir/dovecot.conf
    dovecot -c "$DOVE_CONF" || { cat "$dir/dovecot.log" >&2 2>/dev/null; die "dovecot did not start"; }
    wait_port "$port" 30 || { tail -20 "$dir/dovecot.log" >&2; die "dovecot did not start"; }
    SERVER_PID=$(cat "$dir/run/master.pid")
    PORT=$port
}

stop_dovecot() {
    doveadm -c "$DOVE_CONF" stop >/dev/null 2>&1 || true
    DOVE_CONF=""
}

# ------------------------------------------------------------------ measures
run_client() { # name out args...
    local name=$1 out=$2; shift 2
    python3 "$LOAD" "$name" --port "$PORT" --user "$USER_ADDR" --password "$PASSWORD" "$@" > "$out" 2> "$out.err" \
        || { log "$name failed: $(tail -3 "$out.err")"; return 1; }
    log "  $name: $(cat "$out")"
}

idle_test() { # server out
    local out=$2 client peak_rss=0 peak_pss=0 procs=0 base
    base=$(mem_tree "$SERVER_PID")
    python3 "$LOAD" idle --port "$PORT" --user "$USER_ADDR" --password "$PASSWORD" \
        --sessions "$IDLE_SESSIONS" --parallel "$IDLE_PARALLEL" --hold "$IDLE_HOLD" \
        --min-avail-mb "$MIN_AVAIL_MB" --max-growth-mb "$MAX_GROWTH_MB" \
        $([ "$IDLE_SELECT" = 1 ] || echo --no-select) > "$out.client" 2> "$out.err" &
    client=$!
    until grep -q '^idle_up' "$out.client" 2>/dev/null; do
        kill -0 "$client" 2>/dev/null || break
        sleep 1
    done
    while kill -0 "$client" 2>/dev/null && ! grep -q '^idle_done' "$out.client"; do
        read -r n r p < <(mem_tree "$SERVER_PID")
        [ "$r" -gt "$peak_rss" ] && { peak_rss=$r; procs=$n; }
        [ "$p" -gt "$peak_pss" ] && peak_pss=$p
        sleep 1
    done
    wait "$client" || true
    echo "idle_sessions=$(sed -n 's/^idle_up sessions=\([0-9]*\).*/\1/p' "$out.client") $(sed -n 's/^idle_up sessions=[0-9]* //p' "$out.client") idle_rss_kb=$peak_rss idle_pss_kb=$peak_pss idle_procs=$procs base=${base// /,}" > "$out"
    log "  idle: $(cat "$out")"
}

measure() { # server
    local s=$1 d=$RESULTS/$1
    mkdir -p "$d"
    log "$s: starting with $MESSAGES messages in INBOX/new"
    "start_$s"
    if test_on sync; then
        run_client sync "$d/cold" || true
        run_client sync "$d/warm" || true
        read -r _ r p < <(mem_tree "$SERVER_PID")
        echo "after_sync_rss_kb=$r after_sync_pss_kb=$p" > "$d/mem"
    fi
    test_on search && { run_client search "$d/search" --runs "$SEARCH_RUNS" || true; }
    test_on fetch && { run_client fetch "$d/fetch" --count "$FETCH_BODIES" || true; }
    test_on append && { run_client append "$d/append" --dir "$CORPUS" --count "$APPENDS" || true; }
    # A fresh start for the idle sessions: memory of 10,000 sessions, not of
    # the commands above (the index stays built).
    "stop_$s"
    if test_on idle; then
        [ "$s" = tern ] && { env $TERN_IDLE_ENV "$TERN_BIN" serve --allow-root --config "$WORK/tern/tern.toml" --log-format text >> "$WORK/tern/tern.log" 2>&1 & TERN_PID=$!; SERVER_PID=$TERN_PID; }
        [ "$s" = dovecot ] && { DOVE_CONF=$WORK/dovecot/dovecot.conf; dovecot -c "$DOVE_CONF"; sleep 1; SERVER_PID=$(cat "$WORK/dovecot/run/master.pid"); }
        wait_port "$PORT" 30 || die "$s did not restart"
        idle_test "$s" "$d/idle"
        "stop_$s"
    fi
}

log "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GB", $2/1048576}' /proc/meminfo), $FS_KIND, load $(cut -d' ' -f1-3 /proc/loadavg)"
log "corpus: $CORPUS_LINE"
want dovecot && measure dovecot
want tern && measure tern
log "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"

# ------------------------------------------------------------------ report
python3 - "$RESULTS" "$IDLE_SESSIONS" "$(dovecot --version 2>/dev/null | cut -d' ' -f1)" "$("$TERN_BIN" --version 2>/dev/null)" <<'PY'
import os, re, sys
res, idle_target, dv, tv = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

def kv(server, name):
    try:
        text = open(os.path.join(res, server, name)).read()
    except OSError:
        return {}
    return dict(re.findall(r"(\w+)=(\S+)", text))

rows = []
def time_row(label, name, key, target=1.0, extra=""):
    t, d = kv("tern", name).get(key), kv("dovecot", name).get(key)
    if not t and not d:
        return
    ratio = float(d) / float(t) if t and d and float(t) > 0 else None
    ok = "" if ratio is None else ("met" if ratio >= target else "NOT met")
    rows.append((label, f"{float(t):.2f} s" if t else "-", f"{float(d):.2f} s" if d else "-",
                 f"{ratio:.2f}x" if ratio else "-", f"Tern >= {target:g}x faster{extra}", ok))

time_row("sync cold: SELECT + UID FETCH 1:* (UID FLAGS)", "cold", "sync_s", 2.0)
time_row("sync warm (second time)", "warm", "sync_s", 2.0)
time_row(f"UID SEARCH TEXT (median)", "search", "search_s")
time_row("1,000 x UID FETCH n BODY.PEEK[]", "fetch", "fetch_bodies_s")
time_row("APPEND (sync literals)", "append", "append_s")
t, d = kv("tern", "idle"), kv("dovecot", "idle")

def idle_mb(v, key):
    """(MB measured, sessions, MB extrapolated to idle_target sessions)."""
    n = int(v.get("idle_sessions") or 0)
    total = int(v.get(key, 0)) / 1024
    base = v.get("base", "0,0,0").split(",")
    base_mb = int(base[1 if key == "idle_rss_kb" else 2]) / 1024
    per = (total - base_mb) / n if n else 0
    return total, n, base_mb + per * idle_target, per

if t or d:
    tr, tn, tx, tp = idle_mb(t, "idle_rss_kb") if t else (0, 0, 0, 0)
    dr, dn, dx, dpp = idle_mb(d, "idle_pss_kb") if d else (0, 0, 0, 0)
    def cell(v, total, n, x, per, what):
        s = f"{total:.0f} MB {what} at {n}"
        if n and n < idle_target:
            why = ("stopped: memory guard" if v.get("stopped") == "memory"
                   else f"{idle_target - n} sessions failed to open ({v.get('errors', '?')} errors)")
            s += f" ({why}; {per:.2f} MB/session -> ~{x:.0f} MB at {idle_target})"
        else:
            s += f" ({per:.3f} MB/session)"
        return s
    ok = "met" if t and tn >= idle_target and tr <= 256 and tx <= dx else "NOT met"
    rows.append((f"memory, {idle_target} idle sessions (INBOX selected)",
                 cell(t, tr, tn, tx, tp, "RSS") if t else "-",
                 cell(d, dr, dn, dx, dpp, f"PSS, {d.get('idle_procs', '-')} processes") if d else "-",
                 f"{dx / tx:.2f}x" if t and d and tx else "-",
                 f"Tern <= 256 MB and <= Dovecot", ok))
print()
print(f"Tern: {tv}   Dovecot: {dv}")
print("ratio = Dovecot / Tern (above 1: Tern is faster or smaller)")
print()
w = [max(len(r[i]) for r in rows + [("measure", "Tern", "Dovecot", "ratio", "target", "")]) for i in range(6)]
fmt = "| " + " | ".join("{:<%d}" % x for x in w) + " |"
print(fmt.format("measure", "Tern", "Dovecot", "ratio", "target", ""))
print("|" + "|".join("-" * (x + 2) for x in w) + "|")
for r in rows:
    print(fmt.format(*r))
print()
for s in ("tern", "dovecot"):
    for n in ("cold", "warm", "search", "fetch", "append", "idle", "mem"):
        v = kv(s, n)
        if v:
            print(f"{s:8} {n:7} " + " ".join(f"{k}={x}" for k, x in v.items()))
PY
