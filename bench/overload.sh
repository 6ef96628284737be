#!/usr/bin/env bash
# Overload benchmark (issue 17): can a legitimate client still send mail
# while attackers hold the server's connections? Tern beside a private
# Postfix, the same attack on each.
#
# Usage: bench/overload.sh   (as root: the private Postfix needs it)
#
# The attack (tern-loadgen overload): ATTACKERS loopback addresses
# 127.0.1.1, 127.0.2.1, … (each its own /24, as separate hosts would be),
# each holding PER_ATTACKER connections: half say nothing after the
# greeting, half drip one byte every DRIP seconds; every connection the
# server closes is opened again. After WARMUP seconds a legitimate client
# from 127.1.0.1 sends one message a second for DURATION seconds. Reported
# per server: the legitimate messages accepted (%), their connect → 250
# time (p50, p99, max) and the server's memory at the end of the attack
# (Tern: RSS of its one process; Postfix: the summed PSS of its processes).
# It prints figures; it never fails on a figure.
#
# Both servers run with their defaults but for the listener and mailboxes;
# Tern's `rate_limit_exceptions` is emptied (loopback is exempt by default,
# and the attack comes from loopback) and its per-address connection rate
# raised to 120 a minute so that the legitimate client's 60 a minute never
# meets it; Postfix has no connection-rate limit by default.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ATTACKERS=${ATTACKERS:-40}
PER_ATTACKER=${PER_ATTACKER:-50}
DRIP=${DRIP:-10}
DURATION=${DURATION:-300}
WARMUP=${WARMUP:-15}
ONLY=${ONLY:-tern,postfix}
KEEP=${KEEP:-0}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BUILD=${BUILD:-$([ -n "${TERN_BIN:-}" ] && echo 0 || echo 1)}
TERN_BIN=${TERN_BIN:-$TARGET_DIR/release/tern}
LOADGEN_BIN=${LOADGEN_BIN:-$TARGET_DIR/release/tern-loadgen}
RCPT_LOCAL=alice
MAX_RCPTS=1

log() { printf '[overload] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
want() { [[ ",$ONLY," == *",$1,"* ]]; }
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

[ "$(id -u)" -eq 0 ] || die "run as root: the private Postfix instance needs it"
install_postfix
[ "$BUILD" = 1 ] && build_release tern tern-loadgen
[ -x "$LOADGEN_BIN" ] || die "no $LOADGEN_BIN (cargo build --release -p tern-loadgen)"
NOFILE=$(( ATTACKERS * PER_ATTACKER + 4096 ))
ulimit -n "$NOFILE" 2>/dev/null || ulimit -n "$(ulimit -Hn)"

WORK=$(make_work_dir tern-overload)
PF_CONF=$WORK/postfix/conf
PF_STARTED=0
TERN_PID=""
cleanup() {
    set +e
    if [ -n "$TERN_PID" ]; then kill -TERM "$TERN_PID" 2>/dev/null; wait "$TERN_PID" 2>/dev/null; fi
    if [ "$PF_STARTED" = 1 ]; then postfix -c "$PF_CONF" stop >/dev/null 2>&1; fi
    if [ "$KEEP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_tern() {
    local port=$1 dir=$WORK/tern
    mkdir -p "$dir/data"
    cat > "$dir/tern.toml" <<EOF
hostname = "tern.bench.test"
data_dir = "$dir/data"
trusted_networks = []

[[listener]]
address = "127.0.0.1:$port"
role = "mx"

[dns]
nameservers = ["127.0.0.1:9"]

[domains."example.test"]
mailboxes = ["$RCPT_LOCAL"]

[limits]
rate_limit_exceptions = []

[limits.abuse.connections_per_ip]
limit = 120
window = "1m"

[mail_auth]
enabled = false

[trace]
enabled = false
EOF
    "$TERN_BIN" check-config "$dir/tern.toml" > "$dir/check-config.out" 2>&1 \
        || { cat "$dir/check-config.out" >&2; die "tern check-config rejected the config"; }
    "$TERN_BIN" serve --allow-root --config "$dir/tern.toml" > "$dir/tern.log" 2>&1 &
    TERN_PID=$!
    wait_port "$port" 20 || { tail -20 "$dir/tern.log" >&2; die "tern did not listen on $port"; }
}

# memory KIND -> MB: Tern's RSS, or the summed PSS of the private Postfix's processes.
memory() {
    case $1 in
        tern) awk '/^VmRSS/ {printf "%.0f", $2/1024}' "/proc/$TERN_PID/status" ;;
        postfix)
            local master pids
            master=$(postfix_pid)
            pids="$master $(pgrep -P "$master" | tr '\n' ' ')"
            for p in $pids; do awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null; done \
                | awk '{s+=$1} END {printf "%.0f", s/1024}'
            ;;
    esac
}

declare -A OUT MEM
run() { # KIND PORT
    local kind=$1 port=$2 out=$WORK/$1.out
    log "$kind: $((ATTACKERS * PER_ATTACKER)) attacking connections from $ATTACKERS addresses for $((WARMUP + DURATION)) s; one legitimate message a second after ${WARMUP} s"
    "$LOADGEN_BIN" overload --addr "127.0.0.1:$port" --attackers "$ATTACKERS" \
        --per-attacker "$PER_ATTACKER" --drip-every "$DRIP" --duration "$DURATION" \
        --warmup "$WARMUP" > "$out" 2>&1 &
    local gen=$!
    sleep $(( WARMUP + DURATION - 2 ))
    MEM[$kind]=$(memory "$kind")
    wait "$gen" || true
    OUT[$kind]=$(grep '^legit sent' "$out" || echo "legit: no result (see $out)")
    grep -E '^(attack|legit failure)' "$out" | sed "s/^/[overload] $kind: /" >&2 || true
}

log "$(postconf -d -h mail_version | sed 's/^/postfix /'); $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
if want tern; then
    port=$(free_port)
    start_tern "$port"
    run tern "$port"
    grep -c 'entering stress mode' "$WORK/tern/tern.log" | sed 's/^/[overload] tern: stress mode entered x/' >&2 || true
    grep -c 'evicted to make room' "$WORK/tern/tern.log" | sed 's/^/[overload] tern: sessions evicted: /' >&2 || true
    kill -TERM "$TERN_PID"; wait "$TERN_PID" 2>/dev/null || true; TERN_PID=""
fi
if want postfix; then
    port=$(free_port)
    setup_postfix "$port"
    run postfix "$port"
fi

printf '\n%-8s %s %s\n' server "legitimate client (sent, accepted, %, connect->250 p50/p99/max ms)" "memory MB"
for kind in tern postfix; do
    want "$kind" || continue
    printf '%-8s %s mem_mb=%s\n' "$kind" "${OUT[$kind]:-}" "${MEM[$kind]:-}"
done
