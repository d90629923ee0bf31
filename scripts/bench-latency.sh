#!/usr/bin/env bash
# Latency with IDLE: the serving daemon (`delistd run`, release build, IMAP IDLE) on the real
# Postfix and Dovecot of the test suite; N requests sent one at a time, each only after the
# reply to the one before has arrived.
#
#   scripts/bench-latency.sh [N] [MODE]      N default 1000; MODE idle (default) or poll=INTERVAL
#
# MODE idle is the daemon as configured by default (IMAP IDLE, RFC 2177). Dovecot delays
# every IDLE notification by 500 ms (NOTIFY_DELAY_MSECS in src/lib-storage/mailbox-watch.c,
# not configurable), so on Dovecot that is the floor; poll=100ms runs the daemon with
# `idle = false, poll_interval = "100ms"` instead, to show what the daemon itself takes.
#
# For each request (an acknowledgement opening a case), examples/bench_mail.rs measures from
# the completion of its IMAP APPEND into the delist mailbox (the message is in the mailbox;
# Dovecot tells the IDLEing daemon) to
#   * accepted: the reply accepted by Postfix -- the daemon's JSON log line "reply sent",
#     written right after the server's 250 and the commit that records it;
#   * delivered: the reply's file appearing in the sender's Maildir (Postfix -> LMTP ->
#     Dovecot), polled every 0.5 ms.
# Prints p50/p90/p99/max of both, and splits "accepted" into the wait until the daemon looks
# at the mailbox (its debug line "messages waiting") and the daemon's own work from there.
# A request is sent 50-150 ms (at random) after the previous reply arrived, so that it finds
# the daemon waiting and does not fall in step with a polling one. Target: p50 (accepted) < 250 ms.
#
# Uses the stack in $DELISTD_STACK_DIR when it runs there, else starts one in a temporary
# directory and stops it at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-1000}"
mode="${2:-idle}"
case $mode in
idle) poll=() ;;
poll=*) poll=(--poll "${mode#poll=}") ;;
*) echo "usage: $0 [N] [idle|poll=INTERVAL]" >&2; exit 2 ;;
esac

. scripts/bench-common.sh bench-latency

tag="l$(date +%s)"
desk="t-$tag-desk@example.test"
"$bench" config --user "$desk" --db "$work/delistd.sqlite" --out "$work/delistd.toml" --connections 4 "${poll[@]}"
echo "bench-latency: mode $mode; $(nproc) cores, $(uptime | sed 's/.*load/load/'), $(date -u +%Y-%m-%dT%H:%MZ)"
DELISTD_LOG="info,delistd::daemon=debug" "$delistd" --log-format json run --config "$work/delistd.toml" 2>"$work/daemon.log" &
pid=$!
for _ in $(seq 1 100); do
    grep -q '"IMAP connected"' "$work/daemon.log" && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/daemon.log" >&2; exit 1; }
    sleep 0.1
done
if [[ $mode == idle ]]; then
    grep -q '"idle":true' "$work/daemon.log" || { echo "bench-latency: the daemon is not using IDLE" >&2; exit 1; }
fi

"$bench" latency --user "$desk" --tag "$tag" --count "$n" --daemon-log "$work/daemon.log"
echo "bench-latency: load after: $(cut -d' ' -f1-3 /proc/loadavg)"
