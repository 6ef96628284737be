#!/usr/bin/env bash
# POP3 download benchmark: Tern beside a private dovecot-pop3d, same machine,
# same mailboxes.
#
# Usage: bench/pop3.sh     (as root; see bench/README.md, "pop3.sh")
#
# USERS users get MESSAGES/USERS messages of SIZE bytes each, written as the
# same Maildir files for both servers (Tern's data dir and Dovecot's mail
# root, on the same filesystem). Then USERS concurrent POP3 sessions (one per
# user: a maildrop is locked per session) each log in, RETR and DELE every
# message, and QUIT, so every message is downloaded once and removed at
# UPDATE. The figure is messages/s from the first connection to the last
# QUIT (median of RUNS), with the mailboxes re-seeded before every run.
#
# Dovecot runs as a private instance (its own dovecot.conf, base_dir and
# mail root under the work dir, passwd-file passdb, static userdb, started
# with `dovecot -F -c CONF`); the system Dovecot is never configured or
# started. With DOVECOT_AUTH=hash (the default) Dovecot's passdb holds the
# argon2id hash `tern user add` writes (the same parameters Tern checks),
# so both servers do the same password check at each login; with
# DOVECOT_AUTH=plain it holds the password in clear (no hashing at all).
# Both listen on 127.0.0.1 only. The client is Python's poplib in one
# process per session (the same client for both servers). It prints figures;
# it never fails on a figure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

RUNS=${RUNS:-3}
MESSAGES=${MESSAGES:-10000}
USERS=${USERS:-10}
SIZE=${SIZE:-4096}
ONLY=${ONLY:-dovecot,tern}
KEEP=${KEEP:-0}
DOVECOT_AUTH=${DOVECOT_AUTH:-hash}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BUILD=${BUILD:-$([ -n "${TERN_BIN:-}" ] && echo 0 || echo 1)}
TERN_BIN=${TERN_BIN:-$TARGET_DIR/release/tern}
PASSWORD=bench-pop3-pw

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
want() { [[ ",$ONLY," == *",$1,"* ]]; }
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

[ "$(id -u)" -eq 0 ] || die "run as root: the private Dovecot instance needs it"
if want dovecot && [ ! -x /usr/lib/dovecot/pop3 ]; then
    log "installing dovecot-pop3d"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dovecot-pop3d </dev/null
fi
[ "$BUILD" = 1 ] && build_release tern
[ -x "$TERN_BIN" ] || die "no tern binary at $TERN_BIN"

WORK=$(make_work_dir tern-pop3-bench)
DOVECOT_PID=""
TERN_PID=""
cleanup() {
    [ -n "$TERN_PID" ] && kill "$TERN_PID" 2>/dev/null && wait "$TERN_PID" 2>/dev/null
    [ -n "$DOVECOT_PID" ] && kill "$DOVECOT_PID" 2>/dev/null && wait "$DOVECOT_PID" 2>/dev/null
    if [ "$KEEP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
log "work dir $WORK ($(fs_kind "$WORK")); $MESSAGES messages of $SIZE bytes, $USERS users/sessions; Dovecot passdb: $DOVECOT_AUTH"

# seed DIR...: each DIR/<user>/{new,cur,tmp} gets MESSAGES/USERS identical files.
seed() {
    python3 - "$MESSAGES" "$USERS" "$SIZE" "$@" <<'EOF'
import os, sys
messages, users, size = map(int, sys.argv[1:4])
roots = sys.argv[4:]
per = messages // users
for u in range(users):
    for root in roots:
        for sub in ("new", "cur", "tmp"):
            os.makedirs(os.path.join(root, f"user{u}", sub), exist_ok=True)
    for i in range(per):
        head = (f"From: bench@client.test\r\nTo: user{u}@example.test\r\n"
                f"Subject: pop3 bench {u}/{i}\r\nMessage-ID: <{u}.{i}@client.test>\r\n\r\n")
        line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-+/=0123456789\r\n"
        body = (line * (max(0, size - len(head)) // len(line) + 1))[: max(0, size - len(head))]
        data = head.encode() + body
        name = f"1700000000.M{i}P{u}.bench"
        for root in roots:
            with open(os.path.join(root, f"user{u}", "new", name), "wb") as f:
                f.write(data)
EOF
}

# download PORT: USERS sessions in parallel; prints messages/s.
download() {
    python3 - "$1" "$USERS" "$PASSWORD" "$MESSAGES" <<'EOF'
import multiprocessing, poplib, sys, time
port, users, password, messages = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])

def session(u):
    p = poplib.POP3("127.0.0.1", port, timeout=120)
    p.user(f"user{u}@example.test")
    p.pass_(password)
    n, _ = p.stat()
    got = 0
    for i in range(1, n + 1):
        _, lines, _ = p.retr(i)
        got += 1
        p.dele(i)
    p.quit()
    return got

if __name__ == "__main__":
    start = time.monotonic()
    with multiprocessing.Pool(users) as pool:
        got = sum(pool.map(session, range(users)))
    elapsed = time.monotonic() - start
    if got != messages // users * users:
        print(f"WARNING: downloaded {got} messages", file=sys.stderr)
    print(f"{got / elapsed:.0f}")
EOF
}

left_files() { find "$1" -path '*/new/*' -o -path '*/cur/*' -type f 2>/dev/null | grep -c . || true; }

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# ------------------------------------------------------------------ Dovecot
DOVECOT_PORT=$(free_port)
# argon2_hash: the hash `tern user add` writes for PASSWORD (in a scratch
# config of its own).
argon2_hash() {
    local h=$WORK/hash
    mkdir -p "$h"
    printf 'hostname = "mx.example.test"\ndata_dir = "%s/data"\n[[listener]]\naddress = "127.0.0.1:0"\nrole = "mx"\n[auth]\nusers_file = "%s/users.toml"\n[domains."example.test"]\nmailboxes = ["user0"]\n' "$h" "$h" >"$h/tern.toml"
    echo "$PASSWORD" | "$TERN_BIN" user add user0@example.test --config "$h/tern.toml" >/dev/null
    sed -n 's/^password = "\(.*\)"$/\1/p' "$h/users.toml"
}

setup_dovecot() {
    local d=$WORK/dovecot secret
    mkdir -p "$d/run" "$d/mail"
    case $DOVECOT_AUTH in
        hash) secret="{ARGON2ID}$(argon2_hash)" ;;
        plain) secret="{PLAIN}$PASSWORD" ;;
        *) die "DOVECOT_AUTH is hash or plain" ;;
    esac
    for u in $(seq 0 $((USERS - 1))); do echo "user$u@example.test:$secret"; done >"$d/passwd"
    cat >"$d/dovecot.conf" <<EOF
base_dir = $d/run
state_dir = $d/run
protocols = pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
log_path = $d/dovecot.log
first_valid_uid = 100
mail_location = maildir:$d/mail/%n
pop3_uidl_format = %08Xv%08Xu
passdb {
  driver = passwd-file
  args = $d/passwd
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$d/mail/%n
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = $DOVECOT_PORT
  }
  inet_listener pop3s {
    port = 0
  }
}
service anvil {
  chroot =
}
EOF
    /usr/sbin/dovecot -F -c "$d/dovecot.conf" &
    DOVECOT_PID=$!
    wait_port "$DOVECOT_PORT" 20 || die "dovecot did not start (see $d/dovecot.log)"
}

# ------------------------------------------------------------------ Tern
TERN_PORT=$(free_port)
TERN_MX_PORT=$(free_port)
setup_tern() {
    local t=$WORK/tern mailboxes=""
    mkdir -p "$t/data/mail/example.test"
    for u in $(seq 0 $((USERS - 1))); do mailboxes+="\"user$u\", "; done
    cat >"$t/tern.toml" <<EOF
hostname = "mx.example.test"
data_dir = "$t/data"
allow_root = true
trusted_networks = []
[[listener]]
address = "127.0.0.1:$TERN_MX_PORT"
role = "mx"
[[listener]]
address = "127.0.0.1:$TERN_PORT"
role = "pop3"
plaintext_auth = true
[auth]
users_file = "$t/users.toml"
[domains."example.test"]
mailboxes = [${mailboxes%, }]
[dns]
nameservers = ["127.0.0.1:9"]
[mail_auth]
enabled = false
[limits]
max_connections_per_ip = 1000
[log]
level = "warn"
EOF
    for u in $(seq 0 $((USERS - 1))); do
        echo "$PASSWORD" | "$TERN_BIN" user add "user$u@example.test" --config "$t/tern.toml" >/dev/null
    done
    "$TERN_BIN" serve --allow-root --config "$t/tern.toml" 2>"$t/tern.log" &
    TERN_PID=$!
    wait_port "$TERN_PORT" 20 || die "tern did not start (see $t/tern.log)"
}

want dovecot && setup_dovecot
want tern && setup_tern

# The runs alternate between the servers (Dovecot, Tern, Dovecot, ...), so
# that other load on a shared machine falls on both alike. Each run prints
# its rate with the load average at its start; the summary gives min,
# median and max.
declare -A RATES
for run in $(seq 1 "$RUNS"); do
    for server in dovecot tern; do
        want "$server" || continue
        if [ "$server" = dovecot ]; then
            root=$WORK/dovecot/mail
            rm -rf "$root"/user*
            seed "$root"
            # Dovecot refuses to run mail processes as root.
            chown -R nobody:nogroup "$root"
            port=$DOVECOT_PORT
        else
            root=$WORK/tern/data/mail/example.test
            rm -rf "$root"/user*
            seed "$root"
            port=$TERN_PORT
        fi
        sync
        sleep 1
        load=$(cut -d' ' -f1 /proc/loadavg)
        rate=$(download "$port")
        left=$(left_files "$root")
        log "$server run $run: $rate msg/s ($left message files left; load average $load)"
        RATES[$server]+="$rate "
    done
done
declare -A RESULT RANGE
for server in dovecot tern; do
    want "$server" || continue
    # shellcheck disable=SC2086
    RESULT[$server]=$(printf '%s\n' ${RATES[$server]} | median)
    # shellcheck disable=SC2086
    RANGE[$server]=$(printf '%s\n' ${RATES[$server]} | sort -n | awk 'NR==1 {min=$1} {max=$1} END {print min "-" max}')
done

echo
echo "POP3 download (RETR + DELE, QUIT), $MESSAGES x $SIZE B, $USERS sessions, median of $RUNS"
for server in dovecot tern; do
    want "$server" && printf '  %-8s %8s msg/s (min-max %s)\n' "$server" "${RESULT[$server]}" "${RANGE[$server]}"
done
if want dovecot && want tern; then
    # The ratio of the medians, and of each run to the Dovecot run just
    # before it (the pairs saw the same load).
    python3 - "${RESULT[tern]}" "${RESULT[dovecot]}" "${RATES[tern]}" "${RATES[dovecot]}" <<'EOF'
import statistics, sys
t, d = int(sys.argv[1]), int(sys.argv[2])
pairs = [int(a) / max(1, int(b)) for a, b in zip(sys.argv[3].split(), sys.argv[4].split())]
print(f"  tern/dovecot: {t / max(1, d):.2f} (per run: {' '.join(f'{p:.2f}' for p in pairs)};"
      f" median {statistics.median(pairs):.2f})")
EOF
fi
