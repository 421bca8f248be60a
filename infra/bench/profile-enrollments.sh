#!/usr/bin/env bash
# CPU profile of the load driver's enrollment phase only: runs `loadgen DEVICES
# CONCURRENCY federated` (server and driver in one process), waits until the sign-ins are
# reported and the threads making the devices' keys have exited, then `perf record`s the
# process until the enrollment phase is reported. Needs `perf` (Debian: linux-perf).
# Usage: infra/bench/profile-enrollments.sh [DEVICES] [CONCURRENCY]   (default 3000 24)
# Then: perf report -i "$OUT/perf.data" --no-children --sort sym   — BENCHMARKS.md,
# "Where a federated enrollment's CPU goes".
set -euo pipefail
cd "$(dirname "$0")/../.."
devices="${1:-3000}"
concurrency="${2:-24}"
out="${OUT:-$(mktemp -d)}"
cargo build --profile bench -p winmdm-bench --bin loadgen
loadgen="${CARGO_TARGET_DIR:-target}/release/loadgen"

"$loadgen" "$devices" "$concurrency" federated >"$out/loadgen.out" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
alive() { kill -0 "$pid" 2>/dev/null || { cat "$out/loadgen.out"; echo "loadgen stopped" >&2; exit 1; }; }
until grep -q "federated sign-in" "$out/loadgen.out"; do alive; sleep 0.2; done
sleep 1
# The key-making threads carry the process's name; wait until only the main thread does.
while [ "$(grep -lx loadgen /proc/$pid/task/*/comm 2>/dev/null | wc -l)" -gt 1 ]; do
    sleep 0.05
done
perf record -F 1999 -o "$out/perf.data" -p "$pid" 2>"$out/perf.err" &
perf_pid=$!
until grep -q "^| enrollment" "$out/loadgen.out"; do alive; sleep 0.05; done
kill -INT "$perf_pid" 2>/dev/null || true
wait "$perf_pid" || true
wait "$pid"
cat "$out/loadgen.out"
echo "profile: $out/perf.data"
perf report -i "$out/perf.data" --no-children --sort comm --stdio 2>/dev/null | grep -v '^#'
