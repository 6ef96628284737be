#!/usr/bin/env bash
# Side-by-side SMTP intake benchmark: Tern vs a private Postfix vs smtp-sink.
#
# Usage: bench/compare.sh            (see bench/README.md for knobs)
#
# Everything runs on 127.0.0.1 with free ports and lives in a temp dir that is
# removed at the end. Postfix runs as a private instance (its own config and
# queue directories, started with `postfix -c DIR start`); the system Postfix
# is never configured or started. Nothing is relayed anywhere: Postfix refuses
# non-local recipients and its default transport is `error`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

RUNS=${RUNS:-3}
SESSIONS=${SESSIONS:-50}
MESSAGES=${MESSAGES:-5000}
SIZE=${SIZE:-10240}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-600}     # seconds to wait for Maildir files after smtp-source ends
TERN_BIN=${TERN_BIN:-$ROOT/target/release/tern}
ONLY=${ONLY:-postfix,sink,tern}          # which servers to measure
KEEP=${KEEP:-0}                          # KEEP=1: leave the temp dir for inspection

SMTP_SOURCE=/usr/sbin/smtp-source
SMTP_SINK=/usr/sbin/smtp-sink
SENDER=bench@client.test
RCPT=alice@example.test

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
want() { [[ ",$ONLY," == *",$1,"* ]]; }

# ------------------------------------------------------------------ install
if [ ! -x "$SMTP_SOURCE" ] || ! command -v postfix >/dev/null 2>&1; then
    log "installing postfix (for smtp-source, smtp-sink and the reference server)"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
    echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends postfix </dev/null
fi
[ "$(id -u)" -eq 0 ] || die "run as root: the private Postfix instance needs it"
command -v python3 >/dev/null || die "python3 is needed (free ports, statistics)"

WORK=$(mktemp -d /tmp/tern-bench.XXXXXX)
chmod 755 "$WORK"
PF_CONF=$WORK/postfix/conf
PF_STARTED=0
SINK_PID=""
TERN_PID=""

cleanup() {
    set +e
    if [ -n "$SINK_PID" ]; then kill "$SINK_PID" 2>/dev/null; wait "$SINK_PID" 2>/dev/null; fi
    if [ -n "$TERN_PID" ]; then
        kill -TERM "$TERN_PID" 2>/dev/null
        wait "$TERN_PID" 2>/dev/null
        log "tern exited with $?"
    fi
    if [ "$PF_STARTED" = 1 ]; then postfix -c "$PF_CONF" stop >/dev/null 2>&1 && log "postfix stopped"; fi
    if [ "$KEEP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() { # port timeout
    local deadline=$(( $(date +%s) + $2 ))
    until python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1",int(sys.argv[1])),1).close()' "$1" 2>/dev/null; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

count_new() { # maildir/new
    if [ -d "$1" ]; then find "$1" -maxdepth 1 -type f | wc -l; else echo 0; fi
}

now() { date +%s.%N; }

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
setup_postfix() {
    local port=$1 base=$WORK/postfix
    mkdir -p "$PF_CONF" "$base/queue" "$base/data" "$base/mail"
    chown nobody:nogroup "$base/mail"
    chown postfix:postfix "$base/data"
    # master.cf: the stock one with every service unchrooted and the public
    # smtpd replaced by one on 127.0.0.1:$port.
    awk -v listen="127.0.0.1:$port" '
        /^smtp[ \t]+inet/ { print listen "  inet  n  -  n  -  -  smtpd"; next }
        { print }
    ' /etc/postfix/master.cf > "$PF_CONF/master.cf"
    : > "$PF_CONF/main.cf"
    printf '%s %s\n' "$RCPT" "example.test/alice/" > "$PF_CONF/vmailbox"
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
        "relay_domains =" \
        "smtpd_relay_restrictions = reject_unauth_destination" \
        "default_transport = error:benchmark instance relays nothing" \
        "relay_transport = error:benchmark instance relays nothing" \
        "alias_maps =" \
        "alias_database =" \
        "smtpd_peername_lookup = no" \
        "virtual_mailbox_domains = example.test" \
        "virtual_mailbox_base = $base/mail" \
        "virtual_mailbox_maps = texthash:$PF_CONF/vmailbox" \
        "virtual_uid_maps = static:$(id -u nobody)" \
        "virtual_gid_maps = static:$(getent group nogroup | cut -d: -f3)" \
        "maillog_file = $base/maillog" \
        "maillog_file_prefixes = $base"
    postconf -c "$PF_CONF" -F '*/*/chroot = n'
    postfix -c "$PF_CONF" check
    postfix -c "$PF_CONF" start
    PF_STARTED=1
    wait_port "$port" 20 || die "postfix did not listen on $port (see $base/maillog)"
    PF_NEW=$base/mail/example.test/alice/new
}

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
setup_tern() {
    local port=$1 dir=$WORK/tern
    mkdir -p "$dir/data"
    cat > "$dir/tern.toml" <<EOF
hostname = "tern.bench.test"
data_dir = "$dir/data"
trusted_networks = []

[[listener]]
address = "127.0.0.1:$port"
role = "mx"

[domains."example.test"]
mailboxes = ["alice"]

[limits]
max_message_size = 52428800
max_recipients = 100
max_connections = 4000
max_connections_per_ip = 4000
command_timeout = "300s"
data_timeout = "180s"

[smtp]
bare_line_endings = "reject"
early_talkers = "reject"
vrfy = false
expn = false

# Like the Postfix instance: no SPF/DKIM/DMARC checks, and no DNS at all
# (nothing here may leave 127.0.0.0/8).
[mail_auth]
enabled = false

[dns]
nameservers = ["127.0.0.1:9"]
EOF
    "$TERN_BIN" check-config "$dir/tern.toml" > "$dir/check-config.out" 2>&1 \
        || { cat "$dir/check-config.out" >&2; die "tern check-config rejected the bench config"; }
    "$TERN_BIN" serve --config "$dir/tern.toml" --log-format text > "$dir/tern.log" 2>&1 &
    TERN_PID=$!
    wait_port "$port" 20 || { tail -20 "$dir/tern.log" >&2; die "tern did not listen on $port"; }
    TERN_NEW=$dir/data/mail/example.test/alice/new
}

# ------------------------------------------------------------------ one run
# run_one KIND PORT MODE -> prints msg/s (or "fail")
run_one() {
    local kind=$1 port=$2 mode=$3 args=() t0 t1 n rc=0 out
    [ "$mode" = reuse ] && args+=(-d)
    args+=(-s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" -f "$SENDER" -t "$RCPT")
    case $kind in
        postfix) find "$PF_NEW" -maxdepth 1 -type f -delete 2>/dev/null || true ;;
        tern) find "$TERN_NEW" -maxdepth 1 -type f -delete 2>/dev/null || true ;;
        sink) start_sink "$port" ;;
    esac
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
            sleep 0.2
            n=$(sink_count); stop_sink
            if [ "${n:-0}" -ne "$MESSAGES" ]; then log "sink/$mode: accepted ${n:-0} of $MESSAGES"; echo fail; return; fi
            ;;
        postfix|tern)
            local dir
            if [ "$kind" = tern ]; then dir=$TERN_NEW; else dir=$PF_NEW; fi
            local deadline=$(( $(date +%s) + DRAIN_TIMEOUT ))
            while n=$(count_new "$dir"); [ "$n" -lt "$MESSAGES" ]; do
                if [ "$(date +%s)" -ge "$deadline" ]; then
                    log "$kind/$mode: only $n of $MESSAGES in $dir after ${DRAIN_TIMEOUT}s"; echo fail; return
                fi
                sleep 0.05
            done
            t1=$(now)
            sleep 1
            n=$(count_new "$dir")
            [ "$n" -eq "$MESSAGES" ] || log "$kind/$mode: warning: $n files for $MESSAGES messages (duplicates?)"
            ;;
    esac
    python3 -c 'import sys; print("%.1f" % (int(sys.argv[1]) / (float(sys.argv[3]) - float(sys.argv[2]))))' \
        "$MESSAGES" "$t0" "$t1"
}

median() { python3 -c 'import statistics,sys; v=[float(x) for x in sys.argv[1:] if x!="fail"]; print("%.1f" % statistics.median(v) if len(v)==len(sys.argv[1:]) else "fail")' "$@"; }

# ------------------------------------------------------------------ main
declare -A PORT RESULT
log "work dir $WORK; $RUNS runs; smtp-source -s $SESSIONS -m $MESSAGES -l $SIZE"
log "$(postconf -d -h mail_version | sed 's/^/postfix /'); $(nproc) cores"

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
        setup_tern "${PORT[tern]}"
        relay_check tern "${PORT[tern]}"
    else
        log "no tern binary at $TERN_BIN (build it with: cargo build --release); measuring the others only"
        ONLY=${ONLY//tern/}
    fi
fi

for mode in per-message reuse; do
    for kind in postfix sink tern; do
        want "$kind" || continue
        vals=()
        for r in $(seq 1 "$RUNS"); do
            v=$(run_one "$kind" "${PORT[$kind]}" "$mode")
            log "$kind $mode run $r: $v msg/s"
            vals+=("$v")
        done
        RESULT[$kind,$mode]=$(median "${vals[@]}")
    done
done

ratio() { python3 -c 'import sys
a,b=sys.argv[1],sys.argv[2]
print("-" if "-" in (a,b) or "fail" in (a,b) else "%.2f" % (float(a)/float(b)))' "$1" "$2"; }

echo
echo "SMTP intake, $MESSAGES messages of $SIZE bytes, $SESSIONS parallel sessions, median of $RUNS runs (msg/s)"
echo "Postfix and Tern: until every message is a file in the Maildir; smtp-sink: until smtp-source ends."
printf '%-26s %12s %12s %12s %13s %10s\n' mode postfix smtp-sink tern tern/postfix tern/sink
for mode in per-message reuse; do
    p=${RESULT[postfix,$mode]:--}; s=${RESULT[sink,$mode]:--}; t=${RESULT[tern,$mode]:--}
    label="new connection per message"; [ "$mode" = reuse ] && label="connection reuse (-d)"
    printf '%-26s %12s %12s %12s %13s %10s\n' "$label" "$p" "$s" "$t" "$(ratio "$t" "$p")" "$(ratio "$t" "$s")"
done
