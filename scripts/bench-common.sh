# shellcheck shell=bash
# Shared start of the mail benchmarks (bench-backlog.sh, bench-latency.sh, crash-loop.sh);
# sourced, not run:   . scripts/bench-common.sh NAME
#
# Builds the release daemon and examples/bench_mail.rs ($delistd, $bench), makes a work
# directory $work (/tmp/delistd-NAME.*), uses the mail stack in $DELISTD_STACK_DIR when one
# runs there or starts one in a temporary directory, and loads its env (DELISTD_TEST_*).
# On exit it kills the daemon in $pid (with $stop_signal, TERM unless the script sets it),
# stops a stack it started, and removes $work unless the script set keep=yes.

cargo build --quiet --release --bin delistd --example bench_mail
# shellcheck disable=SC2034 # used by the scripts that source this file
bench=target/release/examples/bench_mail
# shellcheck disable=SC2034
delistd=target/release/delistd

own_stack=""
if [[ -z ${DELISTD_STACK_DIR:-} ]]; then
    DELISTD_STACK_DIR=$(mktemp -d /tmp/delistd-bench.XXXXXX)
    own_stack=yes
fi
export DELISTD_STACK_DIR
work=$(mktemp -d "/tmp/delistd-$1.XXXXXX")
pid=""
bench_finish() {
    [[ -n $pid ]] && kill "-${stop_signal:-TERM}" "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    if [[ -n $own_stack ]]; then
        bash scripts/mailstack.sh stop >/dev/null 2>&1 || true
        rm -rf "$DELISTD_STACK_DIR"
    fi
    if [[ ${keep:-} == yes ]]; then echo "$1: kept $work" >&2; else rm -rf "$work"; fi
}
# shellcheck disable=SC2064 # the name is fixed now, on purpose
trap "bench_finish $1" EXIT
if ! bash scripts/mailstack.sh status >/dev/null 2>&1; then
    bash scripts/mailstack.sh start >"$work/stack.log" 2>&1 || { cat "$work/stack.log" >&2; exit 1; }
fi
set -a
# shellcheck disable=SC1091
. "$DELISTD_STACK_DIR/env"
set +a

# BENCH_DNSBL=1: the daemon looks every request's IP up on the loopback rbldnsd of
# scripts/dnsbl.sh (zone bench.delistd.test lists every address the requests name), started
# here unless one runs in $DELISTD_DNSBL_DIR. add_dnsbl_config FILE appends the [blocklist]
# section to a daemon config; without BENCH_DNSBL it does nothing.
if [[ ${BENCH_DNSBL:-0} == 1 ]]; then
    own_dnsbl=""
    if [[ -z ${DELISTD_DNSBL_DIR:-} ]] || ! bash scripts/dnsbl.sh status >/dev/null 2>&1; then
        # Not under $work: rbldnsd runs as an unprivileged user and must read its zone files.
        export DELISTD_DNSBL_DIR=${DELISTD_DNSBL_DIR:-$(mktemp -d /tmp/delistd-bench-dnsbl.XXXXXX)}
        own_dnsbl=$DELISTD_DNSBL_DIR
        bash scripts/dnsbl.sh start >"$work/dnsbl.log" 2>&1 || { cat "$work/dnsbl.log" >&2; exit 1; }
        # shellcheck disable=SC2064
        trap "bash scripts/dnsbl.sh stop >/dev/null 2>&1; rm -rf '$own_dnsbl'; bench_finish $1" EXIT
    fi
    set -a
    # shellcheck disable=SC1091
    . "$DELISTD_DNSBL_DIR/env"
    set +a
fi
add_dnsbl_config() {
    [[ ${BENCH_DNSBL:-0} == 1 ]] || return 0
    printf '\n[blocklist]\ndnsbl_zones = ["%s"]\nnameservers = ["%s"]\ntimeout = "2s"\n' \
        "$DELISTD_TEST_DNSBL_BENCH_ZONE" "$DELISTD_TEST_DNSBL_ADDR" >>"$1"
}
