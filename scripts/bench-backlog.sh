#!/usr/bin/env bash
# Backlog benchmark: how fast `delistd run --once` (release build) drains a full delist mailbox,
# against the mail stack's own limit, on the real Postfix and Dovecot of the test suite.
#
#   scripts/bench-backlog.sh [--dnsbl] [N ...]   default: 2000 10000 (two sizes: memory must not grow with N)
#
# --dnsbl (or BENCH_DNSBL=1): the daemon has a [blocklist] and looks every request's IP up on
# the loopback rbldnsd of scripts/dnsbl.sh before recording it (every IP is listed there, so
# the outcome, and the check, are as without). The script then also prints the time the
# lookups of one message took (p50/p99, from the daemon's debug log): the latency they add.
#
# For each N, twice over (the better of the two runs counts; the machine is shared):
#   1. raw pump: N varied requests are APPENDed into a fresh mailbox, then
#      examples/bench_mail.rs drains it with the daemon's own IMAP and SMTP client code
#      (fetch 32 at a time, a fixed reply per request over 4 SMTP connections, MOVE), with no
#      parsing and no database: the stack's limit.
#   2. daemon: the same N requests into another fresh mailbox; `delistd run --once` drains it
#      (4 SMTP connections), then the database and mailboxes are checked (bench_mail check).
# Both are timed from start until the last reply is in its recipient's Maildir (counted on
# disk). Requests: 14 in 20 acknowledgements (five languages, forwards, HTML, attachments),
# 2 missing information, 1 portal, 1 tenant, 2 automatic (no reply).
# Prints messages/s for both, their ratio (target: daemon >= 80 % of the pump) and the
# daemon's peak RSS (/usr/bin/time -v). Every mailbox is a scratch t-<tag>-... one.
#
# Uses the stack in $DELISTD_STACK_DIR when it runs there, else starts one in a temporary
# directory and stops it at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ${1:-} == --dnsbl ]]; then
    export BENCH_DNSBL=1
    shift
fi
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(2000 10000)
runs=${BENCH_RUNS:-2}
connections=${BENCH_SMTP_CONNECTIONS:-4}

. scripts/bench-common.sh bench-backlog

echo "bench-backlog: $(nproc) cores, $(uptime | sed 's/.*load/load/'), $(date -u +%Y-%m-%dT%H:%MZ)"
echo "bench-backlog: filling by IMAP APPEND (one connection); replies over $connections SMTP connections; plain TCP on loopback"
printf '%7s  %-6s  %9s  %9s  %6s  %9s  %s\n' N run "pump/s" "daemon/s" ratio "peak RSS" "load"

fail=0
for n in "${sizes[@]}"; do
    best_pump=0 best_daemon=0 peak=0
    for run in $(seq 1 "$runs"); do
        tag="b$(date +%s)r${run}n$n"
        # Raw pump.
        "$bench" fill --user "t-${tag}p-desk@example.test" --tag "${tag}p" --count "$n" --manifest "$work/p.tsv" \
            >/dev/null 2>>"$work/fill.log"
        pump_s=$("$bench" pump --user "t-${tag}p-desk@example.test" --tag "${tag}p" --manifest "$work/p.tsv" \
            --connections "$connections" 2>>"$work/pump.log")
        # Daemon.
        expect=$("$bench" fill --user "t-${tag}d-desk@example.test" --tag "${tag}d" --count "$n" \
            --manifest "$work/d.tsv" 2>>"$work/fill.log")
        "$bench" config --user "t-${tag}d-desk@example.test" --db "$work/$tag.sqlite" --out "$work/$tag.toml" \
            --connections "$connections"
        add_dnsbl_config "$work/$tag.toml"
        t0=$(date +%s%N)
        log_env=()
        [[ ${BENCH_DNSBL:-0} == 1 ]] && log_env=(DELISTD_LOG=info,delistd::enrich=debug NO_COLOR=1)
        env "${log_env[@]}" /usr/bin/time -v -o "$work/time.txt" "$delistd" run --once --config "$work/$tag.toml" 2>"$work/daemon.log" &
        pid=$!
        # Like the pump, which counts the Maildirs only once it has sent its last reply: the
        # count reads every file name in the senders' Maildirs, 50 times a second, and run
        # all along the drain it took 6 % of the two cores from the stack at N = 10,000,
        # growing with N. `run --once` exits once its last reply is accepted.
        wait "$pid" || { echo "bench-backlog: the daemon failed:" >&2; tail -n 20 "$work/daemon.log" >&2; exit 1; }
        pid=""
        daemon_s=$("$bench" wait --tag "${tag}d" --expect "$expect" --since-ns "$t0")
        rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")
        if ! "$bench" check --user "t-${tag}d-desk@example.test" --tag "${tag}d" --manifest "$work/d.tsv" \
            --db "$work/$tag.sqlite" >"$work/check.txt"; then
            cat "$work/check.txt" >&2
            fail=1
        fi
        rm -f "$work/$tag.sqlite"*
        read -r pump_rate daemon_rate ratio < <(awk -v n="$n" -v p="$pump_s" -v d="$daemon_s" \
            'BEGIN { printf "%.0f %.0f %.0f\n", n / p, n / d, 100 * p / d }')
        printf '%7d  %-6s  %9s  %9s  %5s%%  %6.1f MB  %s\n' "$n" "$run" "$pump_rate" "$daemon_rate" "$ratio" \
            "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" "$(cut -d' ' -f1-3 /proc/loadavg)"
        ((pump_rate > best_pump)) && best_pump=$pump_rate
        ((daemon_rate > best_daemon)) && best_daemon=$daemon_rate
        ((rss > peak)) && peak=$rss
        if [[ ${BENCH_DNSBL:-0} == 1 ]]; then
            { grep -o 'elapsed_us=[0-9]*' "$work/daemon.log" || true; } | cut -d= -f2 | sort -n >"$work/lookups.txt"
            awk '{ v[NR] = $1 } END {
                if (NR == 0) { print "        lookups: none logged -- the blocklist was not used"; exit 1 }
                printf "        lookups: %d messages looked up, per message p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
                    NR, v[int(NR * 0.50 + 0.5)] / 1000, v[int(NR * 0.99 + 0.5)] / 1000, v[NR] / 1000 }' "$work/lookups.txt" || fail=1
        fi
    done
    awk -v n="$n" -v p="$best_pump" -v d="$best_daemon" -v r="$peak" 'BEGIN {
        ratio = 100 * d / p
        printf "%7d  best    %9d  %9d  %5.0f%%  %6.1f MB  target >= 80%%: %s\n", n, p, d, ratio, r / 1024, (ratio >= 80 ? "ok" : "BELOW")
    }'
done
echo "bench-backlog: every daemon run checked: one record per request, cases once, every reply delivered once$([ $fail = 0 ] || echo ' -- FAILED, see above')"
exit $fail
