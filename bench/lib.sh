# Shared by bench/compare.sh and bench/relay.sh (sourced, not run). The
# sourcing script defines log and die first, and sets ROOT.

# install_postfix: Postfix from Debian (smtp-source, smtp-sink and the
# reference server), when it is missing. The system instance is never
# configured or started: the scripts run private instances.
install_postfix() {
    if [ -x /usr/sbin/smtp-source ] && command -v postfix >/dev/null 2>&1; then return 0; fi
    log "installing postfix (for smtp-source, smtp-sink and the reference server)"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
    echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
    DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postfix </dev/null
}

# build_release PACKAGE...: `cargo build --release` of the tree the script
# is in (a no-op when it is current), so that no stale binary is measured.
build_release() {
    command -v cargo >/dev/null || die "cargo is needed to build Tern (or set TERN_BIN)"
    log "building $* (release)"
    local args=()
    for p in "$@"; do args+=(-p "$p"); done
    (cd "$ROOT" && cargo build --release -q "${args[@]}") || die "cargo build failed"
}

# make_work_dir NAME: a new directory under BENCH_DIR (default /var/tmp, not
# /tmp: test suites create and delete thousands of files there, and on ext4
# without a journal that slows every file creation near them for minutes).
# On ext4 it gets the "top of directory hierarchy" attribute, so that the
# directories made in it (Postfix's, Tern's) land in inode groups of their
# own and the files one server deletes do not slow the other's creations
# (see bench/README.md, "The filesystem").
make_work_dir() {
    local base=${BENCH_DIR:-/var/tmp} dir
    mkdir -p "$base"
    dir=$(mktemp -d "$base/$1.XXXXXX")
    chattr +T "$dir" 2>/dev/null || true
    chmod 755 "$dir"
    echo "$dir"
}

# fs_kind DIR: the filesystem type, with "(no journal)" for an ext4 without one.
fs_kind() {
    local type dev
    type=$(df -T "$1" | awk 'NR==2 {print $2}')
    dev=$(basename "$(df "$1" | awk 'NR==2 {print $1}')")
    if [ "$type" = ext4 ] && [ "$(cat "/sys/fs/ext4/$dev/journal_task" 2>/dev/null)" = "<none>" ]; then
        echo "ext4 (no journal)"
    else
        echo "$type"
    fi
}

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

now() { date +%s.%N; }

# setup_postfix PORT: a private Postfix instance on 127.0.0.1:PORT under
# $WORK/postfix (config in $PF_CONF), delivering $RCPT_LOCAL@example.test
# and 1$RCPT_LOCAL … $MAX_RCPTS$RCPT_LOCAL into virtual Maildirs; relays
# nothing. The sourcing script sets WORK, PF_CONF, RCPT_LOCAL and
# MAX_RCPTS, and PF_STARTED=0 (set to 1 here, for its cleanup); it may set
# the array PF_EXTRA to more main.cf settings ("name = value" each, e.g. the
# milter of bench/filter.sh).
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
    : > "$PF_CONF/vmailbox"
    for i in "" $(seq 1 $MAX_RCPTS); do
        printf '%s %s\n' "$i$RCPT_LOCAL@example.test" "example.test/$i$RCPT_LOCAL/" >> "$PF_CONF/vmailbox"
    done
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
        "message_size_limit = 52428800" \
        "virtual_mailbox_limit = 0" \
        "virtual_mailbox_domains = example.test" \
        "virtual_mailbox_base = $base/mail" \
        "virtual_mailbox_maps = texthash:$PF_CONF/vmailbox" \
        "virtual_uid_maps = static:$(id -u nobody)" \
        "virtual_gid_maps = static:$(getent group nogroup | cut -d: -f3)" \
        "maillog_file = $base/maillog" \
        "maillog_file_prefixes = $base"
    if [ -n "${PF_EXTRA+x}" ] && [ "${#PF_EXTRA[@]}" -gt 0 ]; then
        postconf -c "$PF_CONF" -e "${PF_EXTRA[@]}"
    fi
    postconf -c "$PF_CONF" -F '*/*/chroot = n'
    postfix -c "$PF_CONF" check
    postfix -c "$PF_CONF" start
    PF_STARTED=1
    wait_port "$port" 20 || die "postfix did not listen on $port (see $base/maillog)"
    PF_MAIL=$base/mail/example.test
}
postfix_pid() { tr -d ' ' < "$WORK/postfix/queue/pid/master.pid"; }
