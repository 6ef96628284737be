#!/usr/bin/env bash
# Queue backends side by side: commit throughput (a commit returns only when
# the message is durable) and delivery-pass throughput (lease, record every
# recipient delivered, remove) through the QueueStore trait, for the file
# spool (fsync on) and for PostgreSQL (a private cluster with fsync = on and
# synchronous_commit = on, started and removed by the benchmark; or the
# database at TERN_BENCH_PG_URL).
#
# Usage: bench/queue-backends.sh        (knobs below; as root or not)
#
# It prints figures; it never fails on a figure (a backend that cannot run
# prints why and the script goes on).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PROFILE=${PROFILE:-release}              # release | dev
MESSAGES=${MESSAGES:-5000}
SIZES=${SIZES:-"10240 102400"}           # message sizes in bytes
CONCURRENCY=${CONCURRENCY:-"1 16 64"}    # committing tasks (a pool of min(tasks, 32) connections for PostgreSQL)
BACKENDS=${BACKENDS:-"file postgres"}

if [ "$PROFILE" = release ]; then
    build_flags=(--release); bin_dir=$TARGET_DIR/release
else
    build_flags=(); bin_dir=$TARGET_DIR/debug
fi
if ! (cd "$ROOT" && cargo build -q "${build_flags[@]}" -p tern-queue-pg --features test-util --example queue_bench); then
    echo "queue-backends: cannot build the benchmark; nothing measured"
    exit 0
fi
BENCH=$bin_dir/examples/queue_bench

echo "# queue backends: $MESSAGES messages per run, $(nproc) CPUs, $(uname -r)"
echo "# disk of the temp dir: $(df -h "${TMPDIR:-/tmp}" | awk 'NR==2 {print $1, $2}')"
for backend in $BACKENDS; do
    for size in $SIZES; do
        for tasks in $CONCURRENCY; do
            RUST_BACKTRACE=0 "$BENCH" "$backend" "$MESSAGES" "$size" "$tasks" 2>&1 \
                || echo "$backend: run failed (size $size, $tasks tasks)"
        done
    done
done
exit 0
