#!/usr/bin/env bash
# Intake throughput with rspamd in the path: Tern vs a private Postfix that
# uses the same rspamd as its milter (rspamd's proxy worker in milter mode,
# the setup rspamd documents for Postfix).
#
# Usage: bench/filter.sh             (as root; knobs below)
#
# One private rspamd 3.4 (Debian `rspamd`) runs on loopback ports with its
# network checks off and its resolver a closed port (nothing leaves
# 127.0.0.0/8): a normal worker for HTTP (`/checkv2`) and a proxy worker in
# milter mode that scans itself (`self_scan`), each with RSPAMD_WORKERS
# processes. Then, one after the other, with the same smtp-source load of
# 10 KB messages:
#
#   postfix        Postfix 3.7 with smtpd_milters = the rspamd proxy
#   tern-http      Tern with a [[filter]] type = "rspamd" (HTTP, keep-alive)
#   tern-milter    Tern with a [[filter]] type = "milter" to the same proxy
#
# A message counts when it is a file in a Maildir `new/` (rspamd's verdict
# on smtp-source's test message is "no action" or "add header"; Tern is set
# to tag, not quarantine, so both deliver into the inbox) and every server
# must have answered 250 to every message (its log says so). Prints the
# median of RUNS; never fails on a figure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS=${RUNS:-3}
MESSAGES=${MESSAGES:-2000}
SESSIONS=${SESSIONS:-20}
SIZE=${SIZE:-10240}
RSPAMD_WORKERS=${RSPAMD_WORKERS:-2}
ONLY=${ONLY:-postfix,tern-http,tern-milter}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-600}
KEEP=${KEEP:-0}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BUILD=${BUILD:-$([ -n "${TERN_BIN:-}" ] && echo 0 || echo 1)}
TERN_BIN=${TERN_BIN:-$TARGET_DIR/release/tern}
SMTP_SOURCE=/usr/sbin/smtp-source
SENDER=bench@client.test
RCPT=alice@example.test

log() { printf '[filter-bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
want() { [[ ",$ONLY," == *",$1,"* ]]; }
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

[ "$(id -u)" -eq 0 ] || die "run as root: the private Postfix instance needs it"
install_postfix
command -v rspamd >/dev/null || die "rspamd is needed (apt-get install rspamd; .ci/run installs it)"
[ "$BUILD" = 1 ] && build_release tern
[ -x "$TERN_BIN" ] || die "no tern binary at $TERN_BIN"

WORK=$(make_work_dir tern-filter-bench)
PF_CONF=$WORK/postfix/conf
PF_STARTED=0
RSPAMD_PID=""
TERN_PID=""
cleanup() {
    set +e
    if [ -n "$TERN_PID" ]; then kill -TERM "$TERN_PID" 2>/dev/null; wait "$TERN_PID" 2>/dev/null; fi
    if [ "$PF_STARTED" = 1 ]; then postfix -c "$PF_CONF" stop >/dev/null 2>&1; fi
    if [ -n "$RSPAMD_PID" ]; then kill -TERM "$RSPAMD_PID" 2>/dev/null; wait "$RSPAMD_PID" 2>/dev/null; fi
    if [ "$KEEP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Descendants of a process, itself included; CPU seconds a process tree
# has used so far (as in compare.sh).
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
cpu_seconds() {
    python3 - $(tree_pids "$1") <<'PY'
import os, sys
hz = os.sysconf("SC_CLK_TCK"); total = 0
for p in sys.argv[1:]:
    try:
        f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    total += sum(int(x) for x in f[11:15])
print("%.2f" % (total / hz))
PY
}

count_new() { if [ -d "$1" ]; then find "$1" -path '*/new/*' -type f | wc -l; else echo 0; fi; }
fresh_mailboxes() { # move every mailbox aside (see compare.sh: never rm -rf between runs)
    local aside
    [ -d "$1" ] || return 0
    mkdir -p "$WORK/aside"
    aside=$(mktemp -d "$WORK/aside/XXXXXX")
    find "$1" -mindepth 1 -maxdepth 1 -exec mv -t "$aside" {} +
}

# ------------------------------------------------------------------ rspamd
start_rspamd() {
    local d=$WORK/rspamd
    mkdir -p "$d/local.d" "$d/db" "$d/run" "$d/log"
    RSPAMD_HTTP=$(free_port); RSPAMD_MILTER=$(free_port)
    cat > "$d/rspamd.conf" <<EOF
.include "\$CONFDIR/common.conf"
options {
    pidfile = "\$RUNDIR/rspamd.pid";
    .include "\$CONFDIR/options.inc"
    .include(try=true; priority=1,duplicate=merge) "\$LOCAL_CONFDIR/local.d/options.inc"
}
logging { type = "file"; filename = "\$LOGDIR/rspamd.log"; level = "warning"; }
worker "normal" {
    bind_socket = "127.0.0.1:$RSPAMD_HTTP";
    .include "\$CONFDIR/worker-normal.inc"
    count = $RSPAMD_WORKERS;
}
worker "rspamd_proxy" {
    bind_socket = "127.0.0.1:$RSPAMD_MILTER";
    milter = yes;
    timeout = 120s;
    count = $RSPAMD_WORKERS;
    upstream "local" { default = yes; self_scan = yes; }
}
EOF
    echo 'dns { nameserver = ["127.0.0.1:9"]; timeout = 0.2s; retransmits = 1; }' > "$d/local.d/options.inc"
    for m in rbl surbl fuzzy_check dkim dmarc spf arc asn mx_check phishing emails replies reputation \
             neural ratelimit greylist history_redis dcc url_redirector hfilter dkim_signing; do
        echo "enabled = false;" > "$d/local.d/$m.conf"
    done
    rspamd -f -i -c "$d/rspamd.conf" "--var=LOCAL_CONFDIR=$d" "--var=DBDIR=$d/db" \
        "--var=RUNDIR=$d/run" "--var=LOGDIR=$d/log" > "$d/stdout.log" 2>&1 &
    RSPAMD_PID=$!
    local deadline=$(( $(date +%s) + 180 ))
    until curl -sf -o /dev/null "http://127.0.0.1:$RSPAMD_HTTP/ping" && wait_port "$RSPAMD_MILTER" 1; do
        [ "$(date +%s)" -lt "$deadline" ] || die "rspamd did not start (see $d/log)"
        sleep 0.5
    done
    log "rspamd $(rspamd --version | tail -1 | awk '{print $NF}'): HTTP 127.0.0.1:$RSPAMD_HTTP, milter 127.0.0.1:$RSPAMD_MILTER, $RSPAMD_WORKERS workers each"
}

# ------------------------------------------------------------------ postfix
# setup_postfix (bench/lib.sh): one virtual mailbox, alice@example.test, and
# rspamd's milter in the path.
RCPT_LOCAL=alice
MAX_RCPTS=0
setup_postfix_with_milter() {
    PF_EXTRA=(
        "smtpd_milters = inet:127.0.0.1:$RSPAMD_MILTER"
        "non_smtpd_milters ="
        "milter_protocol = 6"
        "milter_default_action = accept"
        "milter_mail_macros = i {mail_addr} {client_addr} {client_name} {auth_authen}"
    )
    setup_postfix "$1"
}

# ------------------------------------------------------------------ tern
start_tern() { # name port stage-toml
    local dir=$WORK/$1
    mkdir -p "$dir/data"
    cat > "$dir/tern.toml" <<EOF
hostname = "tern.bench.test"
data_dir = "$dir/data"

[[listener]]
address = "127.0.0.1:$2"
role = "mx"

[dns]
nameservers = ["127.0.0.1:9"]

[domains."example.test"]
mailboxes = ["alice"]

[limits]
max_connections_per_ip = 1000

[mail_auth]
enabled = false

$3
EOF
    "$TERN_BIN" check-config "$dir/tern.toml" > "$dir/check-config.out" 2>&1 \
        || { cat "$dir/check-config.out" >&2; die "tern check-config rejected the bench config"; }
    "$TERN_BIN" serve --allow-root --config "$dir/tern.toml" --log-format text > "$dir/tern.log" 2>&1 &
    TERN_PID=$!
    wait_port "$2" 20 || { tail -20 "$dir/tern.log" >&2; die "tern did not listen on $2"; }
}
stop_tern() { kill -TERM "$TERN_PID"; wait "$TERN_PID" || true; TERN_PID=""; }

accepted() { # kind: 250s so far, from the server's log
    case $1 in
        postfix) grep -c 'postfix/cleanup.*message-id=' "$WORK/postfix/maillog" || true ;;
        *) grep -c -e 'delivered at intake' -e 'queued: message and envelope' "$WORK/$1/tern.log" || true ;;
    esac
}

# run KIND PORT MAILDIR -> "msg/s server-cpu-ms/msg rspamd-cpu-ms/msg" (or fail)
run() {
    local kind=$1 port=$2 dir=$3 t0 t1 n acc0 out=$WORK/source.$1.out pid c0 c1 r0 r1
    fresh_mailboxes "$dir"
    acc0=$(accepted "$kind")
    if [ "$kind" = postfix ]; then pid=$(tr -d ' ' < "$WORK/postfix/queue/pid/master.pid"); else pid=$TERN_PID; fi
    sync; sleep 1
    c0=$(cpu_seconds "$pid"); r0=$(cpu_seconds "$RSPAMD_PID")
    t0=$(now)
    "$SMTP_SOURCE" -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" -f "$SENDER" -t "$RCPT" "127.0.0.1:$port" \
        > "$out" 2>&1 </dev/null || { log "$kind: smtp-source failed: $(tail -2 "$out")"; echo fail; return; }
    local deadline=$(( $(date +%s) + DRAIN_TIMEOUT ))
    while n=$(count_new "$dir"); [ "$n" -lt "$MESSAGES" ]; do
        if [ "$(date +%s)" -ge "$deadline" ]; then log "$kind: only $n of $MESSAGES delivered"; echo fail; return; fi
        sleep 0.05
    done
    t1=$(now)
    c1=$(cpu_seconds "$pid"); r1=$(cpu_seconds "$RSPAMD_PID")
    local acc=$(( $(accepted "$kind") - acc0 ))
    [ "$acc" -eq "$MESSAGES" ] || { log "$kind: $acc answered 250 of $MESSAGES"; echo fail; return; }
    python3 -c 'import sys; m,a,b,c0,c1,r0,r1=sys.argv[1:]; m=int(m); print("%.1f %.2f %.2f" % (m/(float(b)-float(a)), (float(c1)-float(c0))*1000/m, (float(r1)-float(r0))*1000/m))' \
        "$MESSAGES" "$t0" "$t1" "$c0" "$c1" "$r0" "$r1"
}
median() { python3 -c 'import statistics,sys; v=[float(x) for x in sys.argv[1:] if x!="fail"]; m=statistics.median(v) if v and len(v)==len(sys.argv[1:]) else None; print("fail" if m is None else ("%.1f" if m >= 10 else "%.2f") % m)' "$@"; }

# ------------------------------------------------------------------ main
log "work dir $WORK; $RUNS runs of $MESSAGES x $SIZE bytes, $SESSIONS sessions; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
start_rspamd
declare -A RESULTS
PORT_PF=$(free_port); PORT_TH=$(free_port); PORT_TM=$(free_port)
want postfix && setup_postfix_with_milter "$PORT_PF"
HTTP_STAGE="[[filter]]
type = \"rspamd\"
url = \"http://127.0.0.1:$RSPAMD_HTTP\"
spam = \"tag\"
timeout = \"60s\""
MILTER_STAGE="[[filter]]
type = \"milter\"
name = \"rspamd\"
address = \"inet:$RSPAMD_MILTER@127.0.0.1\"
timeout = \"60s\""
declare -A SCPU RCPU
record() { # kind "rate server-cpu rspamd-cpu"
    local rate cpu rcpu
    read -r rate cpu rcpu <<< "$2"
    RESULTS[$1]+=" $rate"; SCPU[$1]+=" ${cpu:-fail}"; RCPU[$1]+=" ${rcpu:-fail}"
    log "run $r $1: $rate msg/s; CPU ms per message: server ${cpu:-?}, rspamd ${rcpu:-?}"
}
# A short warm-up of each path (rspamd compiles its regexps on first use).
for r in $(seq 1 "$RUNS"); do
    if want postfix; then
        [ "$r" = 1 ] && MESSAGES=100 run postfix "$PORT_PF" "$PF_MAIL" >/dev/null
        v=$(run postfix "$PORT_PF" "$PF_MAIL"); record postfix "$v"
    fi
    if want tern-http; then
        start_tern tern-http "$PORT_TH" "$HTTP_STAGE"
        [ "$r" = 1 ] && MESSAGES=100 run tern-http "$PORT_TH" "$WORK/tern-http/data/mail/example.test" >/dev/null
        v=$(run tern-http "$PORT_TH" "$WORK/tern-http/data/mail/example.test"); record tern-http "$v"
        stop_tern
    fi
    if want tern-milter; then
        start_tern tern-milter "$PORT_TM" "$MILTER_STAGE"
        [ "$r" = 1 ] && MESSAGES=100 run tern-milter "$PORT_TM" "$WORK/tern-milter/data/mail/example.test" >/dev/null
        v=$(run tern-milter "$PORT_TM" "$WORK/tern-milter/data/mail/example.test"); record tern-milter "$v"
        stop_tern
    fi
done

PF=$(median ${RESULTS[postfix]:-fail})
printf '\n| server (rspamd in the path) | runs (msg/s) | median msg/s | / Postfix | CPU ms/msg: server | rspamd |\n|---|---|---:|---:|---:|---:|\n'
for k in postfix tern-http tern-milter; do
    want "$k" || continue
    m=$(median ${RESULTS[$k]})
    ratio=$(python3 -c 'import sys; a,b=sys.argv[1:]; print("%.2f" % (float(a)/float(b)) if "fail" not in (a,b) else "-")' "$m" "$PF")
    printf '| %s | %s | %s | %s | %s | %s |\n' "$k" "${RESULTS[$k]# }" "$m" "$ratio" "$(median ${SCPU[$k]})" "$(median ${RCPU[$k]})"
done
log "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
