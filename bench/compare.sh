#!/usr/bin/env bash
# Side-by-side SMTP intake benchmark: Tern vs a private Postfix vs smtp-sink.
#
# Usage: bench/compare.sh            (see bench/README.md for knobs)
#
# Everything runs on 127.0.0.1 with free ports and lives in a temp dir that is
# removed at the end. Postfix runs as a private instance (its own config and
# queue directories, started with `postfix -c DIR start`); the system Postfix
# is never configured or started. Nothing is relayed anywhere: Postfix refuses
# non-local recipients and its default transport is `error`; Tern has no
# trusted networks and its DNS is a dead loopback port.
#
# Besides throughput (msg/s, MB/s, median of RUNS) it reports CPU seconds per
# 1,000 messages, fsyncs per message (strace -c on a short run), Tern's peak
# RSS with 10,000 idle sessions, and the end-of-data -> 250 latency at half of
# Postfix's best rate. It prints figures; it never fails on a figure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

RUNS=${RUNS:-3}
# name:size:messages:sessions:recipients:mode  (mode: new = connection per message, reuse = -d)
SCENARIOS=${SCENARIOS:-"10k-new:10240:5000:50:1:new 10k-reuse:10240:5000:50:1:reuse 1m-new:1048576:200:10:1:new 10k-10rcpt:10240:1000:50:10:new"}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-600}     # seconds to wait for Maildir files after smtp-source ends
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
# Without TERN_BIN, the script builds the tree it is in (a no-op when the
# release build is current), so it never measures a stale binary.
BUILD=${BUILD:-$([ -n "${TERN_BIN:-}" ] && echo 0 || echo 1)}
TERN_BIN=${TERN_BIN:-$TARGET_DIR/release/tern}
LOADGEN_BIN=${LOADGEN_BIN:-$TARGET_DIR/release/tern-loadgen}
ONLY=${ONLY:-postfix,sink,tern}          # which servers to measure
EXTRAS=${EXTRAS:-cpu,fsync,idle,latency} # extra reports (see bench/README.md)
IDLE_SESSIONS=${IDLE_SESSIONS:-10000}
FSYNC_MESSAGES=${FSYNC_MESSAGES:-500}
LATENCY_MESSAGES=${LATENCY_MESSAGES:-2000}
KEEP=${KEEP:-0}                          # KEEP=1: leave the temp dir for inspection
TERN_CONCURRENCY=${TERN_CONCURRENCY:-}   # [delivery] concurrency for Tern (empty: Tern's default)
# A second Tern binary, measured beside the first as "tern-b" (an A/B of two
# builds under the same conditions): runs then alternate between the servers
# in rounds (postfix, tern, tern-b; then tern-b, tern, postfix; ...) instead
# of all runs of one server first.
TERN_BIN_B=${TERN_BIN_B:-}
# Runs alternate between the servers in rounds (INTERLEAVE=1, the default):
# this VM's speed drifts by ±10 % over minutes, so a ratio of two servers
# measured one after the other, all runs of each, moves with it.
# INTERLEAVE=0 measures all runs of one server, then the next.
INTERLEAVE=${INTERLEAVE:-1}

SMTP_SOURCE=/usr/sbin/smtp-source
SMTP_SINK=/usr/sbin/smtp-sink
SENDER=bench@client.test
RCPT_LOCAL=alice                         # -r N makes 1alice ... Nalice
MAX_RCPTS=10

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
want() { [[ ",$ONLY," == *",$1,"* ]]; }
extra() { [[ ",$EXTRAS," == *",$1,"* ]]; }
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

# ------------------------------------------------------------------ install
install_postfix
if extra fsync && ! command -v strace >/dev/null 2>&1; then
    log "installing strace (fsyncs per message)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends strace </dev/null \
        || { log "no strace: skipping the fsync report"; EXTRAS=${EXTRAS//fsync/}; }
fi
[ "$(id -u)" -eq 0 ] || die "run as root: the private Postfix instance needs it"
[ "$BUILD" = 1 ] && build_release tern tern-loadgen
command -v python3 >/dev/null || die "python3 is needed (free ports, statistics)"

# 10,000 idle sessions need 10,000 descriptors in Tern and in the load tool.
NOFILE=$(( IDLE_SESSIONS + 1024 ))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$NOFILE" ]; then
    ulimit -n "$NOFILE" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fi

WORK=$(make_work_dir tern-bench)
PF_CONF=$WORK/postfix/conf
PF_STARTED=0
SINK_PID=""
# Each Tern instance (tern, tern-b) by kind: its process and its Maildirs.
declare -A TERN_PID TERN_MAIL

cleanup() {
    set +e
    if [ -n "$SINK_PID" ]; then kill "$SINK_PID" 2>/dev/null; wait "$SINK_PID" 2>/dev/null; fi
    for pid in "${TERN_PID[@]}"; do
        kill -TERM "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        log "tern (pid $pid) exited with $?"
    done
    if [ "$PF_STARTED" = 1 ]; then postfix -c "$PF_CONF" stop >/dev/null 2>&1 && log "postfix stopped"; fi
    if [ "$KEEP" = 1 ]; then log "kept $WORK"; else
        rm -rf "$WORK"
        [ "${FS_KIND:-}" != "ext4 (no journal)" ] \
            || log "removed $WORK: on ext4 without a journal, wait 6 minutes before the next benchmark here"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

count_new() { # maildir-root: files in every */new/ below it
    if [ -d "$1" ]; then find "$1" -path '*/new/*' -type f | wc -l; else echo 0; fi
}
# fresh_mailboxes DIR: move every mailbox under DIR (the domain directory)
# aside, into a new dir under $WORK/aside; both servers create a missing Maildir on the
# next delivery. A run starts with empty, freshly made directories: an ext4
# directory that once held thousands of entries never shrinks, and creating
# files in it costs both servers several times more CPU.
#
# The old mailboxes are moved, not removed, and only removed with the work
# dir at the end: on ext4 without a journal (this machine's root), a new
# inode skips every inode of its group freed in the last 5 s (5 min while
# the inode table block is dirty), reading each one's inode to check, so a
# run that followed `rm -rf` of the previous run's 5,000 files spent most of
# its CPU in the kernel's find_inode_bit/recently_deleted, whichever server
# it measured (see bench/README.md, "The filesystem").
fresh_mailboxes() {
    local aside
    [ -n "$1" ] && [ -d "$1" ] || return 0
    mkdir -p "$WORK/aside"
    aside=$(mktemp -d "$WORK/aside/XXXXXX")   # called in subshells: no counter
    find "$1" -mindepth 1 -maxdepth 1 -exec mv -t "$aside" {} +
    [ -z "$(ls -A "$1")" ] || { log "could not move the mailboxes in $1 aside"; return 1; }
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

# CPU seconds used by a process tree so far: utime+stime of every live
# process in it plus cutime+cstime (children already reaped) of each.
cpu_seconds() {
    python3 - $(tree_pids "$1") <<'PY'
import os, sys
hz = os.sysconf("SC_CLK_TCK"); total = 0
for p in sys.argv[1:]:
    try:
        f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    total += sum(int(x) for x in f[11:15])   # utime stime cutime cstime
print("%.2f" % (total / hz))
PY
}

# relay_check KIND PORT: the server must refuse a non-local recipient (no open relay in the bench)
relay_check() {
    python3 - "$2" <<'PY' || die "$1 on port $2 accepted a non-local recipient: refusing to benchmark an open relay"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), local_hostname="client.test", timeout=20)
s.ehlo()
s.mail("bench@client.test")
code, text = s.rcpt("victim@remote.test")
s.rset(); s.quit()
print(f"[bench] relay probe: RCPT TO:<victim@remote.test> -> {code} {text.decode(errors='replace')}", file=sys.stderr)
sys.exit(0 if 500 <= code < 600 else 1)
PY
}

# ------------------------------------------------------------------ postfix
# setup_postfix and postfix_pid: bench/lib.sh

# ------------------------------------------------------------------ sink
SINK_OUT=""
start_sink() {
    local port=$1
    SINK_OUT=$WORK/sink.$RANDOM.out
    "$SMTP_SINK" -c -u nobody -m 1000 "127.0.0.1:$port" 1024 > "$SINK_OUT" 2>&1 &
    SINK_PID=$!
    wait_port "$port" 10 || die "smtp-sink did not listen on $port"
}
stop_sink() {
    kill "$SINK_PID" 2>/dev/null || true
    wait "$SINK_PID" 2>/dev/null || true
    SINK_PID=""
}
sink_count() { # last "mesg=N" counter printed by smtp-sink -c
    tr '\r' '\n' < "$SINK_OUT" | sed -n 's/.*mesg=\([0-9]*\).*/\1/p' | tail -1
}

# ------------------------------------------------------------------ tern
# setup_tern PORT KIND BIN: KIND is tern or tern-b (its own directory under $WORK)
setup_tern() {
    local port=$1 kind=$2 bin=$3 dir=$WORK/$2 mailboxes
    mkdir -p "$dir/data"
    mailboxes="\"$RCPT_LOCAL\""
    for i in $(seq 1 $MAX_RCPTS); do mailboxes+=", \"$i$RCPT_LOCAL\""; done
    cat > "$dir/tern.toml" <<EOF
hostname = "tern.bench.test"
data_dir = "$dir/data"
trusted_networks = []

[[listener]]
address = "127.0.0.1:$port"
role = "mx"

[dns]
# A dead loopback port: Tern never asks a real resolver during the bench.
nameservers = ["127.0.0.1:9"]

[domains."example.test"]
mailboxes = [$mailboxes]

[limits]
max_message_size = 52428800
max_recipients = 100
max_connections = $(( IDLE_SESSIONS + 1000 ))
max_connections_per_ip = $(( IDLE_SESSIONS + 1000 ))
command_timeout = "300s"
data_timeout = "180s"

# The idle-session report holds $IDLE_SESSIONS silent sessions on purpose:
# stress mode (short timeouts from 70 % of max_connections) would close them.
[limits.stress]
threshold = 0

[smtp]
bare_line_endings = "reject"
early_talkers = "reject"
vrfy = false
expn = false

# Like the Postfix instance: no SPF/DKIM/DMARC checks (and, above, no DNS
# at all: nothing here may leave 127.0.0.0/8).
[mail_auth]
enabled = false
EOF
    if [ -n "$TERN_CONCURRENCY" ]; then
        printf '\n[delivery]\nconcurrency = %s\n' "$TERN_CONCURRENCY" >> "$dir/tern.toml"
    fi
    "$bin" check-config "$dir/tern.toml" > "$dir/check-config.out" 2>&1 \
        || { cat "$dir/check-config.out" >&2; die "tern check-config rejected the bench config"; }
    "$bin" serve --allow-root --config "$dir/tern.toml" --log-format text > "$dir/tern.log" 2>&1 &
    TERN_PID[$kind]=$!
    TERN_MAIL[$kind]=$dir/data/mail/example.test
    wait_port "$port" 20 || { tail -20 "$dir/tern.log" >&2; die "$kind did not listen on $port"; }
}

# accepted_count KIND: messages the server has answered 250 to so far (from its log)
accepted_count() {
    case $1 in
        tern|tern-b) grep -c -e 'delivered at intake' -e 'queued: message and envelope' "$WORK/$1/tern.log" || true ;;
        postfix) grep -c 'postfix/cleanup.*message-id=' "$WORK/postfix/maillog" || true ;;
    esac
}

# ------------------------------------------------------------------ one run
# run_one KIND PORT SIZE MESSAGES SESSIONS RCPTS MODE -> prints "msg/s cpu_s" (or "fail")
run_one() {
    local kind=$1 port=$2 size=$3 msgs=$4 sess=$5 rcpts=$6 mode=$7 args=() t0 t1 n rc=0 out
    local acc0=0 cpu0=0 cpu1 pid="" files
    [ "$mode" = reuse ] && args+=(-d)
    args+=(-s "$sess" -m "$msgs" -l "$size" -f "$SENDER" -t "$RCPT_LOCAL@example.test")
    [ "$rcpts" -gt 1 ] && args+=(-r "$rcpts")
    files=$(( msgs * rcpts ))
    case $kind in
        postfix) fresh_mailboxes "$PF_MAIL" || { echo fail; return; }; pid=$(postfix_pid) ;;
        tern|tern-b) fresh_mailboxes "${TERN_MAIL[$kind]}" || { echo fail; return; }; pid=${TERN_PID[$kind]} ;;
        sink) start_sink "$port"; pid=$SINK_PID ;;
    esac
    [ "$kind" != sink ] && acc0=$(accepted_count "$kind")
    # Start every run with nothing dirty in the page cache: otherwise a run
    # shares the disk and the CPU with the writeback of the run before it,
    # which may be another server's.
    sync
    sleep 1
    cpu0=$(cpu_seconds "$pid")
    out=$WORK/source.$kind.$mode.out
    t0=$(now)
    "$SMTP_SOURCE" "${args[@]}" "127.0.0.1:$port" > "$out" 2>&1 </dev/null || rc=$?
    if [ "$rc" -ne 0 ]; then
        log "$kind/$mode: smtp-source failed ($rc): $(tail -3 "$out" | tr '\n' ' ')"
        [ "$kind" = sink ] && stop_sink
        echo fail; return
    fi
    case $kind in
        sink)
            t1=$(now)
            cpu1=$(cpu_seconds "$pid")
            sleep 0.2
            n=$(sink_count); stop_sink
            if [ "${n:-0}" -ne "$msgs" ]; then log "sink/$mode: accepted ${n:-0} of $msgs"; echo fail; return; fi
            ;;
        postfix|tern|tern-b)
            local dir
            if [ "$kind" = postfix ]; then dir=$PF_MAIL; else dir=${TERN_MAIL[$kind]}; fi
            local deadline=$(( $(date +%s) + DRAIN_TIMEOUT ))
            while n=$(count_new "$dir"); [ "$n" -lt "$files" ]; do
                if [ "$(date +%s)" -ge "$deadline" ]; then
                    log "$kind/$mode: only $n of $files in $dir after ${DRAIN_TIMEOUT}s"; echo fail; return
                fi
                sleep 0.05
            done
            t1=$(now)
            cpu1=$(cpu_seconds "$pid")
            sleep 1
            n=$(count_new "$dir")
            [ "$n" -eq "$files" ] || log "$kind/$mode: warning: $n files for $files deliveries (duplicates?)"
            local acc=$(( $(accepted_count "$kind") - acc0 ))
            if [ "$acc" -ne "$msgs" ]; then
                log "$kind: $acc messages answered 250 (by its log), $msgs sent"; echo fail; return
            fi
            ;;
    esac
    python3 -c 'import sys; m,t0,t1,c0,c1=sys.argv[1:]; print("%.1f %.3f" % (int(m)/(float(t1)-float(t0)), (float(c1)-float(c0))*1000/int(m)))' \
        "$msgs" "$t0" "$t1" "$cpu0" "$cpu1"
}

median() { python3 -c 'import statistics,sys; v=[float(x) for x in sys.argv[1:] if x!="fail"]; print(("%.1f" if statistics.median(v)>=10 else "%.2f") % statistics.median(v) if v and len(v)==len(sys.argv[1:]) else "fail")' "$@"; }

# fsyncs_per_message KIND PORT: strace -c -f attached to the server during a short run
fsyncs_per_message() {
    local kind=$1 port=$2 pid pids=() spid n=$FSYNC_MESSAGES trace=$WORK/strace.$1.txt dir
    case $kind in
        postfix) pid=$(postfix_pid); dir=$PF_MAIL; fresh_mailboxes "$dir" ;;
        tern) pid=${TERN_PID[tern]}; dir=${TERN_MAIL[tern]}; fresh_mailboxes "$dir" ;;
    esac
    for p in $(tree_pids "$pid"); do pids+=(-p "$p"); done
    strace -f -c -e trace=fsync,fdatasync,syncfs,sync_file_range,msync -o "$trace" "${pids[@]}" 2>/dev/null &
    spid=$!
    sleep 1
    "$SMTP_SOURCE" -s 20 -m "$n" -l 10240 -f "$SENDER" -t "$RCPT_LOCAL@example.test" "127.0.0.1:$port" >/dev/null 2>&1 </dev/null || true
    local deadline=$(( $(date +%s) + DRAIN_TIMEOUT ))
    while [ "$(count_new "$dir")" -lt "$n" ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.1; done
    sleep 1
    kill -INT "$spid" 2>/dev/null; wait "$spid" 2>/dev/null || true
    python3 - "$trace" "$n" <<'PY'
import sys
calls = {}
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) >= 5 and f[-1] in ("fsync", "fdatasync", "syncfs", "sync_file_range", "msync"):
        calls[f[-1]] = int(f[3])
n = int(sys.argv[2])
total = sum(calls.values())
detail = ", ".join(f"{k} {v}" for k, v in sorted(calls.items()))
print("%.2f (%s over %d messages)" % (total / n, detail or "none", n))
PY
}

# idle_rss PORT: Tern's RSS while IDLE_SESSIONS sessions sit idle after EHLO
idle_rss() {
    local port=$1 out=$WORK/idle.out lg peak=0 base
    base=$(awk '/VmRSS/ {print $2}' "/proc/${TERN_PID[tern]}/status")
    "$LOADGEN_BIN" idle --addr "127.0.0.1:$port" --sessions "$IDLE_SESSIONS" --hold 5 > "$out" 2>&1 &
    lg=$!
    while kill -0 "$lg" 2>/dev/null; do
        local r; r=$(awk '/VmRSS/ {print $2}' "/proc/${TERN_PID[tern]}/status")
        [ "$r" -gt "$peak" ] && peak=$r
        sleep 0.2
    done
    wait "$lg" || true
    log "idle sessions: $(head -1 "$out")"
    echo "$(( peak / 1024 )) MB peak RSS with $(sed -n 's/^ready \([0-9]*\).*/\1/p' "$out") idle sessions (before: $(( base / 1024 )) MB)"
}

# latency KIND PORT RATE
latency() {
    "$LOADGEN_BIN" latency --addr "127.0.0.1:$2" --rate "$3" --messages "$LATENCY_MESSAGES" --sessions 50 \
        --size 10240 --rcpt "$RCPT_LOCAL@example.test" 2>&1 | tail -1
}

# ------------------------------------------------------------------ main
declare -A PORT RESULT CPU
log "work dir $WORK; $RUNS runs; scenarios: $SCENARIOS"
log "$(postconf -d -h mail_version | sed 's/^/postfix /'); $(nproc) cores; $(uname -r); load: $(cut -d' ' -f1-3 /proc/loadavg)"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
FS_KIND=$(fs_kind "$WORK")
if [ "$FS_KIND" = "ext4 (no journal)" ]; then
    log "note: $WORK is on ext4 without a journal: for about 5 minutes after many files are deleted"
    log "      there (an rm -rf, a previous benchmark's cleanup), creating files costs every server"
    log "      several times more CPU; start on a quiet filesystem for comparable figures"
fi

if want postfix; then
    PORT[postfix]=$(free_port)
    log "starting private postfix on 127.0.0.1:${PORT[postfix]}"
    setup_postfix "${PORT[postfix]}"
    relay_check postfix "${PORT[postfix]}"
fi
if want sink; then
    PORT[sink]=$(free_port)
fi
if want tern; then
    if [ -x "$TERN_BIN" ]; then
        PORT[tern]=$(free_port)
        log "starting tern ($TERN_BIN) on 127.0.0.1:${PORT[tern]}"
        setup_tern "${PORT[tern]}" tern "$TERN_BIN"
        relay_check tern "${PORT[tern]}"
    else
        log "no tern binary at $TERN_BIN (build it with: cargo build --release); measuring the others only"
        ONLY=${ONLY//tern/}
    fi
fi

if want tern && [ -n "$TERN_BIN_B" ]; then
    [ -x "$TERN_BIN_B" ] || die "no tern binary at TERN_BIN_B=$TERN_BIN_B"
    ONLY+=",tern-b"
    PORT[tern-b]=$(free_port)
    log "starting tern-b ($TERN_BIN_B) on 127.0.0.1:${PORT[tern-b]}"
    setup_tern "${PORT[tern-b]}" tern-b "$TERN_BIN_B"
    relay_check tern-b "${PORT[tern-b]}"
fi
[ "$INTERLEAVE" = 1 ] && log "runs alternate between the servers"

IDLE_REPORT="-"
if want tern && extra idle; then
    if [ -x "$LOADGEN_BIN" ]; then
        IDLE_REPORT=$(idle_rss "${PORT[tern]}")
    else
        IDLE_REPORT="skipped: no $LOADGEN_BIN (cargo build --release -p tern-loadgen)"
    fi
fi

KINDS=()
for kind in postfix sink tern tern-b; do want "$kind" && KINDS+=("$kind"); done
declare -A VALS CPUS
# measure KIND NAME R SIZE MSGS SESS RCPTS MODE: one run, its figures kept for the medians
measure() {
    local kind=$1 name=$2 r=$3 v
    v=$(run_one "$kind" "${PORT[$kind]}" "$4" "$5" "$6" "$7" "$8")
    log "$kind $name run $r: $v (msg/s, CPU s per 1000 msgs)"
    if [ "$v" = fail ]; then VALS[$kind,$name]+=" fail"; CPUS[$kind,$name]+=" fail"
    else VALS[$kind,$name]+=" ${v% *}"; CPUS[$kind,$name]+=" ${v#* }"; fi
}
for sc in $SCENARIOS; do
    IFS=: read -r name size msgs sess rcpts mode <<<"$sc"
    if [ "$INTERLEAVE" = 1 ]; then
        # Odd rounds in the order postfix, sink, tern, tern-b; even rounds
        # backwards, so that no server always follows the same one.
        for r in $(seq 1 "$RUNS"); do
            order=("${KINDS[@]}")
            if (( r % 2 == 0 )); then
                order=(); for (( i = ${#KINDS[@]} - 1; i >= 0; i-- )); do order+=("${KINDS[i]}"); done
            fi
            for kind in "${order[@]}"; do measure "$kind" "$name" "$r" "$size" "$msgs" "$sess" "$rcpts" "$mode"; done
        done
    else
        for kind in "${KINDS[@]}"; do
            for r in $(seq 1 "$RUNS"); do measure "$kind" "$name" "$r" "$size" "$msgs" "$sess" "$rcpts" "$mode"; done
        done
    fi
    for kind in "${KINDS[@]}"; do
        # shellcheck disable=SC2086 # the figures are space-separated words
        RESULT[$kind,$name]=$(median ${VALS[$kind,$name]})
        # shellcheck disable=SC2086
        CPU[$kind,$name]=$(median ${CPUS[$kind,$name]})
    done
done

declare -A FSYNC LAT
for kind in postfix tern; do
    want "$kind" && extra fsync && FSYNC[$kind]=$(fsyncs_per_message "$kind" "${PORT[$kind]}")
done
if extra latency && want postfix && [ -x "$LOADGEN_BIN" ]; then
    best=$(python3 -c 'import sys; v=[float(x) for x in sys.argv[1:] if x not in ("fail","")]; print(max(v) if v else 0)' \
        "${RESULT[postfix,10k-new]:-}" "${RESULT[postfix,10k-reuse]:-}")
    RATE=$(python3 -c 'import sys; print("%.0f" % (float(sys.argv[1]) / 2))' "$best")
    if [ "$RATE" != 0 ]; then
        for kind in postfix tern; do
            want "$kind" && LAT[$kind]=$(latency "$kind" "${PORT[$kind]}" "$RATE")
        done
    fi
fi

ratio() { python3 -c 'import sys
a,b=sys.argv[1],sys.argv[2]
print("-" if "-" in (a,b) or "fail" in (a,b) else "%.2f" % (float(a)/float(b)))' "$1" "$2"; }
mbs() { python3 -c 'import sys
v,s=sys.argv[1],sys.argv[2]
print("-" if v in ("-","fail") else "%.1f" % (float(v)*int(s)/1e6))' "$1" "$2"; }

echo
echo "$(date -u +%F) $(nproc) cores, $(uname -r), $FS_KIND on $(df "$WORK" | awk 'NR==2 {print $1}'); load average at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg)"
echo "Median of $RUNS runs. Postfix and Tern: until every delivery is a file in a Maildir new/ (and the 250s counted in"
echo "their logs equal the messages sent); smtp-sink: until smtp-source ends. MB/s counts message bytes once per message."
printf '\n%-12s %-30s %10s %10s %10s %9s %9s %9s %8s %8s\n' scenario "(size x msgs, sessions, rcpts)" postfix sink tern "pf MB/s" "tern MB/s" "t/pf" "t/sink" ""
for sc in $SCENARIOS; do
    IFS=: read -r name size msgs sess rcpts mode <<<"$sc"
    p=${RESULT[postfix,$name]:--}; s=${RESULT[sink,$name]:--}; t=${RESULT[tern,$name]:--}
    desc="$size B x $msgs, -s $sess, $rcpts rcpt"; [ "$mode" = reuse ] && desc+=", -d"
    printf '%-12s %-30s %10s %10s %10s %9s %9s %9s %8s\n' "$name" "$desc" "$p" "$s" "$t" \
        "$(mbs "$p" "$size")" "$(mbs "$t" "$size")" "$(ratio "$t" "$p")" "$(ratio "$t" "$s")"
done
echo
echo "CPU seconds per 1,000 messages (the server's process tree, median):"
for sc in $SCENARIOS; do
    IFS=: read -r name _ <<<"$sc"
    printf '  %-12s postfix %-8s smtp-sink %-8s tern %s\n' "$name" "${CPU[postfix,$name]:--}" "${CPU[sink,$name]:--}" "${CPU[tern,$name]:--}"
done
if [ "$INTERLEAVE" = 1 ]; then
    echo "Every run, in order (msg/s), and each Tern run over the Postfix run of its round:"
    for sc in $SCENARIOS; do
        IFS=: read -r name _ <<<"$sc"
        for kind in "${KINDS[@]}"; do
            printf '  %-12s %-8s %s' "$name" "$kind" "${VALS[$kind,$name]# }"
            if [[ $kind == tern* ]] && want postfix; then
                read -ra t <<<"${VALS[$kind,$name]}"; read -ra p <<<"${VALS[postfix,$name]}"
                rs=(); ok=()
                for i in "${!t[@]}"; do
                    rs+=("$(ratio "${t[i]}" "${p[i]:-fail}")")
                    [ "${rs[-1]}" = - ] || ok+=("${rs[-1]}")
                done
                printf '   per-run ratios: %s' "${rs[*]}"
                [ ${#ok[@]} -eq 0 ] || printf '; median %s' "$(median "${ok[@]}")"
            fi
            echo
        done
    done
fi
if want tern-b; then
    echo "tern-b ($TERN_BIN_B) beside tern ($TERN_BIN), medians:"
    for sc in $SCENARIOS; do
        IFS=: read -r name _ <<<"$sc"
        p=${RESULT[postfix,$name]:--}; t=${RESULT[tern,$name]:--}; b=${RESULT[tern-b,$name]:--}
        printf '  %-12s tern %s msg/s (%s x postfix), tern-b %s msg/s (%s x postfix), tern-b/tern %s; CPU ms/msg tern %s, tern-b %s\n' \
            "$name" "$t" "$(ratio "$t" "$p")" "$b" "$(ratio "$b" "$p")" "$(ratio "$b" "$t")" \
            "${CPU[tern,$name]:--}" "${CPU[tern-b,$name]:--}"
    done
fi
if extra fsync; then
    echo "fsyncs per message (10 KB, 1 rcpt, strace -c -f, $FSYNC_MESSAGES messages):"
    echo "  postfix ${FSYNC[postfix]:--}"
    echo "  tern    ${FSYNC[tern]:--}"
fi
extra idle && echo "Tern, $IDLE_SESSIONS idle sessions after EHLO: $IDLE_REPORT"
if extra latency; then
    echo "End of data -> 250 at ${RATE:-?} msg/s offered (half of Postfix's best 10 KB rate), 10 KB, 50 sessions:"
    echo "  postfix ${LAT[postfix]:--}"
    echo "  tern    ${LAT[tern]:--}"
fi
