#!/usr/bin/env bash
# Several nodes, one queue: the same smtp-source load against
#   1. one Tern node on the file spool,
#   2. one node on PostgreSQL,
#   3. three nodes on one PostgreSQL database (127.0.0.11, .12, .13; the
#      load is split evenly over them),
# printing end-to-end msg/s per row (from the first connection to the last
# message delivered) and its ratio to the first row.
#
# Every message has two recipients, so that it goes through the queue
# (commit, lease, per-recipient results, removal) rather than the intake's
# Maildir fast path: box@lmtp.bench.test, delivered over LMTP to an
# `smtp-sink -L`, and 2box@lmtp.bench.test, an alias of a remote address
# delivered through the smarthost, a second smtp-sink. smtp-source's `-r 2`
# makes the two names.
#
# PostgreSQL is a private cluster (initdb into the work dir, a loopback
# port, fsync = on, synchronous_commit = on; run as the postgres user when
# the script runs as root), started and removed here: never the system's.
# One fresh database per row.
#
# Usage: bench/queue-nodes.sh        (as root: smtp-sink drops to nobody)
#
# Knobs: MESSAGES (per row, default 3000), SIZE (bytes, 10240), SESSIONS
# (smtp-source sessions per row, split over the nodes, default 30), ROWS
# (default "files pg1 pg3"), DRAIN_TIMEOUT (s, 600), TERN_BIN (else the
# release build of this tree, built first), TERN_PG_BIN (the directory of
# initdb and postgres; else /usr/lib/postgresql/{17,16,15}/bin), KEEP=1 to
# leave the work dir.
#
# It prints figures; it never fails on a figure (a row that cannot run
# prints why and the script goes on).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
MESSAGES=${MESSAGES:-3000}
SIZE=${SIZE:-10240}
SESSIONS=${SESSIONS:-30}
ROWS=${ROWS:-"files pg1 pg3"}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-600}
KEEP=${KEEP:-0}
BUILD=${BUILD:-$([ -n "${TERN_BIN:-}" ] && echo 0 || echo 1)}
TERN_BIN=${TERN_BIN:-$TARGET_DIR/release/tern}

SMTP_SOURCE=/usr/sbin/smtp-source
SMTP_SINK=/usr/sbin/smtp-sink
RCPT=box@lmtp.bench.test

log() { printf '[queue-nodes] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

install_postfix
[ -x "$SMTP_SOURCE" ] && [ -x "$SMTP_SINK" ] || die "smtp-source and smtp-sink are needed (postfix)"
command -v python3 >/dev/null || die "python3 is needed (free ports)"
[ "$BUILD" = 1 ] && build_release tern
[ -x "$TERN_BIN" ] || die "no tern binary at $TERN_BIN"

WORK=$(make_work_dir tern-queue-nodes)
TERN_PIDS=()
SINK_PIDS=()
PG_PID=""

stop_terns() {
    local pid
    for pid in "${TERN_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${TERN_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    TERN_PIDS=()
}
stop_sinks() {
    local pid
    for pid in "${SINK_PIDS[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
    SINK_PIDS=()
}
cleanup() {
    set +e
    stop_terns
    stop_sinks
    if [ -n "$PG_PID" ]; then kill -INT "$PG_PID" 2>/dev/null; wait "$PG_PID" 2>/dev/null; fi
    if [ "$KEEP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------ PostgreSQL
PG_BIN=""
AS_PG=()
# start_pg: a private cluster in $WORK/pg on $PG_PORT; fails (after saying
# why) when PostgreSQL is not installed or does not start.
start_pg() {
    local candidates=() d
    if [ -n "${TERN_PG_BIN:-}" ]; then candidates=("$TERN_PG_BIN"); else
        candidates=(/usr/lib/postgresql/17/bin /usr/lib/postgresql/16/bin /usr/lib/postgresql/15/bin)
    fi
    for d in "${candidates[@]}"; do
        if [ -x "$d/initdb" ] && [ -x "$d/postgres" ]; then PG_BIN=$d; break; fi
    done
    [ -n "$PG_BIN" ] || { log "no PostgreSQL (initdb, postgres) in ${candidates[*]}: install postgresql-15"; return 1; }
    mkdir -p "$WORK/pg"
    if [ "$(id -u)" -eq 0 ]; then
        local user
        user=$(getent passwd postgres >/dev/null && echo postgres || echo nobody)
        chown "$user" "$WORK/pg"
        AS_PG=(setpriv "--reuid=$(id -u "$user")" "--regid=$(id -g "$user")" --clear-groups --)
    fi
    "${AS_PG[@]}" "$PG_BIN/initdb" -D "$WORK/pg/data" -U tern --auth=trust -E UTF8 --no-sync \
        --no-instructions > "$WORK/pg/initdb.log" 2>&1 \
        || { log "initdb failed: $(tail -3 "$WORK/pg/initdb.log")"; return 1; }
    PG_PORT=$(free_port)
    "${AS_PG[@]}" "$PG_BIN/postgres" -D "$WORK/pg/data" -k "$WORK/pg" -p "$PG_PORT" -h 127.0.0.1 \
        -c fsync=on -c synchronous_commit=on -c max_connections=100 > "$WORK/pg/server.log" 2>&1 &
    PG_PID=$!
    wait_port "$PG_PORT" 60 || { log "postgres did not start: $(tail -3 "$WORK/pg/server.log")"; return 1; }
    log "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT"
}
# create_db NAME: a fresh database; prints its connection string.
create_db() {
    "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U tern "$1" >&2 || return 1
    echo "host=127.0.0.1 port=$PG_PORT user=tern dbname=$1"
}

# ------------------------------------------------------------ sinks
sink_count() { # OUT: the last "mesg=N" counter printed by smtp-sink -c
    tr '\r' '\n' < "$1" | sed -n 's/.*mesg=\([0-9]*\).*/\1/p' | tail -1
}
# start_sinks: an LMTP sink on $LMTP_PORT, an SMTP sink on $REMOTE_PORT.
start_sinks() {
    LMTP_PORT=$(free_port)
    REMOTE_PORT=$(free_port)
    LMTP_OUT=$WORK/lmtp.$RANDOM.out
    REMOTE_OUT=$WORK/remote.$RANDOM.out
    "$SMTP_SINK" -c -L -u nobody -m 1000 "127.0.0.1:$LMTP_PORT" 1024 > "$LMTP_OUT" 2>&1 &
    SINK_PIDS+=($!)
    "$SMTP_SINK" -c -u nobody -m 1000 "127.0.0.1:$REMOTE_PORT" 1024 > "$REMOTE_OUT" 2>&1 &
    SINK_PIDS+=($!)
    wait_port "$LMTP_PORT" 10 && wait_port "$REMOTE_PORT" 10
}

# ------------------------------------------------------------ nodes
# start_node NAME IP PORT URL: a Tern node (URL empty: the file spool).
start_node() {
    local name=$1 ip=$2 port=$3 url=$4 dir=$WORK/$ROW/$1
    mkdir -p "$dir/data"
    cat > "$dir/tern.toml" <<EOF
hostname = "$name.bench.test"
data_dir = "$dir/data"
trusted_networks = []

[[listener]]
address = "$ip:$port"
role = "mx"

[dns]
# A dead loopback port: nothing in the benchmark looks anything up.
nameservers = ["127.0.0.1:9"]

[domains."lmtp.bench.test"]
mailboxes = ["box"]
aliases = { "2box" = ["sink@remote.bench.test"] }
lmtp = "tcp:127.0.0.1:$LMTP_PORT"

[delivery.smarthost]
host = "127.0.0.1"
port = $REMOTE_PORT
tls = "none"

[limits]
max_connections = 2000
max_connections_per_ip = 2000

[mail_auth]
enabled = false

[log]
level = "warn"
EOF
    if [ -n "$url" ]; then
        cat >> "$dir/tern.toml" <<EOF

[queue]
backend = "postgres"
url = "$url"
pool_size = 8
lease_seconds = 60
node = "$name"
EOF
    fi
    RUST_BACKTRACE=0 "$TERN_BIN" check-config "$dir/tern.toml" > "$dir/check-config.out" 2>&1 \
        || { log "$ROW: tern check-config refused $name's config: $(grep -v '^$' "$dir/check-config.out" | tail -3 | tr '\n' ' ')"; return 1; }
    "$TERN_BIN" serve --allow-root --config "$dir/tern.toml" > "$dir/tern.log" 2>&1 &
    TERN_PIDS+=($!)
    python3 - "$ip" "$port" <<'PY' || { log "$ROW: $name did not listen on $ip:$port: $(tail -3 "$dir/tern.log")"; return 1; }
import socket, sys, time
deadline = time.time() + 20
while True:
    try:
        socket.create_connection((sys.argv[1], int(sys.argv[2])), 1).close(); break
    except OSError:
        if time.time() > deadline: sys.exit(1)
        time.sleep(0.1)
PY
}

# A port free on 127.0.0.11, .12 and .13.
shared_port() {
    python3 - <<'PY'
import socket
for _ in range(50):
    a = socket.socket(); a.bind(("127.0.0.11", 0)); port = a.getsockname()[1]
    try:
        for ip in ("127.0.0.12", "127.0.0.13"):
            s = socket.socket(); s.bind((ip, port)); s.close()
    except OSError:
        a.close(); continue
    print(port); break
PY
}

# run_row ROW NODES BACKEND -> prints "msg/s intake_s" or "fail" (run with
# its output to a file, not in $(…): the parent must know the PIDs it
# starts, to stop them)
run_row() {
    local nodes=$2 backend=$3 url="" port i ip t0 t1 pids=() rc=0 per sess deadline n_l n_r
    start_sinks || { log "$ROW: sinks did not start"; echo fail; return; }
    if [ "$backend" = pg ]; then
        url=$(create_db "bench_$ROW") || { log "$ROW: createdb failed"; echo fail; return; }
    fi
    port=$(shared_port)
    for i in $(seq 1 "$nodes"); do
        ip=127.0.0.$(( 10 + i ))
        start_node "n$i" "$ip" "$port" "$url" || { echo fail; return; }
    done
    per=$(( MESSAGES / nodes ))
    sess=$(( SESSIONS / nodes )); [ "$sess" -ge 1 ] || sess=1
    sync; sleep 1
    t0=$(now)
    for i in $(seq 1 "$nodes"); do
        "$SMTP_SOURCE" -s "$sess" -m "$per" -l "$SIZE" -r 2 -f bench@client.test -t "$RCPT" \
            "127.0.0.$(( 10 + i )):$port" > "$WORK/$ROW/source.$i.out" 2>&1 < /dev/null &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || rc=$?; done
    local intake; intake=$(python3 -c 'import sys; print("%.2f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$t0" "$(now)")
    if [ "$rc" -ne 0 ]; then
        log "$ROW: smtp-source failed: $(cat "$WORK/$ROW"/source.*.out | tail -3 | tr '\n' ' ')"
        echo fail; return
    fi
    local total=$(( per * nodes ))
    deadline=$(( $(date +%s) + DRAIN_TIMEOUT ))
    while n_l=$(sink_count "$LMTP_OUT"); n_r=$(sink_count "$REMOTE_OUT"); [ "${n_l:-0}" -lt "$total" ] || [ "${n_r:-0}" -lt "$total" ]; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            log "$ROW: after ${DRAIN_TIMEOUT}s only ${n_l:-0} LMTP and ${n_r:-0} remote deliveries of $total"
            echo fail; return
        fi
        sleep 0.05
    done
    t1=$(now)
    sleep 1
    n_l=$(sink_count "$LMTP_OUT"); n_r=$(sink_count "$REMOTE_OUT")
    [ "$n_l" -eq "$total" ] && [ "$n_r" -eq "$total" ] \
        || log "$ROW: warning: $n_l LMTP and $n_r remote deliveries for $total messages (duplicates?)"
    stop_terns
    stop_sinks
    python3 -c 'import sys; m,t0,t1,i=sys.argv[1:]; print("%.1f %s" % (int(m)/(float(t1)-float(t0)), i))' \
        "$total" "$t0" "$t1" "$intake"
}

# ------------------------------------------------------------ main
log "work dir $WORK; $MESSAGES messages of $SIZE bytes, 2 recipients each, $SESSIONS sessions per row"
echo "# queue nodes: $MESSAGES messages x 2 recipients (LMTP + smarthost), $SIZE bytes, $SESSIONS sessions; $(nproc) CPUs, $(uname -r)"
echo "# disk of the work dir: $(fs_kind "$WORK"), $(df -h "$WORK" | awk 'NR==2 {print $1}')"
PG_UP=0
case " $ROWS " in *" pg"*) start_pg && PG_UP=1 ;; esac
printf '%-26s %10s %8s %10s\n' "row" "msg/s" "ratio" "intake s"
FIRST=""
for ROW in $ROWS; do
    mkdir -p "$WORK/$ROW"
    case $ROW in
        files) label="1 node, files"; nodes=1; backend=files ;;
        pg1) label="1 node, PostgreSQL"; nodes=1; backend=pg ;;
        pg3) label="3 nodes, PostgreSQL"; nodes=3; backend=pg ;;
        *) log "unknown row $ROW (files, pg1, pg3)"; continue ;;
    esac
    if [ "$backend" = pg ] && [ "$PG_UP" != 1 ]; then
        echo fail > "$WORK/$ROW/result"
    else
        run_row "$ROW" "$nodes" "$backend" > "$WORK/$ROW/result"
    fi
    stop_terns; stop_sinks
    result=$(tail -1 "$WORK/$ROW/result")
    if [ "$result" = fail ]; then
        printf '%-26s %10s\n' "$label" "-"
        continue
    fi
    rate=${result% *}; intake=${result#* }
    [ -n "$FIRST" ] || FIRST=$rate
    ratio=$(python3 -c 'import sys; print("%.2fx" % (float(sys.argv[1]) / float(sys.argv[2])))' "$rate" "$FIRST")
    printf '%-26s %10s %8s %10s\n' "$label" "$rate" "$ratio" "$intake"
done
exit 0
