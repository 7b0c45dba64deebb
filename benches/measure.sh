#!/usr/bin/env bash
# Runs every nexus-bench measurement RUNS times (default 3) against throwaway
# daemons and writes one JSON object per run to OUT (default target/bench-results),
# one file per benchmark. ARCHITECTURE.md ("Measured") quotes the medians.
#
#   benches/measure.sh [RUNS] [OUT]
#   ONLY='remember|startup' benches/measure.sh 3   # only the benchmarks whose name matches
#
# Run it on an otherwise idle machine: the figures are latencies of wake-ups
# and fdatasyncs, which any other load moves.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
out=${2:-target/bench-results}
mkdir -p "$out"
cargo build --release -p nexus-daemon -p nexus-benches
bench=target/release/nexus-bench
daemon=target/release/nexusd

# measure NAME SUBCOMMAND [FLAGS...]
measure() {
    local name=$1
    shift
    if [[ -n ${ONLY:-} && ! $name =~ $ONLY ]]; then return; fi
    : >"$out/$name.jsonl"
    for run in $(seq 1 "$runs"); do
        echo "== $name (run $run/$runs)" >&2
        "$bench" "$@" --spawn-daemon "$daemon" --json >>"$out/$name.jsonl"
        # The machine's floor beside each ping run, so the two can be compared.
        if [[ $name == ping ]]; then "$bench" floor --json >>"$out/floor.jsonl"; fi
    done
}

if [[ -z ${ONLY:-} || ping =~ $ONLY ]]; then : >"$out/floor.jsonl"; fi
measure ping ping --iterations 50000 --warmup 5000 --rounds 10
measure ping-depth64 ping --depth 64 --iterations 500000 --warmup 50000 --rounds 6
measure ping-spin ping --spin-us 50 --daemon-arg=--spin-us=50 --iterations 50000 --rounds 6
measure idle idle --clients 100 --seconds 10
measure fanout fanout --clients 1000
measure remember-1 remember --clients 1 --batch 1 --count 5000
measure remember-16 remember --clients 16 --batch 1 --count 50000
measure remember-16-uds remember --clients 16 --batch 1 --count 50000 --uds
# The same 16 writers with no fdatasync: what the request path itself costs.
measure remember-16-nosync remember --clients 16 --batch 1 --count 50000 --daemon-arg=--fsync=never
measure remember-batch1000 remember --clients 2 --batch 1000 --count 60000
measure remember-batch1000-4c remember --clients 4 --batch 1000 --count 80000
measure remember-batch1000-64b remember --clients 4 --batch 1000 --count 100000 --text-bytes 64
measure startup startup --memories 1000000 --replay-records 200000
echo "results in $out" >&2
