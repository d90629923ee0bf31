#!/usr/bin/env bash
# Time the staff commands on a case database of a million cases.
#
# Builds the bench in release mode, fills the database once (kept between runs; pass
# --refill to start again), then runs `cases list --overdue`, `list --ip`, `show`, `stats`
# and a few more through the real CLI code path, several times each, printing ms.
# Target: each under 100 ms.
#
# Then the web desk's calls, server-side on one connection as `delistd web` holds it: the
# board (Desk::list + Desk::counts) in its default view, filtered (assignee and state, a
# CIDR block, a sender part) and searching (a rare phrase, a common word), and the case
# page (Desk::case of random cases); median and p95 of --desk-runs runs (40). Target: each
# under 50 ms. The messages have real bodies (plain text and HTML, five languages), so the
# full-text index is of a real size.
#
#   scripts/bench-cases.sh                    # 1,000,000 cases in target/bench-cases.sqlite
#   BENCH_CASES=100000 BENCH_DB=/tmp/b.sqlite scripts/bench-cases.sh --refill
#   nice scripts/bench-cases.sh --refill --fill-only && scripts/bench-cases.sh   # fill niced, time not
set -euo pipefail
cd "$(dirname "$0")/.."
db=${BENCH_DB:-target/bench-cases.sqlite}
cases=${BENCH_CASES:-1000000}
runs=${BENCH_RUNS:-7}
cargo build --quiet --release --example bench_cases
exec target/release/examples/bench_cases --db "$db" --cases "$cases" --runs "$runs" "$@"
