#!/usr/bin/env bash
# Checks systemd/delistd.service (or the unit file given as $1) with systemd's own tools:
#
#   1. `systemd-analyze security --offline=true`: the exposure figure must be at most
#      $MAX_EXPOSURE (1.5; systemd-timesyncd scores 2.3).
#   2. `systemd-analyze verify` must print nothing.
#
# verify also checks that ExecStart's binary exists, and /usr/bin/delistd is not installed
# on a build machine. Rather than edit the unit, it is verified unchanged inside a scratch root
# (--root): the host's unit directories (for sysinit.target and friends), the unit under
# /etc/systemd/system, and the real delistd binary at the ExecStart= path. The binary is
# $DELISTD_BIN (the integration test passes cargo's), else target/{release,debug}/delistd.
#
# Needs no running systemd. Prints the exposure figure; exits 1 on any failure.
set -euo pipefail

ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
UNIT=${1:-$ROOT_DIR/systemd/delistd.service}
MAX_EXPOSURE=${MAX_EXPOSURE:-1.5}

fail() {
    echo "check-systemd-unit: FAILED: $*" >&2
    exit 1
}

command -v systemd-analyze >/dev/null || fail "systemd-analyze not found: run scripts/install-test-deps.sh"
[[ -f $UNIT ]] || fail "no unit file at $UNIT"
name=$(basename "$UNIT")

bin=${DELISTD_BIN:-}
if [[ -z $bin ]]; then
    for candidate in "$ROOT_DIR/target/release/delistd" "$ROOT_DIR/target/debug/delistd"; do
        if [[ -x $candidate ]]; then
            bin=$candidate
            break
        fi
    done
fi
[[ -n $bin && -x $bin ]] || fail "no delistd binary to verify ExecStart against: build it or set DELISTD_BIN"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# --- 1. exposure -----------------------------------------------------------------------------
security_out=$scratch/security.txt
if ! systemd-analyze security --offline=true --no-pager "$UNIT" >"$security_out" 2>&1; then
    cat "$security_out" >&2
    fail "systemd-analyze security did not run on $UNIT"
fi
exposure=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9][0-9.]*\).*/\1/p' "$security_out")
[[ -n $exposure ]] || { cat "$security_out" >&2; fail "no exposure figure in systemd-analyze security output"; }
echo "exposure: $exposure (limit $MAX_EXPOSURE)"
if awk -v e="$exposure" -v m="$MAX_EXPOSURE" 'BEGIN {exit !(e > m)}'; then
    grep '✗' "$security_out" >&2 || true
    fail "exposure $exposure is above $MAX_EXPOSURE"
fi
# The lines systemd still counts against the unit, for whoever tightens it next.
grep '✗' "$security_out" | sed 's/^/  /' || true

# --- 2. verify -------------------------------------------------------------------------------
root=$scratch/root
# The binary goes where the unit's ExecStart looks for it (/usr/bin for the Debian package).
exec_path=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$UNIT" | head -n 1)
[[ $exec_path == /* ]] || fail "no absolute ExecStart= path in $UNIT"
mkdir -p "$root/usr/lib/systemd" "$root/etc/systemd/system" "$root$(dirname "$exec_path")"
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
cp "$UNIT" "$root/etc/systemd/system/$name"
cp "$bin" "$root$exec_path"
verify_out=$scratch/verify.txt
status=0
systemd-analyze verify --root="$root" --man=no "$root/etc/systemd/system/$name" >"$verify_out" 2>&1 || status=$?
if [[ -s $verify_out || $status -ne 0 ]]; then
    sed "s|$root||g" "$verify_out" >&2
    fail "systemd-analyze verify complained about $name (exit $status)"
fi
echo "verify: clean"
echo "check-systemd-unit: OK ($name)"
