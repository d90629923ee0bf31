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
# Exit status: 1 on a lost request, a double case or an undelivered reply; duplicates alone
# do not fail the run.
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
"$bench" wait --tag "$tag" --expect "$expect" --since-ns "$(date +%s%N)" --timeout-s 60 >/dev/null || true
kill -TERM "$pid"
wait "$pid" || echo "crash-loop: the daemon's last run ended with status $?" >&2
pid=""
echo "crash-loop: $kills kills in $(($(date +%s) - started)) s, $busy of them with work left (mail in INBOX or replies queued); the daemon connected $(grep -c 'IMAP connected' "$work/daemon.log") times"

if "$bench" check --user "$desk" --tag "$tag" --manifest "$work/manifest.tsv" --db "$db"; then
    echo "crash-loop: OK"
else
    keep=yes
    echo "crash-loop: FAILED" >&2
    exit 1
fi
