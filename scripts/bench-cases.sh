#!/usr/bin/env bash
# Time the staff commands on a case database of a million cases.
#
# Builds the bench in release mode, fills the database once (kept between runs; pass
# --refill to start again), then runs `cases list --overdue`, `list --ip`, `show`, `stats`
# and a few more through the real CLI code path, several times each, printing ms.
# Target: each under 100 ms.
#
#   scripts/bench-cases.sh                    # 1,000,000 cases in target/bench-cases.sqlite
#   BENCH_CASES=100000 BENCH_DB=/tmp/b.sqlite scripts/bench-cases.sh --refill
set -euo pipefail
cd "$(dirname "$0")/.."
db=${BENCH_DB:-target/bench-cases.sqlite}
cases=${BENCH_CASES:-1000000}
runs=${BENCH_RUNS:-7}
cargo build --quiet --release --example bench_cases
exec target/release/examples/bench_cases --db "$db" --cases "$cases" --runs "$runs" "$@"
