#!/usr/bin/env bash
# Crash loop: while the serving daemon (`delistd run`, release build, IDLE) drains a backlog,
# kill -9 it at random moments and restart it, then check that nothing was lost or done twice.
#
#   scripts/crash-loop.sh [REQUESTS] [KILLS]      default 2000 requests, 50 kills
#   CRASH_SMTP_CONNECTIONS=N (default 4)
#
# Each incarnation lives a random 30-330 ms (startup, intake, commits, MOVEs and SMTP sends
# are all hit; short enough that the kills are spread over the whole drain) before SIGKILL. After the last kill the daemon runs until the mailbox is
# empty and no reply is queued, then stops on SIGTERM. examples/bench_mail.rs `check` then
# reads the mailboxes on disk and the database:
#   * every request has exactly one `messages` row (with the expected action), INBOX is
#     empty and all of them are in Processed;
#   * every case was opened once: no IP with two cases, no request that opened two;
#   * every due reply is sent and is in its recipient's Maildir; a reply delivered twice
#     (possible only when a kill fell between the server's 250 and the commit that records
#     it) is counted and named.
#
# Then a second backlog (half as many requests) meets the faults a daemon must ride out
# without a restart (issue 9), under a watchdog of WATCHDOG_USEC=2 s on a NOTIFY_SOCKET the
# script listens on:
#   * CRASH_PAUSES (default 6) SIGSTOP/SIGCONT pauses of 4 s, twice the watchdog interval;
#   * CRASH_LOCKS (default 3) `sqlite3` sessions holding the write lock (BEGIN IMMEDIATE)
#     for 8 s, past the daemon's 5 s busy timeout.
# The same daemon must still run afterwards and stop cleanly on SIGTERM; the same check runs
# on the second backlog; the WATCHDOG=1 messages and the longest gap between two are
# counted (a gap longer than a pause would mean the watchdog stayed withheld after it).
# Exit status: 1 on a lost request, a double case or an undelivered reply, or a daemon that
# did not survive the faults; duplicates alone do not fail the run.
set -euo pipefail
cd "$(dirname "$0")/.."
requests="${1:-2000}"
kills="${2:-50}"
# SMTP connections of the daemon; a kill can leave one reply per connection accepted by
# Postfix but not yet recorded as sent (see src/reply/outbox.rs).
connections=${CRASH_SMTP_CONNECTIONS:-4}

stop_signal=KILL
. scripts/bench-common.sh crash-loop

tag="c$(date +%s)"
desk="t-$tag-desk@example.test"
db="$work/delistd.sqlite"
echo "crash-loop: $(nproc) cores, $(uptime | sed 's/.*load/load/'), $(date -u +%Y-%m-%dT%H:%MZ)"
expect=$("$bench" fill --user "$desk" --tag "$tag" --count "$requests" --manifest "$work/manifest.tsv")
"$bench" config --user "$desk" --db "$db" --out "$work/delistd.toml" --connections "$connections"

count() { sqlite3 -readonly "$db" "$1" 2>/dev/null || echo "?"; }
inbox() { find "$DELISTD_TEST_MAIL_DIR/example.test/t-$tag-desk/Maildir/new" "$DELISTD_TEST_MAIL_DIR/example.test/t-$tag-desk/Maildir/cur" -type f 2>/dev/null | wc -l; }

started=$(date +%s)
busy=0
for k in $(seq 1 "$kills"); do
    "$delistd" run --config "$work/delistd.toml" 2>>"$work/daemon.log" &
    pid=$!
    sleep "$(awk -v r="$RANDOM" 'BEGIN { printf "%.3f", 0.03 + 0.3 * r / 32767 }')"
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=""
    if [[ $(inbox) != 0 || $(count "SELECT count(*) FROM outbox WHERE state = 'queued'") != 0 ]]; then
        busy=$((busy + 1))
    fi
    if ((k % 10 == 0)); then
        echo "crash-loop: $k kills; INBOX $(inbox), recorded $(count 'SELECT count(*) FROM messages'), replies sent $(count "SELECT count(*) FROM outbox WHERE state = 'sent'") of $expect"
    fi
done

# The last incarnation is left to finish, then stopped cleanly.
"$delistd" run --config "$work/delistd.toml" 2>>"$work/daemon.log" &
pid=$!
deadline=$(($(date +%s) + 300))
while :; do
    queued=$(count "SELECT count(*) FROM outbox WHERE state = 'queued'")
    [[ $(inbox) == 0 && $queued == 0 ]] && break
    if (($(date +%s) > deadline)); then
        echo "crash-loop: not drained after 300 s (INBOX $(inbox), queued $queued)" >&2
        break
    fi
    sleep 0.5
done
"$bench" wait --tag "$tag" --expect "$expect" --since-ns "$(date +%s%N)" --timeout-s 180 >/dev/null || true
kill -TERM "$pid"
wait "$pid" || echo "crash-loop: the daemon's last run ended with status $?" >&2
pid=""
echo "crash-loop: $kills kills in $(($(date +%s) - started)) s, $busy of them with work left (mail in INBOX or replies queued); the daemon connected $(grep -c 'IMAP connected' "$work/daemon.log") times"

failed=""
if ! "$bench" check --user "$desk" --tag "$tag" --manifest "$work/manifest.tsv" --db "$db"; then
    failed=yes
    echo "crash-loop: FAILED (kills)" >&2
fi

# --- faults that must not cost a restart -------------------------------------------------------
pauses=${CRASH_PAUSES:-6}
locks=${CRASH_LOCKS:-3}
ftag="f$(date +%s)"
fdesk="t-$ftag-desk@example.test"
fdb="$work/faults.sqlite"
fexpect=$("$bench" fill --user "$fdesk" --tag "$ftag" --count "$((requests / 2))" --manifest "$work/faults.tsv")
"$bench" config --user "$fdesk" --db "$fdb" --out "$work/faults.toml" --connections "$connections"
finbox() { find "$DELISTD_TEST_MAIL_DIR/example.test/t-$ftag-desk/Maildir/new" "$DELISTD_TEST_MAIL_DIR/example.test/t-$ftag-desk/Maildir/cur" -type f 2>/dev/null | wc -l; }
fcount() { sqlite3 -readonly "$fdb" "$1" 2>/dev/null || echo "?"; }

# systemd's side of sd_notify: one datagram per notification, logged with its time.
timeout 1800 python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "a", buffering=1) as log:
    while True:
        for line in s.recv(4096).decode(errors="replace").splitlines():
            log.write("%.3f %s\n" % (time.time(), line))
' "$work/notify.sock" "$work/notify.log" &
listener=$!
sleep 0.3

NOTIFY_SOCKET=$work/notify.sock WATCHDOG_USEC=2000000 "$delistd" run --config "$work/faults.toml" 2>>"$work/faults.log" &
pid=$!
fstarted=$(date +%s)
survived=yes
alive() { kill -0 "$pid" 2>/dev/null || { survived=""; echo "crash-loop: the daemon died during the faults" >&2; }; }
hold_lock() {
    # Waits for the daemon's own write to finish, then keeps the lock 8 s.
    { printf 'PRAGMA busy_timeout = 10000;\nBEGIN IMMEDIATE;\nUPDATE cases SET state = state;\n'; sleep 8; printf 'COMMIT;\n'; } |
        sqlite3 "$fdb" >/dev/null
}
sleep 0.3
p=0
l=0
while ((p < pauses || l < locks)); do
    if ((l < locks)) && ((p % 2 == 0)); then
        hold_lock
        l=$((l + 1))
        echo "crash-loop: write lock held 8 s ($l of $locks); INBOX $(finbox), recorded $(fcount 'SELECT count(*) FROM messages')"
    fi
    alive
    sleep 0.3
    if ((p < pauses)); then
        kill -STOP "$pid"
        sleep 4
        kill -CONT "$pid"
        p=$((p + 1))
        echo "crash-loop: paused 4 s ($p of $pauses); INBOX $(finbox), recorded $(fcount 'SELECT count(*) FROM messages')"
    fi
    alive
    sleep 0.3
done
deadline=$(($(date +%s) + 300))
while [[ -n $survived ]]; do
    queued=$(fcount "SELECT count(*) FROM outbox WHERE state = 'queued'")
    [[ $(finbox) == 0 && $queued == 0 ]] && break
    if (($(date +%s) > deadline)); then
        echo "crash-loop: faults backlog not drained after 300 s (INBOX $(finbox), queued $queued)" >&2
        break
    fi
    alive
    sleep 0.5
done
"$bench" wait --tag "$ftag" --expect "$fexpect" --since-ns "$(date +%s%N)" --timeout-s 180 >/dev/null || true
if [[ -n $survived ]]; then
    kill -TERM "$pid"
    wait "$pid" || { survived=""; echo "crash-loop: after the faults, the daemon ended with status $?" >&2; }
fi
pid=""
kill "$listener" 2>/dev/null || true
watchdogs=$(grep -c 'WATCHDOG=1' "$work/notify.log" || true)
gap=$(awk '/WATCHDOG=1/ { if (last) { g = $1 - last; if (g > max) max = g } last = $1 } END { printf "%.1f", max }' "$work/notify.log")
echo "crash-loop: faults: $pauses pauses of 4 s and $locks write locks of 8 s in $(($(date +%s) - fstarted)) s;" \
    "daemon $([[ -n $survived ]] && echo "survived without a restart" || echo "DID NOT SURVIVE"); WATCHDOG=1 sent $watchdogs times," \
    "longest gap $gap s; busy waits logged $(grep -c 'database busy' "$work/faults.log" || true)," \
    "stuck-loop alarms $(grep -c 'a loop is stuck' "$work/faults.log" || true)"
if ! "$bench" check --user "$fdesk" --tag "$ftag" --manifest "$work/faults.tsv" --db "$fdb"; then
    failed=yes
    echo "crash-loop: FAILED (faults)" >&2
fi
if [[ -z $failed && -n $survived ]]; then
    echo "crash-loop: OK"
else
    keep=yes
    echo "crash-loop: FAILED" >&2
    exit 1
fi
