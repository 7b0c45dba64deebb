#!/usr/bin/env bash
# Fuzz smoke test: builds every target, replays the kept crash inputs
# (regressions/<target>/), then fuzzes each target for SECONDS (default 20) from
# seeds it writes itself (valid inputs, checked to reach the decoder) plus its
# local corpus. Fails on any crash, leak, timeout or out-of-memory; the input is
# left in artifacts/<target>/ and the log in artifacts/<target>.log.
# Needs nightly and cargo-fuzz (.ci/run installs them). One target at a time, one
# worker: the machines have two cores.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-20}
targets=(handshake request ring wal_replay snapshot)
# Inputs longer than this are not tried: every target's seeds fit, and the rings,
# segments and snapshots it takes to reach every branch are small.
max_len=8192
# One input taking longer than this is a hang (the slowest seed takes milliseconds).
input_timeout_s=10

mkdir -p artifacts
if ! nice -n 10 cargo +nightly fuzz build --fuzz-dir . >artifacts/build.log 2>&1; then
    tail -n 40 artifacts/build.log
    echo "fuzz smoke: the targets did not build (fuzz/artifacts/build.log)" >&2
    exit 1
fi
bin=target/x86_64-unknown-linux-gnu/release

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_odr_violation=0}
failed=()
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    log=artifacts/$target.log
    regressions=(regressions/"$target"/*)
    if [[ -e ${regressions[0]} ]] && ! "$bin/$target" "${regressions[@]}" >"$log" 2>&1; then
        echo "FAIL $target: a kept regression input crashes again (see fuzz/$log)"
        tail -n 30 "$log"
        failed+=("$target")
        continue
    fi
    if NEXUS_FUZZ_SEED_DIR=corpus/$target nice -n 10 "$bin/$target" "corpus/$target" \
        -max_total_time="$seconds" -max_len=$max_len -timeout=$input_timeout_s -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="artifacts/$target/" >"$log" 2>&1; then
        # The last status line: executions, coverage (cov), features (ft), corpus size.
        status=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
        echo "ok   $target (${seconds}s): $status"
    else
        echo "FAIL $target: see fuzz/$log; the input is in fuzz/artifacts/$target/"
        grep -E 'ERROR|panicked|SUMMARY|^#[0-9]+' "$log" | tail -n 12
        failed+=("$target")
    fi
done
if ((${#failed[@]})); then
    echo "fuzz smoke: crashes in ${failed[*]}" >&2
    exit 1
fi
echo "fuzz smoke: ${#targets[@]} targets, ${seconds}s each, no crash"
