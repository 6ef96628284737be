#!/usr/bin/env bash
# Relay throughput: Tern -> smtp-sink against Postfix -> smtp-sink (issue 6,
# item 6), same load from smtp-source, same machine, one after the other.
#
# Usage: bench/relay.sh        (as root; MESSAGES, SESSIONS, SIZE, RUNS knobs)
#
# Each server accepts from 127.0.0.0/8 (its trusted networks / mynetworks)
# mail for far.test and relays it through one smarthost / relayhost: a
# Postfix smtp-sink on 127.0.0.1. A message counts when the sink has taken
# it (its `-c` counter), so the figure covers intake, the durable queue and
# the outbound SMTP client. Nothing leaves 127.0.0.0/8: the next hop is an IP
# literal and Tern's DNS is a dead loopback port. Prints msg/s per server
# (median of RUNS) and the ratio; never fails on a figure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS=${RUNS:-3}
MESSAGES=${MESSAGES:-2000}
SESSIONS=${SESSIONS:-20}
SIZE=${SIZE:-10240}
TIMEOUT=${TIMEOUT:-300}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
# Without TERN_BIN, the script builds the tree it is in (see compare.sh).
BUILD=${BUILD:-$([ -n "${TERN_BIN:-}" ] && echo 0 || echo 1)}
TERN_BIN=${TERN_BIN:-$TARGET_DIR/release/tern}
SMTP_SOURCE=/usr/sbin/smtp-source
SMTP_SINK=/usr/sbin/smtp-sink

log() { printf '[relay] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

[ "$(id -u)" -eq 0 ] || die "run as root: the private Postfix instance needs it"
[ "$BUILD" = 1 ] && build_release tern
[ -x "$TERN_BIN" ] || die "no $TERN_BIN: cargo build --release -p tern"
install_postfix

WORK=$(make_work_dir tern-relay)
SINK_PID=""
TERN_PID=""
PF_CONF=$WORK/postfix/conf
PF_STARTED=0
cleanup() {
    set +e
    [ -n "$SINK_PID" ] && { kill "$SINK_PID" 2>/dev/null; wait "$SINK_PID" 2>/dev/null; }
    [ -n "$TERN_PID" ] && { kill -TERM "$TERN_PID" 2>/dev/null; wait "$TERN_PID" 2>/dev/null; }
    [ "$PF_STARTED" = 1 ] && postfix -c "$PF_CONF" stop >/dev/null 2>&1
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SINK_OUT=""
start_sink() { # port: a fresh sink (its counter starts at 0)
    SINK_OUT=$WORK/sink.$RANDOM.out
    "$SMTP_SINK" -c -u nobody -h sink.bench.test -m 1000 "127.0.0.1:$1" 1024 > "$SINK_OUT" 2>&1 &
    SINK_PID=$!
    wait_port "$1" 10 || die "smtp-sink did not listen on $1"
}
stop_sink() { kill "$SINK_PID" 2>/dev/null || true; wait "$SINK_PID" 2>/dev/null || true; SINK_PID=""; }
sink_count() { tr '\r' '\n' < "$SINK_OUT" | sed -n 's/.*mesg=\([0-9]*\).*/\1/p' | tail -1; }

SINK_PORT=$(free_port)

# ------------------------------------------------------------------ Tern
start_tern() { # port
    local dir=$WORK/tern
    rm -rf "$dir"; mkdir -p "$dir/data"
    cat > "$dir/tern.toml" <<EOF
hostname = "tern.bench.test"
data_dir = "$dir/data"
# smtp-source on loopback may relay, like Postfix's mynetworks below.
trusted_networks = ["127.0.0.0/8"]

[[listener]]
address = "127.0.0.1:$1"
role = "mx"

[domains."example.test"]
mailboxes = ["alice"]

[limits]
max_connections = 2000
max_connections_per_ip = 2000

[delivery]
concurrency = 50
per_destination = 20
connect_timeout = "5s"

[delivery.smarthost]
host = "127.0.0.1"
port = $SINK_PORT
tls = "none"

[mail_auth]
enabled = false

[dkim]
sign = false

[dns]
nameservers = ["127.0.0.1:9"]
EOF
    "$TERN_BIN" check-config "$dir/tern.toml" >/dev/null 2>&1 || { "$TERN_BIN" check-config "$dir/tern.toml" >&2; die "bad tern config"; }
    "$TERN_BIN" serve --allow-root --config "$dir/tern.toml" --log-format text > "$dir/tern.log" 2>&1 &
    TERN_PID=$!
    wait_port "$1" 20 || { tail -20 "$dir/tern.log" >&2; die "tern did not listen on $1"; }
}
stop_tern() { kill -TERM "$TERN_PID" 2>/dev/null || true; wait "$TERN_PID" 2>/dev/null || true; TERN_PID=""; }

# ------------------------------------------------------------------ Postfix
start_postfix() { # port
    local base=$WORK/postfix
    rm -rf "$base"; mkdir -p "$PF_CONF" "$base/queue" "$base/data"
    chown postfix:postfix "$base/data"
    awk -v listen="127.0.0.1:$1" '
        /^smtp[ \t]+inet/ { print listen "  inet  n  -  n  -  -  smtpd"; next }
        { print }
    ' /etc/postfix/master.cf > "$PF_CONF/master.cf"
    : > "$PF_CONF/main.cf"
    postconf -c "$PF_CONF" -e \
        "compatibility_level = 3.6" \
        "queue_directory = $base/queue" \
        "data_directory = $base/data" \
        "myhostname = postfix.bench.test" \
        "mydomain = bench.test" \
        "myorigin = bench.test" \
        "mydestination =" \
        "inet_interfaces = 127.0.0.1" \
        "inet_protocols = ipv4" \
        "mynetworks = 127.0.0.0/8" \
        "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination" \
        "relayhost = [127.0.0.1]:$SINK_PORT" \
        "smtp_tls_security_level = none" \
        "smtp_dns_support_level = disabled" \
        "smtpd_peername_lookup = no" \
        "alias_maps =" \
        "alias_database =" \
        "maillog_file = $base/maillog" \
        "maillog_file_prefixes = $base"
    postconf -c "$PF_CONF" -F '*/*/chroot = n'
    postfix -c "$PF_CONF" check
    postfix -c "$PF_CONF" start >/dev/null 2>&1
    PF_STARTED=1
    wait_port "$1" 20 || die "postfix did not listen on $1 (see $base/maillog)"
}
stop_postfix() { postfix -c "$PF_CONF" stop >/dev/null 2>&1 || true; PF_STARTED=0; }

# ------------------------------------------------------------------ one run
# run_one KIND -> msg/s (or "fail"): start the sink and the server, send,
# wait until the sink has every message.
run_one() {
    local kind=$1 port t0 t1 n rc=0
    port=$(free_port)
    start_sink "$SINK_PORT"
    case $kind in tern) start_tern "$port" ;; postfix) start_postfix "$port" ;; esac
    sync; sleep 1   # nothing dirty from the run before (see compare.sh)
    t0=$(now)
    "$SMTP_SOURCE" -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" -f bench@client.test -t user@far.test \
        "127.0.0.1:$port" > "$WORK/source.out" 2>&1 </dev/null || rc=$?
    if [ "$rc" -ne 0 ]; then
        log "$kind: smtp-source failed ($rc): $(tail -3 "$WORK/source.out" | tr '\n' ' ')"
        echo fail
    else
        local deadline=$(( $(date +%s) + TIMEOUT ))
        n=0
        while [ "${n:-0}" -lt "$MESSAGES" ] && [ "$(date +%s)" -lt "$deadline" ]; do
            sleep 0.05
            n=$(sink_count)
        done
        t1=$(now)
        if [ "${n:-0}" -lt "$MESSAGES" ]; then
            log "$kind: the sink got ${n:-0} of $MESSAGES within ${TIMEOUT}s"
            echo fail
        else
            python3 -c "import sys; print('%.0f' % (int(sys.argv[1]) / (float(sys.argv[3]) - float(sys.argv[2]))))" \
                "$MESSAGES" "$t0" "$t1"
        fi
    fi
    case $kind in tern) stop_tern ;; postfix) stop_postfix ;; esac
    stop_sink
}

median() { python3 -c 'import statistics,sys; v=[float(x) for x in sys.argv[1:] if x!="fail"]; print("%.0f" % statistics.median(v) if v else "fail")' "$@"; }

declare -A RESULT
for kind in postfix tern; do
    runs=()
    for r in $(seq 1 "$RUNS"); do
        v=$(run_one "$kind")
        log "$kind run $r: $v msg/s"
        runs+=("$v")
    done
    RESULT[$kind]=$(median "${runs[@]}")
done

printf '\nRelay through one smarthost to smtp-sink: %s messages of %s bytes, %s sessions, median of %s runs (load %s)\n' \
    "$MESSAGES" "$SIZE" "$SESSIONS" "$RUNS" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '| %-8s | %10s |\n' server "msg/s"
printf '|----------|-----------:|\n'
for kind in postfix tern; do printf '| %-8s | %10s |\n' "$kind" "${RESULT[$kind]}"; done
if [ "${RESULT[postfix]}" != fail ] && [ "${RESULT[tern]}" != fail ]; then
    python3 -c 'import sys; print("Tern/Postfix: %.2f" % (float(sys.argv[1]) / float(sys.argv[2])))' "${RESULT[tern]}" "${RESULT[postfix]}"
fi
