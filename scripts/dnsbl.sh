#!/usr/bin/env bash
# A real DNSBL for delistd's blocklist tests: Debian's rbldnsd, as the unprivileged user
# `rbldns` (rbldnsd refuses root), on a high UDP port of 127.0.0.1.
#
#   scripts/dnsbl.sh start    start it (again: nothing if it runs); prints the env
#   scripts/dnsbl.sh stop     stop it; no process is left behind
#   scripts/dnsbl.sh status   exit 0 when it runs
#   scripts/dnsbl.sh env      shell-sourceable variables for the tests
#
# Zones (RFC 5782), each an ip4set and an ip6trie dataset:
#   bl.delistd.test    the list under test. base.ip4/base.ip6 hold the RFC 5782 §5 test entries
#                      (127.0.0.2 and ::FFFF:7F00:2 listed, 127.0.0.1 not); tests.ip4/tests.ip6
#                      are the tests' own entries: they rewrite them, rbldnsd notices the new
#                      modification time within a second (-c 1) and reloads.
#   bad.delistd.test   a broken list: lists 127.0.0.1 and not 127.0.0.2 (must be refused).
#   bench.delistd.test the benchmarks' list: the test entries, and every address their requests
#                      name (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32).
# Answers have TTL 1 s and the SOA minimum is 1 s, so no resolver cache hides a change.
#
# State directory: $DELISTD_DNSBL_DIR, else a fresh one under /tmp (remembered in $POINTER).
# It must be readable by `rbldns` (made 0755). Port: free one picked at first start, or
# DELISTD_TEST_DNSBL_PORT; kept in $DIR/env.
set -euo pipefail

POINTER=/tmp/delistd-dnsbl.last
ZONE=bl.delistd.test
BAD_ZONE=bad.delistd.test
BENCH_ZONE=bench.delistd.test

die() {
    echo "dnsbl: $*" >&2
    exit 1
}

resolve_dir() {
    local create=$1
    if [[ -n ${DELISTD_DNSBL_DIR:-} ]]; then
        DIR=$DELISTD_DNSBL_DIR
        [[ $create == yes ]] && mkdir -p "$DIR"
    elif [[ $create == yes ]]; then
        DIR=$(mktemp -d /tmp/delistd-dnsbl.XXXXXX)
    elif [[ -s $POINTER ]]; then
        DIR=$(cat "$POINTER")
    else
        die "no DNSBL: set DELISTD_DNSBL_DIR or run '$0 start' first"
    fi
    [[ -d $DIR ]] || die "state directory $DIR does not exist"
    DIR=$(cd "$DIR" && pwd -P)
}

running() {
    [[ -s $DIR/rbldnsd.pid ]] && kill -0 "$(cat "$DIR/rbldnsd.pid")" 2>/dev/null
}

free_udp_port() {
    python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

write_env() {
    cat >"$DIR/env" <<ENV
DELISTD_TEST_DNSBL_ADDR=127.0.0.1:$PORT
DELISTD_TEST_DNSBL_ZONE=$ZONE
DELISTD_TEST_DNSBL_BAD_ZONE=$BAD_ZONE
DELISTD_TEST_DNSBL_BENCH_ZONE=$BENCH_ZONE
DELISTD_TEST_DNSBL_DIR=$DIR
DELISTD_TEST_DNSBL_SCRIPT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/dnsbl.sh
ENV
}

start() {
    command -v rbldnsd >/dev/null || die "rbldnsd is not installed (bash scripts/install-test-deps.sh)"
    resolve_dir yes
    echo "$DIR" >"$POINTER"
    chmod 755 "$DIR"
    if [[ -s $DIR/env ]]; then
        PORT=$(sed -n 's/^DELISTD_TEST_DNSBL_ADDR=127.0.0.1://p' "$DIR/env")
    else
        PORT=${DELISTD_TEST_DNSBL_PORT:-$(free_udp_port)}
    fi
    write_env
    if running; then
        echo "dnsbl: rbldnsd already runs (pid $(cat "$DIR/rbldnsd.pid"))" >&2
        cat "$DIR/env"
        return
    fi
    local user=rbldns
    id "$user" >/dev/null 2>&1 || user=nobody
    # The RFC 5782 §5 test entries, in both families.
    cat >"$DIR/base.ip4" <<'ZONE'
$SOA 1 ns.delistd.test. hostmaster.delistd.test. 1 600 600 600 1
$NS 1 ns.delistd.test.
# RFC 5782 section 5: 127.0.0.2 is listed, 127.0.0.1 is not.
127.0.0.2 :127.0.0.2:RFC 5782 test entry
ZONE
    cat >"$DIR/base.ip6" <<'ZONE'
# RFC 5782 section 5: ::FFFF:7F00:2 is listed.
::ffff:7f00:2 :127.0.0.2:RFC 5782 test entry (IPv6)
ZONE
    [[ -e $DIR/tests.ip4 ]] || echo "# entries written by the tests" >"$DIR/tests.ip4"
    [[ -e $DIR/tests.ip6 ]] || echo "# entries written by the tests" >"$DIR/tests.ip6"
    cat >"$DIR/bad.ip4" <<'ZONE'
$SOA 1 ns.delistd.test. hostmaster.delistd.test. 1 600 600 600 1
# Broken on purpose: answers 127.0.0.1 (must not be listed), not 127.0.0.2.
127.0.0.1 :127.0.0.2:everything is listed here
ZONE
    cat >"$DIR/bench.ip4" <<'ZONE'
:127.0.0.2:Listed by the benchmark: $
192.0.2.0/24
198.51.100.0/24
203.0.113.0/24
ZONE
    cat >"$DIR/bench.ip6" <<'ZONE'
:127.0.0.2:Listed by the benchmark: $
2001:db8::/32
ZONE
    chmod 644 "$DIR"/*.ip4 "$DIR"/*.ip6
    # Forks into the background once the zones are loaded; a bad zone file stops it here.
    (cd "$DIR" && rbldnsd -u "$user" -w "$DIR" -b "127.0.0.1/$PORT" -p "$DIR/rbldnsd.pid" -t 1 -c 1 \
        "$ZONE:ip4set:base.ip4,tests.ip4" "$ZONE:ip6trie:base.ip6,tests.ip6" "$BAD_ZONE:ip4set:bad.ip4" \
        "$BENCH_ZONE:ip4set:base.ip4,bench.ip4" "$BENCH_ZONE:ip6trie:base.ip6,bench.ip6") \
        >"$DIR/rbldnsd.out" 2>&1 || { cat "$DIR/rbldnsd.out" >&2; die "rbldnsd did not start"; }
    for _ in $(seq 50); do
        running && break
        sleep 0.1
    done
    running || { cat "$DIR/rbldnsd.out" >&2; die "rbldnsd did not stay up"; }
    echo "dnsbl: rbldnsd up as $user on 127.0.0.1/$PORT (pid $(cat "$DIR/rbldnsd.pid")), zones $ZONE $BAD_ZONE $BENCH_ZONE in $DIR" >&2
    cat "$DIR/env"
}

stop() {
    resolve_dir no
    if running; then
        local pid
        pid=$(cat "$DIR/rbldnsd.pid")
        kill "$pid"
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$DIR/rbldnsd.pid"
}

case ${1:-} in
start) start ;;
stop) stop ;;
status)
    resolve_dir no
    running
    ;;
env)
    resolve_dir no
    cat "$DIR/env"
    ;;
*) die "usage: $0 start|stop|status|env" ;;
esac
