#!/usr/bin/env bash
# Import throughput: `nexus import` of N generated memories into a fresh
# release nexusd (default fsync=always), RUNS times, each run on its own data
# directory; prints memories/s per run, the median, and the daemon's stats
# after the last run.
#
#   CARGO_TARGET_DIR=/work/target-perf cargo build --release -p nexus-daemon -p nexus-cli
#   CARGO_TARGET_DIR=/work/target-perf cargo build --release -p nexus-benches --example gen_jsonl
#   benches/import.sh [N] [RUNS] [-- extra nexusd flags]      (env: TARGET, GEN_FLAGS, IMPORT_FLAGS)
#
# Not here: what limits the rate (perf record -g -p $(pgrep -n nexusd) during a run).
set -euo pipefail
count=${1:-100000}
runs=${2:-3}
shift $(( $# < 2 ? $# : 2 ))
[[ ${1:-} == -- ]] && shift
target=${TARGET:-/work/target-perf/release}
work=$(mktemp -d /tmp/nexus-import-bench.XXXXXX)
pid=
cleanup() {
    if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# shellcheck disable=SC2086
"$target/examples/gen_jsonl" "$count" ${GEN_FLAGS:-} > "$work/memories.jsonl"
echo "input: $count memories, $(stat -c %s "$work/memories.jsonl") bytes (gen_jsonl $count ${GEN_FLAGS:-})"

rates=()
for run in $(seq 1 "$runs"); do
    rm -rf "$work/data"
    "$target/nexusd" --socket "$work/nexusd.sock" --data-dir "$work/data" "$@" 2> "$work/nexusd.stderr" &
    pid=$!
    for _ in $(seq 1 200); do [[ -S $work/nexusd.sock ]] && break; sleep 0.05; done
    start=$(date +%s.%N)
    # shellcheck disable=SC2086
    "$target/nexus" --socket "$work/nexusd.sock" --timeout-ms 120000 import ${IMPORT_FLAGS:-} --no-progress \
        "$work/memories.jsonl" > "$work/report.txt"
    end=$(date +%s.%N)
    rate=$(echo "$count / ($end - $start)" | bc -l)
    rates+=("$(printf '%.0f' "$rate")")
    printf 'run %d: %.2f s, %.0f memories/s; %s\n' "$run" "$(echo "$end - $start" | bc -l)" "$rate" \
        "$(tr '\n' ' ' < "$work/report.txt")"
    if [[ $run == "$runs" ]]; then
        "$target/nexus" --socket "$work/nexusd.sock" stats --json > "$work/stats.json"
    fi
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
done
median=$(printf '%s\n' "${rates[@]}" | sort -n | sed -n "$(( (runs + 1) / 2 ))p")
echo "median: $median memories/s over $runs runs"
echo "stats after the last run:"
cat "$work/stats.json"
