#!/usr/bin/env bash
# Runs delistd's whole test suite against the real loopback mail stack (scripts/mailstack.sh):
# start the stack, prove it with the smoke test, export its DELISTD_TEST_* variables, run
# `cargo test`, stop the stack. cargo's summary stays the last thing printed.
#
# Two test binaries use the stack. tests/e2e runs its tests in parallel, each with mailboxes
# of its own, and never touches the servers themselves. tests/faults.rs restarts Dovecot and
# stops Postfix, which would break whatever else uses the stack at that moment, so: it is a
# binary of its own whose scenarios run in order inside one #[test], and it only ever runs
# alone, because `cargo test` runs test binaries one after another, never two at once.
# (A runner that runs binaries side by side, such as cargo-nextest, would need
# `--test faults` run separately, after the rest.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

own_dir=""
if [[ -z ${DELISTD_STACK_DIR:-} ]]; then
    DELISTD_STACK_DIR=$(mktemp -d /tmp/delistd-stack.XXXXXX)
    own_dir=$DELISTD_STACK_DIR
fi
export DELISTD_STACK_DIR
stack_log=$DELISTD_STACK_DIR.mailstack.log
# The real DNSBL (rbldnsd) of the blocklist tests, beside the mail stack.
export DELISTD_DNSBL_DIR=${DELISTD_DNSBL_DIR:-$DELISTD_STACK_DIR.dnsbl}

# Stops the stack whatever happened; a directory this script made is removed after a green run
# and kept (with the daemons' logs under log/) after a red one.
finish() {
    local status=$?
    if ! bash scripts/mailstack.sh stop >>"$stack_log" 2>&1; then
        echo "test.sh: stopping the mail stack failed:" >&2
        tail -n 20 "$stack_log" >&2
        status=1
    fi
    if ! bash scripts/dnsbl.sh stop >>"$stack_log" 2>&1; then
        echo "test.sh: stopping rbldnsd failed" >&2
        status=1
    fi
    if [[ $status -eq 0 && -n $own_dir ]]; then
        rm -rf "$own_dir" "$stack_log" "$DELISTD_DNSBL_DIR"
    fi
    exit "$status"
}
trap finish EXIT

if ! bash scripts/mailstack.sh start >"$stack_log" 2>&1; then
    cat "$stack_log" >&2
    echo "test.sh: the mail stack did not start" >&2
    exit 1
fi
set -a
# shellcheck disable=SC1091
. "$DELISTD_STACK_DIR/env"
set +a
python3 scripts/mailstack-smoke.py
if ! bash scripts/dnsbl.sh start >>"$stack_log" 2>&1; then
    cat "$stack_log" >&2
    echo "test.sh: rbldnsd did not start" >&2
    exit 1
fi
set -a
# shellcheck disable=SC1091
. "$DELISTD_DNSBL_DIR/env"
set +a
echo "test.sh: rbldnsd up on $DELISTD_TEST_DNSBL_ADDR (zones $DELISTD_TEST_DNSBL_ZONE, $DELISTD_TEST_DNSBL_BAD_ZONE)"
echo "test.sh: mail stack up (IMAPS $DELISTD_TEST_IMAPS_PORT, IMAP $DELISTD_TEST_IMAP_PORT," \
    "SMTP $DELISTD_TEST_SMTP_PORT, SMTPS $DELISTD_TEST_SMTPS_PORT); its logs, kept if a test fails:" \
    "$DELISTD_STACK_DIR/log"

# Release build: the kill -9 test pushes 200 requests through, and the suite shares two cores.
# Benches and examples are built (so they cannot rot) but not run as tests: their empty test
# harnesses would print "0 passed" last and hide the real count.
cargo build --release --all-targets
test_log=$DELISTD_STACK_DIR.cargo-test.log
set +e
cargo test --release --lib --bins --tests 2>&1 | tee "$test_log"
status=${PIPESTATUS[0]}
# The Debian package: built from the release build above, installed with dpkg -i, checked
# (systemd-analyze verify, check-config --no-secrets on the installed files) and purged.
DELISTD_DEB_PREBUILT=1 bash scripts/deb.sh
deb_status=$?
set -e
passed=$(grep -Eo '[0-9]+ passed' "$test_log" | awk '{s += $1} END {print s + 0}')
failed=$(grep -Eo '[0-9]+ failed' "$test_log" | awk '{s += $1} END {print s + 0}')
rm -f "$test_log"
# One line over every test binary, in the plain form CI reads.
echo "total: $passed passed, $failed failed"
if ((deb_status != 0)); then
    echo "test.sh: scripts/deb.sh failed (exit $deb_status)"
    status=1
fi
exit "$status"
