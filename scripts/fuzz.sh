#!/usr/bin/env bash
# Fuzz the extraction step (extract + decide, fuzz/fuzz_targets/extract.rs) with cargo-fuzz
# (libFuzzer, AddressSanitizer) for SECONDS, then file every input that failed as a
# regression test under tests/regressions/ (tests/hostile.rs runs them). Not part of CI.
#
#   scripts/fuzz.sh [SECONDS]        default 600
#
# Seeds: tests/fixtures/*.eml, the demo Maildir, the Sisimai corpus beside the crate, and
# the regressions themselves; the corpus grows in fuzz/corpus/extract (kept between runs).
# cargo-fuzz needs a nightly compiler (-Zsanitizer): `cargo +nightly` when rustup has a
# nightly toolchain, else the stable one with RUSTC_BOOTSTRAP=1 (its nightly features
# unlocked; fine for a test harness, never for a build that ships).
#
# Exit status: 0 when nothing failed, 1 when new regressions were filed.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"

if ! command -v cargo-fuzz >/dev/null; then
    echo "fuzz.sh: installing cargo-fuzz ..." >&2
    cargo install --locked cargo-fuzz >&2
fi
if rustup run nightly rustc --version >/dev/null 2>&1; then
    cargo=(cargo +nightly)
    echo "fuzz.sh: $(rustup run nightly rustc --version)" >&2
else
    export RUSTC_BOOTSTRAP=1
    cargo=(cargo)
    echo "fuzz.sh: no nightly toolchain; $(rustc --version) with RUSTC_BOOTSTRAP=1" >&2
fi

corpus=fuzz/corpus/extract
artifacts=fuzz/artifacts/extract
mkdir -p "$corpus" "$artifacts" tests/regressions

seeds=()
for d in tests/fixtures demo/maildir/new tests/regressions ../shared/corpus/sisimai ../../shared/corpus/sisimai; do
    [ -d "$d" ] && seeds+=("$d")
done
echo "fuzz.sh: seeds from ${seeds[*]}" >&2

"${cargo[@]}" fuzz build extract >&2
# fork=1 with ignore_crashes: go on after a failure to collect the others; every failing
# input lands in $artifacts. -max_len: requests are small; 64 KiB leaves room for MIME.
started=$(date +%s)
set +e
"${cargo[@]}" fuzz run extract "$corpus" "${seeds[@]}" -- \
    -max_total_time="$seconds" -dict=fuzz/extract.dict -max_len=65536 -timeout=10 \
    -rss_limit_mb=2048 -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
    -print_final_stats=1 -close_fd_mask=1 2>fuzz/last-run.log
status=$?
set -e
grep -E "^#[0-9]+.*(DONE|cov:)" fuzz/last-run.log | tail -n 3 >&2 || true
echo "fuzz.sh: libFuzzer exited $status after $(($(date +%s) - started)) s; log in fuzz/last-run.log; corpus $(find "$corpus" -type f | wc -l) inputs" >&2

new=0
for f in "$artifacts"/crash-* "$artifacts"/timeout-* "$artifacts"/oom-* "$artifacts"/leak-*; do
    [ -e "$f" ] || continue
    kind=${f##*/}
    kind=${kind%%-*}
    target="tests/regressions/$kind-$(sha1sum "$f" | cut -c1-16)"
    if [ ! -e "$target" ]; then
        cp "$f" "$target"
        echo "fuzz.sh: new regression $target (from $f)" >&2
        new=$((new + 1))
    fi
done
if [ "$new" -gt 0 ]; then
    echo "fuzz.sh: $new new failing input(s) filed; see them fail with: cargo test --release --test hostile fuzz_regressions" >&2
    exit 1
fi
echo "fuzz.sh: no failures" >&2
