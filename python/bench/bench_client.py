"""Python client vs Rust client on the same nexusd, in the same run.

Measures the median recall round trip (CacheOnly and smart routes, the same
query set) and the rate of remembering 10,000 memories (remember_many vs the
Rust client's remember in batches of the same size, 1,000), then prints both
sides and the ratios against the issue's targets (Python recall <= 2x Rust;
remember_many >= 0.8x Rust's rate).

Usage (release builds, nothing else benchmarking):
    CARGO_TARGET_DIR=/work/target-perf cargo build --release -p nexus-daemon --example rust_baseline -p nexus-python
    pip install ./python
    nice python python/bench/bench_client.py --nexusd /work/target-perf/release/nexusd \
        --rust-baseline /work/target-perf/release/examples/rust_baseline
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nexus_memory

N_QUERIES = 50  # the same query set as rust_baseline.rs
BATCH = 1000  # remember_many's batch size in the package
ROUNDS = 5  # runs per side, alternated (recall figures on this host are bimodal: ~8 us or ~75 us per round)
SETTLE_S = 3.0  # pause before each remember run, for the daemon's indexing to catch up


def median_recall_ns(client: nexus_memory.Client, n: int, route: str) -> float:
    samples = []
    for i in range(n):
        query = f"what about topic {i % N_QUERIES}"
        started = time.perf_counter_ns()
        client.recall(query, namespace="bench", k=5, route=route)  # type: ignore[arg-type]
        samples.append(time.perf_counter_ns() - started)
    return statistics.median(samples)


def remember_rate(client: nexus_memory.Client, n: int, namespace: str) -> float:
    items = [(f"bulk memory {i} about topic {i % N_QUERIES}", namespace) for i in range(n)]
    started = time.perf_counter()
    client.remember_many(items)
    return n / (time.perf_counter() - started)


RECALL_KEYS = ("recall_cache_only_ns", "recall_smart_ns")


def fmt_rounds(rounds: dict[str, list[float]]) -> str:
    return " ".join(f"{key.removeprefix('recall_').removesuffix('_ns')}={[round(v / 1000, 1) for v in values]}" for key, values in rounds.items())


def rust_run(binary: str, socket: str, recalls: int, remember: int, namespace: str) -> dict[str, float]:
    argv = [binary, socket, str(recalls), str(remember), str(BATCH), namespace]
    result: dict[str, float] = json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)
    return result


def start_daemon(nexusd: str, root: Path) -> tuple[subprocess.Popen[bytes], str]:
    socket = str(root / "nexusd.sock")
    process = subprocess.Popen([nexusd, "--socket", socket, "--data-dir", str(root / "data"), "--log", "warn"])
    for _ in range(600):
        try:
            nexus_memory.Client(socket, timeout=1.0).close()
            return process, socket
        except nexus_memory.DaemonNotRunning:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("nexusd did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nexusd", required=True)
    parser.add_argument("--rust-baseline", required=True)
    parser.add_argument("--recalls", type=int, default=2000)
    parser.add_argument("--remember", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        process, socket = start_daemon(args.nexusd, Path(root))
        try:
            with nexus_memory.Client(socket) as client:
                client.remember_many([(f"memory about topic {i % N_QUERIES}, number {i}", "bench") for i in range(5000)])
                for i in range(N_QUERIES):  # warm the cache and both sides' first calls
                    client.recall(f"what about topic {i}", namespace="bench", k=5, route="smart")
                # The warm-up writes leave the daemon indexing (2 cores here), so
                # recalls too alternate between the sides after a settle pause;
                # each side keeps the median of its per-round medians.
                recall_rounds: dict[str, list[float]] = {key: [] for key in RECALL_KEYS}
                rust_recall_rounds: dict[str, list[float]] = {key: [] for key in RECALL_KEYS}
                time.sleep(SETTLE_S)
                for _ in range(ROUNDS):
                    recall_rounds["recall_cache_only_ns"].append(median_recall_ns(client, args.recalls, "cache_only"))
                    recall_rounds["recall_smart_ns"].append(median_recall_ns(client, args.recalls, "smart"))
                    run = rust_run(args.rust_baseline, socket, args.recalls, 0, "unused")
                    for key in RECALL_KEYS:
                        rust_recall_rounds[key].append(run[key])
                python = {key: statistics.median(values) for key, values in recall_rounds.items()}
                rust = {key: statistics.median(values) for key, values in rust_recall_rounds.items()}
                print(f"recall rounds (us): python {fmt_rounds(recall_rounds)}  rust {fmt_rounds(rust_recall_rounds)}")
                # Writes leave the daemon indexing for a while after they are
                # acknowledged, which slows whoever writes next: alternate the
                # sides, let the daemon settle before each, keep each side's median.
                rust_rates, python_rates = [], []
                for round_idx in range(ROUNDS):
                    time.sleep(SETTLE_S)
                    python_rates.append(remember_rate(client, args.remember, f"bench-remember-python-{round_idx}"))
                    time.sleep(SETTLE_S)
                    run = rust_run(args.rust_baseline, socket, 0, args.remember, f"bench-remember-rust-{round_idx}")
                    rust_rates.append(run["remember_per_s"])
                python["remember_per_s"] = statistics.median(python_rates)
                rust["remember_per_s"] = statistics.median(rust_rates)
                print(f"remember rounds: python {[round(r) for r in python_rates]}  rust {[round(r) for r in rust_rates]}")
        finally:
            process.terminate()
            process.wait()
    for name, unit in (("recall_cache_only_ns", "us"), ("recall_smart_ns", "us")):
        print(f"{name:22} python {python[name] / 1000:8.1f} {unit}  rust {rust[name] / 1000:8.1f} {unit}  ratio {python[name] / rust[name]:.2f}x (target <= 2x)")
    best_python = {key: min(values) for key, values in recall_rounds.items()}
    best_rust = {key: min(values) for key, values in rust_recall_rounds.items()}
    for key in RECALL_KEYS:
        print(f"{key:22} best round: python {best_python[key] / 1000:.1f} us  rust {best_rust[key] / 1000:.1f} us  ratio {best_python[key] / best_rust[key]:.2f}x")
    rate = python["remember_per_s"] / rust["remember_per_s"]
    print(f"{'remember_per_s':22} python {python['remember_per_s']:8.0f}     rust {rust['remember_per_s']:8.0f}     ratio {rate:.2f}x (target >= 0.8x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
