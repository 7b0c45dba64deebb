#!/usr/bin/env bash
# Two builds side by side, interleaved, one fresh daemon per run: the floor, then
# ping at each depth and durable remember with 1 and 16 clients, for build A and
# build B in turn, REPS times. JSON lines, one per run, on stdout.
#
#   benches/ab.sh OLD_RELEASE_DIR NEW_RELEASE_DIR [REPS] > ab.jsonl
#
# Each directory holds a `nexusd` and the `nexus-bench` built with it (each build
# speaks its own protocol version).
set -euo pipefail
old=$1 new=$2 reps=${3:-3}
depths=${DEPTHS:-"1 4 16 64 256"}
run() { "$1/nexus-bench" "${@:2}" --json 2>/dev/null | tail -1; }
for rep in $(seq "$reps"); do
    echo "{\"build\":\"floor\",\"rep\":$rep,\"r\":$(run "$new" floor --round-trips 20000)}"
    for depth in $depths; do
        iterations=200000; [ "$depth" = 1 ] && iterations=30000
        for build in old new; do
            dir=$old; [ $build = new ] && dir=$new
            r=$(run "$dir" ping --spawn-daemon "$dir/nexusd" --depth "$depth" --iterations $iterations --warmup 5000 --rounds 6)
            echo "{\"build\":\"$build\",\"rep\":$rep,\"depth\":$depth,\"r\":$r}"
        done
    done
    for clients_count in "1 5000" "16 40000"; do
        set -- $clients_count
        for build in old new; do
            dir=$old; [ $build = new ] && dir=$new
            r=$(run "$dir" remember --spawn-daemon "$dir/nexusd" --clients "$1" --count "$2")
            echo "{\"build\":\"$build\",\"rep\":$rep,\"clients\":$1,\"r\":$r}"
        done
    done
done
